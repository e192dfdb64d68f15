//! A plan's run state, apart from its definition: a tree of the same shape, keyed by location.
//!
//! The definition (`Plan`'s blocks, sequences, checks, batches and actions) says what is to
//! run; this tree holds what happened — each object's state, each action's attempts, the plan's
//! own state, reason, heartbeat, pause, owners and decisions — at the same location. It is
//! sparse: a location nothing was written at reads as not started (a definition has an empty
//! tree), and it grows as run state is written. Its serde form is the run-state fields of a
//! plan's JSON, so reading a plan's JSON twice — once as the definition, once as this — gives
//! both halves.

use serde::Deserialize;

use super::path::{Loc, Parent};
use super::{Attempt, CheckSlot, Decision, Owner, Reason, State, Status, Timestamp};

/// Not started, never attempted: what every location holds until something is written there.
const NOT_STARTED: State = State {
    status: Status::NotStarted,
    start: None,
    end: None,
};

/// An action's run state.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub(crate) struct ActionRun {
    #[serde(default)]
    pub(crate) state: State,
    #[serde(default)]
    pub(crate) attempts: Vec<Attempt>,
}

/// The run state of a container of actions: a check section, a sequence or a deferred batch.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct ContainerRun {
    #[serde(default)]
    pub(crate) state: State,
    #[serde(default)]
    pub(crate) actions: Vec<ActionRun>,
}

/// The run state of the five check sections of a plan or a block, by slot (in
/// [`CheckSlot::ALL`]'s order).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "NamedSlots")]
pub(crate) struct CheckSetRun([ContainerRun; 5]);

/// [`CheckSetRun`] as the JSON names its slots (a section the JSON leaves out or gives as
/// `null`, as a definition's `Option` allows, has none).
#[derive(Deserialize)]
struct NamedSlots {
    #[serde(default, deserialize_with = "null_as_none")]
    bypass: ContainerRun,
    #[serde(default, deserialize_with = "null_as_none")]
    pre: ContainerRun,
    #[serde(default, deserialize_with = "null_as_none")]
    cont: ContainerRun,
    #[serde(default, deserialize_with = "null_as_none")]
    post: ContainerRun,
    #[serde(default, deserialize_with = "null_as_none")]
    deferred: ContainerRun,
}

impl From<NamedSlots> for CheckSetRun {
    fn from(s: NamedSlots) -> CheckSetRun {
        CheckSetRun([s.bypass, s.pre, s.cont, s.post, s.deferred])
    }
}

fn null_as_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ContainerRun, D::Error> {
    Ok(Option::<ContainerRun>::deserialize(d)?.unwrap_or_default())
}

/// A block's run state.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct BlockRun {
    #[serde(default)]
    pub(crate) state: State,
    #[serde(default)]
    pub(crate) checks: CheckSetRun,
    #[serde(default)]
    pub(crate) sequences: Vec<ContainerRun>,
}

/// A plan's run state: its own, and its objects' by location.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct PlanRun {
    #[serde(default)]
    pub(crate) state: State,
    #[serde(default)]
    pub(crate) reason: Reason,
    #[serde(default)]
    pub(crate) heartbeat: Option<Timestamp>,
    #[serde(default)]
    pub(crate) paused: bool,
    #[serde(default, alias = "resumptions")]
    pub(crate) owners: Vec<Owner>,
    #[serde(default)]
    pub(crate) decisions: Vec<Decision>,
    #[serde(default)]
    pub(crate) checks: CheckSetRun,
    #[serde(default)]
    pub(crate) blocks: Vec<BlockRun>,
    #[serde(default)]
    pub(crate) deferred: Vec<ContainerRun>,
}

pub(crate) static NO_ACTION: ActionRun = ActionRun {
    state: NOT_STARTED,
    attempts: Vec::new(),
};

pub(crate) static NO_CONTAINER: ContainerRun = ContainerRun {
    state: NOT_STARTED,
    actions: Vec::new(),
};

const EMPTY_CONTAINER: ContainerRun = ContainerRun {
    state: NOT_STARTED,
    actions: Vec::new(),
};

static NO_BLOCK: BlockRun = BlockRun {
    state: NOT_STARTED,
    checks: CheckSetRun([EMPTY_CONTAINER; 5]),
    sequences: Vec::new(),
};

/// Room in `list` for `len` elements in all, made at once (and exactly) when it has less: run
/// state grows as it is written, and would otherwise keep up to twice the room it needs.
#[inline]
pub(crate) fn room<T>(list: &mut Vec<T>, len: usize) {
    if list.capacity() < len {
        list.reserve_exact(len - list.len());
    }
}

/// The element at `i`, or `none` where nothing was written.
#[inline]
fn at<'a, T>(v: &'a [T], i: usize, none: &'a T) -> &'a T {
    v.get(i).unwrap_or(none)
}

/// The element at `i`, made (with everything before it) if nothing was written there yet.
#[inline]
fn at_mut<T: Default>(v: &mut Vec<T>, i: usize) -> &mut T {
    if v.len() <= i {
        v.resize_with(i + 1, T::default);
    }
    &mut v[i]
}

impl ContainerRun {
    #[inline]
    pub(crate) fn action(&self, index: usize) -> &ActionRun {
        at(&self.actions, index, &NO_ACTION)
    }
    #[inline]
    pub(crate) fn action_mut(&mut self, index: usize) -> &mut ActionRun {
        at_mut(&mut self.actions, index)
    }
}

impl CheckSetRun {
    #[inline]
    pub(crate) fn get(&self, slot: CheckSlot) -> &ContainerRun {
        &self.0[slot as usize]
    }
    #[inline]
    pub(crate) fn get_mut(&mut self, slot: CheckSlot) -> &mut ContainerRun {
        &mut self.0[slot as usize]
    }
}

impl BlockRun {
    #[inline]
    pub(crate) fn sequence(&self, seq: usize) -> &ContainerRun {
        at(&self.sequences, seq, &NO_CONTAINER)
    }
    #[inline]
    pub(crate) fn sequence_mut(&mut self, seq: usize) -> &mut ContainerRun {
        at_mut(&mut self.sequences, seq)
    }
}

impl PlanRun {
    /// This run state without the blocks' sequences' (what a store keeps with the plan's row).
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn without_sequences(&self) -> PlanRun {
        PlanRun {
            owners: self.owners.clone(),
            decisions: self.decisions.clone(),
            checks: self.checks.clone(),
            blocks: self
                .blocks
                .iter()
                .map(|b| BlockRun {
                    state: b.state,
                    checks: b.checks.clone(),
                    sequences: Vec::new(),
                })
                .collect(),
            deferred: self.deferred.clone(),
            ..*self
        }
    }

    #[inline]
    pub(crate) fn block(&self, b: usize) -> &BlockRun {
        at(&self.blocks, b, &NO_BLOCK)
    }
    #[inline]
    pub(crate) fn block_mut(&mut self, b: usize) -> &mut BlockRun {
        at_mut(&mut self.blocks, b)
    }
    #[inline]
    pub(crate) fn checks(&self, block: Option<usize>) -> &CheckSetRun {
        match block {
            None => &self.checks,
            Some(b) => &self.block(b).checks,
        }
    }
    #[inline]
    pub(crate) fn batch(&self, i: usize) -> &ContainerRun {
        at(&self.deferred, i, &NO_CONTAINER)
    }
    #[inline]
    pub(crate) fn batch_mut(&mut self, i: usize) -> &mut ContainerRun {
        at_mut(&mut self.deferred, i)
    }

    /// The run state of the container `parent`.
    #[inline]
    pub(crate) fn container(&self, parent: Parent) -> &ContainerRun {
        match parent {
            Parent::Checks { block, slot } => self.checks(block).get(slot),
            Parent::Sequence { block, seq } => self.block(block).sequence(seq),
            Parent::Batch(i) => self.batch(i),
        }
    }

    /// The state at `loc` (not started where nothing was written).
    #[inline]
    pub(crate) fn state(&self, loc: Loc) -> State {
        match loc {
            Loc::Plan => self.state,
            Loc::Checks { block, slot } => self.checks(block).get(slot).state,
            Loc::Block(b) => self.block(b).state,
            Loc::Sequence { block, seq } => self.container(Parent::Sequence { block, seq }).state,
            Loc::Batch(i) => self.batch(i).state,
            Loc::Action { parent, index } => self.container(parent).action(index).state,
        }
    }
}

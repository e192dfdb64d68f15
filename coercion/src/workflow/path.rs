//! Addresses of objects inside a plan: [`Loc`] (indices, cheap to copy) and [`ObjectPath`]
//! (indices with names, for people).

use std::fmt;

use serde::{Deserialize, Serialize};

use uuid::Uuid;

use super::run::{ContainerRun, room};
use super::view::{ActionView, BatchView, BlockView, ChecksView, SequenceView};
use super::{Action, CheckSlot, Checks, Plan};

/// The container of an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parent {
    /// A check section of the plan (`block: None`) or of a block.
    Checks {
        /// The block's index, or `None` for the plan's own checks.
        block: Option<usize>,
        /// Which section.
        slot: CheckSlot,
    },
    /// A sequence of a block.
    Sequence {
        /// The block's index.
        block: usize,
        /// The sequence's index in the block.
        seq: usize,
    },
    /// A deferred batch of the plan.
    Batch(usize),
}

/// Where an object is in its plan, by indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loc {
    /// The plan itself.
    Plan,
    /// A check section of the plan (`block: None`) or of a block.
    Checks {
        /// The block's index, or `None` for the plan's own checks.
        block: Option<usize>,
        /// Which section.
        slot: CheckSlot,
    },
    /// A block.
    Block(usize),
    /// A sequence.
    Sequence {
        /// The block's index.
        block: usize,
        /// The sequence's index in the block.
        seq: usize,
    },
    /// A deferred batch.
    Batch(usize),
    /// An action.
    Action {
        /// Its container.
        parent: Parent,
        /// Its index in the container.
        index: usize,
    },
}

impl Parent {
    /// The location of the container itself.
    pub fn loc(self) -> Loc {
        match self {
            Parent::Checks { block, slot } => Loc::Checks { block, slot },
            Parent::Sequence { block, seq } => Loc::Sequence { block, seq },
            Parent::Batch(i) => Loc::Batch(i),
        }
    }
}

/// One step of an [`ObjectPath`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathSegment {
    /// A check section.
    Checks(CheckSlot),
    /// A block, by index and name.
    Block {
        /// Its index in the plan.
        index: usize,
        /// Its name.
        name: String,
    },
    /// A sequence, by index and name.
    Sequence {
        /// Its index in the block.
        index: usize,
        /// Its name.
        name: String,
    },
    /// A deferred batch, by index and name.
    Batch {
        /// Its index in the plan.
        index: usize,
        /// Its name.
        name: String,
    },
    /// An action, by index and name.
    Action {
        /// Its index in its container.
        index: usize,
        /// Its name.
        name: String,
    },
}

impl fmt::Display for PathSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathSegment::Checks(slot) => write!(f, "{slot}"),
            PathSegment::Block { index, name } => write!(f, "block[{index}] {name:?}"),
            PathSegment::Sequence { index, name } => write!(f, "sequence[{index}] {name:?}"),
            PathSegment::Batch { index, name } => write!(f, "deferred batch[{index}] {name:?}"),
            PathSegment::Action { index, name } => write!(f, "action[{index}] {name:?}"),
        }
    }
}

/// Where an object is, for people: `block[1] "rest" / sequence[3] "host-4" / action[0] "copy"`.
/// The plan itself has the empty path, shown as `plan`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectPath(pub Vec<PathSegment>);

impl ObjectPath {
    /// The segments, outermost first.
    pub fn segments(&self) -> &[PathSegment] {
        &self.0
    }

    /// How deep the object is (0 for the plan).
    pub fn depth(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("plan");
        }
        for (i, seg) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" / ")?;
            }
            write!(f, "{seg}")?;
        }
        Ok(())
    }
}

impl Plan {
    /// The human path of the object at `loc`. Indices out of range are shown without a name.
    pub fn path(&self, loc: Loc) -> ObjectPath {
        let mut segs = Vec::with_capacity(4);
        self.push_path(loc, &mut segs);
        ObjectPath(segs)
    }

    fn push_block(&self, block: Option<usize>, segs: &mut Vec<PathSegment>) {
        if let Some(b) = block {
            let name = self
                .blocks
                .get(b)
                .map(|b| b.name.clone())
                .unwrap_or_default();
            segs.push(PathSegment::Block { index: b, name });
        }
    }

    fn push_path(&self, loc: Loc, segs: &mut Vec<PathSegment>) {
        match loc {
            Loc::Plan => {}
            Loc::Checks { block, slot } => {
                self.push_block(block, segs);
                segs.push(PathSegment::Checks(slot));
            }
            Loc::Block(b) => self.push_block(Some(b), segs),
            Loc::Sequence { block, seq } => {
                self.push_block(Some(block), segs);
                let name = self
                    .blocks
                    .get(block)
                    .and_then(|b| b.sequences.get(seq))
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                segs.push(PathSegment::Sequence { index: seq, name });
            }
            Loc::Batch(i) => {
                let name = self
                    .deferred
                    .get(i)
                    .map(|b| b.name.clone())
                    .unwrap_or_default();
                segs.push(PathSegment::Batch { index: i, name });
            }
            Loc::Action { parent, index } => {
                self.push_path(parent.loc(), segs);
                let name = self
                    .action(loc)
                    .map(|a| a.name.to_string())
                    .unwrap_or_default();
                segs.push(PathSegment::Action { index, name });
            }
        }
    }

    /// The check section at `block`/`slot`, with its run state.
    pub fn checks_at(&self, block: Option<usize>, slot: CheckSlot) -> Option<ChecksView<'_>> {
        Some(ChecksView {
            def: self.checks_def(block, slot)?,
            run: self.run.checks(block).get(slot),
        })
    }

    /// The check section at `block`/`slot`, as defined.
    #[inline]
    pub(crate) fn checks_def(&self, block: Option<usize>, slot: CheckSlot) -> Option<&Checks> {
        match block {
            None => self.checks.get(slot),
            Some(b) => self.blocks.get(b)?.checks.get(slot),
        }
    }

    #[cfg(test)]
    pub(crate) fn checks_at_mut(
        &mut self,
        block: Option<usize>,
        slot: CheckSlot,
    ) -> Option<&mut Checks> {
        match block {
            None => self.checks.get_mut(slot),
            Some(b) => self.blocks.get_mut(b)?.checks.get_mut(slot),
        }
    }

    /// The action at `loc`, as defined, to change (the model's tests).
    #[cfg(test)]
    pub(crate) fn action_mut(&mut self, loc: Loc) -> Option<&mut Action> {
        let Loc::Action { parent, index } = loc else {
            return None;
        };
        let actions = match parent {
            Parent::Checks { block, slot } => &mut self.checks_at_mut(block, slot)?.actions,
            Parent::Sequence { block, seq } => {
                &mut self.blocks.get_mut(block)?.sequences.get_mut(seq)?.actions
            }
            Parent::Batch(i) => &mut self.deferred.get_mut(i)?.actions,
        };
        actions.get_mut(index)
    }

    /// Gives the plan and every object in it a fresh UUIDv7, in walk order (as submit does;
    /// the one place ids are handed out).
    pub(crate) fn assign_ids(&mut self) {
        self.for_each_id_mut(|id| *id = Uuid::now_v7());
    }

    /// Calls `f` on every action of the plan (checks and deferred batches included), as
    /// defined.
    pub(crate) fn for_each_action_mut(&mut self, mut f: impl FnMut(Loc, &mut Action)) {
        let mut visit = |parent: Parent, actions: &mut Vec<Action>| {
            for (index, a) in actions.iter_mut().enumerate() {
                f(Loc::Action { parent, index }, a);
            }
        };
        for slot in CheckSlot::ALL {
            if let Some(c) = self.checks.get_mut(slot) {
                visit(Parent::Checks { block: None, slot }, &mut c.actions);
            }
        }
        for (b, block) in self.blocks.iter_mut().enumerate() {
            for slot in CheckSlot::ALL {
                if let Some(c) = block.checks.get_mut(slot) {
                    visit(
                        Parent::Checks {
                            block: Some(b),
                            slot,
                        },
                        &mut c.actions,
                    );
                }
            }
            for (s, seq) in block.sequences.iter_mut().enumerate() {
                visit(Parent::Sequence { block: b, seq: s }, &mut seq.actions);
            }
        }
        for (i, batch) in self.deferred.iter_mut().enumerate() {
            visit(Parent::Batch(i), &mut batch.actions);
        }
    }

    /// The block at `loc`, if `loc` is a block, with its run state.
    pub fn block_at(&self, loc: Loc) -> Option<BlockView<'_>> {
        match loc {
            Loc::Block(b) => Some(BlockView {
                def: self.blocks.get(b)?,
                run: self.run.block(b),
            }),
            _ => None,
        }
    }

    /// The sequence at `loc`, if `loc` is a sequence, with its run state.
    pub fn sequence_at(&self, loc: Loc) -> Option<SequenceView<'_>> {
        match loc {
            Loc::Sequence { block, seq } => Some(SequenceView {
                def: self.blocks.get(block)?.sequences.get(seq)?,
                run: self.run.block(block).sequence(seq),
            }),
            _ => None,
        }
    }

    /// The batch at `loc`, if `loc` is a deferred batch, with its run state.
    pub fn batch_at(&self, loc: Loc) -> Option<BatchView<'_>> {
        match loc {
            Loc::Batch(i) => Some(BatchView {
                def: self.deferred.get(i)?,
                run: self.run.batch(i),
            }),
            _ => None,
        }
    }

    /// The action at `loc`, if `loc` is an action, with its run state.
    #[inline]
    pub fn action(&self, loc: Loc) -> Option<ActionView<'_>> {
        let Loc::Action { parent, index } = loc else {
            return None;
        };
        Some(ActionView {
            def: self.actions_def(parent)?.get(index)?,
            run: self.run.container(parent).action(index),
        })
    }

    /// The action at `loc`, as defined.
    #[inline]
    pub(crate) fn action_def(&self, loc: Loc) -> Option<&Action> {
        let Loc::Action { parent, index } = loc else {
            return None;
        };
        self.actions_def(parent)?.get(index)
    }

    /// The actions of a container, with their run state.
    pub fn actions_of(&self, parent: Parent) -> Option<Vec<ActionView<'_>>> {
        let defs = self.actions_def(parent)?;
        let run = self.run.container(parent);
        Some(
            defs.iter()
                .enumerate()
                .map(|(i, def)| ActionView {
                    def,
                    run: run.action(i),
                })
                .collect(),
        )
    }

    /// The actions of a container, as defined.
    #[inline]
    pub(crate) fn actions_def(&self, parent: Parent) -> Option<&[Action]> {
        match parent {
            Parent::Checks { block, slot } => Some(&self.checks_def(block, slot)?.actions),
            Parent::Sequence { block, seq } => {
                Some(&self.blocks.get(block)?.sequences.get(seq)?.actions)
            }
            Parent::Batch(i) => Some(&self.deferred.get(i)?.actions),
        }
    }

    /// Whether the definition has an object at `loc`.
    #[inline]
    pub(crate) fn defines(&self, loc: Loc) -> bool {
        match loc {
            Loc::Plan => true,
            Loc::Checks { block, slot } => self.checks_def(block, slot).is_some(),
            Loc::Block(b) => b < self.blocks.len(),
            Loc::Sequence { block, seq } => self
                .blocks
                .get(block)
                .is_some_and(|b| seq < b.sequences.len()),
            Loc::Batch(i) => i < self.deferred.len(),
            Loc::Action { .. } => self.action_def(loc).is_some(),
        }
    }

    /// The state of the object at `loc`.
    #[inline]
    pub fn state_at(&self, loc: Loc) -> Option<super::State> {
        self.defines(loc).then(|| self.run.state(loc))
    }

    /// The attempts of the action at `loc`, if `loc` is an action.
    #[inline]
    pub fn attempts_at(&self, loc: Loc) -> Option<&[super::Attempt]> {
        let Loc::Action { parent, index } = loc else {
            return None;
        };
        self.action_def(loc)?;
        Some(&self.run.container(parent).action(index).attempts)
    }

    /// The attempts of the action at `loc`, to change (with [`state_at_mut`](Self::state_at_mut),
    /// [`run_mut`](Self::run_mut) and [`walk_mut`](Self::walk_mut), the only ways in which code
    /// outside the model changes run state).
    #[inline]
    pub(crate) fn attempts_mut(&mut self, loc: Loc) -> Option<&mut Vec<super::Attempt>> {
        let Loc::Action { parent, index } = loc else {
            return None;
        };
        let (container, len) = self.container_run_mut(parent)?;
        if index >= len {
            return None;
        }
        room(&mut container.actions, len);
        Some(&mut container.action_mut(index).attempts)
    }

    /// The state of the object at `loc`, to change.
    #[inline]
    pub(crate) fn state_at_mut(&mut self, loc: Loc) -> Option<&mut super::State> {
        Some(match loc {
            Loc::Plan => &mut self.run.state,
            Loc::Checks { block, slot } => {
                &mut self
                    .container_run_mut(Parent::Checks { block, slot })?
                    .0
                    .state
            }
            Loc::Block(b) => {
                self.blocks.get(b)?;
                room(&mut self.run.blocks, self.blocks.len());
                &mut self.run.block_mut(b).state
            }
            Loc::Sequence { block, seq } => {
                &mut self
                    .container_run_mut(Parent::Sequence { block, seq })?
                    .0
                    .state
            }
            Loc::Batch(i) => &mut self.container_run_mut(Parent::Batch(i))?.0.state,
            Loc::Action { parent, index } => {
                let (container, len) = self.container_run_mut(parent)?;
                if index >= len {
                    return None;
                }
                room(&mut container.actions, len);
                &mut container.action_mut(index).state
            }
        })
    }

    /// The run state of the container `parent`, to change, with how many actions its
    /// definition has; `None` if the definition has no such container. The lists on the way
    /// are sized to the definition's the first time they are written: the run state grows as
    /// it is written, and would otherwise keep up to twice the room it needs.
    #[inline]
    fn container_run_mut(&mut self, parent: Parent) -> Option<(&mut ContainerRun, usize)> {
        let run = &mut self.run;
        Some(match parent {
            Parent::Checks { block: None, slot } => {
                let len = self.checks.get(slot)?.actions.len();
                (run.checks.get_mut(slot), len)
            }
            Parent::Checks {
                block: Some(b),
                slot,
            } => {
                let len = self.blocks.get(b)?.checks.get(slot)?.actions.len();
                room(&mut run.blocks, self.blocks.len());
                (run.block_mut(b).checks.get_mut(slot), len)
            }
            Parent::Sequence { block, seq } => {
                let def = self.blocks.get(block)?;
                let len = def.sequences.get(seq)?.actions.len();
                room(&mut run.blocks, self.blocks.len());
                let block = run.block_mut(block);
                room(&mut block.sequences, def.sequences.len());
                (block.sequence_mut(seq), len)
            }
            Parent::Batch(i) => {
                let len = self.deferred.get(i)?.actions.len();
                room(&mut run.deferred, self.deferred.len());
                (run.batch_mut(i), len)
            }
        })
    }

    /// The id of the object at `loc` (the plan's id for [`Loc::Plan`]).
    #[inline]
    pub fn id_at(&self, loc: Loc) -> Option<uuid::Uuid> {
        Some(match loc {
            Loc::Plan => self.id.0,
            Loc::Checks { block, slot } => self.checks_def(block, slot)?.id,
            Loc::Block(b) => self.blocks.get(b)?.id,
            Loc::Sequence { block, seq } => self.blocks.get(block)?.sequences.get(seq)?.id,
            Loc::Batch(i) => self.deferred.get(i)?.id,
            Loc::Action { .. } => self.action_def(loc)?.id,
        })
    }
}

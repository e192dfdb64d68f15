//! [`Plan::walk`]: every object of a plan in a fixed order.

use super::path::{Loc, Parent};
use super::run::{CheckSetRun, ContainerRun, NO_ACTION, PlanRun, room};
use super::view::{ActionView, BatchView, BlockView, CheckSetView, ChecksView, SequenceView};
use super::{Action, CheckSet, CheckSlot, Plan};

/// Any object of a plan, with its run state.
#[derive(Clone, Copy, Debug)]
pub enum ObjectRef<'a> {
    /// The plan.
    Plan(&'a Plan),
    /// A check section.
    Checks(ChecksView<'a>),
    /// A block.
    Block(BlockView<'a>),
    /// A sequence.
    Sequence(SequenceView<'a>),
    /// A deferred batch.
    Batch(BatchView<'a>),
    /// An action.
    Action(ActionView<'a>),
}

impl<'a> ObjectRef<'a> {
    /// The object's state.
    pub fn state(&self) -> super::State {
        match self {
            ObjectRef::Plan(o) => o.state(),
            ObjectRef::Checks(o) => o.state(),
            ObjectRef::Block(o) => o.state(),
            ObjectRef::Sequence(o) => o.state(),
            ObjectRef::Batch(o) => o.state(),
            ObjectRef::Action(o) => o.state(),
        }
    }

    /// The object's id.
    pub fn id(&self) -> uuid::Uuid {
        match self {
            ObjectRef::Plan(o) => o.id.0,
            ObjectRef::Checks(o) => o.id,
            ObjectRef::Block(o) => o.id,
            ObjectRef::Sequence(o) => o.id,
            ObjectRef::Batch(o) => o.id,
            ObjectRef::Action(o) => o.id,
        }
    }

    /// The object's key, if it has one.
    pub fn key(&self) -> Option<&'a str> {
        match self {
            ObjectRef::Plan(_) => None,
            ObjectRef::Checks(o) => o.definition().key.as_deref(),
            ObjectRef::Block(o) => o.definition().key.as_deref(),
            ObjectRef::Sequence(o) => o.definition().key.as_deref(),
            ObjectRef::Batch(o) => o.definition().key.as_deref(),
            ObjectRef::Action(o) => o.definition().key.as_deref(),
        }
    }

    /// What kind of object this is, in one word (`plan`, `checks`, `block`, …).
    pub fn kind_name(&self) -> &'static str {
        kind_names(self.loc_kind()).0
    }

    /// The name of the object's kind in the stores' `kind` columns (written in files and
    /// databases, so it never changes).
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres")),
        allow(dead_code, reason = "only the SQL stores have a kind column")
    )]
    pub(crate) fn stored_kind(&self) -> &'static str {
        kind_names(self.loc_kind()).1
    }

    /// A location of an object of the same kind (what [`kind_names`] is keyed by).
    fn loc_kind(&self) -> Loc {
        match self {
            ObjectRef::Plan(_) => Loc::Plan,
            ObjectRef::Checks(_) => Loc::Checks {
                block: None,
                slot: crate::workflow::CheckSlot::Pre,
            },
            ObjectRef::Block(_) => Loc::Block(0),
            ObjectRef::Sequence(_) => Loc::Sequence { block: 0, seq: 0 },
            ObjectRef::Batch(_) => Loc::Batch(0),
            ObjectRef::Action(_) => Loc::Action {
                parent: Parent::Batch(0),
                index: 0,
            },
        }
    }
}

impl Loc {
    /// The name of the kind of the object at this location in the stores' `kind` columns (see
    /// [`ObjectRef::stored_kind`]).
    #[cfg_attr(
        not(feature = "sqlite"),
        allow(dead_code, reason = "SQLite's page reader checks kinds by location")
    )]
    pub(crate) fn stored_kind(&self) -> &'static str {
        kind_names(*self).1
    }
}

/// The one table of kind names, by the kind of location: for people, and as stored.
fn kind_names(loc: Loc) -> (&'static str, &'static str) {
    match loc {
        Loc::Plan => ("plan", "plan"),
        Loc::Checks { .. } => ("checks", "checks"),
        Loc::Block(_) => ("block", "block"),
        Loc::Sequence { .. } => ("sequence", "sequence"),
        Loc::Batch(_) => ("deferred batch", "batch"),
        Loc::Action { .. } => ("action", "action"),
    }
}

/// The iterator of [`Plan::walk`]: `(location, object)` pairs in this order — the plan; its
/// bypass, pre and continuous checks (each followed by its actions); each block (the block, its
/// bypass, pre and continuous checks, each sequence followed by its actions, its post and
/// deferred checks); the plan's post checks; each deferred batch followed by its actions; the
/// plan's deferred checks. Use [`Plan::path`] to turn a location into a path for people.
///
/// Containers are listed up front; their actions are produced lazily, so walking a plan of a
/// million actions does not allocate per action.
pub struct Walk<'a> {
    nodes: std::vec::IntoIter<Node<'a>>,
    actions: Option<(
        Parent,
        &'a ContainerRun,
        std::iter::Enumerate<std::slice::Iter<'a, Action>>,
    )>,
    remaining: usize,
}

enum Node<'a> {
    One(Loc, ObjectRef<'a>),
    Actions(Parent, &'a [Action], &'a ContainerRun),
}

impl<'a> Walk<'a> {
    pub(crate) fn new(plan: &'a Plan) -> Walk<'a> {
        let mut nodes = Vec::new();
        nodes.push(Node::One(Loc::Plan, ObjectRef::Plan(plan)));
        let push_checks = |nodes: &mut Vec<Node<'a>>,
                           set: CheckSetView<'a>,
                           block: Option<usize>,
                           slots: &[super::CheckSlot]| {
            for &slot in slots {
                if let Some(c) = set.get(slot) {
                    nodes.push(Node::One(Loc::Checks { block, slot }, ObjectRef::Checks(c)));
                    let parent = Parent::Checks { block, slot };
                    nodes.push(Node::Actions(parent, &c.definition().actions, c.run));
                }
            }
        };
        use super::CheckSlot::*;
        push_checks(&mut nodes, plan.checks(), None, &[Bypass, Pre, Cont]);
        for (b, def) in plan.blocks.iter().enumerate() {
            let block = BlockView {
                def,
                run: plan.run.block(b),
            };
            nodes.push(Node::One(Loc::Block(b), ObjectRef::Block(block)));
            push_checks(&mut nodes, block.checks(), Some(b), &[Bypass, Pre, Cont]);
            for (s, def) in def.sequences.iter().enumerate() {
                let run = block.run.sequence(s);
                nodes.push(Node::One(
                    Loc::Sequence { block: b, seq: s },
                    ObjectRef::Sequence(SequenceView { def, run }),
                ));
                let parent = Parent::Sequence { block: b, seq: s };
                nodes.push(Node::Actions(parent, &def.actions, run));
            }
            push_checks(&mut nodes, block.checks(), Some(b), &[Post, Deferred]);
        }
        push_checks(&mut nodes, plan.checks(), None, &[Post]);
        for (i, def) in plan.deferred.iter().enumerate() {
            let run = plan.run.batch(i);
            nodes.push(Node::One(
                Loc::Batch(i),
                ObjectRef::Batch(BatchView { def, run }),
            ));
            nodes.push(Node::Actions(Parent::Batch(i), &def.actions, run));
        }
        push_checks(&mut nodes, plan.checks(), None, &[Deferred]);
        let remaining = nodes
            .iter()
            .map(|n| match n {
                Node::One(..) => 1,
                Node::Actions(_, a, _) => a.len(),
            })
            .sum();
        Walk {
            nodes: nodes.into_iter(),
            actions: None,
            remaining,
        }
    }
}

impl<'a> Iterator for Walk<'a> {
    type Item = (Loc, ObjectRef<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((parent, run, it)) = &mut self.actions {
                if let Some((index, def)) = it.next() {
                    self.remaining -= 1;
                    let run = run.actions.get(index).unwrap_or(&NO_ACTION);
                    return Some((
                        Loc::Action {
                            parent: *parent,
                            index,
                        },
                        ObjectRef::Action(ActionView { def, run }),
                    ));
                }
                self.actions = None;
            }
            match self.nodes.next()? {
                Node::One(loc, obj) => {
                    self.remaining -= 1;
                    return Some((loc, obj));
                }
                Node::Actions(parent, actions, run) => {
                    self.actions = Some((parent, run, actions.iter().enumerate()))
                }
            }
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Walk<'_> {}

/// The parts of an object that are not its definition, and its id, as [`Plan::walk_mut`]
/// hands them out.
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "outside the model's tests, only attempts are changed this way"
    )
)]
pub(crate) struct ObjectMut<'a> {
    /// Its id (the plan's own for [`Loc::Plan`]).
    pub id: &'a mut uuid::Uuid,
    /// Its state.
    pub state: &'a mut super::State,
    /// Its attempts, if it is an action.
    pub attempts: Option<&'a mut Vec<super::Attempt>>,
}

/// The plan's own run state, as [`Plan::run_mut`] hands it out.
pub(crate) struct PlanRunMut<'a> {
    /// Its state.
    pub state: &'a mut super::State,
    /// Why it ended as it did.
    pub reason: &'a mut super::Reason,
    /// The last heartbeat of the process running it.
    pub heartbeat: &'a mut Option<crate::workflow::Timestamp>,
    /// Whether it is paused.
    pub paused: &'a mut bool,
    /// The processes that ran it, in order.
    pub owners: &'a mut Vec<super::Owner>,
    /// The decisions taken on its gates.
    pub decisions: &'a mut Vec<super::Decision>,
}

impl Plan {
    /// The plan's own run state, to change (its objects' is changed through
    /// [`walk_mut`](Self::walk_mut), [`state_at_mut`](Self::state_at_mut) and
    /// [`attempts_mut`](Self::attempts_mut)). With those, the only way code outside the model
    /// changes run state: the model alone knows where run state lives.
    pub(crate) fn run_mut(&mut self) -> PlanRunMut<'_> {
        let run = &mut self.run;
        PlanRunMut {
            state: &mut run.state,
            reason: &mut run.reason,
            heartbeat: &mut run.heartbeat,
            paused: &mut run.paused,
            owners: &mut run.owners,
            decisions: &mut run.decisions,
        }
    }

    /// Calls `f` on every object's id (the plan's own first), in [`Walk`]'s order.
    pub(crate) fn for_each_id_mut(&mut self, mut f: impl FnMut(&mut uuid::Uuid)) {
        use super::CheckSlot::*;
        fn checks(f: &mut impl FnMut(&mut uuid::Uuid), set: &mut CheckSet, slots: &[CheckSlot]) {
            for &slot in slots {
                if let Some(c) = set.get_mut(slot) {
                    f(&mut c.id);
                    c.actions.iter_mut().for_each(|a| f(&mut a.id));
                }
            }
        }
        f(&mut self.id.0);
        checks(&mut f, &mut self.checks, &[Bypass, Pre, Cont]);
        for block in &mut self.blocks {
            f(&mut block.id);
            checks(&mut f, &mut block.checks, &[Bypass, Pre, Cont]);
            for seq in &mut block.sequences {
                f(&mut seq.id);
                seq.actions.iter_mut().for_each(|a| f(&mut a.id));
            }
            checks(&mut f, &mut block.checks, &[Post, Deferred]);
        }
        checks(&mut f, &mut self.checks, &[Post]);
        for batch in &mut self.deferred {
            f(&mut batch.id);
            batch.actions.iter_mut().for_each(|a| f(&mut a.id));
        }
        checks(&mut f, &mut self.checks, &[Deferred]);
    }

    /// Calls `f` on every object of the plan in [`Walk`]'s order, with what of it may change:
    /// its id, its state and (an action's) attempts. Every object's run state is written out
    /// (where nothing was, as not started).
    pub(crate) fn walk_mut(&mut self, mut f: impl FnMut(Loc, ObjectMut<'_>)) {
        use super::CheckSlot::*;
        fn actions(
            f: &mut impl FnMut(Loc, ObjectMut<'_>),
            parent: Parent,
            defs: &mut [Action],
            run: &mut ContainerRun,
        ) {
            room(&mut run.actions, defs.len());
            for (index, a) in defs.iter_mut().enumerate() {
                let r = run.action_mut(index);
                let object = ObjectMut {
                    id: &mut a.id,
                    state: &mut r.state,
                    attempts: Some(&mut r.attempts),
                };
                f(Loc::Action { parent, index }, object);
            }
        }
        fn checks(
            f: &mut impl FnMut(Loc, ObjectMut<'_>),
            set: &mut CheckSet,
            run: &mut CheckSetRun,
            block: Option<usize>,
            slots: &[CheckSlot],
        ) {
            for &slot in slots {
                if let Some(c) = set.get_mut(slot) {
                    let r = run.get_mut(slot);
                    let object = ObjectMut {
                        id: &mut c.id,
                        state: &mut r.state,
                        attempts: None,
                    };
                    f(Loc::Checks { block, slot }, object);
                    actions(f, Parent::Checks { block, slot }, &mut c.actions, r);
                }
            }
        }
        let run = &mut self.run;
        let plan = ObjectMut {
            id: &mut self.id.0,
            state: &mut run.state,
            attempts: None,
        };
        f(Loc::Plan, plan);
        checks(
            &mut f,
            &mut self.checks,
            &mut run.checks,
            None,
            &[Bypass, Pre, Cont],
        );
        room(&mut run.blocks, self.blocks.len());
        for (b, block) in self.blocks.iter_mut().enumerate() {
            let br = run.block_mut(b);
            room(&mut br.sequences, block.sequences.len());
            let object = ObjectMut {
                id: &mut block.id,
                state: &mut br.state,
                attempts: None,
            };
            f(Loc::Block(b), object);
            checks(
                &mut f,
                &mut block.checks,
                &mut br.checks,
                Some(b),
                &[Bypass, Pre, Cont],
            );
            for (s, seq) in block.sequences.iter_mut().enumerate() {
                let sr = br.sequence_mut(s);
                let object = ObjectMut {
                    id: &mut seq.id,
                    state: &mut sr.state,
                    attempts: None,
                };
                f(Loc::Sequence { block: b, seq: s }, object);
                let parent = Parent::Sequence { block: b, seq: s };
                actions(&mut f, parent, &mut seq.actions, sr);
            }
            checks(
                &mut f,
                &mut block.checks,
                &mut br.checks,
                Some(b),
                &[Post, Deferred],
            );
        }
        checks(&mut f, &mut self.checks, &mut run.checks, None, &[Post]);
        room(&mut run.deferred, self.deferred.len());
        for (i, batch) in self.deferred.iter_mut().enumerate() {
            let r = run.batch_mut(i);
            let object = ObjectMut {
                id: &mut batch.id,
                state: &mut r.state,
                attempts: None,
            };
            f(Loc::Batch(i), object);
            actions(&mut f, Parent::Batch(i), &mut batch.actions, r);
        }
        checks(&mut f, &mut self.checks, &mut run.checks, None, &[Deferred]);
    }

    /// Back to the definition: every state `NotStarted`, no attempts, and none of the plan's
    /// own run state (reason, heartbeat, pause, owners, decisions). Ids, keys, requests, the
    /// submit time and the retry link stay. The one place that says what run state is.
    pub(crate) fn reset_run_state(&mut self) {
        self.run = PlanRun::default();
    }

    /// A copy of the plan as defined ([`reset_run_state`](Self::reset_run_state)): what a store
    /// keeps of it apart from its run state. The run state is not copied.
    pub(crate) fn definition(&self) -> Plan {
        let mut def = self.without_blocks();
        def.blocks = self.blocks.clone();
        def
    }

    /// Whether nothing of the plan ran: [`reset_run_state`](Self::reset_run_state) would
    /// leave it as it is.
    #[cfg(any(feature = "sqlite", feature = "postgres", test))]
    pub(crate) fn is_definition(&self) -> bool {
        let run = &self.run;
        run.reason == super::Reason::None
            && run.heartbeat.is_none()
            && !run.paused
            && run.owners.is_empty()
            && run.decisions.is_empty()
            && self.walk().all(|(_, object)| {
                object.state() == super::State::default()
                    && !matches!(object, ObjectRef::Action(a) if !a.attempts().is_empty())
            })
    }
}

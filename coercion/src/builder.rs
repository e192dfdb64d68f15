//! The typed builder: assemble plans step by step, with the same compile-time guarantees as
//! `plan!{}` (which expands to these calls).
//!
//! Actions are created with [`ActionSpec::new`] (bounded on [`ActionPlugin`]) or
//! [`CheckSpec::new`] (bounded on [`CheckPlugin`]); sequences and deferred batches accept only
//! `ActionSpec`s, check sections only `CheckSpec`s, so a check plugin in a sequence — or an
//! action plugin in a check — does not compile. The request's type is the plugin's
//! `Request` type. Builders never fail: problems that only a whole plan shows (blank names,
//! empty sections, duplicate keys, unknown plugins) are reported together at `submit`.
//!
//! ```
//! use coercion::prelude::*;
//! # use coercion::testing::{FakeAction, FakeCheck, FakeReq};
//!
//! let plan = Plan::builder("Deploy")
//!     .descr("Deploy the web tier")
//!     .pre_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>("lb healthy", FakeReq::ok())))
//!     .block(
//!         Block::builder("web")
//!             .concurrency(2)
//!             .tolerated_failures(Tolerance::Percent(10))
//!             .sequences(["web-1", "web-2", "web-3"].map(|host| {
//!                 Sequence::builder(format!("deploy {host}"))
//!                     .action(ActionSpec::new::<FakeAction>("copy", FakeReq::ok()).retries(2))
//!                     .action(ActionSpec::new::<FakeAction>("restart", FakeReq::ok()).timeout(std::time::Duration::from_secs(10)))
//!             })),
//!     )
//!     .build();
//! assert_eq!(plan.blocks()[0].sequences().len(), 3);
//! ```
//!
//! A check plugin in a sequence is a compile error:
//!
//! ```compile_fail,E0277
//! use coercion::prelude::*;
//! # use coercion::testing::{FakeCheck, FakeReq};
//! let seq = Sequence::builder("s").action(ActionSpec::new::<FakeCheck>("ping", FakeReq::ok()));
//! ```

use std::num::NonZeroUsize;
use std::time::Duration;

use uuid::Uuid;

use crate::plugin::{ActionPlugin, CheckPlugin, PluginKind, PluginMeta};
use crate::rolling::Rolling;
use crate::workflow::{
    Action, Block, CheckSlot, Checks, DeferredBatch, Json, Plan, Sequence, Tolerance, When,
};

fn new_action<P: PluginMeta>(name: String, req: &P::Request, kind: PluginKind) -> Action {
    // One shared allocation for every action of a plugin type.
    let plugin = crate::__private::plugin_name::<P>();
    let mut defects = crate::workflow::Defects::default();
    let request = match Json::encode(req) {
        Ok(j) => j,
        Err(e) => {
            defects.push(format!("the request does not serialize to JSON: {e}"));
            Json::null()
        }
    };
    Action::defined(name.into(), plugin, kind, request, defects)
}

macro_rules! action_setters {
    () => {
        /// Sets the description.
        pub fn descr(mut self, descr: impl Into<String>) -> Self {
            self.0.descr = descr.into().into();
            self
        }
        /// Sets the key, a handle of the user's that must be unique across the plan.
        pub fn key(mut self, key: impl Into<String>) -> Self {
            self.0.key = Some(key.into().into());
            self
        }
        /// Sets the timeout of each attempt (default 30 s; must be greater than zero).
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.0.timeout = timeout;
            self
        }
        /// Sets how many extra attempts may follow a failed one (default 0).
        pub fn retries(mut self, retries: u32) -> Self {
            self.0.retries = retries;
            self
        }
        /// The action being built.
        pub fn as_action(&self) -> &Action {
            &self.0
        }
    };
}

/// An action that calls an action plugin: for sequences and deferred batches.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionSpec(Action);

impl ActionSpec {
    /// An action named `name` calling plugin `P` with `req`.
    pub fn new<P: ActionPlugin>(name: impl Into<String>, req: P::Request) -> ActionSpec {
        ActionSpec(new_action::<P>(name.into(), &req, PluginKind::Action))
    }
    action_setters!();
}

/// An action that calls a check plugin: for check sections.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec(Action);

impl CheckSpec {
    /// A check named `name` calling check plugin `P` with `req`.
    pub fn new<P: CheckPlugin>(name: impl Into<String>, req: P::Request) -> CheckSpec {
        CheckSpec(new_action::<P>(name.into(), &req, PluginKind::Check))
    }
    action_setters!();
}

/// Builds a check section. See [`Checks::builder`].
#[derive(Clone, Debug, PartialEq)]
pub struct ChecksBuilder(Checks);

impl Checks {
    /// A check section with no actions yet; `delay` (for continuous checks) defaults to 30 s.
    pub fn builder() -> ChecksBuilder {
        ChecksBuilder(Checks::empty())
    }
}

impl ChecksBuilder {
    /// Sets the pause between two runs (continuous checks only).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.0.delay = delay;
        self
    }
    /// Sets the key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.key = Some(key.into());
        self
    }
    /// Adds a check.
    pub fn action(mut self, check: CheckSpec) -> Self {
        self.0.actions.push(check.0);
        self
    }
    /// Adds several checks.
    pub fn actions(mut self, checks: impl IntoIterator<Item = CheckSpec>) -> Self {
        self.0.actions.extend(checks.into_iter().map(|c| c.0));
        self
    }
    /// The section being built.
    pub fn as_checks(&self) -> &Checks {
        &self.0
    }
}

/// Builds a sequence. See [`Sequence::builder`].
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceBuilder(pub(crate) Sequence);

impl Sequence {
    /// A sequence named `name` with no actions yet.
    pub fn builder(name: impl Into<String>) -> SequenceBuilder {
        SequenceBuilder(Sequence::named(name.into()))
    }
}

impl SequenceBuilder {
    /// Sets the description.
    pub fn descr(mut self, descr: impl Into<String>) -> Self {
        self.0.descr = descr.into();
        self
    }
    /// Sets the key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.key = Some(key.into());
        self
    }
    /// Appends an action.
    pub fn action(mut self, action: ActionSpec) -> Self {
        self.0.actions.push(action.0);
        self
    }
    /// Appends several actions.
    pub fn actions(mut self, actions: impl IntoIterator<Item = ActionSpec>) -> Self {
        self.0.actions.extend(actions.into_iter().map(|a| a.0));
        self
    }
    /// The sequence being built.
    pub fn as_sequence(&self) -> &Sequence {
        &self.0
    }
}

/// Builds a block. See [`Block::builder`].
#[derive(Clone, Debug, PartialEq)]
pub struct BlockBuilder(pub(crate) Block);

impl Block {
    /// A block named `name`: concurrency 1, no tolerated failure, no delays, no sequences yet.
    pub fn builder(name: impl Into<String>) -> BlockBuilder {
        BlockBuilder(Block::named(name.into()))
    }
}

macro_rules! check_slot_setters {
    ($($(#[$doc:meta])* $method:ident => $slot:expr;)*) => {$(
        $(#[$doc])*
        pub fn $method(mut self, checks: ChecksBuilder) -> Self {
            self.set_checks($slot, checks);
            self
        }
    )*};
}

impl BlockBuilder {
    /// Sets the description.
    pub fn descr(mut self, descr: impl Into<String>) -> Self {
        self.0.descr = descr.into();
        self
    }
    /// Sets the key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.key = Some(key.into());
        self
    }
    /// Sets how many sequences may run at the same time (at least 1; 0 is reported at submit).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        match NonZeroUsize::new(concurrency) {
            Some(n) => self.0.concurrency = n,
            None => self
                .0
                .defects
                .push("concurrency must be at least 1, got 0".to_owned()),
        }
        self
    }
    /// Sets how many failed sequences the block tolerates: a count (`3`, `Tolerance::Count(3)`),
    /// a percentage (`Tolerance::Percent(10)`) or `Tolerance::Unlimited`.
    pub fn tolerated_failures(mut self, tolerance: impl Into<Tolerance>) -> Self {
        self.0.tolerated_failures = tolerance.into();
        self
    }
    /// Requires (with `true`) that every action of the block's sequences previews
    /// ([`Previews`](crate::Previews)): a plan holding one that does not is refused at submit
    /// and at preview. `require_previews: true` in `plan!` also checks it at compile time.
    pub fn require_previews(mut self, required: bool) -> Self {
        self.0.preview_required = required;
        self
    }
    /// Sets the pause before the block starts.
    pub fn entrance_delay(mut self, delay: Duration) -> Self {
        self.0.entrance_delay = delay;
        self
    }
    /// Sets the pause after the block succeeded.
    pub fn exit_delay(mut self, delay: Duration) -> Self {
        self.0.exit_delay = delay;
        self
    }
    /// Sets the checks of `slot`, replacing any already set.
    pub fn set_checks(&mut self, slot: CheckSlot, checks: ChecksBuilder) {
        *self.0.checks.slot_mut(slot) = Some(checks.0);
    }
    check_slot_setters! {
        /// Sets the bypass checks: when they all pass, the block is skipped as completed.
        bypass_checks => CheckSlot::Bypass;
        /// Sets the pre-checks: they must pass before any sequence starts.
        pre_checks => CheckSlot::Pre;
        /// Sets the continuous checks, run every `delay` while the sequences run.
        cont_checks => CheckSlot::Cont;
        /// Sets the post-checks: they must pass after the sequences.
        post_checks => CheckSlot::Post;
        /// Sets the deferred checks: they run at the end of the block, on success and on failure.
        deferred_checks => CheckSlot::Deferred;
    }
    /// Appends a sequence.
    pub fn sequence(mut self, sequence: SequenceBuilder) -> Self {
        self.0.sequences.push(sequence.0);
        self
    }
    /// Appends several sequences.
    pub fn sequences(mut self, sequences: impl IntoIterator<Item = SequenceBuilder>) -> Self {
        self.0.sequences.extend(sequences.into_iter().map(|s| s.0));
        self
    }
    /// The block being built.
    pub fn as_block(&self) -> &Block {
        &self.0
    }
}

/// Builds a deferred batch. See [`DeferredBatch::builder`].
#[derive(Clone, Debug, PartialEq)]
pub struct BatchBuilder(DeferredBatch);

impl DeferredBatch {
    /// A batch named `name` that runs `when`; it does not fail the plan unless
    /// [`fail_plan`](BatchBuilder::fail_plan) is set.
    pub fn builder(name: impl Into<String>, when: When) -> BatchBuilder {
        BatchBuilder(DeferredBatch::named(name.into(), when))
    }
}

impl BatchBuilder {
    /// Sets the description.
    pub fn descr(mut self, descr: impl Into<String>) -> Self {
        self.0.descr = descr.into();
        self
    }
    /// Sets the key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.key = Some(key.into());
        self
    }
    /// Whether a failure of this batch fails the plan.
    pub fn fail_plan(mut self, fail_plan: bool) -> Self {
        self.0.fail_plan = fail_plan;
        self
    }
    /// Appends an action.
    pub fn action(mut self, action: ActionSpec) -> Self {
        self.0.actions.push(action.0);
        self
    }
    /// Appends several actions.
    pub fn actions(mut self, actions: impl IntoIterator<Item = ActionSpec>) -> Self {
        self.0.actions.extend(actions.into_iter().map(|a| a.0));
        self
    }
    /// The batch being built.
    pub fn as_batch(&self) -> &DeferredBatch {
        &self.0
    }
}

/// Builds a plan. See [`Plan::builder`].
#[derive(Clone, Debug, PartialEq)]
pub struct PlanBuilder(Plan);

impl Plan {
    /// A plan named `name` with no blocks yet.
    pub fn builder(name: impl Into<String>) -> PlanBuilder {
        PlanBuilder(Plan::empty(name.into()))
    }
}

impl PlanBuilder {
    /// Sets the description.
    pub fn descr(mut self, descr: impl Into<String>) -> Self {
        self.0.descr = descr.into();
        self
    }
    /// Ties the plan to others (e.g. a retry to its original).
    pub fn group_id(mut self, group: Uuid) -> Self {
        self.0.group_id = Some(group);
        self
    }
    /// Requires (with `true`) that every action of the plan — sequences and deferred
    /// batches — previews ([`Previews`](crate::Previews)): the plan is refused at submit and at
    /// preview otherwise. `require_previews: true` in `plan!` also checks it at compile time.
    pub fn require_previews(mut self, required: bool) -> Self {
        self.0.preview_required = required;
        self
    }
    /// Attaches opaque bytes.
    pub fn meta(mut self, meta: impl Into<Vec<u8>>) -> Self {
        self.0.meta = meta.into();
        self
    }
    /// Sets the checks of `slot`, replacing any already set.
    pub fn set_checks(&mut self, slot: CheckSlot, checks: ChecksBuilder) {
        *self.0.checks.slot_mut(slot) = Some(checks.0);
    }
    check_slot_setters! {
        /// Sets the bypass checks: when they all pass, the plan completes without running anything else.
        bypass_checks => CheckSlot::Bypass;
        /// Sets the pre-checks: they must pass before the first block.
        pre_checks => CheckSlot::Pre;
        /// Sets the continuous checks, run every `delay` while the blocks run.
        cont_checks => CheckSlot::Cont;
        /// Sets the post-checks: they must pass after the last block.
        post_checks => CheckSlot::Post;
        /// Sets the deferred checks: they run last, on success and on failure.
        deferred_checks => CheckSlot::Deferred;
    }
    /// Appends a block.
    pub fn block(mut self, block: BlockBuilder) -> Self {
        self.0.blocks.push(block.0);
        self
    }
    /// Appends the blocks of a rolling rollout, one per batch (see [`Rolling`]).
    pub fn rolling(self, rolling: Rolling) -> Self {
        self.blocks(rolling)
    }
    /// Appends several blocks.
    pub fn blocks(mut self, blocks: impl IntoIterator<Item = BlockBuilder>) -> Self {
        self.0.blocks.extend(blocks.into_iter().map(|b| b.0));
        self
    }
    /// Appends a deferred batch.
    pub fn deferred(mut self, batch: BatchBuilder) -> Self {
        self.0.deferred.push(batch.0);
        self
    }
    /// Appends several deferred batches.
    pub fn deferred_batches(mut self, batches: impl IntoIterator<Item = BatchBuilder>) -> Self {
        self.0.deferred.extend(batches.into_iter().map(|b| b.0));
        self
    }
    /// The finished plan, ready to submit (it is validated then).
    pub fn build(self) -> Plan {
        self.0
    }
}

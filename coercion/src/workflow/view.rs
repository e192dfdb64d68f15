//! Views: an object's definition together with its run state, as a plan hands them out.
//!
//! A view is two references — the definition (which it dereferences to, so every accessor of
//! the definition works on it) and the run state at the same location — and is `Copy`. Its
//! containers list their children as views too, so
//! `plan.blocks()[0].sequences()[0].actions()[0].status()` reads as before. The serde form of
//! a plan (its JSON) is written through views: each object's definition fields, then its run
//! state.

use std::ops::Deref;

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Deserializer, Serialize};

use super::run::{ActionRun, BlockRun, CheckSetRun, ContainerRun, NO_ACTION, PlanRun};
use super::{
    Action, Attempt, Block, CheckSet, CheckSlot, Checks, DeferredBatch, Outcome, Plan, PlanId,
    RetryOf, SchemaVersion, Sequence, State, Status, Timestamp, TypedAccessError,
};
use crate::plugin::{Plugin, PluginError, PluginMeta};
use uuid::Uuid;

/// The definition's accessors that lend from it, lending for as long as the view's plan is
/// borrowed (through `Deref` they would lend only for as long as the view lives).
macro_rules! lend {
    ($view:ident: $($(#[$doc:meta])* $name:ident -> $ty:ty;)*) => {
        impl<'a> $view<'a> {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> $ty {
                    self.def.$name()
                }
            )*
        }
    };
}

/// The actions of a container as views: the definitions beside their run state.
fn actions<'a>(defs: &'a [Action], run: &'a ContainerRun) -> Vec<ActionView<'a>> {
    defs.iter()
        .enumerate()
        .map(|(i, def)| ActionView {
            def,
            run: run.actions.get(i).unwrap_or(&NO_ACTION),
        })
        .collect()
}

/// An action with its run state: its attempts and its state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActionView<'a> {
    pub(crate) def: &'a Action,
    pub(crate) run: &'a ActionRun,
}

impl Deref for ActionView<'_> {
    type Target = Action;
    fn deref(&self) -> &Action {
        self.def
    }
}

impl<'a> ActionView<'a> {
    /// The action as defined.
    pub fn definition(&self) -> &'a Action {
        self.def
    }
    /// The finished (and, while running, current) attempts, oldest first.
    pub fn attempts(&self) -> &'a [Attempt] {
        &self.run.attempts
    }
    /// The status and times.
    pub fn state(&self) -> State {
        self.run.state
    }
    /// The status.
    pub fn status(&self) -> Status {
        self.run.state.status
    }
    /// The error of the last attempt, if it failed.
    pub fn last_error(&self) -> Option<&'a PluginError> {
        self.run.attempts.last().and_then(Attempt::error)
    }

    /// The response of the last attempt, if it succeeded.
    fn last_response(&self) -> Result<&'a super::Json, TypedAccessError> {
        match self.run.attempts.last().and_then(|a| a.outcome.as_ref()) {
            Some(Outcome::Response(json)) => Ok(json),
            _ => Err(TypedAccessError::NoResponse),
        }
    }

    /// The response of the last successful attempt, decoded as plugin `P`'s response type.
    pub fn response<P: Plugin + PluginMeta>(&self) -> Result<P::Response, TypedAccessError> {
        self.def.check_plugin::<P>()?;
        self.last_response()?
            .decode()
            .map_err(|e| TypedAccessError::Decode(e.to_string()))
    }

    /// The response of the last successful attempt, decoded as plugin `P`'s response type, its
    /// secrets decrypted with `key` (or this process's own key) and nothing else.
    #[cfg(feature = "secrets")]
    #[cfg_attr(docsrs, doc(cfg(feature = "secrets")))]
    pub fn response_with_key<P: Plugin + PluginMeta>(
        &self,
        key: &crate::secret::SecretKey,
    ) -> Result<P::Response, TypedAccessError> {
        self.def.check_plugin::<P>()?;
        super::decode_with_key(self.last_response()?, key)
    }
}

/// Declares the view of a container of actions (a check section, a sequence, a batch).
macro_rules! container_view {
    ($(#[$doc:meta])* $view:ident, $def:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $view<'a> {
            pub(crate) def: &'a $def,
            pub(crate) run: &'a ContainerRun,
        }

        impl Deref for $view<'_> {
            type Target = $def;
            fn deref(&self) -> &$def {
                self.def
            }
        }

        impl<'a> $view<'a> {
            /// The object as defined.
            pub fn definition(&self) -> &'a $def {
                self.def
            }
            /// The actions, in the order they run, with their run state.
            pub fn actions(&self) -> Vec<ActionView<'a>> {
                actions(&self.def.actions, self.run)
            }
            /// The status and times.
            pub fn state(&self) -> State {
                self.run.state
            }
            /// The status.
            pub fn status(&self) -> Status {
                self.run.state.status
            }
        }
    };
}

container_view!(
    /// A check section with its run state.
    ChecksView,
    Checks
);
container_view!(
    /// A sequence with its run state.
    SequenceView,
    Sequence
);
container_view!(
    /// A deferred batch with its run state.
    BatchView,
    DeferredBatch
);

/// The five check sections of a plan or a block, with their run state.
#[derive(Clone, Copy, Debug)]
pub struct CheckSetView<'a> {
    pub(crate) def: &'a CheckSet,
    pub(crate) run: &'a CheckSetRun,
}

impl Deref for CheckSetView<'_> {
    type Target = CheckSet;
    fn deref(&self) -> &CheckSet {
        self.def
    }
}

impl<'a> CheckSetView<'a> {
    /// The checks in `slot`, if any.
    pub fn get(&self, slot: CheckSlot) -> Option<ChecksView<'a>> {
        let def = self.def.get(slot)?;
        Some(ChecksView {
            def,
            run: self.run.get(slot),
        })
    }

    /// Every present section with its slot, in walk order.
    pub fn iter(&self) -> impl Iterator<Item = (CheckSlot, ChecksView<'a>)> + use<'a> {
        let set = *self;
        CheckSlot::ALL
            .into_iter()
            .filter_map(move |s| set.get(s).map(|c| (s, c)))
    }
}

/// A block with its run state.
#[derive(Clone, Copy, Debug)]
pub struct BlockView<'a> {
    pub(crate) def: &'a Block,
    pub(crate) run: &'a BlockRun,
}

impl Deref for BlockView<'_> {
    type Target = Block;
    fn deref(&self) -> &Block {
        self.def
    }
}

impl<'a> BlockView<'a> {
    /// The block as defined.
    pub fn definition(&self) -> &'a Block {
        self.def
    }
    /// The block's checks, with their run state.
    pub fn checks(&self) -> CheckSetView<'a> {
        CheckSetView {
            def: &self.def.checks,
            run: &self.run.checks,
        }
    }
    /// The sequences, with their run state.
    pub fn sequences(&self) -> Vec<SequenceView<'a>> {
        self.def
            .sequences
            .iter()
            .enumerate()
            .map(|(s, def)| SequenceView {
                def,
                run: self.run.sequence(s),
            })
            .collect()
    }
    /// The status and times.
    pub fn state(&self) -> State {
        self.run.state
    }
    /// The status.
    pub fn status(&self) -> Status {
        self.run.state.status
    }
}

lend!(ActionView:
    /// The user's key, unique across the plan.
    key -> Option<&'a str>;
    /// The action's name.
    name -> &'a str;
    /// The action's description (may be empty).
    descr -> &'a str;
    /// The registered name of the plugin the action calls.
    plugin -> &'a str;
    /// The request, as JSON.
    request_json -> &'a super::Json;
);
lend!(ChecksView:
    /// The user's key.
    key -> Option<&'a str>;
);
lend!(SequenceView:
    /// The user's key.
    key -> Option<&'a str>;
    /// The sequence's name.
    name -> &'a str;
    /// The description (may be empty).
    descr -> &'a str;
);
lend!(BatchView:
    /// The user's key.
    key -> Option<&'a str>;
    /// The batch's name.
    name -> &'a str;
    /// The description (may be empty).
    descr -> &'a str;
);
lend!(BlockView:
    /// The user's key.
    key -> Option<&'a str>;
    /// The block's name.
    name -> &'a str;
    /// The description (may be empty).
    descr -> &'a str;
);

// The serde form: each object's definition fields, then its run state. Field names and the
// rules for leaving a field out are the definitions' (`#[serde]` attributes in `mod.rs`);
// `tests::the_json_form_is_the_definition_and_the_run_state` holds the two together.

fn is_empty_text(s: &str) -> bool {
    s.is_empty()
}

impl Serialize for ActionView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.def;
        let mut st = s.serialize_struct("Action", 11)?;
        st.serialize_field("id", &a.id)?;
        if let Some(key) = &a.key {
            st.serialize_field("key", key)?;
        }
        st.serialize_field("name", &a.name)?;
        if !is_empty_text(&a.descr) {
            st.serialize_field("descr", &a.descr)?;
        }
        st.serialize_field("plugin", &a.plugin)?;
        st.serialize_field("kind", &a.kind)?;
        st.serialize_field("request", &a.request)?;
        st.serialize_field("timeout", &humantime_serde::Serde::from(a.timeout))?;
        st.serialize_field("retries", &a.retries)?;
        if !self.run.attempts.is_empty() {
            st.serialize_field("attempts", &self.run.attempts)?;
        }
        st.serialize_field("state", &self.run.state)?;
        st.end()
    }
}

/// The actions of a container, serialized as views.
struct ActionsOut<'a>(&'a [Action], &'a ContainerRun);

impl Serialize for ActionsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(actions(self.0, self.1))
    }
}

impl Serialize for ChecksView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.def;
        let mut st = s.serialize_struct("Checks", 5)?;
        st.serialize_field("id", &c.id)?;
        if let Some(key) = &c.key {
            st.serialize_field("key", key)?;
        }
        st.serialize_field("delay", &humantime_serde::Serde::from(c.delay))?;
        st.serialize_field("actions", &ActionsOut(&c.actions, self.run))?;
        st.serialize_field("state", &self.run.state)?;
        st.end()
    }
}

impl Serialize for CheckSetView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("CheckSet", 5)?;
        for (slot, checks) in self.iter() {
            st.serialize_field(slot.field_name(), &checks)?;
        }
        st.end()
    }
}

impl Serialize for SequenceView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let q = self.def;
        let mut st = s.serialize_struct("Sequence", 6)?;
        st.serialize_field("id", &q.id)?;
        if let Some(key) = &q.key {
            st.serialize_field("key", key)?;
        }
        st.serialize_field("name", &q.name)?;
        if !q.descr.is_empty() {
            st.serialize_field("descr", &q.descr)?;
        }
        st.serialize_field("actions", &ActionsOut(&q.actions, self.run))?;
        st.serialize_field("state", &self.run.state)?;
        st.end()
    }
}

impl Serialize for BlockView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = self.def;
        let mut st = s.serialize_struct("Block", 12)?;
        st.serialize_field("id", &b.id)?;
        if let Some(key) = &b.key {
            st.serialize_field("key", key)?;
        }
        st.serialize_field("name", &b.name)?;
        if !b.descr.is_empty() {
            st.serialize_field("descr", &b.descr)?;
        }
        st.serialize_field(
            "entrance_delay",
            &humantime_serde::Serde::from(b.entrance_delay),
        )?;
        st.serialize_field("exit_delay", &humantime_serde::Serde::from(b.exit_delay))?;
        if !b.checks.is_empty() {
            st.serialize_field("checks", &self.checks())?;
        }
        st.serialize_field("sequences", &self.sequences())?;
        st.serialize_field("concurrency", &b.concurrency)?;
        st.serialize_field("tolerated_failures", &b.tolerated_failures)?;
        if b.preview_required {
            st.serialize_field("preview_required", &true)?;
        }
        st.serialize_field("state", &self.run.state)?;
        st.end()
    }
}

impl Serialize for BatchView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.def;
        let mut st = s.serialize_struct("DeferredBatch", 8)?;
        st.serialize_field("id", &d.id)?;
        if let Some(key) = &d.key {
            st.serialize_field("key", key)?;
        }
        st.serialize_field("name", &d.name)?;
        if !d.descr.is_empty() {
            st.serialize_field("descr", &d.descr)?;
        }
        st.serialize_field("when", &d.when)?;
        st.serialize_field("fail_plan", &d.fail_plan)?;
        st.serialize_field("actions", &ActionsOut(&d.actions, self.run))?;
        st.serialize_field("state", &self.run.state)?;
        st.end()
    }
}

impl Serialize for Plan {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let run = &self.run;
        let mut st = s.serialize_struct("Plan", 18)?;
        st.serialize_field("schema_version", &self.schema_version)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("name", &self.name)?;
        if !self.descr.is_empty() {
            st.serialize_field("descr", &self.descr)?;
        }
        if let Some(group) = &self.group_id {
            st.serialize_field("group_id", group)?;
        }
        if !self.meta.is_empty() {
            st.serialize_field("meta", &super::Base64(&self.meta))?;
        }
        if !self.checks.is_empty() {
            st.serialize_field("checks", &self.checks())?;
        }
        st.serialize_field("blocks", &self.blocks())?;
        if !self.deferred.is_empty() {
            st.serialize_field("deferred", &self.deferred())?;
        }
        if self.preview_required {
            st.serialize_field("preview_required", &true)?;
        }
        st.serialize_field("submit_time", &self.submit_time)?;
        st.serialize_field("state", &run.state)?;
        st.serialize_field("reason", &run.reason)?;
        st.serialize_field("heartbeat", &run.heartbeat)?;
        st.serialize_field("paused", &run.paused)?;
        if let Some(retry_of) = &self.retry_of {
            st.serialize_field("retry_of", retry_of)?;
        }
        if !run.owners.is_empty() {
            st.serialize_field("owners", &run.owners)?;
        }
        if !run.decisions.is_empty() {
            st.serialize_field("decisions", &run.decisions)?;
        }
        st.end()
    }
}

/// A plan's JSON as its definition: every field of the plan but its run state, which the
/// derived reader passes over (and [`PlanRun`] reads).
#[derive(Deserialize)]
#[serde(expecting = "struct Plan")] // what its errors name, as the derived reader's did
struct PlanDefinition {
    schema_version: SchemaVersion,
    #[serde(default)]
    id: PlanId,
    name: String,
    #[serde(default)]
    descr: String,
    #[serde(default)]
    group_id: Option<Uuid>,
    #[serde(default, with = "super::base64_bytes")]
    meta: Vec<u8>,
    #[serde(default)]
    checks: CheckSet,
    blocks: Vec<Block>,
    #[serde(default)]
    deferred: Vec<DeferredBatch>,
    #[serde(default)]
    preview_required: bool,
    #[serde(default)]
    submit_time: Option<Timestamp>,
    #[serde(default)]
    retry_of: Option<RetryOf>,
}

/// A plan reads its JSON twice: as its definition (`PlanDefinition`) and as its run state
/// (`PlanRun`), each passing over the other's fields. Plans are JSON only (their requests are
/// raw JSON), so the text is at hand.
impl<'de> Deserialize<'de> for Plan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Plan, D::Error> {
        let raw = <Box<serde_json::value::RawValue>>::deserialize(d)?;
        Plan::read(raw.get()).map_err(serde::de::Error::custom)
    }
}

impl Plan {
    /// The plan in `text`: its definition, then its run state.
    pub(crate) fn read(text: &str) -> Result<Plan, serde_json::Error> {
        let def: PlanDefinition = serde_json::from_str(text)?;
        let run: PlanRun = serde_json::from_str(text)?;
        Ok(Plan {
            schema_version: def.schema_version,
            id: def.id,
            name: def.name,
            descr: def.descr,
            group_id: def.group_id,
            meta: def.meta,
            checks: def.checks,
            blocks: def.blocks,
            deferred: def.deferred,
            preview_required: def.preview_required,
            submit_time: def.submit_time,
            retry_of: def.retry_of,
            run,
        })
    }
}

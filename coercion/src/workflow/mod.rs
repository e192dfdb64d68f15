//! The object model: a [`Plan`] of [`Block`]s of [`Sequence`]s of [`Action`]s, with [`Checks`]
//! and [`DeferredBatch`]es.
//!
//! Objects are built with the typed builder ([`crate::builder`]) or the `plan!{}` macro, which
//! only accept plugins of the right kind, and are read through accessor methods. Their state is
//! owned by the engine: nothing here lets user code change an object's status or attempts.
//!
//! The objects are definitions: what is to run. What happened — each object's state, each
//! action's attempts, the plan's own state, reason, heartbeat, pause, owners and decisions — is
//! the plan's run state, a tree of the same shape keyed by location (`run.rs`). A plan hands its
//! objects out as views ([`BlockView`], [`SequenceView`], [`ActionView`], …), which dereference
//! to the definition and add the run state:
//!
//! ```
//! # use coercion::prelude::*;
//! # use coercion::testing::{FakeAction, FakeReq};
//! let plan = Plan::builder("p")
//!     .block(Block::builder("b").sequence(
//!         Sequence::builder("s").action(ActionSpec::new::<FakeAction>("a", FakeReq::ok())),
//!     ))
//!     .build();
//! let action = plan.blocks()[0].sequences()[0].actions()[0];
//! assert_eq!(action.name(), "a"); // the definition
//! assert_eq!(action.status(), Status::NotStarted); // the run state
//! assert!(action.attempts().is_empty());
//! ```
//!
//! The run state is private to this module: the rest of the crate reads it through views and
//! changes it by location only (`Plan::state_at_mut`, `Plan::attempts_mut`, `Plan::run_mut`,
//! `Plan::walk_mut`, `Plan::reset_run_state`).

mod clone;
mod path;
mod run;
mod validate;
mod view;
mod walk;

pub use path::{Loc, ObjectPath, Parent, PathSegment};
pub use validate::{MAX_DURATION, Problem, validate_plan};
pub use view::{ActionView, BatchView, BlockView, CheckSetView, ChecksView, SequenceView};
pub use walk::{ObjectRef, Walk};

use std::fmt;
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::plugin::{Plugin, PluginError, PluginKind, PluginMeta};

/// A point in time, in UTC.
pub type Timestamp = DateTime<Utc>;

/// The version of the JSON form of a [`Plan`]. Bumped whenever that form changes incompatibly;
/// reading a plan written with another version fails with a clear error instead of guessing.
pub const SCHEMA_VERSION: u32 = 1;

/// The default per-attempt timeout of an action.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default pause between two runs of continuous checks (as the Go README documents).
pub const DEFAULT_CONT_DELAY: Duration = Duration::from_secs(30);

/// The identifier of a submitted plan (a UUIDv7, assigned by `submit`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlanId(pub Uuid);

impl PlanId {
    /// The nil id every plan carries before it is submitted.
    pub const NIL: PlanId = PlanId(Uuid::nil());

    /// A fresh time-ordered id.
    pub fn new_v7() -> PlanId {
        PlanId(Uuid::now_v7())
    }

    /// Whether this is the nil id of a plan that was never submitted.
    pub fn is_nil(&self) -> bool {
        self.0.is_nil()
    }
}

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlanId({})", self.0)
    }
}

impl FromStr for PlanId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(PlanId)
    }
}

impl From<Uuid> for PlanId {
    fn from(id: Uuid) -> Self {
        PlanId(id)
    }
}

/// Where an object is in its life.
///
/// Objects that never ran — because of a bypass, a failure or a stop — stay `NotStarted`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub enum Status {
    /// Not run (yet, or ever).
    #[default]
    NotStarted,
    /// Running now (or, in storage, when the process stopped).
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with a failure.
    Failed,
    /// Stopped by an operator before it finished.
    Stopped,
}

impl Status {
    /// Every status, in the order of their life.
    pub const ALL: [Status; 5] = [
        Status::NotStarted,
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::Stopped,
    ];

    /// `Completed`, `Failed` or `Stopped`.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Stopped)
    }

    /// The name of the status, as written in JSON and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotStarted => "NotStarted",
            Status::Running => "Running",
            Status::Completed => "Completed",
            Status::Failed => "Failed",
            Status::Stopped => "Stopped",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "NotStarted" | "not_started" | "notstarted" => Status::NotStarted,
            "Running" | "running" => Status::Running,
            "Completed" | "completed" => Status::Completed,
            "Failed" | "failed" => Status::Failed,
            "Stopped" | "stopped" => Status::Stopped,
            other => {
                return Err(format!(
                    "unknown status `{other}` (expected NotStarted, Running, Completed, Failed or Stopped)"
                ));
            }
        })
    }
}

/// The status of an object with the times it started and ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    /// Where the object is in its life.
    pub status: Status,
    /// When it started running; `None` if it never did.
    #[serde(default)]
    pub start: Option<Timestamp>,
    /// When it reached its terminal status; `None` until then.
    #[serde(default)]
    pub end: Option<Timestamp>,
}

impl State {
    /// How long the object ran: `end - start`, or `None` if it has not both started and ended.
    pub fn duration(&self) -> Option<Duration> {
        match (self.start, self.end) {
            (Some(s), Some(e)) => (e - s).to_std().ok(),
            _ => None,
        }
    }
}

/// Why a plan failed: the **first** phase that failed, in time order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reason {
    /// The plan did not fail (or has not finished).
    #[default]
    None,
    /// The plan's pre-checks failed.
    PreCheck,
    /// The plan's continuous checks failed.
    ContCheck,
    /// A block failed.
    Block,
    /// The plan's post-checks failed.
    PostCheck,
    /// A deferred batch marked `fail_plan` failed.
    DeferredAction,
    /// The plan's deferred checks failed.
    DeferredCheck,
    /// An operator stopped the plan.
    Stopped,
    /// The process running the plan died and the plan was too stale to resume.
    ExceedRecovery,
    /// The engine itself failed while running the plan (a bug, such as a panic in the engine or
    /// a store): the run ended cleanly instead of leaving the plan `Running`; the failure report
    /// says where.
    Internal,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::None => "None",
            Reason::PreCheck => "PreCheck",
            Reason::ContCheck => "ContCheck",
            Reason::Block => "Block",
            Reason::PostCheck => "PostCheck",
            Reason::DeferredAction => "DeferredAction",
            Reason::DeferredCheck => "DeferredCheck",
            Reason::Stopped => "Stopped",
            Reason::ExceedRecovery => "ExceedRecovery",
            Reason::Internal => "Internal",
        })
    }
}

impl FromStr for Reason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "None" => Reason::None,
            "PreCheck" => Reason::PreCheck,
            "ContCheck" => Reason::ContCheck,
            "Block" => Reason::Block,
            "PostCheck" => Reason::PostCheck,
            "DeferredAction" => Reason::DeferredAction,
            "DeferredCheck" => Reason::DeferredCheck,
            "Stopped" => Reason::Stopped,
            "ExceedRecovery" => Reason::ExceedRecovery,
            "Internal" => Reason::Internal,
            other => {
                return Err(format!(
                    "unknown reason `{other}` (expected None, PreCheck, ContCheck, Block, PostCheck, DeferredAction, DeferredCheck, Stopped, ExceedRecovery or Internal)"
                ));
            }
        })
    }
}

/// How many failed sequences a block tolerates before it fails.
///
/// A block fails when its failed sequences are **strictly more** than the tolerance allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tolerance {
    /// At most this many failed sequences (`0`: the first failure fails the block).
    Count(u32),
    /// At most this percentage of the block's sequences (Ansible's `max_fail_percentage`):
    /// the block fails when `failed / total * 100 > percent`. Must be at most 100.
    Percent(u8),
    /// Never fail the block because of failed sequences.
    Unlimited,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance::Count(0)
    }
}

impl From<u32> for Tolerance {
    fn from(n: u32) -> Self {
        Tolerance::Count(n)
    }
}

impl Tolerance {
    /// Whether `failed` failed sequences out of `total` exceed this tolerance.
    pub fn is_exceeded(self, failed: usize, total: usize) -> bool {
        match self {
            Tolerance::Count(n) => failed > n as usize,
            Tolerance::Percent(p) => failed * 100 > total * p as usize,
            Tolerance::Unlimited => false,
        }
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tolerance::Count(n) => write!(f, "{n}"),
            Tolerance::Percent(p) => write!(f, "{p}%"),
            Tolerance::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// When a deferred batch runs, depending on how the plan went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum When {
    /// Only when nothing before it failed.
    OnSuccess,
    /// Only when something before it failed or the plan was stopped.
    OnFailure,
    /// In both cases.
    Always,
}

impl When {
    /// Whether a batch with this `when` runs after a run that `failed` (or not).
    pub fn selects(self, failed: bool) -> bool {
        match self {
            When::OnSuccess => !failed,
            When::OnFailure => failed,
            When::Always => true,
        }
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The five check slots of a plan or a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CheckSlot {
    /// Checks whose success skips the plan or block entirely.
    Bypass,
    /// Checks that must pass before any work starts.
    Pre,
    /// Checks that run every `delay` while the work runs.
    Cont,
    /// Checks that must pass after the work.
    Post,
    /// Checks that run last, on success and on failure.
    Deferred,
}

impl CheckSlot {
    /// Every slot, in the order they are walked.
    pub const ALL: [CheckSlot; 5] = [
        CheckSlot::Bypass,
        CheckSlot::Pre,
        CheckSlot::Cont,
        CheckSlot::Post,
        CheckSlot::Deferred,
    ];

    /// The name of the slot as written in `plan!` (`pre_checks`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckSlot::Bypass => "bypass_checks",
            CheckSlot::Pre => "pre_checks",
            CheckSlot::Cont => "cont_checks",
            CheckSlot::Post => "post_checks",
            CheckSlot::Deferred => "deferred_checks",
        }
    }

    /// The slot's field in a check set's JSON (`pre`, …).
    pub(crate) fn field_name(self) -> &'static str {
        match self {
            CheckSlot::Bypass => "bypass",
            CheckSlot::Pre => "pre",
            CheckSlot::Cont => "cont",
            CheckSlot::Post => "post",
            CheckSlot::Deferred => "deferred",
        }
    }
}

impl fmt::Display for CheckSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JSON document kept as text: requests and responses at rest. Cloning shares the text.
#[derive(Clone)]
pub struct Json(Arc<RawValue>);

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(|b| Json(Arc::from(b)))
    }
}

impl Json {
    /// Serializes `value`.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Json, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(|b| Json(Arc::from(b)))
    }

    /// Decodes the document into `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// Parses JSON text (validating it).
    pub fn from_text(text: &str) -> Result<Json, serde_json::Error> {
        RawValue::from_string(text.to_owned()).map(|b| Json(Arc::from(b)))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    pub(crate) fn null() -> Json {
        static NULL: std::sync::LazyLock<Arc<RawValue>> = std::sync::LazyLock::new(|| {
            Arc::from(RawValue::from_string("null".to_owned()).expect("`null` is valid JSON"))
        });
        Json(NULL.clone())
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

/// One call of a plugin by an action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the attempt started.
    pub start: Timestamp,
    /// When it ended; `None` while it runs.
    #[serde(default)]
    pub end: Option<Timestamp>,
    /// What it gave: the plugin's response, or its error.
    #[serde(default)]
    pub outcome: Option<Outcome>,
}

impl Attempt {
    /// Whether the attempt finished with a response.
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Some(Outcome::Response(_)))
    }

    /// The error of a failed attempt.
    pub fn error(&self) -> Option<&PluginError> {
        match &self.outcome {
            Some(Outcome::Error(e)) => Some(&**e),
            _ => None,
        }
    }

    /// Whether the attempt was cut short by the end of the process running it (a crash, a kill,
    /// a lost lease): it started, and its end is when a resuming process found it. Such
    /// attempts keep their place in the history but do not count against `retries + 1`.
    pub fn was_interrupted(&self) -> bool {
        self.error()
            .is_some_and(|e| e.code == crate::plugin::codes::INTERRUPTED)
    }
}

/// How a finished attempt ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The plugin's response, as JSON.
    Response(Json),
    /// The plugin's error (a timeout, a panic and a cancellation are errors too).
    Error(Box<PluginError>),
}

/// One call of a plugin, the leaf of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    #[serde(default)]
    pub(crate) id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<Arc<str>>,
    pub(crate) name: Arc<str>,
    #[serde(default = "empty_text", skip_serializing_if = "text_is_empty")]
    pub(crate) descr: Arc<str>,
    pub(crate) plugin: Arc<str>,
    pub(crate) kind: PluginKind,
    pub(crate) request: Json,
    #[serde(with = "humantime_serde")]
    pub(crate) timeout: Duration,
    #[serde(default)]
    pub(crate) retries: u32,
    /// Problems found while building (e.g. a request that does not serialize), reported at submit.
    #[serde(skip)]
    pub(crate) defects: Defects,
}

// Definitions as the builder starts them: no id yet, and the defaults.
impl Action {
    pub(crate) fn defined(
        name: Arc<str>,
        plugin: Arc<str>,
        kind: PluginKind,
        request: Json,
        defects: Defects,
    ) -> Action {
        Action {
            id: Uuid::nil(),
            key: None,
            name,
            descr: empty_text(),
            plugin,
            kind,
            request,
            timeout: DEFAULT_TIMEOUT,
            retries: 0,
            defects,
        }
    }
}

impl Checks {
    pub(crate) fn empty() -> Checks {
        Checks {
            id: Uuid::nil(),
            key: None,
            delay: DEFAULT_CONT_DELAY,
            actions: Vec::new(),
        }
    }
}

impl Sequence {
    pub(crate) fn named(name: String) -> Sequence {
        Sequence {
            id: Uuid::nil(),
            key: None,
            name,
            descr: String::new(),
            actions: Vec::new(),
        }
    }
}

impl Block {
    pub(crate) fn named(name: String) -> Block {
        Block {
            id: Uuid::nil(),
            key: None,
            name,
            descr: String::new(),
            entrance_delay: Duration::ZERO,
            exit_delay: Duration::ZERO,
            checks: CheckSet::default(),
            sequences: Vec::new(),
            concurrency: NonZeroUsize::MIN,
            tolerated_failures: Tolerance::Count(0),
            preview_required: false,
            defects: Vec::new(),
        }
    }
}

impl DeferredBatch {
    pub(crate) fn named(name: String, when: When) -> DeferredBatch {
        DeferredBatch {
            id: Uuid::nil(),
            key: None,
            name,
            descr: String::new(),
            when,
            fail_plan: false,
            actions: Vec::new(),
        }
    }
}

/// Problems found while building an object, reported at submit. One pointer wide, since
/// almost every object has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(clippy::box_collection)] // one pointer instead of a Vec's three, in every action
pub(crate) struct Defects(Option<Box<Vec<String>>>);

impl Defects {
    pub(crate) fn push(&mut self, problem: String) {
        self.0.get_or_insert_with(Default::default).push(problem);
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl<'a> IntoIterator for &'a Defects {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;
    fn into_iter(self) -> Self::IntoIter {
        match &self.0 {
            Some(v) => v.iter(),
            None => [].iter(),
        }
    }
}

/// The shared empty text, so an action without a description costs no allocation.
pub(crate) fn empty_text() -> Arc<str> {
    static EMPTY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    EMPTY.clone()
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn text_is_empty(s: &Arc<str>) -> bool {
    s.is_empty()
}

impl Action {
    /// The object's id (nil before submit).
    pub fn id(&self) -> Uuid {
        self.id
    }
    /// The user's key, unique across the plan.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
    /// The action's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The action's description (may be empty).
    pub fn descr(&self) -> &str {
        &self.descr
    }
    /// The registered name of the plugin the action calls.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }
    /// Whether the plugin is a check or an action plugin.
    pub fn kind(&self) -> PluginKind {
        self.kind
    }
    /// The request, as JSON.
    pub fn request_json(&self) -> &Json {
        &self.request
    }
    /// The timeout of each attempt.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// How many extra attempts after the first one may run.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The request decoded as plugin `P`'s request type. Its secrets decrypt with this
    /// process's key or the key of one of its workstreams that is alive; with another key, see
    /// `request_with_key`.
    pub fn request<P: Plugin + PluginMeta>(&self) -> Result<P::Request, TypedAccessError> {
        self.check_plugin::<P>()?;
        self.request
            .decode()
            .map_err(|e| TypedAccessError::Decode(e.to_string()))
    }

    /// The request decoded as plugin `P`'s request type, its secrets decrypted with `key` (or
    /// this process's own key) and nothing else: typed access to a plan whose workstream is
    /// gone, or that another process sealed with `key`.
    #[cfg(feature = "secrets")]
    #[cfg_attr(docsrs, doc(cfg(feature = "secrets")))]
    pub fn request_with_key<P: Plugin + PluginMeta>(
        &self,
        key: &crate::secret::SecretKey,
    ) -> Result<P::Request, TypedAccessError> {
        self.check_plugin::<P>()?;
        decode_with_key(&self.request, key)
    }

    fn check_plugin<P: PluginMeta>(&self) -> Result<(), TypedAccessError> {
        if &*self.plugin == P::NAME {
            Ok(())
        } else {
            Err(TypedAccessError::WrongPlugin {
                asked: P::NAME,
                actual: self.plugin.to_string(),
            })
        }
    }
}

/// `json` decoded as `T`, its secrets opened with `key` (or the process key) alone.
#[cfg(feature = "secrets")]
fn decode_with_key<T: serde::de::DeserializeOwned>(
    json: &Json,
    key: &crate::secret::SecretKey,
) -> Result<T, TypedAccessError> {
    let ring = crate::secret::KeyRing::explicit(key);
    crate::secret::decode_request(json, Some(&ring))
        .map_err(|e| TypedAccessError::Decode(e.to_string()))
}

/// Why a typed read of an action's request or response failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypedAccessError {
    /// The action calls another plugin.
    #[error("the action calls plugin \"{actual}\", not \"{asked}\"")]
    WrongPlugin {
        /// The plugin asked for.
        asked: &'static str,
        /// The plugin the action calls.
        actual: String,
    },
    /// The action has no successful attempt (yet).
    #[error("the action has no response: its last attempt did not succeed")]
    NoResponse,
    /// The stored JSON does not decode into the plugin's type.
    #[error("the stored JSON does not decode into the plugin's type: {0}")]
    Decode(String),
}

/// A set of check actions that run concurrently; a check section of a plan or a block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    #[serde(default)]
    pub(crate) id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    #[serde(with = "humantime_serde", default = "default_cont_delay")]
    pub(crate) delay: Duration,
    pub(crate) actions: Vec<Action>,
}

fn default_cont_delay() -> Duration {
    DEFAULT_CONT_DELAY
}

impl Checks {
    /// The object's id (nil before submit).
    pub fn id(&self) -> Uuid {
        self.id
    }
    /// The user's key.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
    /// For continuous checks: the pause between two runs.
    pub fn delay(&self) -> Duration {
        self.delay
    }
    /// The check actions (run concurrently).
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }
}

/// The five check sections of a plan or a block.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bypass: Option<Checks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pre: Option<Checks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cont: Option<Checks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) post: Option<Checks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deferred: Option<Checks>,
}

impl CheckSet {
    /// Whether no section is present.
    pub fn is_empty(&self) -> bool {
        CheckSlot::ALL.iter().all(|s| self.get(*s).is_none())
    }

    /// The checks in `slot`, if any.
    pub fn get(&self, slot: CheckSlot) -> Option<&Checks> {
        match slot {
            CheckSlot::Bypass => self.bypass.as_ref(),
            CheckSlot::Pre => self.pre.as_ref(),
            CheckSlot::Cont => self.cont.as_ref(),
            CheckSlot::Post => self.post.as_ref(),
            CheckSlot::Deferred => self.deferred.as_ref(),
        }
    }

    pub(crate) fn get_mut(&mut self, slot: CheckSlot) -> Option<&mut Checks> {
        match slot {
            CheckSlot::Bypass => self.bypass.as_mut(),
            CheckSlot::Pre => self.pre.as_mut(),
            CheckSlot::Cont => self.cont.as_mut(),
            CheckSlot::Post => self.post.as_mut(),
            CheckSlot::Deferred => self.deferred.as_mut(),
        }
    }

    pub(crate) fn slot_mut(&mut self, slot: CheckSlot) -> &mut Option<Checks> {
        match slot {
            CheckSlot::Bypass => &mut self.bypass,
            CheckSlot::Pre => &mut self.pre,
            CheckSlot::Cont => &mut self.cont,
            CheckSlot::Post => &mut self.post,
            CheckSlot::Deferred => &mut self.deferred,
        }
    }

    /// Every present section with its slot, in walk order.
    pub fn iter(&self) -> impl Iterator<Item = (CheckSlot, &Checks)> {
        CheckSlot::ALL
            .into_iter()
            .filter_map(|s| self.get(s).map(|c| (s, c)))
    }
}

/// Actions run one after another; the unit of concurrency inside a block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sequence {
    #[serde(default)]
    pub(crate) id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) descr: String,
    pub(crate) actions: Vec<Action>,
}

impl Sequence {
    /// The object's id (nil before submit).
    pub fn id(&self) -> Uuid {
        self.id
    }
    /// The user's key.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
    /// The sequence's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The description (may be empty).
    pub fn descr(&self) -> &str {
        &self.descr
    }
    /// The actions, in the order they run.
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }
}

/// Sequences run concurrently up to a limit, with a failure budget; blocks run one at a time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    #[serde(default)]
    pub(crate) id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) descr: String,
    #[serde(with = "humantime_serde", default)]
    pub(crate) entrance_delay: Duration,
    #[serde(with = "humantime_serde", default)]
    pub(crate) exit_delay: Duration,
    #[serde(default, skip_serializing_if = "CheckSet::is_empty")]
    pub(crate) checks: CheckSet,
    pub(crate) sequences: Vec<Sequence>,
    pub(crate) concurrency: NonZeroUsize,
    #[serde(default)]
    pub(crate) tolerated_failures: Tolerance,
    /// Every action of its sequences must preview (`require_previews`), checked at submit.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) preview_required: bool,
    /// Problems found while building (e.g. `concurrency(0)`), reported at submit.
    #[serde(skip)]
    pub(crate) defects: Vec<String>,
}

impl Block {
    /// The object's id (nil before submit).
    pub fn id(&self) -> Uuid {
        self.id
    }
    /// The user's key.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
    /// The block's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The description (may be empty).
    pub fn descr(&self) -> &str {
        &self.descr
    }
    /// The pause before the block starts.
    pub fn entrance_delay(&self) -> Duration {
        self.entrance_delay
    }
    /// The pause after the block succeeded, before the next one starts.
    pub fn exit_delay(&self) -> Duration {
        self.exit_delay
    }
    /// The block's checks.
    pub fn checks(&self) -> &CheckSet {
        &self.checks
    }
    /// The sequences.
    pub fn sequences(&self) -> &[Sequence] {
        &self.sequences
    }
    /// How many sequences may run at the same time.
    pub fn concurrency(&self) -> NonZeroUsize {
        self.concurrency
    }
    /// How many failed sequences the block tolerates.
    pub fn tolerated_failures(&self) -> Tolerance {
        self.tolerated_failures
    }
    /// Whether every action of the block's sequences must preview (`require_previews`).
    pub fn preview_required(&self) -> bool {
        self.preview_required
    }
}

/// Actions that run after the blocks, selected by how the plan went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeferredBatch {
    #[serde(default)]
    pub(crate) id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) descr: String,
    pub(crate) when: When,
    #[serde(default)]
    pub(crate) fail_plan: bool,
    pub(crate) actions: Vec<Action>,
}

impl DeferredBatch {
    /// The object's id (nil before submit).
    pub fn id(&self) -> Uuid {
        self.id
    }
    /// The user's key.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
    /// The batch's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The description (may be empty).
    pub fn descr(&self) -> &str {
        &self.descr
    }
    /// When the batch runs.
    pub fn when(&self) -> When {
        self.when
    }
    /// Whether the batch failing fails the plan (Go's `FailElement`).
    pub fn fail_plan(&self) -> bool {
        self.fail_plan
    }
    /// The actions, in the order they run.
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }
}

/// A whole workflow: blocks run one after another, with checks and deferred work.
///
/// A plan is its definition (the fields below but the last) and its run state (`run`: every
/// object's state and attempts by location, and the plan's own). Its JSON holds both, each
/// object's run state beside its definition (`view.rs` writes and reads it).
#[derive(Clone, Debug)]
pub struct Plan {
    pub(crate) schema_version: SchemaVersion,
    pub(crate) id: PlanId,
    pub(crate) name: String,
    pub(crate) descr: String,
    pub(crate) group_id: Option<Uuid>,
    pub(crate) meta: Vec<u8>,
    pub(crate) checks: CheckSet,
    pub(crate) blocks: Vec<Block>,
    pub(crate) deferred: Vec<DeferredBatch>,
    /// Every action of the plan (sequences and deferred batches) must preview
    /// (`require_previews`), checked at submit.
    pub(crate) preview_required: bool,
    pub(crate) submit_time: Option<Timestamp>,
    /// The plan this one retries, when it was made by [`Workstream::retry`](crate::Workstream::retry).
    pub(crate) retry_of: Option<RetryOf>,
    /// The run state: the plan's own (state, reason, the heartbeat persisted while it runs so
    /// recovery can tell a stale plan from a live one, pause, every process that ran it, the
    /// decisions taken at its gates) and its objects' by location.
    pub(in crate::workflow) run: run::PlanRun,
}

/// Plans are equal when their definitions are and every object's run state is: where nothing
/// was written reads as not started, however the run state was filled.
impl PartialEq for Plan {
    fn eq(&self, other: &Plan) -> bool {
        let own = |p: &Plan| {
            (
                p.run.state,
                p.run.reason,
                p.run.heartbeat,
                p.run.paused,
                p.run.owners.clone(),
                p.run.decisions.clone(),
            )
        };
        self.schema_version == other.schema_version
            && self.id == other.id
            && self.name == other.name
            && self.descr == other.descr
            && self.group_id == other.group_id
            && self.meta == other.meta
            && self.checks == other.checks
            && self.blocks == other.blocks
            && self.deferred == other.deferred
            && self.preview_required == other.preview_required
            && self.submit_time == other.submit_time
            && self.retry_of == other.retry_of
            && own(self) == own(other)
            && self.walk().zip(other.walk()).all(|((la, a), (lb, b))| {
                la == lb
                    && a.state() == b.state()
                    && match (a, b) {
                        (ObjectRef::Action(a), ObjectRef::Action(b)) => {
                            a.attempts() == b.attempts()
                        }
                        _ => true,
                    }
            })
    }
}

/// [`base64_bytes`] as a value to serialize.
pub(crate) struct Base64<'a>(pub(crate) &'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        base64_bytes::serialize(self.0, s)
    }
}

/// A person approved or rejected a gate ([`coercion/gate`](crate::plugins::Gate)): who, when,
/// why. Kept in the plan ([`Plan::decisions`]); the gate's own attempt shows it too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Decision {
    /// Where the gate is (a check of the plan or of a block).
    pub gate: Loc,
    /// Approved (`true`) or rejected.
    pub approved: bool,
    /// Who decided, as the transport that carried the decision proved it: `alice (uid 1000)`
    /// on the control socket; what a program passes to [`Workstream::decide`](crate::Workstream::decide).
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// What the person said, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl Decision {
    /// A decision at `gate`, now.
    pub fn new(
        gate: Loc,
        approved: bool,
        by: impl Into<String>,
        comment: Option<String>,
    ) -> Decision {
        Decision {
            gate,
            approved,
            by: by.into(),
            at: chrono::Utc::now(),
            comment,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} by {} at {}",
            if self.approved {
                "approved"
            } else {
                "rejected"
            },
            self.by,
            self.at.format("%Y-%m-%d %H:%M:%S UTC")
        )?;
        if let Some(c) = &self.comment {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

/// A gate a plan waits at now ([`Plan::waiting_gates`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitingGate {
    /// Where the gate is.
    pub loc: Loc,
    /// The gate's name (its check's name).
    pub name: String,
    /// What the person is asked (the gate's message).
    pub message: String,
    /// Who may decide (empty: anyone who reaches the plan's process).
    pub approvers: Vec<String>,
    /// Since when it waits (its attempt's start).
    pub since: Timestamp,
}

impl fmt::Display for WaitingGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "waiting for approval: {}, since {}",
            self.name,
            self.since.format("%H:%M:%S UTC")
        )
    }
}

/// A process that ran a plan: the one that started it, or one that resumed it after the process
/// running it had left (a crash, a kill, a lost lease) — when, which process, and at which lease
/// epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Owner {
    /// When the process took the plan (started or resumed it).
    pub at: Timestamp,
    /// The process: `pid 4242 on build-7`.
    pub by: String,
    /// The epoch of the lease it ran the plan under, on a store shared by several processes
    /// (PostgreSQL: every grant of a plan's lease increments it, and every write is fenced by it);
    /// `None` on a store of one process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Whether it resumed the plan after another process (or an earlier run of itself) stopped,
    /// rather than started it. Records of earlier versions are all resumptions.
    #[serde(default = "resumed_by_default")]
    pub resumed: bool,
}

/// Earlier versions kept only resumptions.
fn resumed_by_default() -> bool {
    true
}

impl Owner {
    /// This process, taking a plan now.
    pub(crate) fn now(resumed: bool, epoch: Option<u64>) -> Owner {
        Owner {
            at: chrono::Utc::now(),
            by: this_process(),
            epoch,
            resumed,
        }
    }
}

/// `pid 4242 on build-7`: this process, as a resumption names it.
fn this_process() -> String {
    let mut name = [0u8; 256];
    // SAFETY: the buffer is valid for `name.len()` bytes; gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
    let host = if rc == 0 {
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        String::from_utf8_lossy(&name[..len]).into_owned()
    } else {
        "an unknown host".to_owned()
    };
    format!("pid {} on {host}", std::process::id())
}

/// What a plan made by [`Workstream::retry`](crate::Workstream::retry) retries: the plan whose
/// failed work it runs again, and who asked for it. The other direction (the retry of a plan)
/// is found in the store: [`retried_by`](crate::storage::retried_by).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RetryOf {
    /// The plan retried (in the same group as this one).
    pub plan: PlanId,
    /// Who asked, as the transport that carried the request proved it: on the control socket,
    /// the Unix user of the process that connected (`alice (uid 1000)`), followed by what that
    /// process said it acts for (`via the web UI …`); in a program calling
    /// [`Workstream::retry`](crate::Workstream::retry) itself, what the program gave.
    pub requested_by: String,
}

impl Plan {
    /// The plan's id (nil before submit).
    pub fn id(&self) -> PlanId {
        self.id
    }
    /// The plan's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The description (may be empty; Go requires one, coercion does not).
    pub fn descr(&self) -> &str {
        &self.descr
    }
    /// Ties a retry to its original plan.
    pub fn group_id(&self) -> Option<Uuid> {
        self.group_id
    }
    /// Opaque bytes of the user's.
    pub fn meta(&self) -> &[u8] {
        &self.meta
    }
    /// The plan this one retries and who asked, when [`Workstream::retry`](crate::Workstream::retry)
    /// made it.
    pub fn retry_of(&self) -> Option<&RetryOf> {
        self.retry_of.as_ref()
    }
    /// Every process that ran the plan, oldest first: the one that started it, then each that
    /// resumed it ([`Owner::resumed`]); empty for a plan not started. An attempt ran under the
    /// last owner that took the plan before the attempt started.
    pub fn owners(&self) -> &[Owner] {
        &self.run.owners
    }
    /// The process that runs the plan now, or ran it last: the last of [`owners`](Self::owners).
    pub fn owner(&self) -> Option<&Owner> {
        self.run.owners.last()
    }
    /// The owner under which an attempt that started at `start` ran: the last owner that took
    /// the plan at or before `start` (each owner's clock stamps both, so this holds across
    /// machines as long as their clocks agree to within the lease).
    pub fn owner_at(&self, start: Timestamp) -> Option<&Owner> {
        self.run.owners.iter().rev().find(|o| o.at <= start)
    }
    /// The owners that resumed the plan after the process running it stopped (a crash, a kill, a
    /// lost lease), oldest first; empty for a plan that ran in one go.
    pub fn resumptions(&self) -> Vec<&Owner> {
        self.run.owners.iter().filter(|o| o.resumed).collect()
    }
    /// The decisions people took at the plan's gates, oldest first.
    pub fn decisions(&self) -> &[Decision] {
        &self.run.decisions
    }
    /// The last decision taken at the gate at `loc`, if any.
    pub fn decision_at(&self, loc: Loc) -> Option<&Decision> {
        self.run.decisions.iter().rev().find(|d| d.gate == loc)
    }
    /// The gates the plan waits at now: gate checks whose attempt runs.
    pub fn waiting_gates(&self) -> Vec<WaitingGate> {
        self.walk()
            .filter_map(|(loc, obj)| match obj {
                ObjectRef::Action(a)
                    if a.plugin() == crate::plugins::GATE && a.status() == Status::Running =>
                {
                    let attempt = a.attempts().last().filter(|t| t.end.is_none())?;
                    let req: crate::plugins::GateReq =
                        a.request_json().decode().unwrap_or_default();
                    Some(WaitingGate {
                        loc,
                        name: a.name().to_owned(),
                        message: req.message,
                        approvers: req.approvers,
                        since: attempt.start,
                    })
                }
                _ => None,
            })
            .collect()
    }
    /// The plan's checks, with their run state.
    pub fn checks(&self) -> CheckSetView<'_> {
        CheckSetView {
            def: &self.checks,
            run: &self.run.checks,
        }
    }
    /// The blocks, in the order they run, with their run state.
    pub fn blocks(&self) -> Vec<BlockView<'_>> {
        self.blocks
            .iter()
            .enumerate()
            .map(|(b, def)| BlockView {
                def,
                run: self.run.block(b),
            })
            .collect()
    }
    /// Whether every action of the plan must preview (`require_previews`).
    pub fn preview_required(&self) -> bool {
        self.preview_required
    }
    /// The deferred batches, in the order they run, with their run state.
    pub fn deferred(&self) -> Vec<BatchView<'_>> {
        self.deferred
            .iter()
            .enumerate()
            .map(|(i, def)| BatchView {
                def,
                run: self.run.batch(i),
            })
            .collect()
    }
    /// When the plan was submitted.
    pub fn submit_time(&self) -> Option<Timestamp> {
        self.submit_time
    }
    /// The status and times.
    pub fn state(&self) -> State {
        self.run.state
    }
    /// The status.
    pub fn status(&self) -> Status {
        self.run.state.status
    }
    /// Why the plan failed (the first failing phase).
    pub fn reason(&self) -> Reason {
        self.run.reason
    }
    /// The last heartbeat of the process that runs (or ran) the plan.
    pub fn heartbeat(&self) -> Option<Timestamp> {
        self.run.heartbeat
    }
    /// Whether an operator paused the plan.
    pub fn is_paused(&self) -> bool {
        self.run.paused
    }

    /// Every object of the plan with its path, in a fixed order (Go's `walk`).
    pub fn walk(&self) -> Walk<'_> {
        Walk::new(self)
    }

    /// The number of actions in the plan (checks and deferred batches included).
    pub fn action_count(&self) -> usize {
        self.walk()
            .filter(|(_, o)| matches!(o, ObjectRef::Action(_)))
            .count()
    }

    /// The plan as pretty-printed JSON (the export format).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan always serializes")
    }

    /// Reads a plan from its JSON form. Fails with a clear message on malformed JSON, a missing
    /// field, or a schema version this build does not understand. The plan is not validated
    /// against any registry here: `submit` does that.
    pub fn from_json(text: &str) -> Result<Plan, ImportError> {
        Plan::read(text).map_err(|e| ImportError(e.to_string()))
    }

    pub(crate) fn empty(name: String) -> Plan {
        Plan {
            schema_version: SchemaVersion,
            id: PlanId::NIL,
            name,
            descr: String::new(),
            group_id: None,
            meta: Vec::new(),
            checks: CheckSet::default(),
            blocks: Vec::new(),
            deferred: Vec::new(),
            preview_required: false,
            submit_time: None,
            retry_of: None,
            run: run::PlanRun::default(),
        }
    }
}

/// A plan's JSON could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid plan JSON: {0}")]
pub struct ImportError(pub String);

/// The schema version of a serialized plan; deserializing any other version fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SchemaVersion;

impl Serialize for SchemaVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(SCHEMA_VERSION)
    }
}

impl<'de> Deserialize<'de> for SchemaVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if v == SCHEMA_VERSION {
            Ok(SchemaVersion)
        } else {
            Err(serde::de::Error::custom(format_args!(
                "schema_version {v} is not supported by this build of coercion (it reads version {SCHEMA_VERSION})"
            )))
        }
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text)
            .map_err(|e| serde::de::Error::custom(format_args!("`meta` is not valid base64: {e}")))
    }
}

#[cfg(test)]
mod tests;

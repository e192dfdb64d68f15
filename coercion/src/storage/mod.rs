//! Storage: one async [`Store`] trait, implemented by [`MemoryStore`] (tests and ephemeral runs)
//! and by the durable stores.
//!
//! The engine writes a plan once ([`Store::create`]) and then only [`Change`]s — small deltas
//! such as "this action is Running" or "attempt 2 finished with this error" — in the order they
//! happened. A store applies each batch of changes atomically and completes the returned future
//! only once the batch is durable, which lets a durable store commit many concurrent batches in
//! one transaction (group commit). Reading a plan back gives the tree with every change applied.
//! A store knows nothing of retries, plugins or phases.
//!
//! The two SQL stores (`sqlite/`, `postgres/`) share what is the same in both in one private
//! module, `sql`: the column forms of times, states and attempts, a plan's objects encoded for
//! `create`, a [`Change`] encoded for a writer (`Op`), the plan's row decoded, the checks made of
//! what is read back, migrations and the writers' requests, failures and counters. Each backend
//! keeps its SQL, schema, error mapping, writer loop and (SQLite) journal.
//!
//! A new [`Change`] variant touches three places: (1) this module — the variant, its
//! [`Change::apply_to`] (the memory store and every reader's journal replay go through it) and
//! [`check_changes`] (the rules of a batch, checked once above the stores); (2) `sql::Op::of`,
//! which lowers it to the row forms the writers apply (the plan row's columns, an object's
//! state, an attempt, a reset), so that no writer and no journal matches on a `Change`; (3) only
//! if it stores something no column holds yet: the column, in each backend's schema (a
//! migration), its update statement and its reader.

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod contract;
#[cfg(feature = "testing")]
mod faulty;
mod memory;
mod page;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "testing")]
mod recording;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use faulty::{FaultKind, FaultRule, FaultTiming, FaultyStore};
pub use memory::MemoryStore;
pub use page::{PageSpec, PlanPage};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use recording::{RecordedWrite, RecordingStore};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteOptions, SqliteStats, SqliteStore, Synchronous};

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::plugin::BoxFuture;
use crate::workflow::{Attempt, Loc, Plan, PlanId, Reason, State, Status, Timestamp};

/// One persisted state change of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The state of the object at `loc` (whose id is `id`) is now `state`.
    State {
        /// Where the object is.
        loc: Loc,
        /// Its id.
        id: Uuid,
        /// Its new state.
        state: State,
    },
    /// Attempt number `index` (0-based) of the action at `loc` is now `attempt`. The engine
    /// writes only the next attempt (`index` equals the number of attempts so far) or its last
    /// one again (as it ends): [`check_changes`] refuses anything else, and a continuous check
    /// that runs again starts over with [`Change::Reset`]. Applied to a plan that has more
    /// attempts (a batch applied again after a write whose answer was lost), the later attempts
    /// are dropped, so that applying a batch twice leaves what applying it once does; an index
    /// that skips one is refused.
    Attempt {
        /// Where the action is.
        loc: Loc,
        /// The action's id.
        id: Uuid,
        /// The attempt's index.
        index: u32,
        /// The attempt (without an end while it runs).
        attempt: Attempt,
    },
    /// The action at `loc` starts over: status `NotStarted`, no attempts (a continuous check
    /// that runs again).
    Reset {
        /// Where the action is.
        loc: Loc,
        /// The action's id.
        id: Uuid,
    },
    /// The plan's failure reason.
    Reason(Reason),
    /// The running process is alive at this time.
    Heartbeat(Timestamp),
    /// An operator paused (`true`) or resumed (`false`) the plan.
    Paused(bool),
    /// A process took the plan: started it, or resumed it after the process running it stopped.
    Owner(crate::workflow::Owner),
    /// A person approved or rejected a gate of the plan.
    Decided(crate::workflow::Decision),
}

impl Change {
    /// Applies the change to an in-memory plan. Fails if `loc` does not exist in the plan.
    pub fn apply_to(&self, plan: &mut Plan) -> Result<(), StoreError> {
        match self {
            Change::State { loc, state, .. } => {
                let id = plan.id;
                *plan.state_at_mut(*loc).ok_or_else(|| bad_loc(id, loc))? = *state;
            }
            Change::Attempt {
                loc,
                index,
                attempt,
                ..
            } => {
                let id = plan.id;
                let attempts = plan.attempts_mut(*loc).ok_or_else(|| bad_loc(id, loc))?;
                let i = *index as usize;
                check_attempt(id, loc, i, attempts.len(), false)?;
                attempts.truncate(i);
                attempts.reserve_exact(1);
                attempts.push(attempt.clone());
            }
            Change::Reset { loc, .. } => {
                let id = plan.id;
                plan.attempts_mut(*loc)
                    .ok_or_else(|| bad_loc(id, loc))?
                    .clear();
                *plan.state_at_mut(*loc).ok_or_else(|| bad_loc(id, loc))? = State::default();
            }
            Change::Reason(r) => *plan.run_mut().reason = *r,
            Change::Heartbeat(t) => *plan.run_mut().heartbeat = Some(*t),
            Change::Paused(p) => *plan.run_mut().paused = *p,
            Change::Owner(o) => plan.run_mut().owners.push(o.clone()),
            Change::Decided(d) => {
                let id = plan.id;
                plan.action(d.gate).ok_or_else(|| bad_loc(id, &d.gate))?;
                plan.run_mut().decisions.push(d.clone());
            }
        }
        Ok(())
    }
}

/// Checks that attempt `index` of the action at `loc`, which has `len` attempts, skips none,
/// and with `strict` that it is the next one or the last one.
fn check_attempt(
    id: PlanId,
    loc: &Loc,
    index: usize,
    len: usize,
    strict: bool,
) -> Result<(), StoreError> {
    if index > len {
        return Err(StoreError::permanent(format!(
            "plan {id}: attempt {index} of the action at {loc:?} skips attempt {len}"
        )));
    }
    if strict && index + 1 < len {
        return Err(StoreError::permanent(format!(
            "plan {id}: attempt {index} of the action at {loc:?} is not its last ({len} are \
             stored): only the last attempt or the next one can be written"
        )));
    }
    Ok(())
}

/// Fails on the first change of `changes` that breaks the rules of a batch, applied to `plan`
/// after the ones before it, without changing `plan`: every object is in the plan, and each
/// attempt is its action's next one or its last one written again.
///
/// This is where the rules are checked once, above the stores: the engine checks each batch
/// against its own tree before a store sees it. A SQL store persists what it is given: it still
/// refuses an object that is not in the plan, but it does not count attempts. (The memory
/// store checks that a batch applies, as [`Change::apply_to`] would, so that a batch applied
/// again after a lost answer is taken as the SQL stores take it.)
pub fn check_changes(plan: &Plan, changes: &[Change]) -> Result<(), StoreError> {
    check_batch(plan, changes, true)
}

/// Fails as [`Change::apply_to`] would on the first change of `changes` that cannot apply to
/// `plan` after the ones before it (with `strict`, also on an attempt that is neither the
/// next nor the last), without changing `plan`.
pub(crate) fn check_batch(plan: &Plan, changes: &[Change], strict: bool) -> Result<(), StoreError> {
    // Attempt counts of the actions that earlier changes of the batch touched.
    let mut attempts: Vec<(Loc, usize)> = Vec::new();
    for c in changes {
        match c {
            Change::State { loc, .. } => {
                if !plan.defines(*loc) {
                    return Err(bad_loc(plan.id, loc));
                }
            }
            Change::Attempt { loc, index, .. } => {
                let slot = match attempts.iter().position(|(l, _)| l == loc) {
                    Some(slot) => slot,
                    None => {
                        let done = plan
                            .attempts_at(*loc)
                            .ok_or_else(|| bad_loc(plan.id, loc))?;
                        attempts.push((*loc, done.len()));
                        attempts.len() - 1
                    }
                };
                let (i, len) = (*index as usize, attempts[slot].1);
                check_attempt(plan.id, loc, i, len, strict)?;
                attempts[slot].1 = i + 1;
            }
            Change::Reset { loc, .. } => {
                plan.action(*loc).ok_or_else(|| bad_loc(plan.id, loc))?;
                match attempts.iter_mut().find(|(l, _)| l == loc) {
                    Some(entry) => entry.1 = 0,
                    None => attempts.push((*loc, 0)),
                }
            }
            Change::Decided(d) => {
                plan.action(d.gate)
                    .ok_or_else(|| bad_loc(plan.id, &d.gate))?;
            }
            Change::Reason(_) | Change::Heartbeat(_) | Change::Paused(_) | Change::Owner(_) => {}
        }
    }
    Ok(())
}

fn bad_loc(id: PlanId, loc: &Loc) -> StoreError {
    StoreError::permanent(format!("plan {id} has no object at {loc:?}"))
}

/// What caused a [`StoreError`]: the driver's or the operating system's error, with its own
/// chain of sources.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store. Its `Display` says what the store was doing; the driver's or the
/// operating system's error that caused it is its [`source()`](std::error::Error::source).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// No plan with this id.
    NotFound(PlanId),
    /// A plan with this id already exists.
    AlreadyExists(PlanId),
    /// The plan is running and cannot be deleted.
    Running(PlanId),
    /// Another process holds the store (or the plan) for running plans.
    Locked(String),
    /// A failure that may go away (busy database, lost connection); the engine retries it.
    Transient {
        /// What the store was doing.
        message: String,
        /// What caused it.
        source: Option<Cause>,
    },
    /// A failure that will not go away by retrying (disk full, corrupt data).
    Permanent {
        /// What the store was doing.
        message: String,
        /// What caused it.
        source: Option<Cause>,
    },
}

impl StoreError {
    /// A [`StoreError::Permanent`] without a cause (see [`StoreError::caused_by`]).
    pub fn permanent(message: impl Into<String>) -> StoreError {
        StoreError::Permanent {
            message: message.into(),
            source: None,
        }
    }

    /// A [`StoreError::Transient`] without a cause (see [`StoreError::caused_by`]).
    pub fn transient(message: impl Into<String>) -> StoreError {
        StoreError::Transient {
            message: message.into(),
            source: None,
        }
    }

    /// Sets the cause of a `Transient` or `Permanent` error (other kinds have none and are
    /// returned as they are).
    pub fn caused_by(
        mut self,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        if let StoreError::Transient { source, .. } | StoreError::Permanent { source, .. } =
            &mut self
        {
            *source = Some(Arc::new(cause));
        }
        self
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }

    /// What the store was doing and every cause, `: `-separated, without the kind of error.
    #[cfg(feature = "cli")]
    pub(crate) fn detail(&self) -> String {
        let mut out = match self {
            StoreError::Transient { message, .. }
            | StoreError::Permanent { message, .. }
            | StoreError::Locked(message) => message.clone(),
            other => other.to_string(),
        };
        if let Some(cause) = std::error::Error::source(self) {
            out.push_str(&format!(": {}", Chain(cause)));
        }
        out
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(id) => write!(f, "plan {id} not found"),
            StoreError::AlreadyExists(id) => write!(f, "plan {id} already exists"),
            StoreError::Running(id) => write!(
                f,
                "plan {id} is running; stop it (or wait for it) before deleting it"
            ),
            StoreError::Locked(message) => f.write_str(message),
            StoreError::Transient { message, .. } => {
                write!(f, "transient storage error: {message}")
            }
            StoreError::Permanent { message, .. } => write!(f, "storage error: {message}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Transient { source, .. } | StoreError::Permanent { source, .. } => {
                source.as_deref().map(|e| e as _)
            }
            _ => None,
        }
    }
}

/// Two errors are equal when they are of the same kind and say the same, causes included.
impl PartialEq for StoreError {
    fn eq(&self, other: &StoreError) -> bool {
        fn cause(s: &Option<Cause>) -> Option<String> {
            s.as_ref().map(|e| e.to_string())
        }
        match (self, other) {
            (StoreError::NotFound(a), StoreError::NotFound(b))
            | (StoreError::AlreadyExists(a), StoreError::AlreadyExists(b))
            | (StoreError::Running(a), StoreError::Running(b)) => a == b,
            (StoreError::Locked(a), StoreError::Locked(b)) => a == b,
            (
                StoreError::Transient {
                    message: a,
                    source: sa,
                },
                StoreError::Transient {
                    message: b,
                    source: sb,
                },
            )
            | (
                StoreError::Permanent {
                    message: a,
                    source: sa,
                },
                StoreError::Permanent {
                    message: b,
                    source: sb,
                },
            ) => a == b && cause(sa) == cause(sb),
            _ => false,
        }
    }
}

impl Eq for StoreError {}

/// An error and its chain of sources, `: `-separated, for messages that must say everything
/// in one line (logs, the CLI). A source whose words are already written, or that its own
/// source says again in full (a driver's error wrapping the C library's), is left out: the
/// line keeps every word once.
pub(crate) struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut links = vec![self.0.to_string()];
        let mut cur = self.0.source();
        while let Some(e) = cur {
            links.push(e.to_string());
            cur = e.source();
        }
        let mut line = links[0].clone();
        for (i, link) in links.iter().enumerate().skip(1) {
            let said_next = links
                .get(i + 1)
                .is_some_and(|next| next.contains(link.as_str()));
            if !link.is_empty() && !said_next && !line.contains(link.as_str()) {
                line.push_str(": ");
                line.push_str(link);
            }
        }
        f.write_str(&line)
    }
}

/// Which plans [`Store::list`] returns: every set field must match. Newest submitted first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    /// Only plans with one of these statuses (any status if empty).
    #[serde(default)]
    pub statuses: Vec<Status>,
    /// Only plans of this group.
    #[serde(default)]
    pub group_id: Option<Uuid>,
    /// Only plans whose name contains this text (case-sensitive).
    #[serde(default)]
    pub name_contains: Option<String>,
    /// Only plans submitted at or after this time.
    #[serde(default)]
    pub submitted_after: Option<Timestamp>,
    /// Only plans submitted before this time.
    #[serde(default)]
    pub submitted_before: Option<Timestamp>,
    /// Skip this many matching plans (paging).
    #[serde(default)]
    pub offset: usize,
    /// Return at most this many plans (`None`: all).
    #[serde(default)]
    pub limit: Option<usize>,
}

impl ListFilter {
    /// Plans with status `status`.
    pub fn status(status: Status) -> ListFilter {
        ListFilter {
            statuses: vec![status],
            ..ListFilter::default()
        }
    }

    /// Whether `summary` passes the filter (ignores paging).
    pub fn matches(&self, s: &PlanSummary) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&s.state.status))
            && self.group_id.is_none_or(|g| s.group_id == Some(g))
            && self
                .name_contains
                .as_deref()
                .is_none_or(|n| s.name.contains(n))
            && self
                .submitted_after
                .is_none_or(|t| s.submit_time.is_some_and(|st| st >= t))
            && self
                .submitted_before
                .is_none_or(|t| s.submit_time.is_some_and(|st| st < t))
    }
}

/// One line of a plan listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// The plan's id.
    pub id: PlanId,
    /// Its group.
    pub group_id: Option<Uuid>,
    /// Its name.
    pub name: String,
    /// Its description.
    pub descr: String,
    /// When it was submitted.
    pub submit_time: Option<Timestamp>,
    /// Its status and times.
    pub state: State,
    /// Why it failed.
    pub reason: Reason,
    /// How many times a process resumed it after the one running it stopped
    /// ([`Plan::resumptions`]).
    #[serde(default)]
    pub resumptions: u32,
    /// The process that runs it now, or ran it last ([`Plan::owner`]); `None` before it started.
    #[serde(default)]
    pub owner: Option<crate::workflow::Owner>,
}

impl PlanSummary {
    /// The summary of `plan`.
    pub fn of(plan: &Plan) -> PlanSummary {
        PlanSummary {
            id: plan.id,
            group_id: plan.group_id,
            name: plan.name.clone(),
            descr: plan.descr.clone(),
            submit_time: plan.submit_time,
            state: plan.state(),
            reason: plan.reason(),
            resumptions: u32::try_from(plan.resumptions().len()).unwrap_or(u32::MAX),
            owner: plan.owner().cloned(),
        }
    }

    /// `resumed twice`, as [`Plan::resumed_label`] says it; `None` for a plan never resumed.
    pub fn resumed_label(&self) -> Option<String> {
        crate::report::resumed_label(self.resumptions as usize)
    }
}

impl fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:<10} {}",
            self.id,
            self.state.status.as_str(),
            self.name
        )
    }
}

/// Durable (or in-memory) storage of plans. Implementations must apply each batch of changes
/// atomically and in the order the futures were created for one plan, complete a write's future
/// only once it is durable, retry nothing themselves beyond what their driver does, and report
/// failures as [`StoreError::Transient`] (worth retrying) or [`StoreError::Permanent`].
pub trait Store: Send + Sync + 'static {
    /// Stores a newly submitted plan. Fails with `AlreadyExists` if the id is taken.
    fn create<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Applies `changes` to plan `id`, atomically.
    ///
    /// The caller has checked the batch against the plan with [`check_changes`], as the engine
    /// does against its own tree: a store refuses an object that is not in the plan, but the
    /// SQL stores do not count attempts, so a batch that skips one is stored and the plan then
    /// reads back as corrupt.
    fn apply<'a>(
        &'a self,
        id: PlanId,
        changes: &'a [Change],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Reads a whole plan with every change applied.
    fn read(&self, id: PlanId) -> BoxFuture<'_, Result<Plan, StoreError>>;

    /// Reads the page `spec` of a plan ([`PlanPage`]): every object but the actions of the
    /// sequences off the page, and the counts of the whole plan. The default reads the whole
    /// plan and leaves those actions out; a store that can read less overrides it.
    fn read_page(&self, id: PlanId, spec: PageSpec) -> BoxFuture<'_, Result<PlanPage, StoreError>> {
        Box::pin(async move { Ok(PlanPage::of(self.read(id).await?, spec)) })
    }

    /// Lists plans matching `filter`, newest submitted first.
    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> BoxFuture<'a, Result<Vec<PlanSummary>, StoreError>>;

    /// How many plans match `filter` (its `offset` and `limit` apply as in [`list`]).
    /// The default lists them; stores that can count without reading override it.
    ///
    /// [`list`]: Self::list
    fn count<'a>(&'a self, filter: &'a ListFilter) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let plans = self.list(filter).await?;
            Ok(u64::try_from(plans.len()).unwrap_or(u64::MAX))
        })
    }

    /// Deletes a plan and everything in it. Refused with `Running` while it runs.
    fn delete(&self, id: PlanId) -> BoxFuture<'_, Result<(), StoreError>>;

    /// A short description for messages (`memory`, `sqlite:/path/to/file.db`).
    fn describe(&self) -> String;

    /// Notices of plans whose stored state changed, written by any process, for faces that
    /// follow plans (the web UI's live pages) instead of reading them again and again. `None`
    /// (the default): the store cannot tell, and readers poll. The PostgreSQL store sends one
    /// notice per committed group of writes (`LISTEN`/`NOTIFY`). A receiver that lags behind
    /// gets [`broadcast::error::RecvError::Lagged`](tokio::sync::broadcast::error::RecvError):
    /// take it as [`Changed::Any`].
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Changed>> {
        None
    }

    /// The store's side for several processes, if it is shared by them (the PostgreSQL store):
    /// leases and claims. `None` (the default) for a store one process owns, which owns every
    /// plan in it already. A store that wraps another one answers for it.
    fn shared(&self) -> Option<&dyn SharedStore> {
        None
    }
}

/// A notice of [`Store::changes`]: which plans changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Changed {
    /// These plans changed.
    Plans(Arc<[PlanId]>),
    /// Any plan may have changed: too many to name, or notices may have been lost (the store
    /// lost its connection and listens again).
    Any,
    /// A control request for this plan was sent or answered ([`SharedStore::send_control`],
    /// [`SharedStore::answer_control`]).
    Control(PlanId),
}

impl Changed {
    /// Whether plan `id` may have changed.
    pub fn concerns(&self, id: PlanId) -> bool {
        match self {
            Changed::Plans(ids) => ids.contains(&id),
            Changed::Any => true,
            Changed::Control(plan) => *plan == id,
        }
    }
}

/// A control request a shared store keeps until the process holding its plan answers it
/// ([`SharedStore::send_control`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredControl {
    /// The store's number for it (increasing: requests are answered in this order).
    pub id: i64,
    /// The plan it is for.
    pub plan: PlanId,
    /// The request, in the control protocol's JSON ([`crate::control`]).
    pub request: String,
    /// Who asked, as the store knows them (PostgreSQL: the client's role).
    pub requested_by: String,
    /// The plan ended and no process answered for seconds: nobody will carry the request out.
    pub plan_ended: bool,
}

/// What a store shared by several processes adds to [`Store`]: each plan is run by the process
/// holding its lease, which its heartbeat renews; a plan whose lease expired is taken over by
/// another process (see [`crate::worker`]). Reached through [`Store::shared`].
pub trait SharedStore: Store {
    /// Takes ownership of plan `id` for this process before it runs or resumes: grants a lease
    /// (fails with [`StoreError::Locked`] while another live process holds it) and fences every
    /// later write of this process by it. A live lease this process holds already (a claim just
    /// granted it) is renewed under the same epoch: one takeover is one grant.
    fn acquire(&self, id: PlanId) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Gives up ownership of plan `id` after its run ended.
    fn release(&self, id: PlanId) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The epoch of the lease this process holds on plan `id` ([`Owner::epoch`](crate::workflow::Owner::epoch)),
    /// `None` when it holds none.
    fn lease_epoch(&self, id: PlanId) -> Option<u64>;

    /// How long a lease lasts without a heartbeat renewing it (another process may take the
    /// plan over after it).
    fn lease(&self) -> std::time::Duration;

    /// Whether some live process holds plan `id`'s lease now, as the database sees it (any
    /// process, this one included): what the faces ask before saying "runs on". `false` for a
    /// plan no process holds (its owner stopped and no worker took it over yet). Stores that
    /// cannot tell answer `None`.
    fn lease_held(&self, id: PlanId) -> BoxFuture<'_, Result<Option<bool>, StoreError>> {
        let _ = id;
        Box::pin(async { Ok(None) })
    }

    /// Up to `limit` plans this process should run now — plans whose owner's lease expired,
    /// and plans a client asked to start — each already acquired for this process.
    fn claim_runnable(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PlanId>, StoreError>>;

    /// [`claim_runnable`](Self::claim_runnable), taking only plans that call no plugin outside
    /// `plugins` (the names of the claiming workstream's registry), so a worker never claims a
    /// plan it cannot run. Stores that do not know a plan's plugins claim as `claim_runnable`.
    fn claim_runnable_for<'a>(
        &'a self,
        limit: usize,
        plugins: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<PlanId>, StoreError>> {
        let _ = plugins;
        self.claim_runnable(limit)
    }

    /// Marks a submitted plan to be started by whichever worker claims it (for a client that
    /// executes nothing).
    fn request_start(&self, id: PlanId) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Keeps `request` (the control protocol's JSON) for plan `id` until the process holding
    /// the plan answers it — now, or the process that takes the plan over — and tells of it
    /// ([`Changed::Control`]). Refused for a plan that does not exist or has ended. Returns the
    /// request's number.
    fn send_control<'a>(
        &'a self,
        id: PlanId,
        request: &'a str,
    ) -> BoxFuture<'a, Result<i64, StoreError>>;

    /// The unanswered requests for `plans`, and those of plans that ended a few seconds ago
    /// or more ([`StoredControl::plan_ended`]), oldest first.
    fn pending_controls<'a>(
        &'a self,
        plans: &'a [PlanId],
    ) -> BoxFuture<'a, Result<Vec<StoredControl>, StoreError>>;

    /// Records `answer` (the control protocol's JSON) to `request`, as the holder of its plan's
    /// lease — or for a plan that ended: fails with [`StoreError::Locked`] when this process
    /// holds no lease on a plan that runs (the next holder answers), and tells of it
    /// ([`Changed::Control`]).
    fn answer_control<'a>(
        &'a self,
        request: &'a StoredControl,
        answer: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The answer to request number `request`, once given (`None` before).
    fn control_answer(&self, request: i64) -> BoxFuture<'_, Result<Option<String>, StoreError>>;
}

/// Deletes, with everything in them, the plans that match `filter` (its statuses, group, name
/// and submit times; paging is ignored) and ended — `Completed`, `Failed` or `Stopped` — before
/// `ended_before`; with `dry_run`, deletes nothing. Returns the summaries of the plans deleted
/// (or that would be), newest submitted first. Plans not started or running are never deleted,
/// nor an ended plan without an end time (none is stored so by coercion); a plan deleted
/// meanwhile by someone else is skipped. Each plan is deleted on its own, so an error leaves the
/// plans before it deleted ([`PruneError::deleted`] names them) and those after it untouched.
///
/// Retention for a store that grows without end: `coercion prune --older-than 30d` calls this.
pub async fn prune(
    store: &dyn Store,
    filter: &ListFilter,
    ended_before: Timestamp,
    dry_run: bool,
) -> Result<Vec<PlanSummary>, PruneError> {
    const PAGE: usize = 500;
    let ended = [Status::Completed, Status::Failed, Status::Stopped];
    let statuses = if filter.statuses.is_empty() {
        ended.to_vec()
    } else {
        filter
            .statuses
            .iter()
            .copied()
            .filter(|s| ended.contains(s))
            .collect()
    };
    if statuses.is_empty() {
        return Ok(Vec::new());
    }
    // Not narrowed by submit time: a plan stored without one (`Store::create` of a plan never
    // submitted through a workstream) is pruned too.
    let mut page = ListFilter {
        statuses,
        offset: 0,
        limit: Some(PAGE),
        ..filter.clone()
    };
    let mut pruned = Vec::new();
    loop {
        let plans = match store.list(&page).await {
            Ok(plans) => plans,
            Err(error) => {
                return Err(PruneError {
                    deleted: pruned,
                    error,
                });
            }
        };
        let done = plans.len() < PAGE;
        for summary in plans {
            if summary.state.end.is_none_or(|end| end >= ended_before) {
                // Kept: the next page starts after it.
                page.offset += 1;
                continue;
            }
            if dry_run {
                page.offset += 1;
            } else {
                match store.delete(summary.id).await {
                    Ok(()) | Err(StoreError::NotFound(_)) => {}
                    Err(error) => {
                        return Err(PruneError {
                            deleted: pruned,
                            error,
                        });
                    }
                }
            }
            pruned.push(summary);
        }
        if done {
            return Ok(pruned);
        }
    }
}

/// A [`prune`] that stopped: the store's error, and the plans it had deleted before (they stay
/// deleted).
#[derive(Debug)]
#[non_exhaustive]
pub struct PruneError {
    /// The plans deleted before the error, newest submitted first.
    pub deleted: Vec<PlanSummary>,
    /// What failed.
    pub error: StoreError,
}

impl fmt::Display for PruneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pruning stopped after deleting {} plan(s)",
            self.deleted.len()
        )
    }
}

impl std::error::Error for PruneError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The plan that retries `plan` ([`Workstream::retry`](crate::Workstream::retry)), if there is
/// one: the plan of the same group, submitted after it, whose [`Plan::retry_of`] names it.
/// Reads the group's later plans, a handful in practice.
pub async fn retried_by(store: &dyn Store, plan: &Plan) -> Result<Option<PlanId>, StoreError> {
    let filter = ListFilter {
        group_id: plan.clone_group(),
        submitted_after: plan.submit_time,
        ..ListFilter::default()
    };
    // Oldest first: a retry that was refused never exists, so the first match is the one.
    let mut later = store.list(&filter).await?;
    later.reverse();
    // A page without sequences: what says which plan a plan retries, without its actions.
    let head = PageSpec {
        from: 0,
        len: 0,
        attention: 0,
    };
    for summary in later.iter().filter(|s| s.id != plan.id) {
        let candidate = match store.read_page(summary.id, head).await {
            Ok(p) => p.plan().clone(),
            // Deleted since the listing.
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        if candidate
            .retry_of
            .as_ref()
            .is_some_and(|r| r.plan == plan.id)
        {
            return Ok(Some(candidate.id));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::contract::{at, sample_plan};
    use crate::workflow::ObjectRef;

    /// A chain keeps every word once: a driver's error that its C library's error repeats in
    /// full is left out, as is a source the message already quotes; the rest stays in order.
    #[test]
    fn a_chain_says_every_word_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl fmt::Display for E {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = |text, source: Option<E>| E(text, source.map(Box::new));
        // As a SQLite file of random bytes was reported.
        let sqlite = e(
            "sqlite:/x.db: cannot open: the file is not a SQLite database",
            Some(e(
                "file is not a database",
                Some(e("Error code 26: file is not a database", None)),
            )),
        );
        assert_eq!(
            Chain(&sqlite).to_string(),
            "sqlite:/x.db: cannot open: the file is not a SQLite database: Error code 26: file is not a database"
        );
        let quoted = e(
            "reading x: permission denied",
            Some(e("permission denied", None)),
        );
        assert_eq!(Chain(&quoted).to_string(), "reading x: permission denied");
        let distinct = e("a", Some(e("b", Some(e("c", None)))));
        assert_eq!(Chain(&distinct).to_string(), "a: b: c");
    }

    fn attempt(index: u32, loc: Loc, id: Uuid) -> Change {
        Change::Attempt {
            loc,
            id,
            index,
            attempt: Attempt {
                start: at(i64::from(index), 0),
                end: None,
                outcome: None,
            },
        }
    }

    /// An attempt index is the next one or the last one, counted through the batch; the check
    /// refuses anything else, names it, and changes nothing. `apply_to` refuses only a skipped
    /// attempt: applying a batch again (after a write whose answer was lost) drops what it
    /// re-sets, so twice gives what once does.
    #[test]
    fn a_batch_may_write_only_the_last_attempt_or_the_next() {
        let mut plan = sample_plan("attempt rules");
        let (loc, id) = plan
            .walk()
            .find_map(|(l, o)| matches!(o, ObjectRef::Action(_)).then_some((l, o.id())))
            .unwrap();
        let ok = [
            attempt(0, loc, id),
            attempt(0, loc, id),
            attempt(1, loc, id),
            attempt(2, loc, id),
            attempt(2, loc, id),
        ];
        check_changes(&plan, &ok).unwrap();
        for c in &ok {
            c.apply_to(&mut plan).unwrap();
        }
        let before = plan.clone();
        // (batch, which, why, whether apply_to takes it)
        let refused = [
            (
                vec![attempt(4, loc, id)],
                "attempt 4",
                "skips attempt 3",
                false,
            ),
            (
                vec![attempt(3, loc, id), attempt(5, loc, id)],
                "attempt 5",
                "skips attempt 4",
                false,
            ),
            (
                vec![attempt(1, loc, id)],
                "attempt 1",
                "is not its last",
                true,
            ),
            (
                vec![Change::Reset { loc, id }, attempt(1, loc, id)],
                "attempt 1",
                "skips attempt 0",
                false,
            ),
        ];
        for (batch, which, why, applies) in refused {
            let e = check_changes(&plan, &batch).unwrap_err().to_string();
            assert!(e.contains(which) && e.contains(why), "{batch:?}: {e}");
            let mut scratch = plan.clone();
            let applied: Result<Vec<()>, _> =
                batch.iter().map(|c| c.apply_to(&mut scratch)).collect();
            assert_eq!(applied.is_ok(), applies, "apply_to of {batch:?}");
        }
        assert_eq!(plan, before);
        // The same batch applied twice: as once.
        let batch = [attempt(2, loc, id), attempt(3, loc, id)];
        check_changes(&plan, &batch).unwrap();
        let mut once = plan.clone();
        for c in &batch {
            c.apply_to(&mut once).unwrap();
        }
        let mut twice = once.clone();
        for c in &batch {
            c.apply_to(&mut twice).unwrap();
        }
        assert_eq!(twice, once);
        assert_eq!(once.attempts_at(loc).unwrap().len(), 4);
        // A reset starts over at 0.
        check_changes(&plan, &[Change::Reset { loc, id }, attempt(0, loc, id)]).unwrap();
    }
}

//! [`Workstream`]: the one entry point — submit, start, watch, control and read plans.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

/// The trait of the streams [`Workstream::status`] and [`Workstream::events`] return, so they can be
/// consumed without depending on `futures-core` directly.
pub use futures_core::Stream;
use futures_util::FutureExt as _;
use parking_lot::Mutex;
use tokio::sync::broadcast::error::RecvError;

use crate::engine::{EngineOptions, Event, Run, RunError, run_plan};
use crate::registry::{InitFailure, Registry};
use crate::storage::{Chain, Change, ListFilter, MemoryStore, PlanSummary, Store, StoreError};
use crate::workflow::{Plan, PlanId, Problem, Status, validate_plan};

/// The stream [`Workstream::events`] returns (boxed, so `Unpin`).
pub type EventStream = std::pin::Pin<Box<dyn Stream<Item = Event> + Send + 'static>>;

/// The stream [`Workstream::status`] returns (boxed, so `Unpin`).
pub type StatusStream = std::pin::Pin<Box<dyn Stream<Item = Result<Plan, Error>> + Send + 'static>>;

/// What a workstream call can fail with.
///
/// Its `Debug` is its readable text followed by its causes (as `anyhow` prints an error), so
/// `fn main() -> Result<(), coercion::Error>` prints a message a person can act on; `{:#?}`
/// gives the structure.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No plan with this id.
    #[error("plan {0} not found")]
    NotFound(PlanId),
    /// The plan has problems; nothing was stored.
    #[error("the plan is invalid:\n{}", Problems(.0))]
    Invalid(Vec<Problem>),
    /// The plan was already started.
    #[error("plan {0} was already started")]
    AlreadyStarted(PlanId),
    /// The plan has not been started.
    #[error("plan {0} has not been started")]
    NotStarted(PlanId),
    /// The plan is not running in this workstream.
    #[error("plan {0} is not running in this workstream")]
    NotRunning(PlanId),
    /// A decision at a gate could not be taken: no such gate, not waiting, already decided, or
    /// not an approver. The message says which.
    #[error("{0}")]
    Gate(String),
    /// The plan is marked running but no process of this workstream runs it.
    #[error("plan {0} is running in another process")]
    OwnedElsewhere(PlanId),
    /// The plan was submitted too long ago to start.
    #[error("plan {0} is stale: {1}")]
    Stale(PlanId, String),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// A plugin's `init()` failed at start-up.
    #[error(transparent)]
    Init(#[from] InitFailure),
    /// The run of the plan ended without finishing (its store failed); the plan stays
    /// `Running` in storage and is resumed when a workstream starts on that store again.
    #[error("the run of plan {0} was interrupted: {1}")]
    Interrupted(PlanId, String),
    /// The engine itself failed while running the plan (a bug: a panic in the engine or in a
    /// store). The run still ended cleanly: the plan is `Failed` with reason
    /// [`Reason::Internal`](crate::Reason::Internal), and the deferred work that could run ran.
    #[error(
        "plan {0} ended with an internal error of the engine: {1}; the plan was marked Failed (reason Internal)"
    )]
    Internal(PlanId, String),
    /// A workstream option is out of its allowed range.
    #[error("invalid workstream option: {0}")]
    Config(String),
    /// The plan calls plugins this workstream's registry does not have. It was left exactly as
    /// it is in the store (nothing failed, nothing ran); a workstream that has them runs it.
    #[error(
        "plan {0} calls plugins this workstream does not have: {plugins}. The plan was left as it is. \
         Link the crate that defines them (a crate listed in Cargo.toml but never named in code is \
         not linked: name it once, e.g. `use my_plugins as _;`) or register configured instances \
         (`Registry::new().with(MyPlugin::new(..))`), then start or resume it again",
        plugins = quoted_list(.1)
    )]
    MissingPlugins(PlanId, Vec<String>),
    /// [`Workstream::retry`] refused: the plan has not ended, was already retried, or has no
    /// failed sequence to run again. Nothing was stored.
    #[error("plan {0} cannot be retried: {1}")]
    CannotRetry(PlanId, String),
}

/// `"a", "b"`.
fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return self.fmt_structure(f);
        }
        write!(f, "{self}")?;
        let mut cause = std::error::Error::source(self);
        if cause.is_some() {
            f.write_str("\n\nCaused by:")?;
        }
        while let Some(e) = cause {
            write!(f, "\n    {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

impl Error {
    /// The variant and its fields, for `{:#?}`.
    fn fmt_structure(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound(id) => f.debug_tuple("NotFound").field(id).finish(),
            Error::Invalid(problems) => f.debug_tuple("Invalid").field(problems).finish(),
            Error::AlreadyStarted(id) => f.debug_tuple("AlreadyStarted").field(id).finish(),
            Error::NotStarted(id) => f.debug_tuple("NotStarted").field(id).finish(),
            Error::NotRunning(id) => f.debug_tuple("NotRunning").field(id).finish(),
            Error::Gate(why) => f.debug_tuple("Gate").field(why).finish(),
            Error::OwnedElsewhere(id) => f.debug_tuple("OwnedElsewhere").field(id).finish(),
            Error::Stale(id, why) => f.debug_tuple("Stale").field(id).field(why).finish(),
            Error::Storage(e) => f.debug_tuple("Storage").field(e).finish(),
            Error::Init(e) => f.debug_tuple("Init").field(e).finish(),
            Error::Interrupted(id, why) => {
                f.debug_tuple("Interrupted").field(id).field(why).finish()
            }
            Error::Internal(id, why) => f.debug_tuple("Internal").field(id).field(why).finish(),
            Error::Config(why) => f.debug_tuple("Config").field(why).finish(),
            Error::MissingPlugins(id, names) => f
                .debug_tuple("MissingPlugins")
                .field(id)
                .field(names)
                .finish(),
            Error::CannotRetry(id, why) => {
                f.debug_tuple("CannotRetry").field(id).field(why).finish()
            }
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// What a waiter gets for a run that did not end normally.
fn run_error(id: PlanId, e: &RunError) -> Error {
    match e {
        RunError::Store(_) => Error::Interrupted(id, Chain(e).to_string()),
        RunError::Internal(message) => Error::Internal(id, message.clone()),
    }
}

fn from_store(id: PlanId, e: StoreError) -> Error {
    match e {
        StoreError::NotFound(_) => Error::NotFound(id),
        other => Error::Storage(other),
    }
}

/// The file [`WorkstreamBuilder::build`] keeps plans in when no store is chosen (with the
/// `sqlite` feature; without it, `build` asks for a store).
pub const DEFAULT_DB_PATH: &str = "coercion.db";

/// Configures and starts a [`Workstream`].
pub struct WorkstreamBuilder {
    store: Option<Arc<dyn Store>>,
    #[cfg(feature = "sqlite")]
    sqlite_path: Option<std::path::PathBuf>,
    registry: Option<Registry>,
    options: EngineOptions,
    max_last_update: Duration,
    recover: bool,
    executes: bool,
}

impl WorkstreamBuilder {
    /// Calls `hook` with the final tree of each plan whose run ends in this workstream
    /// (Completed, Failed or Stopped) — once, in the process that ran it: with several workers
    /// sharing a store, the one that held the plan's lease. A run cut short (its store failed
    /// for good, its lease was lost) is not reported: the plan stays Running, and the process
    /// that resumes it reports its end. Hooks run on the async runtime, before
    /// [`Workstream::wait`] and [`Workstream::run`] return for the plan: spawn what takes time,
    /// as below. A panic in a hook is logged and goes no further.
    ///
    /// ```no_run
    /// use coercion::plugins::{Webhook, WebhookReq};
    /// use coercion::prelude::*;
    /// # async fn demo(registry: Registry) -> Result<(), coercion::Error> {
    /// let ws = Workstream::builder()
    ///     .registry(registry)
    ///     .on_plan_end(|plan| {
    ///         let text = format!("plan {} {}: {}", plan.name(), plan.id(), plan.status_label());
    ///         tokio::spawn(async move {
    ///             let req = WebhookReq::slack("http://chat.internal/hooks/ops", text);
    ///             if let Err(e) = Webhook::default().send(&req).await {
    ///                 tracing::warn!(error = %e, "could not tell the channel");
    ///             }
    ///         });
    ///     })
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn on_plan_end(mut self, hook: impl Fn(&Plan) + Send + Sync + 'static) -> Self {
        self.options
            .plan_end_hooks
            .push(crate::engine::PlanEndHook(Arc::new(hook)));
        self
    }

    /// Calls `hook` with the plan and the gate each time a plan run by this workstream starts
    /// waiting at an approval gate ([`Gate`](crate::plugins::Gate)) — in the process that runs
    /// it (with several workers, the lease holder), once per wait (a process that resumes the
    /// plan waits, and tells, again). Not called when the decision was already taken (recorded
    /// while no process ran the plan). Like [`on_plan_end`](Self::on_plan_end), it runs on the
    /// runtime that runs plans: spawn what takes time; a panic is logged and goes no further.
    ///
    /// ```no_run
    /// use coercion::plugins::{Webhook, WebhookReq};
    /// use coercion::prelude::*;
    /// # async fn demo(registry: Registry) -> Result<(), coercion::Error> {
    /// let ws = Workstream::builder()
    ///     .registry(registry)
    ///     .on_gate(|plan, gate| {
    ///         let text = format!(
    ///             "{}: {} — coercion approve {} {:?}",
    ///             plan.name(), gate.message, plan.id(), gate.name
    ///         );
    ///         tokio::spawn(async move {
    ///             let _ = Webhook::default().send(&WebhookReq::slack("http://chat.internal/hooks/ops", text)).await;
    ///         });
    ///     })
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn on_gate(
        mut self,
        hook: impl Fn(&Plan, &crate::workflow::WaitingGate) + Send + Sync + 'static,
    ) -> Self {
        self.options
            .gate_hooks
            .push(crate::engine::GateHook(Arc::new(hook)));
        self
    }

    /// The store plans are kept in. Without one, plans are kept in the embedded SQLite store
    /// at [`DEFAULT_DB_PATH`] in the working directory (feature `sqlite`, default; without that
    /// feature [`build`](Self::build) fails with [`Error::Config`] unless a store is chosen).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Keeps plans in the SQLite file at `path` (created if missing), opened when the
    /// workstream is built. Fails then if another process runs plans from that file.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn sqlite(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.sqlite_path = Some(path.into());
        self
    }

    /// Keeps plans in memory only: nothing survives the process.
    pub fn in_memory(mut self) -> Self {
        self.store = Some(Arc::new(MemoryStore::new()));
        self
    }

    /// The store, already shared.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The plugins the workstream may call (default: [`Registry::from_inventory`]).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// How long in-flight actions may finish after a stop before their futures are dropped
    /// (default 10 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.options.stop_grace = grace;
        self
    }

    /// How often a running plan persists its heartbeat (default 5 s; [`build`](Self::build)
    /// refuses one outside 1 ms to [`MAX_DURATION`](crate::workflow::MAX_DURATION)).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.options.heartbeat_interval = interval;
        self
    }

    /// How long one poll of a plugin may last before it counts as blocking its thread (default
    /// 2 s; the smallest value any workstream of the process sets applies). A watchdog thread
    /// logs such an action once, the plan's heartbeat stops renewing while it blocks, and
    /// [`Workstream::blocked_actions`] lists it.
    pub fn blocking_threshold(mut self, threshold: Duration) -> Self {
        self.options.blocking_threshold = threshold;
        self
    }

    /// The key that encrypts `Secret` request fields at rest. Configure the same key on every
    /// workstream that may resume a plan; without one, secrets are encrypted with a key that
    /// lives as long as the process, so an action that needs a secret after a restart fails.
    #[cfg(feature = "secrets")]
    #[cfg_attr(docsrs, doc(cfg(feature = "secrets")))]
    pub fn secret_key(mut self, key: crate::secret::SecretKey) -> Self {
        self.options.keys = Arc::new(crate::secret::KeyRing::new(Some(key)));
        self
    }

    /// A `Running` plan whose process stopped and whose last heartbeat is older than this is
    /// failed with reason `ExceedRecovery` instead of resumed (default 30 min): at start-up, and
    /// when a worker ([`Workstream::spawn_worker`]) takes a plan over.
    pub fn max_last_update(mut self, age: Duration) -> Self {
        self.max_last_update = age;
        self
    }

    /// A client that runs nothing itself: `start` asks the shared store to hand the plan to a
    /// worker, and start-up recovery is skipped. Needs a store shared by several processes.
    pub fn client_only(mut self) -> Self {
        self.executes = false;
        self.recover = false;
        self
    }

    /// Whether to resume the store's `Running` plans at start-up (default `true`). Only stores
    /// owned by one process do it here; over a store shared by several processes, plans whose
    /// process died are taken over by workers ([`Workstream::spawn_worker`]) within their
    /// `max_running`, orphans first.
    pub fn recover(mut self, recover: bool) -> Self {
        self.recover = recover;
        self
    }

    /// Runs every plugin's `init()`, then recovery (every `Running` plan in the store is
    /// resumed, or failed with `ExceedRecovery` if too stale), and starts the workstream.
    ///
    /// Over a shared store (one with a [`Store::shared`] side) recovery is left to the worker
    /// loop: a restarted worker takes over no more orphans than its `max_running`, and the
    /// others stay for other workers.
    pub async fn build(self) -> Result<Workstream, Error> {
        let heartbeat = self.options.heartbeat_interval;
        if heartbeat < Duration::from_millis(1) || heartbeat > crate::workflow::MAX_DURATION {
            return Err(Error::Config(format!(
                "heartbeat_interval is {heartbeat:?} (allowed: 1 ms to 365 days)"
            )));
        }
        let registry = match self.registry {
            Some(r) => r,
            None => Registry::from_inventory().map_err(|e| {
                Error::Init(InitFailure {
                    plugin: String::new(),
                    type_name: "",
                    message: e.to_string(),
                })
            })?,
        };
        registry.init_all()?;
        crate::engine::watchdog::start(self.options.blocking_threshold);
        #[cfg(feature = "sqlite")]
        let store: Arc<dyn Store> = match (self.store, self.sqlite_path) {
            (Some(store), _) => store,
            (None, path) => {
                let path = path.unwrap_or_else(|| DEFAULT_DB_PATH.into());
                Arc::new(crate::storage::SqliteStore::open(&path)?)
            }
        };
        #[cfg(not(feature = "sqlite"))]
        let store: Arc<dyn Store> = self.store.ok_or_else(|| {
            Error::Config(format!(
                "no store chosen, and coercion was built without its `sqlite` feature, which \
                 provides the default store ({DEFAULT_DB_PATH}); enable it \
                 (`coercion = {{ features = [\"sqlite\"] }}`) or choose a store with \
                 `WorkstreamBuilder::store`, `shared_store` or `in_memory`"
            ))
        })?;
        // A lease must outlive a late heartbeat, or another worker takes a live plan over and
        // runs its actions a second time.
        if let Some(lease) = store.shared().map(|s| s.lease())
            && heartbeat.saturating_mul(2) > lease
        {
            return Err(Error::Config(format!(
                "heartbeat_interval is {} but the store's lease is {}: the heartbeat renews the \
                 lease, so it must come at least twice per lease (at most {}), or one late \
                 heartbeat lets another worker take a live plan over and run its actions again; \
                 shorten WorkstreamBuilder::heartbeat_interval or lengthen PostgresOptions::lease",
                crate::report::human_duration(heartbeat),
                crate::report::human_duration(lease),
                crate::report::human_duration(lease / 2)
            )));
        }
        let ws = Workstream {
            inner: Arc::new(Inner {
                store,
                registry: Arc::new(registry),
                options: self.options,
                runs: Mutex::new(HashMap::new()),
                retrying: tokio::sync::Mutex::new(()),
                interrupted: Mutex::new(HashMap::new()),
                missing_plugins: Mutex::new(HashMap::new()),
                watchers: Mutex::new(HashMap::new()),
                executes: self.executes,
                max_last_update: self.max_last_update,
                #[cfg(feature = "control")]
                answering: tokio::sync::Mutex::new(()),
            }),
        };
        // On a shared store, control requests come through the database: whoever runs a plan
        // carries them out, a worker or a program that started the plan itself.
        #[cfg(feature = "control")]
        if ws.inner.executes && ws.inner.store.shared().is_some() {
            crate::worker::spawn_control_answerer(&ws);
        }
        // A shared store: the worker loop claims orphans through its slots.
        if self.recover && ws.inner.store.shared().is_none() {
            ws.recover().await?;
        }
        Ok(ws)
    }
}

pub(crate) struct Inner {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    options: EngineOptions,
    runs: Mutex<HashMap<PlanId, Arc<Run>>>,
    /// Held while a retry checks that its plan was not retried yet and stores the new plan.
    retrying: tokio::sync::Mutex<()>,
    /// The event channels of plans watched before they started here; a run takes its own.
    watchers: Mutex<HashMap<PlanId, tokio::sync::broadcast::Sender<Event>>>,
    /// Running plans found at start-up that this workstream cannot run: the plugins missing.
    missing_plugins: Mutex<HashMap<PlanId, Vec<String>>>,
    /// Runs of this workstream that did not end normally.
    interrupted: Mutex<HashMap<PlanId, RunError>>,
    /// `false` for a client that submits and starts plans for workers to run.
    executes: bool,
    /// A `Running` plan whose last sign of life is older than this is failed with
    /// `ExceedRecovery` instead of taken over (start-up recovery and workers alike).
    max_last_update: Duration,
    /// Held while control requests from a shared store are carried out, so that two tasks of
    /// this process never carry the same request out twice.
    #[cfg(feature = "control")]
    answering: tokio::sync::Mutex<()>,
}

/// What [`Workstream::take_over`] did with a plan whose process stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TakeOver {
    /// It runs here now.
    Launched,
    /// Too stale to resume: failed with `ExceedRecovery`.
    Expired,
    /// Left as it is: this workstream lacks plugins it calls.
    MissingPlugins,
    /// Left as it is: a live process holds its lease and runs it.
    OwnedElsewhere,
    /// Left as it is: it ended meanwhile.
    Ended,
    /// It runs here already (its lease had lapsed, and this process claimed it again): the
    /// run goes on under the renewed lease.
    RunningHere,
}

/// Submits, runs, watches and controls plans over one store and one registry. Cheap to clone.
///
/// ```
/// use coercion::prelude::*;
/// use coercion::plugins::{Command, CommandReq};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), coercion::Error> {
/// // A store in memory and the plugins this binary links (here the built-in `Command`).
/// let ws = Workstream::builder().in_memory().build().await?;
/// let plan = Plan::builder("hello")
///     .block(Block::builder("b").sequence(
///         Sequence::builder("host-1")
///             .action(ActionSpec::new::<Command>("say", CommandReq::new("true"))),
///     ))
///     .build();
/// let id = ws.submit(plan).await?;          // validated: every problem at once, with its path
/// let _events = ws.events(id).await?;      // subscribed before the start: nothing is missed
/// ws.start(id).await?;
/// let done = ws.wait(id).await?;
/// assert_eq!(done.status(), Status::Completed);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Workstream {
    inner: Arc<Inner>,
}

impl fmt::Debug for Workstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workstream")
            .field("store", &self.inner.store.describe())
            .finish_non_exhaustive()
    }
}

impl Workstream {
    /// Configures a workstream.
    pub fn builder() -> WorkstreamBuilder {
        WorkstreamBuilder {
            store: None,
            #[cfg(feature = "sqlite")]
            sqlite_path: None,
            registry: None,
            options: EngineOptions::default(),
            max_last_update: Duration::from_secs(30 * 60),
            recover: true,
            executes: true,
        }
    }

    /// A workstream over a fresh [`MemoryStore`] with `registry`.
    pub async fn in_memory(registry: Registry) -> Result<Workstream, Error> {
        Workstream::builder()
            .in_memory()
            .registry(registry)
            .build()
            .await
    }

    /// A workstream over the SQLite file at `path` (the embedded default store) with
    /// `registry`; resumes the file's running plans.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub async fn open(
        path: impl Into<std::path::PathBuf>,
        registry: Registry,
    ) -> Result<Workstream, Error> {
        Workstream::builder()
            .sqlite(path)
            .registry(registry)
            .build()
            .await
    }

    /// The registry the workstream calls plugins from.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Validates `plan` (every problem at once, nothing stored on failure), assigns ids and
    /// the submit time, and stores it. The plan does not run until [`start`](Self::start).
    pub async fn submit(&self, plan: Plan) -> Result<PlanId, Error> {
        Ok(self.store_new(plan, false, None).await?.id)
    }

    /// Submits and starts `plan` in one step: the plan is stored already `Running` (with its
    /// heartbeat) in the same write that creates it, then runs in the background; returns its
    /// id once it runs. A process that dies right after leaves a `Running` plan that recovery
    /// resumes, never a `NotStarted` one that nobody starts (as [`submit`](Self::submit) then
    /// [`start`](Self::start) would). A client-only workstream submits, then asks a worker to
    /// start it, as `start` does.
    pub async fn submit_and_start(&self, plan: Plan) -> Result<PlanId, Error> {
        self.submit_and_start_as(plan, None).await
    }

    /// [`submit_and_start`](Self::submit_and_start), the plan recording `retry_of` (only
    /// [`retry`](Self::retry) gives one: a submitted plan's own is dropped).
    async fn submit_and_start_as(
        &self,
        plan: Plan,
        retry_of: Option<crate::workflow::RetryOf>,
    ) -> Result<PlanId, Error> {
        if !self.inner.executes {
            let id = self.store_new(plan, false, retry_of).await?.id;
            self.hand_over(id).await?;
            return Ok(id);
        }
        if self.inner.store.shared().is_some() {
            // Stored `Running` without a lease, it would look like an orphan to a worker
            // polling at that moment: stored not started (which no worker claims), it becomes
            // `Running` once this process holds its lease, as `start` does.
            let plan = self.store_new(plan, false, retry_of).await?;
            let id = plan.id;
            self.launch(plan).await?;
            return Ok(id);
        }
        let plan = self.store_new(plan, true, retry_of).await?;
        let id = plan.id;
        self.launch_as(plan, true).await?;
        Ok(id)
    }

    /// `plan` validated against the registry, its secrets sealed under the workstream's key (they
    /// were encrypted with this process's key when the plan was built).
    fn checked(&self, mut plan: Plan) -> Result<Plan, Error> {
        let keys = &self.inner.options.keys;
        // Validated with its secrets under the process key (which decoding uses), then sealed
        // under the workstream's key.
        let mut problems = Vec::new();
        plan.for_each_action_mut(
            |loc, a| match crate::secret::to_process_key(&a.request, keys) {
                Ok(j) => a.request = j,
                Err(message) => problems.push((loc, message)),
            },
        );
        if !problems.is_empty() {
            return Err(Error::Invalid(
                problems
                    .into_iter()
                    .map(|(loc, message)| Problem {
                        path: plan.path(loc),
                        message,
                    })
                    .collect(),
            ));
        }
        validate_plan(&plan, &self.inner.registry).map_err(Error::Invalid)?;
        plan.for_each_action_mut(|_, a| {
            a.request = crate::secret::seal_for_store(a.request.clone(), keys);
        });
        Ok(plan)
    }

    /// What `plan` would do, without doing it: the checks that judge the world as it is run
    /// for real (one attempt each), every action is asked for its
    /// [preview](crate::Previews), post- and deferred checks are listed as running after.
    /// Nothing is stored and no action's `execute` is called. The plan is validated as
    /// [`submit`](Self::submit) does (a plan or block that says `require_previews` holding a
    /// plugin that cannot preview is refused). See [`preview`](crate::preview).
    pub async fn preview(&self, plan: Plan) -> Result<crate::preview::Report, Error> {
        let plan = self.checked(plan)?;
        Ok(crate::preview::run(plan, &self.inner.registry, &self.inner.options.keys).await)
    }

    /// [`submit`](Self::submit), returning the plan as stored; with `running`, stored as
    /// started (status `Running`, start time and heartbeat now). `retry_of` replaces whatever
    /// the plan carried: who asked for a retry is recorded by `retry` alone.
    async fn store_new(
        &self,
        plan: Plan,
        running: bool,
        retry_of: Option<crate::workflow::RetryOf>,
    ) -> Result<Plan, Error> {
        let mut plan = self.checked(plan)?;
        plan.assign_ids();
        // A new plan has not been resumed, whatever the submitted copy said.
        let run = plan.run_mut();
        run.owners.clear();
        run.decisions.clear();
        plan.retry_of = retry_of;
        let now = crate::engine::now();
        plan.submit_time = Some(now);
        if running {
            let run = plan.run_mut();
            *run.state = crate::workflow::State {
                status: Status::Running,
                start: Some(now),
                end: None,
            };
            *run.heartbeat = Some(now);
        }
        self.inner
            .store
            .create(&plan)
            .await
            .map_err(Error::Storage)?;
        Ok(plan)
    }

    /// Starts a submitted plan and returns once it is durably `Running`; the plan runs in the
    /// background.
    pub async fn start(&self, id: PlanId) -> Result<(), Error> {
        if self.inner.runs.lock().contains_key(&id) {
            return Err(Error::AlreadyStarted(id));
        }
        let plan = self
            .inner
            .store
            .read(id)
            .await
            .map_err(|e| from_store(id, e))?;
        if plan.status() != Status::NotStarted {
            return Err(Error::AlreadyStarted(id));
        }
        if !self.inner.executes {
            return self.hand_over(id).await;
        }
        self.launch(plan).await
    }

    /// Runs `plan` to its end: submit, start, wait.
    pub async fn run(&self, plan: Plan) -> Result<Plan, Error> {
        // What `start` would read back from the store is the plan just stored.
        let plan = self.store_new(plan, false, None).await?;
        let id = plan.id;
        if self.inner.executes {
            self.launch(plan).await?;
        } else {
            self.hand_over(id).await?;
        }
        self.wait(id).await
    }

    /// A client-only workstream's start: the shared store marks plan `id` for whichever worker
    /// claims it.
    async fn hand_over(&self, id: PlanId) -> Result<(), Error> {
        let shared = self.inner.store.shared().ok_or_else(|| {
            Error::Storage(StoreError::permanent(format!(
                "plan {id}: this store cannot hand plans to other workers; start it in a workstream that executes plans"
            )))
        })?;
        Ok(shared.request_start(id).await?)
    }

    /// Runs `plan` here: a plan not started yet, or a `Running` plan that this process takes
    /// over from one that stopped (recorded as a resumption).
    pub(crate) async fn launch(&self, plan: Plan) -> Result<(), Error> {
        self.launch_as(plan, false).await
    }

    /// [`launch`](Self::launch); `fresh`: the plan was just stored `Running` by this process
    /// (`submit_and_start`), so running it is no resumption.
    async fn launch_as(&self, plan: Plan, fresh: bool) -> Result<(), Error> {
        let id = plan.id;
        let resumed = !fresh && plan.status() == Status::Running;
        if self.inner.runs.lock().contains_key(&id) {
            return Err(Error::AlreadyStarted(id));
        }
        let missing = self.inner.registry.missing_for(&plan);
        if !missing.is_empty() {
            return Err(Error::MissingPlugins(id, missing));
        }
        if let Some(shared) = self.inner.store.shared() {
            shared.acquire(id).await.map_err(|e| match e {
                StoreError::Locked(_) => Error::OwnedElsewhere(id),
                other => Error::Storage(other),
            })?;
        }
        let run = {
            let mut runs = self.inner.runs.lock();
            if runs.contains_key(&id) {
                return Err(Error::AlreadyStarted(id));
            }
            // Under the `runs` lock, as `events` registers them: no watcher is missed.
            let watchers = self.inner.watchers.lock().remove(&id);
            let run = Run::new(
                plan,
                self.inner.store.clone(),
                self.inner.registry.clone(),
                self.inner.options.clone(),
                watchers,
                resumed,
            );
            runs.insert(id, run.clone());
            run
        };
        let inner = self.inner.clone();
        let mut started = run.started.subscribe();
        tokio::spawn(async move {
            // `run_plan` ends a run cleanly whatever fails inside it; should it panic itself,
            // waiters still wake up.
            if let Err(panic) = AssertUnwindSafe(run_plan(run.clone())).catch_unwind().await
                && run.done.borrow().is_none()
            {
                run.finish(Err(RunError::Internal(format!(
                    "the engine panicked: {}",
                    crate::engine::panic_message(&*panic)
                ))));
            }
            let ended = run.done.borrow().clone().and_then(Result::err);
            // A store that failed leaves the plan Running for recovery, in this store's hands.
            if !matches!(ended, Some(RunError::Store(_)))
                && let Some(shared) = inner.store.shared()
                && let Err(e) = shared.release(id).await
            {
                tracing::warn!(plan = %id, error = %crate::storage::Chain(&e), "could not release the plan after its run");
            }
            if let Some(e) = ended {
                inner.interrupted.lock().insert(id, e);
            }
            inner.runs.lock().remove(&id);
        });
        let _ = started.wait_for(|s| *s).await;
        Ok(())
    }

    /// Resumes every `Running` plan of the store, or fails it with `ExceedRecovery` when its
    /// last heartbeat is older than `max_last_update`. Returns the ids resumed.
    async fn recover(&self) -> Result<Vec<PlanId>, Error> {
        let running = self
            .inner
            .store
            .list(&ListFilter::status(Status::Running))
            .await?;
        let mut resumed = Vec::new();
        for summary in running {
            if self.running(summary.id).is_some() {
                continue;
            }
            let plan = match self.inner.store.read(summary.id).await {
                Ok(p) => p,
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let id = plan.id;
            if self.take_over(plan).await? == TakeOver::Launched {
                resumed.push(id);
            }
        }
        Ok(resumed)
    }

    /// The one rule for a plan whose process stopped, found at start-up or claimed by a worker
    /// (and for a plan a worker claimed that was not started yet): a `Running` plan whose last
    /// sign of life is older than `max_last_update` is failed with `ExceedRecovery`; a plan
    /// whose plugins this workstream lacks is left exactly as it is (until a workstream with
    /// them opens the store); any other is launched here. Errors are the store's, or the
    /// launch's.
    pub(crate) async fn take_over(&self, plan: Plan) -> Result<TakeOver, Error> {
        let id = plan.id;
        match plan.status() {
            Status::Running | Status::NotStarted => {}
            _ => return Ok(TakeOver::Ended),
        }
        let missing = self.inner.registry.missing_for(&plan);
        if !missing.is_empty() {
            let err = Error::MissingPlugins(id, missing.clone());
            tracing::warn!(plan = %id, error = %err, "not resuming a plan whose plugins are missing");
            self.inner.missing_plugins.lock().insert(id, missing);
            return Ok(TakeOver::MissingPlugins);
        }
        if plan.status() == Status::Running {
            let last = plan.heartbeat().or(plan.state().start).or(plan.submit_time);
            let age = last
                .and_then(|t| (crate::engine::now() - t).to_std().ok())
                .unwrap_or_default();
            if age > self.inner.max_last_update {
                let changes = crate::engine::expire_changes(&plan, age);
                return match self.inner.store.apply(id, &changes).await {
                    Ok(()) => {
                        tracing::warn!(plan = %id, ?age, "plan too stale to resume; failed it with ExceedRecovery");
                        Ok(TakeOver::Expired)
                    }
                    // A shared store: a live process holds the plan's lease (its heartbeat is
                    // what looked old, a clock apart): the plan is its to run.
                    Err(StoreError::Locked(_)) => Ok(TakeOver::OwnedElsewhere),
                    Err(e) => Err(e.into()),
                };
            }
        }
        let resuming = plan.status() == Status::Running;
        match self.launch(plan).await {
            Ok(()) => {
                if resuming {
                    tracing::info!(plan = %id, "resumed a plan whose process had stopped");
                }
                Ok(TakeOver::Launched)
            }
            Err(Error::AlreadyStarted(_)) => Ok(TakeOver::RunningHere),
            // A shared store: a live process holds the plan's lease and runs it.
            Err(Error::OwnedElsewhere(_)) => {
                tracing::debug!(plan = %id, "not resuming a plan a live process holds");
                Ok(TakeOver::OwnedElsewhere)
            }
            Err(e) => Err(e),
        }
    }

    /// The `Running` plans found in the store at start-up that this workstream left as they are
    /// because its registry lacks plugins they call, with those plugins' names (also logged).
    /// A workstream whose registry has them resumes them.
    pub fn plans_missing_plugins(&self) -> Vec<(PlanId, Vec<String>)> {
        let mut plans: Vec<_> = self
            .inner
            .missing_plugins
            .lock()
            .iter()
            .map(|(id, names)| (*id, names.clone()))
            .collect();
        plans.sort();
        plans
    }

    /// Whether plan `id` runs in this workstream now.
    pub fn is_running_here(&self, id: PlanId) -> bool {
        self.running(id).is_some()
    }

    /// Taken while carrying out the control requests of a shared store (one task at a time).
    #[cfg(feature = "control")]
    pub(crate) async fn answering(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.answering.lock().await
    }

    /// A handle that does not keep the workstream alive (for its background tasks).
    #[cfg_attr(not(feature = "control"), allow(dead_code))]
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// The workstream of a handle from [`Workstream::downgrade`], unless it was dropped.
    #[cfg_attr(not(feature = "control"), allow(dead_code))]
    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<Workstream> {
        weak.upgrade().map(|inner| Workstream { inner })
    }

    /// The plans running in this workstream now.
    #[cfg_attr(not(feature = "control"), allow(dead_code))]
    pub(crate) fn running_ids(&self) -> Vec<PlanId> {
        self.inner.runs.lock().keys().copied().collect()
    }

    /// The actions of plans running here whose plugin has been stuck in one poll longer than
    /// the [blocking threshold](WorkstreamBuilder::blocking_threshold): synchronous work on the
    /// async runtime (blocking I/O, a busy loop), which holds up timers, stops and heartbeats.
    /// Longest first.
    pub fn blocked_actions(&self) -> Vec<crate::engine::watchdog::BlockedAction> {
        let runs: Vec<PlanId> = self.inner.runs.lock().keys().copied().collect();
        crate::engine::watchdog::blocked_actions(None)
            .into_iter()
            .filter(|b| runs.contains(&b.plan))
            .collect()
    }

    /// How many plans run in this workstream now.
    pub(crate) fn running_count(&self) -> usize {
        self.inner.runs.lock().len()
    }

    fn running(&self, id: PlanId) -> Option<Arc<Run>> {
        self.inner.runs.lock().get(&id).cloned()
    }

    /// Waits until the plan has ended and returns its final tree.
    pub async fn wait(&self, id: PlanId) -> Result<Plan, Error> {
        if let Some(run) = self.running(id) {
            let mut done = run.done.subscribe();
            let result = done
                .wait_for(|d| d.is_some())
                .await
                .ok()
                .and_then(|d| d.clone());
            if let Some(Err(e)) = result {
                return Err(run_error(id, &e));
            }
            return Ok(run.snapshot());
        }
        if let Some(e) = self.inner.interrupted.lock().get(&id) {
            return Err(run_error(id, e));
        }
        let plan = self
            .inner
            .store
            .read(id)
            .await
            .map_err(|e| from_store(id, e))?;
        match plan.status() {
            Status::NotStarted => Err(Error::NotStarted(id)),
            Status::Running => Err(Error::OwnedElsewhere(id)),
            _ => Ok(plan),
        }
    }

    /// The plan as it is now (live while it runs here, else from the store).
    pub async fn read(&self, id: PlanId) -> Result<Plan, Error> {
        if let Some(run) = self.running(id) {
            return Ok(run.snapshot());
        }
        self.inner
            .store
            .read(id)
            .await
            .map_err(|e| from_store(id, e))
    }

    /// Plans matching `filter`, newest submitted first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<PlanSummary>, Error> {
        Ok(self.inner.store.list(filter).await?)
    }

    /// Deletes a plan that is not running.
    pub async fn delete(&self, id: PlanId) -> Result<(), Error> {
        if self.running(id).is_some() {
            return Err(Error::Storage(StoreError::Running(id)));
        }
        self.inner
            .store
            .delete(id)
            .await
            .map_err(|e| from_store(id, e))
    }

    /// Stops a running plan: no new work starts; in-flight actions see cancellation and get the
    /// grace period; `OnFailure`/`Always` deferred batches and deferred checks still run; the
    /// plan ends `Stopped` with reason `Stopped`.
    pub async fn stop(&self, id: PlanId) -> Result<(), Error> {
        let run = self.running(id).ok_or(Error::NotRunning(id))?;
        run.request_stop(false);
        Ok(())
    }

    /// Pauses a running plan: no new sequence or action starts until [`resume`](Self::resume).
    /// Persisted.
    pub async fn pause(&self, id: PlanId) -> Result<(), Error> {
        self.set_paused(id, true).await
    }

    /// Resumes a paused plan.
    pub async fn resume(&self, id: PlanId) -> Result<(), Error> {
        self.set_paused(id, false).await
    }

    /// Approves (`approved`) or rejects the gate named `gate` (a [`Gate`](crate::plugins::Gate)
    /// check's name or key) of plan `id`, which runs in this workstream, on behalf of `by` — the
    /// identity the caller proved (the control socket passes the peer's Unix user), checked
    /// against the gate's approvers. The decision is stored before this returns, then the gate
    /// passes (or fails) with it. Refused when the gate is not waiting or already decided.
    pub async fn decide(
        &self,
        id: PlanId,
        gate: &str,
        approved: bool,
        by: &str,
        comment: Option<String>,
    ) -> Result<crate::workflow::Decision, Error> {
        let run = self.running(id).ok_or(Error::NotRunning(id))?;
        // One decision at a time per plan, none after its gate stopped waiting.
        let _deciding = run.deciding.lock().await;
        let decision = {
            let plan = run.plan.lock();
            crate::plugins::gate::decision_for(&plan, gate, approved, by, comment)
                .map_err(Error::Gate)?
        };
        if run.closed_gates.lock().contains(&decision.gate) {
            return Err(Error::Gate(format!(
                "gate {gate:?} is no longer waiting: it timed out or its plan is stopping"
            )));
        }
        run.commit(vec![Change::Decided(decision.clone())])
            .await
            .map_err(|e| match e {
                RunError::Store(s) => Error::Storage(s),
                other => Error::Interrupted(id, Chain(&other).to_string()),
            })?;
        run.decided.send_modify(|n| *n += 1);
        tracing::info!(plan = %id, gate, by, approved, "gate decided");
        Ok(decision)
    }

    async fn set_paused(&self, id: PlanId, paused: bool) -> Result<(), Error> {
        let run = self.running(id).ok_or(Error::NotRunning(id))?;
        run.commit(vec![Change::Paused(paused)])
            .await
            .map_err(|e| match e {
                RunError::Store(s) => Error::Storage(s),
                other => Error::Interrupted(id, Chain(&other).to_string()),
            })?;
        run.paused.send_replace(paused);
        Ok(())
    }

    /// Runs again the work of an ended plan that did not succeed: submits and starts
    /// [`Plan::clone_retry_failed`] — the failed, stopped and never-run sequences without
    /// their completed actions, with the plan's checks and deferred work, in the same group —
    /// and returns the new plan's id. The new plan names the old one and `requested_by` in
    /// [`Plan::retry_of`]; [`storage::retried_by`](crate::storage::retried_by) finds it from
    /// the old one.
    ///
    /// Refused with [`Error::CannotRetry`], storing nothing, when the plan has not ended, when
    /// it was already retried (retry the newer plan instead: two retries of one plan would run
    /// the same work twice, at once), or when none of its sequences failed (a plan that failed
    /// only in checks or deferred work: submit [`Plan::clone_for_resubmit`] to run it all
    /// again). Within one workstream two concurrent retries of a plan cannot both pass.
    pub async fn retry(
        &self,
        id: PlanId,
        requested_by: impl Into<String>,
    ) -> Result<PlanId, Error> {
        let _one_at_a_time = self.inner.retrying.lock().await;
        let plan = self.read(id).await?;
        let status = plan.status();
        if !status.is_terminal() {
            return Err(Error::CannotRetry(
                id,
                format!("it has not ended (it is {status}); stop it or wait for it to end"),
            ));
        }
        if let Some(newer) = crate::storage::retried_by(&*self.inner.store, &plan).await? {
            return Err(Error::CannotRetry(
                id,
                format!("plan {newer} already retries it; retry that plan if it failed too"),
            ));
        }
        let Some(retry) = plan.clone_retry_failed() else {
            return Err(Error::CannotRetry(
                id,
                "none of its sequences failed (it completed, or failed only in checks or deferred \
                 work); to run it all again, submit Plan::clone_for_resubmit"
                    .to_owned(),
            ));
        };
        let requested_by = requested_by.into();
        tracing::info!(plan = %id, by = %requested_by, "retrying the failed work of the plan");
        let retry_of = crate::workflow::RetryOf {
            plan: id,
            requested_by,
        };
        self.submit_and_start_as(retry, Some(retry_of)).await
    }

    /// Stops every plan running in this workstream at once, skipping their deferred work.
    /// Returns the ids of the plans it stopped.
    pub fn emergency_stop(&self) -> Vec<PlanId> {
        let runs: Vec<Arc<Run>> = self.inner.runs.lock().values().cloned().collect();
        for run in &runs {
            run.request_stop(true);
        }
        runs.iter().map(|r| r.id).collect()
    }

    /// Snapshots of the plan: the first at once, then one every `interval` until it ends (a plan
    /// not started yet included: the stream waits for its start, wherever it is started), and
    /// the final tree last. The stream is `Unpin`: no `pin!` needed.
    pub fn status(&self, id: PlanId, interval: Duration) -> StatusStream {
        let ws = self.clone();
        Box::pin(futures_util::stream::unfold(Some(true), move |state| {
            let ws = ws.clone();
            async move {
                let first = state?;
                if !first {
                    match ws.running(id) {
                        Some(run) => {
                            let mut done = run.done.subscribe();
                            tokio::select! {
                                _ = tokio::time::sleep(interval) => {}
                                _ = done.wait_for(|d| d.is_some()) => {}
                            }
                        }
                        None => tokio::time::sleep(interval).await,
                    }
                }
                match ws.read(id).await {
                    Ok(plan) => {
                        let more = !plan.status().is_terminal() || ws.running(id).is_some();
                        Some((Ok(plan), more.then_some(false)))
                    }
                    Err(e) => Some((Err(e), None)),
                }
            }
        }))
    }

    /// Every state change of the plan as it happens, with no polling: a [`Event::Snapshot`]
    /// first, then [`Event::Changed`] batches (each followed by its typed, path-addressed
    /// [`Event::Updated`]), and [`Event::Finished`] with the final tree last.
    ///
    /// A plan submitted but not started yet: its snapshot, then the whole run once it starts in
    /// this workstream — subscribe before `start` to see every change from the first. A plan
    /// running in another process: its snapshot only; a finished plan: its snapshot, then
    /// `Finished`. The stream is `Unpin`: no `pin!` needed.
    pub async fn events(&self, id: PlanId) -> Result<EventStream, Error> {
        enum State {
            Live(
                Arc<Run>,
                tokio::sync::broadcast::Receiver<Event>,
                Option<Event>,
            ),
            /// Watching a plan that has not started: its snapshot first, then its run's events.
            Waiting(
                Workstream,
                tokio::sync::broadcast::Receiver<Event>,
                Option<Event>,
            ),
            Items(std::vec::IntoIter<Event>),
        }
        let (running, watching) = {
            let runs = self.inner.runs.lock();
            match runs.get(&id) {
                Some(run) => (Some(run.clone()), None),
                None => {
                    // Registered under the `runs` lock, as `launch` takes it: a start that
                    // comes after this point sends its first change here.
                    let mut watchers = self.inner.watchers.lock();
                    watchers.retain(|_, tx| tx.receiver_count() > 0);
                    let tx = watchers
                        .entry(id)
                        .or_insert_with(|| {
                            tokio::sync::broadcast::channel(crate::engine::EVENT_BUFFER).0
                        })
                        .clone();
                    (None, Some(tx.subscribe()))
                }
            }
        };
        let state = match (running, watching) {
            (Some(run), _) => {
                let rx = run.events.subscribe();
                let first = Event::Snapshot(Box::new(run.snapshot()));
                State::Live(run, rx, Some(first))
            }
            (None, watching) => {
                let plan = self
                    .inner
                    .store
                    .read(id)
                    .await
                    .map_err(|e| from_store(id, e))?;
                match (plan.status(), watching) {
                    (Status::NotStarted, Some(rx)) => {
                        State::Waiting(self.clone(), rx, Some(Event::Snapshot(Box::new(plan))))
                    }
                    // Started meanwhile (here: its run's events are in `rx`).
                    (Status::Running, Some(rx)) if self.running(id).is_some() => {
                        State::Waiting(self.clone(), rx, Some(Event::Snapshot(Box::new(plan))))
                    }
                    _ => {
                        let mut items = vec![Event::Snapshot(Box::new(plan.clone()))];
                        if plan.status().is_terminal() {
                            items.push(Event::Finished(Box::new(plan)));
                        }
                        State::Items(items.into_iter())
                    }
                }
            }
        };
        Ok(Box::pin(futures_util::stream::unfold(
            Some(state),
            move |state| async move {
                match state? {
                    State::Items(mut it) => it.next().map(|e| (e, Some(State::Items(it)))),
                    State::Waiting(ws, rx, Some(first)) => {
                        Some((first, Some(State::Waiting(ws, rx, None))))
                    }
                    State::Waiting(ws, mut rx, None) => {
                        // The first event of the run: from then on, follow the run itself.
                        let event = match rx.recv().await {
                            Ok(e) => e,
                            Err(RecvError::Lagged(_)) => match ws.running(id) {
                                Some(run) => Event::Snapshot(Box::new(run.snapshot())),
                                None => Event::Snapshot(Box::new(ws.read(id).await.ok()?)),
                            },
                            Err(RecvError::Closed) => return None,
                        };
                        if matches!(event, Event::Finished(_)) {
                            return Some((event, None));
                        }
                        let next = match ws.running(id) {
                            Some(run) => State::Live(run, rx, None),
                            None => State::Waiting(ws, rx, None),
                        };
                        Some((event, Some(next)))
                    }
                    State::Live(run, rx, Some(first)) => {
                        Some((first, Some(State::Live(run, rx, None))))
                    }
                    State::Live(run, mut rx, None) => {
                        // A run that ended before this subscription saw its `Finished` event ends
                        // the stream with the final tree instead of waiting forever.
                        use tokio::sync::broadcast::error::TryRecvError;
                        let received = match rx.try_recv() {
                            Err(TryRecvError::Empty) => {
                                let mut done = run.done.subscribe();
                                tokio::select! {
                                    r = rx.recv() => r,
                                    _ = done.wait_for(|d| d.is_some()) => match rx.try_recv() {
                                        Ok(e) => Ok(e),
                                        Err(_) => Err(RecvError::Closed),
                                    },
                                }
                            }
                            Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                            Err(TryRecvError::Closed) => Err(RecvError::Closed),
                            Ok(e) => Ok(e),
                        };
                        match received {
                            Ok(Event::Finished(p)) => Some((Event::Finished(p), None)),
                            Ok(e) => Some((e, Some(State::Live(run, rx, None)))),
                            Err(RecvError::Lagged(_)) => {
                                let snap = Event::Snapshot(Box::new(run.snapshot()));
                                Some((snap, Some(State::Live(run, rx, None))))
                            }
                            Err(RecvError::Closed) => {
                                Some((Event::Finished(Box::new(run.snapshot())), None))
                            }
                        }
                    }
                }
            },
        )))
    }
}

//! The execution engine: runs one plan's phases, persisting every state change through the
//! store before the step that depends on it. Knows no SQL; talks to storage only through
//! [`Store`].

mod action;
mod block;
mod checks;
mod plan;
pub(crate) mod watchdog;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;
use crate::storage::{Change, Store, StoreError};
use crate::workflow::{Loc, Plan, PlanId, Reason, State, Status, Timestamp};

pub(crate) use plan::run_plan;

/// How many events a subscriber may fall behind before it gets a snapshot instead.
pub(crate) const EVENT_BUFFER: usize = 4096;

/// Knobs of the engine, set through the workstream builder.
#[derive(Clone, Debug)]
pub(crate) struct EngineOptions {
    /// How long in-flight actions may finish after a stop before their futures are dropped.
    pub stop_grace: Duration,
    /// How often a running plan persists its heartbeat.
    pub heartbeat_interval: Duration,
    /// How often a failed store write is retried before the run gives up.
    pub store_retries: u32,
    /// The keys secrets in requests are decrypted with.
    pub keys: Arc<crate::secret::KeyRing>,
    /// How long one poll of a plugin may last before the watchdog reports it as blocking its
    /// thread (and the plan's heartbeat stops renewing).
    pub blocking_threshold: Duration,
    /// Told the final tree of each plan whose run ends here, before its waiters wake.
    pub plan_end_hooks: Vec<PlanEndHook>,
    /// Told when a plan run here starts waiting at an approval gate.
    pub gate_hooks: Vec<GateHook>,
}

/// A function told when a plan starts waiting at a gate
/// ([`WorkstreamBuilder::on_gate`](crate::WorkstreamBuilder::on_gate)).
#[derive(Clone)]
pub(crate) struct GateHook(pub Arc<GateHookFn>);

/// What [`GateHook`] calls.
pub(crate) type GateHookFn = dyn Fn(&Plan, &crate::workflow::WaitingGate) + Send + Sync;

impl std::fmt::Debug for GateHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GateHook")
    }
}

/// A function told about every plan whose run ended
/// ([`WorkstreamBuilder::on_plan_end`](crate::WorkstreamBuilder::on_plan_end)).
#[derive(Clone)]
pub(crate) struct PlanEndHook(pub Arc<dyn Fn(&Plan) + Send + Sync>);

impl std::fmt::Debug for PlanEndHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlanEndHook")
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            stop_grace: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(5),
            store_retries: 8,
            keys: Arc::new(crate::secret::KeyRing::default()),
            blocking_threshold: watchdog::DEFAULT_THRESHOLD,
            plan_end_hooks: Vec::new(),
            gate_hooks: Vec::new(),
        }
    }
}

/// A fine-grained notification about a plan, as it happens.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// The whole tree: the first event of a subscription, and again after a subscriber fell
    /// behind and missed changes.
    Snapshot(Box<Plan>),
    /// State changes, just persisted, in order.
    Changed(Arc<[Change]>),
    /// The same changes as the [`Event::Changed`] just before it, addressed by path and typed:
    /// what a program that watches a plan usually wants ("action `restart` of `host-3`
    /// failed"), without decoding storage changes. Heartbeats are left out.
    Updated(Arc<[Update]>),
    /// The plan finished: its final tree. The last event of a stream.
    Finished(Box<Plan>),
}

/// One object's change, as [`Event::Updated`] tells it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Update {
    /// Where the object is, by names: `block[0] "web" / sequence[2] "host-3" / action[1] "restart"`.
    pub path: crate::workflow::ObjectPath,
    /// Where the object is, by indices.
    pub loc: Loc,
    /// What changed.
    pub what: UpdateKind,
}

/// What changed in an [`Update`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum UpdateKind {
    /// The object's status is now this (with its start and end times).
    Status(State),
    /// Attempt `attempt` (1-based) of an action started.
    AttemptStarted {
        /// The attempt's number, from 1.
        attempt: u32,
    },
    /// Attempt `attempt` (1-based) of an action ended, with its error if it failed.
    AttemptFinished {
        /// The attempt's number, from 1.
        attempt: u32,
        /// The plugin's error, when the attempt failed.
        error: Option<crate::plugin::PluginError>,
    },
    /// An action starts over (a continuous check that runs again).
    Reset,
    /// The plan's failure reason is now this.
    Reason(Reason),
    /// The plan was paused (`true`) or resumed.
    Paused(bool),
    /// A process took the plan: started it, or resumed it after the process running it stopped
    /// ([`Owner::resumed`](crate::workflow::Owner::resumed)).
    Owner(crate::workflow::Owner),
    /// A person approved or rejected the gate at the update's location.
    Decided(crate::workflow::Decision),
}

impl Update {
    /// The typed form of `changes` against `plan` (for the paths); heartbeats are left out.
    pub(crate) fn from_changes(plan: &Plan, changes: &[Change]) -> Vec<Update> {
        use crate::workflow::Outcome;
        changes
            .iter()
            .filter_map(|c| {
                let (loc, what) = match c {
                    Change::State { loc, state, .. } => (*loc, UpdateKind::Status(*state)),
                    Change::Attempt {
                        loc,
                        index,
                        attempt,
                        ..
                    } => {
                        let number = index.saturating_add(1);
                        let what = if attempt.end.is_none() {
                            UpdateKind::AttemptStarted { attempt: number }
                        } else {
                            let error = match &attempt.outcome {
                                Some(Outcome::Error(e)) => Some((**e).clone()),
                                _ => None,
                            };
                            UpdateKind::AttemptFinished {
                                attempt: number,
                                error,
                            }
                        };
                        (*loc, what)
                    }
                    Change::Reset { loc, .. } => (*loc, UpdateKind::Reset),
                    Change::Reason(r) => (Loc::Plan, UpdateKind::Reason(*r)),
                    Change::Paused(p) => (Loc::Plan, UpdateKind::Paused(*p)),
                    Change::Owner(o) => (Loc::Plan, UpdateKind::Owner(o.clone())),
                    Change::Decided(d) => (d.gate, UpdateKind::Decided(d.clone())),
                    Change::Heartbeat(_) => return None,
                };
                Some(Update {
                    path: plan.path(loc),
                    loc,
                    what,
                })
            })
            .collect()
    }
}

/// How a run ended, when it did not end normally.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RunError {
    /// A store write failed for good: the run stopped; the plan stays `Running` in storage and
    /// is resumed by recovery.
    #[error("the run stopped because the store failed")]
    Store(#[source] StoreError),
    /// A task of the engine itself failed (a bug: a panic in the engine or in a store). The run
    /// ended anyway: what was running was failed, the deferred work that could still run ran,
    /// and the plan ended `Failed` with reason [`Reason::Internal`].
    #[error("internal error: {0}")]
    Internal(String),
}

/// The shared state of one plan's execution.
pub(crate) struct Run {
    pub id: PlanId,
    /// This process took the plan over `Running` from a process that stopped (recovery at
    /// start-up, a worker's claim of an expired lease): the run records a resumption first.
    pub resumed: bool,
    pub plan: Mutex<Plan>,
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub options: EngineOptions,
    /// Fires when an operator stops the plan: no new work; in-flight actions see cancellation.
    pub stop: CancellationToken,
    /// Fires when the store failed for good: everything ends at once, writing nothing more.
    pub abort: CancellationToken,
    /// Set with `stop` for an emergency stop: deferred work is skipped too.
    pub emergency: AtomicBool,
    /// Cancels deferred work (which survives an ordinary stop); fired by an emergency stop.
    pub kill: CancellationToken,
    pub paused: watch::Sender<bool>,
    pub events: broadcast::Sender<Event>,
    pub done: watch::Sender<Option<Result<(), RunError>>>,
    /// `true` once the plan is durably `Running` (or the run ended first).
    pub started: watch::Sender<bool>,
    pub writes: AtomicU64,
    /// Counts the decisions recorded at the plan's gates, which gates wait on.
    pub decided: watch::Sender<u64>,
    /// Held while a decision is checked and stored, and while a gate closes (timed out,
    /// stopped): a gate is decided once, and never after it stopped waiting.
    pub deciding: tokio::sync::Mutex<()>,
    /// The gates that stopped waiting without a decision (until they wait again).
    pub closed_gates: Mutex<std::collections::HashSet<Loc>>,
    /// The first phase that failed, in time order.
    reason: Mutex<Option<Reason>>,
    final_plan: Mutex<Option<Arc<Plan>>>,
    store_failure: Mutex<Option<StoreError>>,
}

impl Run {
    pub(crate) fn new(
        plan: Plan,
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        options: EngineOptions,
        events: Option<broadcast::Sender<Event>>,
        resumed: bool,
    ) -> Arc<Run> {
        // Subscribers that came before the run (watching a plan not started yet) keep theirs.
        let events = events.unwrap_or_else(|| broadcast::channel(EVENT_BUFFER).0);
        let paused = plan.is_paused();
        Arc::new(Run {
            id: plan.id,
            resumed,
            plan: Mutex::new(plan),
            store,
            registry,
            options,
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            emergency: AtomicBool::new(false),
            kill: CancellationToken::new(),
            paused: watch::channel(paused).0,
            events,
            done: watch::channel(None).0,
            started: watch::channel(false).0,
            writes: AtomicU64::new(0),
            decided: watch::channel(0).0,
            deciding: tokio::sync::Mutex::new(()),
            closed_gates: Mutex::new(std::collections::HashSet::new()),
            reason: Mutex::new(None),
            final_plan: Mutex::new(None),
            store_failure: Mutex::new(None),
        })
    }

    /// Persists `changes`, then applies them to the live tree and tells subscribers. Transient
    /// store errors are retried with backoff; a permanent one aborts the run.
    pub(crate) async fn commit(&self, changes: Vec<Change>) -> Result<(), RunError> {
        if self.abort.is_cancelled() {
            return Err(self.failure());
        }
        // The rules of a batch are checked here, against the run's own tree, once: a store
        // persists what it is given. A batch that breaks them is the engine's own bug.
        let checked = crate::storage::check_changes(&self.plan.lock(), &changes);
        if let Err(e) = checked {
            tracing::error!(plan = %self.id, error = %e, "the engine made a change its plan cannot take; stopping the run");
            *self.store_failure.lock() = Some(e.clone());
            self.abort.cancel();
            return Err(RunError::Store(e));
        }
        let mut delays = crate::plugin::RetryPolicy::fast().delays();
        let mut tries = 0;
        let began = std::time::Instant::now();
        loop {
            match self.store.apply(self.id, &changes).await {
                Ok(()) => break,
                Err(e) if e.is_transient() && tries < self.options.store_retries => {
                    tries += 1;
                    crate::metrics::store_write_retried();
                    tracing::warn!(plan = %self.id, error = %crate::storage::Chain(&e), attempt = tries, "store write failed; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
                }
                Err(e) => {
                    tracing::error!(plan = %self.id, error = %crate::storage::Chain(&e), "store write failed for good; stopping the run");
                    *self.store_failure.lock() = Some(e.clone());
                    self.abort.cancel();
                    return Err(RunError::Store(e));
                }
            }
        }
        crate::metrics::store_committed(began.elapsed());
        self.writes.fetch_add(1, Ordering::Relaxed);
        {
            let mut plan = self.plan.lock();
            for c in &changes {
                // Checked above, so they apply.
                let _ = c.apply_to(&mut plan);
            }
        }
        if self.events.receiver_count() > 0 {
            let updates = Update::from_changes(&self.plan.lock(), &changes);
            let _ = self.events.send(Event::Changed(changes.into()));
            if !updates.is_empty() {
                let _ = self.events.send(Event::Updated(updates.into()));
            }
        }
        Ok(())
    }

    /// Records that phase `reason` failed, unless an earlier phase already did.
    pub(crate) fn fail(&self, reason: Reason) {
        self.reason.lock().get_or_insert(reason);
    }

    /// The first phase that failed so far.
    pub(crate) fn reason(&self) -> Option<Reason> {
        *self.reason.lock()
    }

    fn failure(&self) -> RunError {
        RunError::Store(
            self.store_failure
                .lock()
                .clone()
                .unwrap_or_else(|| StoreError::permanent("the run was aborted")),
        )
    }

    /// Sets the state of the object at `loc`, keeping the start time of a running object.
    pub(crate) async fn set_status(&self, loc: Loc, status: Status) -> Result<(), RunError> {
        let change = self.status_change(loc, status);
        self.commit(vec![change]).await
    }

    /// The change that moves the object at `loc` to `status` now.
    pub(crate) fn status_change(&self, loc: Loc, status: Status) -> Change {
        let now = now();
        let (id, old) = {
            let plan = self.plan.lock();
            (plan.id_at(loc), plan.state_at(loc))
        };
        let (id, old) = (id.unwrap_or_default(), old.unwrap_or_default());
        let state = match status {
            Status::NotStarted => State::default(),
            Status::Running => State {
                status,
                start: old.start.or(Some(now)),
                end: None,
            },
            _ => State {
                status,
                start: old.start.or(Some(now)),
                end: Some(now),
            },
        };
        Change::State { loc, id, state }
    }

    pub(crate) fn status_of(&self, loc: Loc) -> Status {
        if let Some(done) = self.final_plan.lock().as_ref() {
            return done.state_at(loc).map(|s| s.status).unwrap_or_default();
        }
        self.plan
            .lock()
            .state_at(loc)
            .map(|s| s.status)
            .unwrap_or_default()
    }

    /// Waits while the plan is paused. Returns `false` if the plan was stopped meanwhile.
    pub(crate) async fn wait_unpaused(&self, stop: &CancellationToken) -> bool {
        let mut rx = self.paused.subscribe();
        loop {
            if stop.is_cancelled() || self.abort.is_cancelled() {
                return false;
            }
            if !*rx.borrow_and_update() {
                return true;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return true },
                _ = stop.cancelled() => return false,
                _ = self.abort.cancelled() => return false,
            }
        }
    }

    /// The plan as it is now (the final tree once the run ended).
    pub(crate) fn snapshot(&self) -> Plan {
        if let Some(done) = self.final_plan.lock().as_ref() {
            return Plan::clone(done);
        }
        self.plan.lock().clone()
    }

    /// Publishes the outcome: the final tree moves out of the live mutex (no copy), subscribers
    /// get `Finished`, waiters wake up.
    pub(crate) fn finish(&self, result: Result<(), RunError>) {
        let plan = std::mem::replace(&mut *self.plan.lock(), Plan::empty(String::new()));
        let plan = Arc::new(plan);
        *self.final_plan.lock() = Some(plan.clone());
        if self.events.receiver_count() > 0 {
            let _ = self
                .events
                .send(Event::Finished(Box::new(Plan::clone(&plan))));
        }
        self.done.send_replace(Some(result));
        self.started.send_replace(true);
    }

    pub(crate) fn emergency(&self) -> bool {
        self.emergency.load(Ordering::SeqCst)
    }

    /// Stops the plan: no new work starts; in-flight actions see cancellation and get the grace
    /// period. With `emergency`, deferred work is skipped and in-flight deferred actions are
    /// cancelled too.
    pub(crate) fn request_stop(&self, emergency: bool) {
        if emergency {
            self.emergency.store(true, Ordering::SeqCst);
            self.kill.cancel();
        }
        self.stop.cancel();
        // A stopped plan ends: its deferred work must not wait for a resume.
        self.paused.send_replace(false);
    }
}

pub(crate) fn now() -> Timestamp {
    chrono::Utc::now()
}

/// The instant `d` from now; a duration too long to add (`Duration::MAX`, say) gives an
/// instant [`MAX_DURATION`](crate::workflow::MAX_DURATION) away, never a panic.
pub(crate) fn deadline_in(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .unwrap_or(now + crate::workflow::MAX_DURATION)
}

/// A panic's message, for the error that reports it.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_owned()
    }
}

/// Runs `fut`, turning a panic inside it into [`RunError::Internal`].
pub(crate) async fn caught<T>(
    fut: impl std::future::Future<Output = Result<T, RunError>>,
) -> Result<T, RunError> {
    use futures_util::FutureExt as _;
    std::panic::AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(RunError::Internal(format!(
                "the engine panicked: {}",
                panic_message(&*panic)
            )))
        })
}

/// The changes that fail every `Running` object of `plan` but the plan itself and those `keep`
/// selects, closing an unfinished attempt with `error`.
pub(crate) fn fail_running(
    plan: &Plan,
    error: &crate::plugin::PluginError,
    keep: impl Fn(Loc) -> bool,
) -> Vec<Change> {
    use crate::workflow::{Attempt, ObjectRef, Outcome};
    let now = now();
    let mut changes = Vec::new();
    for (loc, obj) in plan.walk() {
        let state = obj.state();
        if state.status != Status::Running || loc == Loc::Plan || keep(loc) {
            continue;
        }
        if let ObjectRef::Action(a) = obj
            && let Some(last) = a.attempts().last().filter(|t| t.end.is_none())
        {
            let attempt = Attempt {
                start: last.start,
                end: Some(now),
                outcome: Some(Outcome::Error(Box::new(error.clone()))),
            };
            changes.push(Change::Attempt {
                loc,
                id: a.id(),
                index: a.attempts().len() as u32 - 1,
                attempt,
            });
        }
        changes.push(Change::State {
            loc,
            id: obj.id(),
            state: State {
                status: Status::Failed,
                start: state.start,
                end: Some(now),
            },
        });
    }
    changes
}

/// The changes that fail a plan found too stale to resume: every running object `Failed`, an
/// unfinished attempt closed with an explanation, reason `ExceedRecovery`.
pub(crate) fn expire_changes(plan: &Plan, age: Duration) -> Vec<Change> {
    use crate::plugin::{PluginError, codes};
    let error = PluginError::engine(
        codes::INTERRUPTED,
        format!(
            "interrupted: the process running the plan stopped and its last heartbeat was {}s old, more than the recovery limit",
            age.as_secs()
        ),
        true,
    );
    let mut changes = fail_running(plan, &error, |_| false);
    changes.push(Change::Reason(Reason::ExceedRecovery));
    changes.push(Change::State {
        loc: Loc::Plan,
        id: plan.id.0,
        state: State {
            status: Status::Failed,
            start: plan.state().start,
            end: Some(now()),
        },
    });
    changes
}

impl crate::plugin::GateSource for Run {
    fn decision(&self, loc: Loc) -> Option<crate::workflow::Decision> {
        self.plan.lock().decision_at(loc).cloned()
    }
    fn decided(&self) -> watch::Receiver<u64> {
        self.decided.subscribe()
    }
    fn close(&self, loc: Loc) -> crate::plugin::BoxFuture<'_, Option<crate::workflow::Decision>> {
        Box::pin(async move {
            let _deciding = self.deciding.lock().await;
            self.closed_gates.lock().insert(loc);
            self.plan.lock().decision_at(loc).cloned()
        })
    }
    fn waiting(&self, loc: Loc) {
        self.closed_gates.lock().remove(&loc);
        if self.options.gate_hooks.is_empty() {
            return;
        }
        let plan = self.plan.lock().clone();
        let Some(gate) = plan.waiting_gates().into_iter().find(|g| g.loc == loc) else {
            return;
        };
        for hook in &self.options.gate_hooks {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (hook.0)(&plan, &gate)))
                .is_err()
            {
                tracing::error!(plan = %self.id, gate = %gate.name, "a gate hook panicked");
            }
        }
    }
}

impl crate::plugin::PathSource for Run {
    fn path(&self, loc: Loc) -> crate::workflow::ObjectPath {
        self.plan.lock().path(loc)
    }
}

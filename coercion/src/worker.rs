//! The worker loop: a workstream over a store shared by several processes (the PostgreSQL
//! store) claims plans that need a process — plans a client asked to start, and running plans
//! whose process died (its lease expired) — and runs them.
//!
//! ```no_run
//! # async fn demo(ws: coercion::Workstream) {
//! use coercion::worker::WorkerOptions;
//! let worker = ws.spawn_worker(WorkerOptions::default());
//! // … until shutdown:
//! worker.stop().await;
//! # }
//! ```
//!
//! Every `poll_interval` (with ±20 % jitter, so workers do not poll in lock step) the loop asks
//! the store for at most `min(claim_batch, max_running − running)` plans (`running`: every plan
//! the workstream runs, those the program started itself included)
//! ([`Store::claim_runnable`](crate::Store::claim_runnable), which takes them with
//! `FOR UPDATE SKIP LOCKED` and leases them to this process), and launches each. A running plan
//! whose last heartbeat is older than `max_last_update` is failed with `ExceedRecovery` instead
//! of resumed. Bounding each poll and each worker's running plans spreads the plans over the
//! workers — also after an outage: building a workstream over a shared store resumes nothing,
//! so a restarted worker takes over at most `max_running` orphans (they are claimed before
//! plans not started yet) and leaves the others to other workers.

use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::workflow::{PlanId, Status};
use crate::workstream::{Error, Workstream};

/// Options of [`Workstream::spawn_worker`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerOptions {
    poll_interval: Duration,
    max_running: usize,
    claim_batch: usize,
    max_last_update: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            poll_interval: Duration::from_secs(1),
            max_running: 100,
            claim_batch: 10,
            max_last_update: Duration::from_secs(30 * 60),
        }
    }
}

impl WorkerOptions {
    /// How often the store is asked for plans to run (default 1 s; kept between 1 ms and
    /// [`MAX_DURATION`](crate::workflow::MAX_DURATION)).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval =
            interval.clamp(Duration::from_millis(1), crate::workflow::MAX_DURATION);
        self
    }

    /// At most this many plans launched by this worker run at once (default 100; at least 1;
    /// `usize::MAX` and anything above [`Semaphore::MAX_PERMITS`] mean no limit).
    pub fn max_running(mut self, plans: usize) -> Self {
        self.max_running = plans.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// At most this many plans are claimed per poll (default 10; at least 1).
    pub fn claim_batch(mut self, plans: usize) -> Self {
        self.claim_batch = plans.max(1);
        self
    }

    /// A claimed running plan whose last heartbeat is older than this is failed with
    /// `ExceedRecovery` instead of resumed (default 30 min).
    pub fn max_last_update(mut self, age: Duration) -> Self {
        self.max_last_update = age;
        self
    }
}

/// A running worker loop; see [`Workstream::spawn_worker`].
#[derive(Debug)]
pub struct WorkerHandle {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops claiming plans and waits for the loop to end. Plans already launched keep running
    /// in the workstream.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

impl Workstream {
    /// Starts a worker loop in the background (see the [module docs](crate::worker)): this
    /// workstream then runs plans that clients started and takes over plans whose process died.
    /// Only stores shared by several processes hand out plans; with others the loop idles.
    pub fn spawn_worker(&self, options: WorkerOptions) -> WorkerHandle {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(worker_loop(self.clone(), options, cancel.clone()));
        WorkerHandle { cancel, task }
    }
}

async fn worker_loop(ws: Workstream, options: WorkerOptions, cancel: CancellationToken) {
    // Only plans this worker can run are claimed.
    let plugins: Vec<String> = ws
        .registry()
        .iter()
        .map(|(name, _)| name.to_owned())
        .collect();
    loop {
        // Every plan running in the workstream takes a slot: those this loop took over, those
        // the program started itself.
        let free = options
            .max_running
            .saturating_sub(ws.running_count())
            .min(options.claim_batch);
        if free > 0 {
            match ws.store().claim_runnable_for(free, &plugins).await {
                Ok(ids) => {
                    for id in ids {
                        take(&ws, id, &options).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::storage::Chain(&e), "worker: claiming plans failed; trying again later")
                }
            }
        }
        let jitter = 0.8 + 0.4 * fastrand::f64();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(options.poll_interval.mul_f64(jitter)) => {}
        }
    }
}

/// Runs a claimed plan: resumes it, fails it if too stale, or gives it back. `true` when it
/// was launched.
async fn take(ws: &Workstream, id: PlanId, options: &WorkerOptions) -> bool {
    let store = ws.store();
    let plan = match store.read(id).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(plan = %id, error = %crate::storage::Chain(&e), "worker: cannot read a claimed plan; giving it back");
            let _ = store.release(id).await;
            return false;
        }
    };
    if plan.state.status == Status::Running {
        let last = plan.heartbeat.or(plan.state.start).or(plan.submit_time);
        let age = last
            .and_then(|t| (crate::engine::now() - t).to_std().ok())
            .unwrap_or_default();
        if age > options.max_last_update {
            tracing::warn!(plan = %id, ?age, "worker: plan too stale to resume; failing it with ExceedRecovery");
            let changes = crate::engine::expire_changes(&plan, age);
            if let Err(e) = store.apply(id, &changes).await {
                tracing::warn!(plan = %id, error = %crate::storage::Chain(&e), "worker: could not fail a stale plan");
            }
            let _ = store.release(id).await;
            return false;
        }
        tracing::info!(plan = %id, "worker: taking over a plan whose process stopped");
    } else if plan.state.status != Status::NotStarted {
        // Ended meanwhile.
        let _ = store.release(id).await;
        return false;
    }
    match ws.launch(plan).await {
        Ok(()) => true,
        // Already running here (its lease had lapsed and was renewed by this claim).
        Err(Error::AlreadyStarted(_)) => false,
        Err(e) => {
            tracing::warn!(plan = %id, error = %crate::storage::Chain(&e), "worker: could not launch a claimed plan");
            if !matches!(e, Error::OwnedElsewhere(_)) {
                let _ = store.release(id).await;
            }
            false
        }
    }
}

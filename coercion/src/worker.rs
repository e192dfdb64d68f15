//! The worker loop: a workstream over a store shared by several processes (the PostgreSQL
//! store) claims plans that need a process — plans a client asked to start, and running plans
//! whose process died (its lease expired) — and runs them.
//!
//! ```no_run
//! # async fn demo(ws: coercion::Workstream) {
//! use coercion::worker::WorkerOptions;
//! let worker = ws.spawn_worker(WorkerOptions::default()).expect("a shared store");
//! // … until shutdown:
//! worker.stop().await;
//! # }
//! ```
//!
//! Every `poll_interval` (with ±20 % jitter, so workers do not poll in lock step) the loop asks
//! the store for at most `min(claim_batch, max_running − running)` plans (`running`: every plan
//! the workstream runs, those the program started itself included)
//! ([`SharedStore::claim_runnable`], which takes them with
//! `FOR UPDATE SKIP LOCKED` and leases them to this process), and launches each. A running plan
//! whose last heartbeat is older than the workstream's
//! [`max_last_update`](crate::WorkstreamBuilder::max_last_update) is failed with `ExceedRecovery`
//! instead of resumed, by the same rule as start-up recovery. Bounding each poll and each worker's running plans spreads the plans over the
//! workers — also after an outage: building a workstream over a shared store resumes nothing,
//! so a restarted worker takes over at most `max_running` orphans (they are claimed before
//! plans not started yet) and leaves the others to other workers.

use std::time::Duration;

use tokio::sync::Semaphore;
#[cfg(feature = "control")]
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "control")]
use crate::storage::Changed;
use crate::storage::SharedStore;
use crate::workflow::{PlanId, Status};
use crate::workstream::{Error, TakeOver, Workstream};

/// Options of [`Workstream::spawn_worker`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerOptions {
    poll_interval: Duration,
    max_running: usize,
    claim_batch: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            poll_interval: Duration::from_secs(1),
            max_running: 100,
            claim_batch: 10,
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
    /// Only stores shared by several processes hand out plans ([`Store::shared`](crate::Store::shared)): over any
    /// other store this fails with [`Error::Config`].
    pub fn spawn_worker(&self, options: WorkerOptions) -> Result<WorkerHandle, Error> {
        if self.store().shared().is_none() {
            return Err(Error::Config(format!(
                "a worker takes plans from a store shared by several processes (PostgresStore); \
                 {} belongs to this process, which runs and resumes its plans itself",
                self.store().describe()
            )));
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(worker_loop(self.clone(), options, cancel.clone()));
        Ok(WorkerHandle { cancel, task })
    }
}

async fn worker_loop(ws: Workstream, options: WorkerOptions, cancel: CancellationToken) {
    let store = ws.store().clone();
    let Some(shared) = store.shared() else {
        return;
    };
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
            match shared.claim_runnable_for(free, &plugins).await {
                Ok(ids) => {
                    for id in ids {
                        take(&ws, shared, id).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::storage::Chain(&e), "worker: claiming plans failed; trying again later")
                }
            }
        }
        // Requests kept while no process held the plans just taken (they started paused if one
        // was a stop or a pause), and those of plans that ended unanswered. Requests for plans
        // running here are also carried out as they come (`spawn_control_answerer`).
        #[cfg(feature = "control")]
        crate::control::answer_shared(&ws, shared).await;
        let jitter = 0.8 + 0.4 * fastrand::f64();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(options.poll_interval.mul_f64(jitter)) => {}
        }
    }
}

/// How often a workstream over a shared store looks for control requests while plans run in
/// it, in case a notice was lost (a dropped connection); a notice is acted on at once.
#[cfg(feature = "control")]
const CONTROL_POLL: Duration = Duration::from_secs(1);

/// Starts the task that carries out the control requests kept by the shared store for the
/// plans `ws` runs ([`crate::control::answer_shared`]): when told of one, and every
/// [`CONTROL_POLL`] while plans run. It ends soon after the workstream is dropped.
#[cfg(feature = "control")]
pub(crate) fn spawn_control_answerer(ws: &Workstream) {
    let weak = ws.downgrade();
    let store = ws.store().clone();
    tokio::spawn(async move {
        let Some(shared) = store.shared() else {
            return;
        };
        let mut told = shared.changes();
        let mut tick = tokio::time::interval(CONTROL_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut asked = None;
            tokio::select! {
                _ = tick.tick() => {}
                notice = recv(&mut told) => match notice {
                    Some(Changed::Control(id)) => asked = Some(id),
                    Some(Changed::Any) => {}
                    Some(_) => continue,
                    None => told = None,
                },
            }
            let Some(ws) = Workstream::upgrade(&weak) else {
                return;
            };
            let wanted = match asked {
                Some(id) => ws.is_running_here(id),
                None => ws.running_count() > 0,
            };
            if wanted {
                crate::control::answer_shared(&ws, shared).await;
            }
        }
    });
}

/// The next notice, if there are notices: `None` when the channel closed; never for a lagging
/// receiver (it says [`Changed::Any`]), nor without notices (it waits for ever).
#[cfg(feature = "control")]
async fn recv(told: &mut Option<broadcast::Receiver<Changed>>) -> Option<Changed> {
    let Some(rx) = told else {
        return std::future::pending().await;
    };
    match rx.recv().await {
        Ok(changed) => Some(changed),
        Err(broadcast::error::RecvError::Lagged(_)) => Some(Changed::Any),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

/// Runs a claimed plan by the workstream's one rule ([`Workstream::take_over`]: resumed, or
/// failed if too stale); gives it back when it was not launched (unless another process holds
/// it). `true` when it was launched.
async fn take(ws: &Workstream, shared: &dyn SharedStore, id: PlanId) -> bool {
    #[cfg_attr(not(feature = "control"), allow(unused_mut))]
    let mut plan = match ws.store().read(id).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(plan = %id, error = %crate::storage::Chain(&e), "worker: cannot read a claimed plan; giving it back");
            let _ = shared.release(id).await;
            return false;
        }
    };
    if plan.status() == Status::Running {
        tracing::info!(plan = %id, "worker: taking over a plan whose process stopped");
    }
    // A stop or a pause someone asked for while no process held the plan: it starts paused,
    // so nothing runs before the request is carried out (next, by `answer_shared`).
    #[cfg(feature = "control")]
    if let Ok(pending) = shared.pending_controls(&[id]).await
        && pending.iter().any(|r| {
            serde_json::from_str::<crate::control::ControlRequest>(&r.request).is_ok_and(|r| {
                matches!(
                    r.op,
                    crate::control::ControlOp::Stop | crate::control::ControlOp::Pause
                )
            })
        })
    {
        *plan.run_mut().paused = true;
    }
    match ws.take_over(plan).await {
        Ok(TakeOver::Launched) => true,
        // Another process holds it, or this one runs it (the claim renewed its lease): the
        // lease is not given up.
        Ok(TakeOver::OwnedElsewhere | TakeOver::RunningHere) => false,
        Ok(TakeOver::Expired | TakeOver::MissingPlugins | TakeOver::Ended) => {
            let _ = shared.release(id).await;
            false
        }
        Err(e) => {
            tracing::warn!(plan = %id, error = %crate::storage::Chain(&e), "worker: could not take a claimed plan over");
            let _ = shared.release(id).await;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store of one process hands out no plans: a worker over it would idle for ever, so
    /// asking for one is refused, naming the store.
    #[tokio::test]
    async fn a_worker_over_a_store_of_one_process_is_refused() {
        let ws = Workstream::builder()
            .in_memory()
            .registry(crate::Registry::new())
            .build()
            .await
            .unwrap();
        let err = ws.spawn_worker(WorkerOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("shared by several processes") && message.contains("memory"),
            "{message}"
        );
    }
}

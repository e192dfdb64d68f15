//! Check sections: run once (all actions concurrently), and the continuous loop.

use std::sync::Arc;

use futures_util::future::join_all;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::action::{Ended, run_action};
use super::{Run, RunError};
use crate::storage::Change;
use crate::workflow::{CheckSlot, Loc, Parent, Status};

/// The result of running a check section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CheckResult {
    /// No such section.
    Absent,
    Passed,
    Failed,
    Stopped,
}

impl CheckResult {
    pub(crate) fn failed(self) -> bool {
        self == CheckResult::Failed
    }
}

fn checks_status(run: &Run, block: Option<usize>, slot: CheckSlot) -> Option<(Status, usize)> {
    let plan = run.plan.lock();
    plan.checks_at(block, slot)
        .map(|c| (c.status(), c.actions.len()))
}

/// Runs the section once, or reports its stored result if it already finished (recovery).
pub(crate) async fn run_checks_once(
    run: &Arc<Run>,
    block: Option<usize>,
    slot: CheckSlot,
    stop: &CancellationToken,
) -> Result<CheckResult, RunError> {
    let Some((status, _)) = checks_status(run, block, slot) else {
        return Ok(CheckResult::Absent);
    };
    match status {
        Status::Completed => Ok(CheckResult::Passed),
        Status::Failed => Ok(CheckResult::Failed),
        Status::Stopped => Ok(CheckResult::Stopped),
        Status::NotStarted | Status::Running => run_checks(run, block, slot, stop).await,
    }
}

/// Runs the section (again): resets actions that ran before, runs them all concurrently.
pub(crate) async fn run_checks(
    run: &Arc<Run>,
    block: Option<usize>,
    slot: CheckSlot,
    stop: &CancellationToken,
) -> Result<CheckResult, RunError> {
    let loc = Loc::Checks { block, slot };
    let parent = Parent::Checks { block, slot };
    // No action starts while the plan is paused, checks included.
    if !run.wait_unpaused(stop).await {
        if run.abort.is_cancelled() {
            return Err(run.failure());
        }
        return Ok(CheckResult::Stopped);
    }
    let mut changes = Vec::new();
    {
        let plan = run.plan.lock();
        let checks = plan.checks_at(block, slot).expect("checked above");
        for (index, a) in checks.actions().into_iter().enumerate() {
            if a.status().is_terminal() {
                changes.push(Change::Reset {
                    loc: Loc::Action { parent, index },
                    id: a.id,
                });
            }
        }
    }
    changes.push(run.status_change(loc, Status::Running));
    run.commit(changes).await?;
    let n = checks_status(run, block, slot).map(|(_, n)| n).unwrap_or(0);
    let results =
        join_all((0..n).map(|index| run_action(run, Loc::Action { parent, index }, stop))).await;
    let mut result = CheckResult::Passed;
    for r in results {
        match r? {
            Ended::Completed => {}
            Ended::Failed => result = CheckResult::Failed,
            Ended::Stopped => {
                if result == CheckResult::Passed {
                    result = CheckResult::Stopped;
                }
            }
        }
    }
    let status = match result {
        CheckResult::Passed => Status::Completed,
        CheckResult::Failed => Status::Failed,
        _ => Status::Stopped,
    };
    run.set_status(loc, status).await?;
    Ok(result)
}

/// A running continuous-check loop.
pub(crate) struct ContLoop {
    failed: watch::Receiver<bool>,
    cancel: CancellationToken,
    handle: JoinHandle<Result<(), RunError>>,
}

/// Observes the continuous checks that apply to some work (the plan's and the block's).
#[derive(Clone, Default)]
pub(crate) struct ContWatch {
    receivers: Vec<watch::Receiver<bool>>,
}

impl ContWatch {
    pub(crate) fn with(&self, cont: Option<&ContLoop>) -> ContWatch {
        let mut w = self.clone();
        if let Some(c) = cont {
            w.receivers.push(c.failed.clone());
        }
        w
    }

    /// Whether any observed loop saw a failure.
    pub(crate) fn has_failed(&self) -> bool {
        self.receivers.iter().any(|r| *r.borrow())
    }

    /// Completes when any observed loop sees a failure; pending forever otherwise.
    pub(crate) async fn failed(&self) {
        let waits = self.receivers.iter().cloned().map(|mut rx| {
            Box::pin(async move {
                if rx.wait_for(|f| *f).await.is_err() {
                    std::future::pending::<()>().await;
                }
            })
        });
        let waits: Vec<_> = waits.collect();
        if waits.is_empty() {
            std::future::pending::<()>().await;
        } else {
            futures_util::future::select_all(waits).await;
        }
    }
}

impl ContLoop {
    /// Starts the loop of the continuous checks at `block`, if there are any. With
    /// `first_run_done`, the first run already happened (with the pre-checks) and passed, so
    /// the loop starts with a pause.
    pub(crate) fn spawn(
        run: &Arc<Run>,
        block: Option<usize>,
        first_run_done: bool,
        stop: &CancellationToken,
    ) -> Option<ContLoop> {
        let (_, n) = checks_status(run, block, CheckSlot::Cont)?;
        if n == 0 {
            return None;
        }
        let delay = run
            .plan
            .lock()
            .checks_at(block, CheckSlot::Cont)
            .map(|c| c.delay)
            .unwrap_or_default();
        let (tx, failed) = watch::channel(false);
        let cancel = stop.child_token();
        let (run2, cancel2, stop2) = (run.clone(), cancel.clone(), stop.clone());
        // In the span of the plan or block that runs the loop, as the checks run inline are.
        let handle = tokio::spawn(tracing::Instrument::in_current_span(async move {
            let mut pause_first = first_run_done;
            loop {
                if pause_first {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel2.cancelled() => return Ok(()),
                    }
                }
                pause_first = true;
                if cancel2.is_cancelled() {
                    return Ok(());
                }
                // Each run finishes even if the loop is cancelled meanwhile: its result counts.
                if run_checks(&run2, block, CheckSlot::Cont, &stop2).await? == CheckResult::Failed {
                    let _ = tx.send(true);
                    return Ok(());
                }
            }
        }));
        Some(ContLoop {
            failed,
            cancel,
            handle,
        })
    }

    /// Stops the loop, waiting for a run in progress; returns whether the checks failed.
    pub(crate) async fn finish(mut self) -> Result<bool, RunError> {
        self.cancel.cancel();
        match (&mut self.handle).await {
            Ok(r) => r?,
            Err(e) => {
                return Err(RunError::Internal(format!(
                    "continuous checks task failed: {e}"
                )));
            }
        }
        Ok(*self.failed.borrow())
    }
}

/// A loop that was not finished (its phase ended with an error) ends with it: nothing of it
/// runs or writes afterwards.
impl Drop for ContLoop {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.handle.abort();
    }
}

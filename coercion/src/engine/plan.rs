//! The plan's phases: bypass → pre-checks (+ first continuous run) → blocks → post-checks →
//! deferred batches → deferred checks → end.

use std::sync::Arc;

use tracing::Instrument as _;

use super::action::{Ended, run_action};
use super::block::{BlockEnd, run_block};
use super::checks::{CheckResult, ContLoop, ContWatch, run_checks, run_checks_once};
use super::{Run, RunError, caught, fail_running, now};
use crate::plugin::{PluginError, codes};
use crate::storage::Change;
use crate::workflow::{CheckSlot, Loc, Owner, Parent, Reason, Status};

/// Runs (or resumes) the plan to its end and publishes the outcome.
///
/// An internal error (a panic of the engine or of its store, anywhere in the run) still ends
/// the plan: what was running is failed, the deferred work that can still run runs, and the
/// plan ends `Failed` with reason `Internal`; waiters get [`RunError::Internal`]. Only a store
/// that fails for good leaves the plan `Running`, for recovery.
pub(crate) async fn run_plan(run: Arc<Run>) {
    let name = run.plan.lock().name.clone();
    let span = tracing::info_span!("plan", plan = %run.id, name = %name);
    let gauge = crate::metrics::RunGauge::begin();
    let heartbeat = spawn_heartbeat(&run);
    let mut internal = None;
    let outcome = match caught(drive(&run)).instrument(span.clone()).await {
        Err(RunError::Internal(message)) => {
            tracing::error!(plan = %run.id, error = %message, "internal error of the engine; failing what runs, running the deferred work that can run, then ending the plan (reason Internal)");
            let ended = end_after_internal_error(&run, &message)
                .instrument(span.clone())
                .await;
            internal = Some(message);
            ended.map(|()| Some(run.reason()))
        }
        other => other,
    };
    // Nothing of the plan writes after its end: the heartbeat stops before the final write.
    heartbeat.abort();
    let _ = heartbeat.await;
    let mut result = match outcome {
        Ok(Some(reason)) => caught(finish(&run, reason)).await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(RunError::Internal(message)) = &result {
        // The final write itself failed that way: once more, as the internal failure it is.
        tracing::error!(plan = %run.id, error = %message, "internal error in the plan's final write; writing it again as a failure (reason Internal)");
        internal.get_or_insert(message.clone());
        run.fail(Reason::Internal);
        result = caught(finish(&run, run.reason())).await;
    }
    let result = match (result, internal) {
        (Ok(()), Some(message)) => Err(RunError::Internal(message)),
        (result, _) => result,
    };
    if let Err(RunError::Store(e)) = &result {
        tracing::error!(plan = %run.id, error = %crate::storage::Chain(e), "plan run ended without finishing; it stays Running in storage for recovery");
    }
    gauge.ended(run.status_of(Loc::Plan));
    // Ended for good (not cut short by the store, to be resumed elsewhere): the hooks hear of
    // it before anyone waiting for the plan wakes up.
    if !run.options.plan_end_hooks.is_empty() && !matches!(result, Err(RunError::Store(_))) {
        let plan = run.plan.lock().clone();
        if plan.status().is_terminal() {
            for hook in &run.options.plan_end_hooks {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (hook.0)(&plan)))
                    .is_err()
                {
                    tracing::error!(plan = %run.id, "an on_plan_end hook panicked");
                }
            }
        }
    }
    // The plan's span closes (and is exported) before anyone waiting for the plan wakes up: a
    // program that shuts its tracer down after `wait` has every span of the run.
    drop(span);
    run.finish(result);
}

/// After an internal error stopped the run's phases: fails every object left running (but the
/// deferred batches and checks), then runs the deferred work that the failure selects, each
/// phase guarded again; a second internal error fails what it left running too.
async fn end_after_internal_error(run: &Arc<Run>, message: &str) -> Result<(), RunError> {
    run.fail(Reason::Internal);
    let error = PluginError::engine(
        codes::INTERNAL,
        format!("an internal error of the engine ended the run: {message}"),
        true,
    );
    let deferred = |loc: Loc| {
        matches!(
            loc,
            Loc::Batch(_)
                | Loc::Checks {
                    block: None,
                    slot: CheckSlot::Deferred
                }
                | Loc::Action {
                    parent: Parent::Batch(_)
                        | Parent::Checks {
                            block: None,
                            slot: CheckSlot::Deferred
                        },
                    ..
                }
        )
    };
    let changes = fail_running(&run.plan.lock(), &error, deferred);
    if !changes.is_empty() {
        run.commit(changes).await?;
    }
    if run.emergency() {
        return Ok(());
    }
    match caught(run_deferred(run, true)).await {
        Err(RunError::Internal(again)) => {
            tracing::error!(plan = %run.id, error = %again, "internal error again in the deferred work; failing it");
            let changes = fail_running(&run.plan.lock(), &error, |_| false);
            if !changes.is_empty() {
                run.commit(changes).await?;
            }
            Ok(())
        }
        other => other,
    }
}

fn spawn_heartbeat(run: &Arc<Run>) -> tokio::task::JoinHandle<()> {
    let run = run.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(run.options.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            // A plugin blocking its thread holds the plan up: the heartbeat says so by not
            // renewing (another worker of a shared store may take the plan over).
            if let Some(blocked) = super::watchdog::blocked_actions(Some(run.id)).first() {
                tracing::warn!(plan = %run.id, "not renewing the heartbeat: {blocked}");
                continue;
            }
            if run.commit(vec![Change::Heartbeat(now())]).await.is_err() {
                return;
            }
        }
    })
}

/// Runs the phases; returns the first failing phase (`Some(None)`: none) for [`finish`], or
/// `None` if the plan had already ended.
async fn drive(run: &Arc<Run>) -> Result<Option<Option<Reason>>, RunError> {
    let stop = &run.stop;
    let status = run.status_of(Loc::Plan);
    if status.is_terminal() {
        return Ok(None);
    }
    // Who runs the plan from here on, recorded before any step: the plan's history of owners
    // says which process ran which attempt.
    let epoch = run.store.shared().and_then(|s| s.lease_epoch(run.id));
    if status == Status::NotStarted {
        let owner = Owner::now(false, epoch);
        let mut changes = vec![run.status_change(Loc::Plan, Status::Running)];
        changes.extend([Change::Owner(owner), Change::Heartbeat(now())]);
        run.commit(changes).await?;
        crate::metrics::plan_started(false);
    } else if !run.resumed {
        // Stored already Running by `submit_and_start` or a retry: started here all the same.
        run.commit(vec![Change::Owner(Owner::now(false, epoch))])
            .await?;
        crate::metrics::plan_started(false);
    } else {
        let owner = Owner::now(true, epoch);
        tracing::info!(plan = %run.id, by = %owner.by, epoch = ?owner.epoch, "plan resumed");
        run.commit(vec![Change::Owner(owner), Change::Heartbeat(now())])
            .await?;
        crate::metrics::plan_started(true);
    }
    run.started.send_replace(true);

    // Bypass: when every bypass check passes, the plan is done and nothing else runs.
    if run_checks_once(run, None, CheckSlot::Bypass, stop).await? == CheckResult::Passed {
        return Ok(Some(None));
    }

    let mut cont = None;
    let has_pre = run.plan.lock().checks.pre.is_some();
    if has_pre {
        let pre_done = run
            .status_of(Loc::Checks {
                block: None,
                slot: CheckSlot::Pre,
            })
            .is_terminal();
        let has_cont = run.plan.lock().checks.cont.is_some();
        let (pre, first_cont) =
            tokio::join!(run_checks_once(run, None, CheckSlot::Pre, stop), async {
                if has_cont && !pre_done {
                    run_checks(run, None, CheckSlot::Cont, stop).await.map(Some)
                } else {
                    Ok(None)
                }
            });
        let (pre, first_cont) = (pre?, first_cont?);
        if pre.failed() {
            run.fail(Reason::PreCheck);
        } else if first_cont.is_some_and(|c| c.failed()) {
            run.fail(Reason::ContCheck);
        } else if !stop.is_cancelled() {
            cont = ContLoop::spawn(run, None, first_cont.is_some(), stop);
        }
    } else if !stop.is_cancelled() {
        cont = ContLoop::spawn(run, None, false, stop);
    }

    if run.reason().is_none() {
        let watch = ContWatch::default().with(cont.as_ref());
        let blocks = run.plan.lock().blocks.len();
        for b in 0..blocks {
            if stop.is_cancelled() {
                break;
            }
            // The plan's continuous checks failed between two blocks: the next one does not start.
            if watch.has_failed() {
                run.fail(Reason::ContCheck);
                break;
            }
            match run_block(run, b, &watch).await? {
                BlockEnd::Completed => {}
                BlockEnd::Failed => {
                    run.fail(Reason::Block);
                    break;
                }
                BlockEnd::PlanContFailed => {
                    run.fail(Reason::ContCheck);
                    break;
                }
                BlockEnd::Stopped => break,
            }
        }
    }
    if let Some(cont) = cont.take()
        && cont.finish().await?
    {
        run.fail(Reason::ContCheck);
    }
    if run.reason().is_none()
        && !stop.is_cancelled()
        && run_checks_once(run, None, CheckSlot::Post, stop)
            .await?
            .failed()
    {
        run.fail(Reason::PostCheck);
    }

    // A stop before the deferred work comes first in time: what fails after it is not the reason.
    if stop.is_cancelled() {
        run.fail(Reason::Stopped);
    }
    // Deferred work runs on success, on failure and after a stop — not after an emergency stop.
    if !run.emergency() {
        let failed = run.reason().is_some() || stop.is_cancelled();
        run_deferred(run, failed).await?;
    }
    Ok(Some(run.reason()))
}

/// Runs (or resumes) the deferred batches that `failed` selects, in order, then the plan's
/// deferred checks; stops early after an emergency stop.
async fn run_deferred(run: &Arc<Run>, failed: bool) -> Result<(), RunError> {
    let batches: Vec<(crate::workflow::When, bool, Status)> = run
        .plan
        .lock()
        .deferred()
        .iter()
        .map(|d| (d.when, d.fail_plan, d.status()))
        .collect();
    for (i, (when, fail_plan, status)) in batches.into_iter().enumerate() {
        if run.emergency() {
            return Ok(());
        }
        let selected = status != Status::NotStarted || when.selects(failed);
        if !selected {
            continue;
        }
        if run_batch(run, i).await? == Status::Failed && fail_plan {
            run.fail(Reason::DeferredAction);
        }
    }
    if !run.emergency()
        && run_checks_once(run, None, CheckSlot::Deferred, &run.kill)
            .await?
            .failed()
    {
        run.fail(Reason::DeferredCheck);
    }
    Ok(())
}

/// Runs (or resumes) deferred batch `i`, its actions in order.
async fn run_batch(run: &Arc<Run>, i: usize) -> Result<Status, RunError> {
    let loc = Loc::Batch(i);
    let (status, n) = {
        let plan = run.plan.lock();
        let batch = plan
            .batch_at(loc)
            .expect("the engine only runs batches of its plan");
        (batch.status(), batch.actions.len())
    };
    if status.is_terminal() {
        return Ok(status);
    }
    if status == Status::NotStarted {
        run.set_status(loc, Status::Running).await?;
    }
    let mut end = Status::Completed;
    for index in 0..n {
        if !run.wait_unpaused(&run.kill).await {
            end = Status::Stopped;
            break;
        }
        match run_action(
            run,
            Loc::Action {
                parent: Parent::Batch(i),
                index,
            },
            &run.kill,
        )
        .await?
        {
            Ended::Completed => {}
            Ended::Failed => {
                end = Status::Failed;
                break;
            }
            Ended::Stopped => {
                end = Status::Stopped;
                break;
            }
        }
    }
    run.set_status(loc, end).await?;
    Ok(end)
}

/// Writes the final status and reason: Stopped after a stop, Failed with the first failing
/// phase, Completed otherwise. The last write of the run.
async fn finish(run: &Arc<Run>, reason: Option<Reason>) -> Result<(), RunError> {
    let (status, reason) = if run.stop.is_cancelled() {
        (Status::Stopped, reason.unwrap_or(Reason::Stopped))
    } else if let Some(r) = reason {
        (Status::Failed, r)
    } else {
        (Status::Completed, Reason::None)
    };
    let mut changes = vec![Change::Reason(reason), run.status_change(Loc::Plan, status)];
    // A finished plan is not paused.
    if run.plan.lock().is_paused() {
        changes.push(Change::Paused(false));
    }
    run.commit(changes).await
}

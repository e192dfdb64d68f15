//! One block: entrance delay, bypass, pre-checks (with the first continuous run), sequences
//! under the concurrency limit and failure budget, post-checks, deferred checks, exit delay.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::action::{Ended, run_action_with};
use super::checks::{CheckResult, ContLoop, ContWatch, run_checks, run_checks_once};
use super::{Run, RunError};
use crate::workflow::{CheckSlot, Loc, Parent, Status, Tolerance};

/// How a block ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockEnd {
    Completed,
    /// The block failed on its own account.
    Failed,
    /// The plan's continuous checks failed while the block ran.
    PlanContFailed,
    Stopped,
}

/// Runs (or resumes) block `b`.
pub(crate) async fn run_block(
    run: &Arc<Run>,
    b: usize,
    plan_cont: &ContWatch,
) -> Result<BlockEnd, RunError> {
    let loc = Loc::Block(b);
    let (status, name, entrance, exit) = {
        let plan = run.plan.lock();
        let block = plan
            .block_at(loc)
            .expect("the engine only runs blocks of its plan");
        (
            block.status(),
            block.name.clone(),
            block.entrance_delay,
            block.exit_delay,
        )
    };
    match status {
        Status::Completed => return Ok(BlockEnd::Completed),
        Status::Failed => return Ok(BlockEnd::Failed),
        Status::Stopped => return Ok(BlockEnd::Stopped),
        Status::NotStarted | Status::Running => {}
    }
    let span = tracing::info_span!("block", plan = %run.id, block = %name);
    async {
        let stop = &run.stop;
        if status == Status::NotStarted {
            if !entrance.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(entrance) => {}
                    _ = stop.cancelled() => {}
                    _ = run.abort.cancelled() => {}
                }
            }
            if stop.is_cancelled() {
                return Ok(BlockEnd::Stopped);
            }
            run.set_status(loc, Status::Running).await?;
        }

        // Bypass: when every bypass check passes, the block is done.
        if run_checks_once(run, Some(b), CheckSlot::Bypass, stop).await? == CheckResult::Passed {
            run.set_status(loc, Status::Completed).await?;
            return Ok(BlockEnd::Completed);
        }

        let mut failed = false;
        let mut plan_cont_failed = false;
        // Pre-checks, with the first run of the continuous checks beside them.
        let has_pre = run.plan.lock().blocks[b].checks.pre.is_some();
        let mut cont = None;
        if has_pre {
            let pre_done = run
                .status_of(Loc::Checks {
                    block: Some(b),
                    slot: CheckSlot::Pre,
                })
                .is_terminal();
            let has_cont = run.plan.lock().blocks[b].checks.cont.is_some();
            let (pre, first_cont) =
                tokio::join!(run_checks_once(run, Some(b), CheckSlot::Pre, stop), async {
                    if has_cont && !pre_done {
                        run_checks(run, Some(b), CheckSlot::Cont, stop)
                            .await
                            .map(Some)
                    } else {
                        Ok(None)
                    }
                });
            let (pre, first_cont) = (pre?, first_cont?);
            failed = pre.failed() || first_cont.is_some_and(|c| c.failed());
            if !failed && !stop.is_cancelled() {
                cont = ContLoop::spawn(run, Some(b), first_cont.is_some(), stop);
            }
        } else if !stop.is_cancelled() {
            cont = ContLoop::spawn(run, Some(b), false, stop);
        }

        if !failed && !stop.is_cancelled() {
            let watch = plan_cont.with(cont.as_ref());
            let outcome = run_sequences(run, b, &watch).await?;
            failed = outcome.failed;
            plan_cont_failed = outcome.plan_cont_failed(plan_cont);
        }
        if let Some(cont) = cont.take()
            && cont.finish().await?
        {
            failed = true;
        }
        if !failed
            && !stop.is_cancelled()
            && run_checks_once(run, Some(b), CheckSlot::Post, stop)
                .await?
                .failed()
        {
            failed = true;
        }
        // Deferred checks run at the end of the block, on success and on failure.
        let deferred_stop = run.kill.clone();
        if !run.emergency()
            && run_checks_once(run, Some(b), CheckSlot::Deferred, &deferred_stop)
                .await?
                .failed()
        {
            failed = true;
        }
        // The plan's continuous checks failed while this block ran its checks: the block fails.
        if !failed && !stop.is_cancelled() && plan_cont.has_failed() {
            failed = true;
            plan_cont_failed = true;
        }
        let end = if failed {
            if plan_cont_failed {
                BlockEnd::PlanContFailed
            } else {
                BlockEnd::Failed
            }
        } else if stop.is_cancelled() {
            BlockEnd::Stopped
        } else {
            BlockEnd::Completed
        };
        let status = match end {
            BlockEnd::Completed => Status::Completed,
            BlockEnd::Stopped => Status::Stopped,
            BlockEnd::Failed | BlockEnd::PlanContFailed => Status::Failed,
        };
        run.set_status(loc, status).await?;
        if end == BlockEnd::Completed && !exit.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(exit) => {}
                _ = stop.cancelled() => {}
                _ = run.abort.cancelled() => {}
                _ = plan_cont.failed() => {}
            }
        }
        Ok(end)
    }
    .instrument(span)
    .await
}

struct SequencesOutcome {
    failed: bool,
    cont_failed: bool,
}

impl SequencesOutcome {
    fn plan_cont_failed(&self, plan_cont: &ContWatch) -> bool {
        self.cont_failed && plan_cont.has_failed()
    }
}

/// Runs the block's sequences, at most `concurrency` at a time. Stops launching when the failed
/// sequences exceed the tolerance, a continuous check fails, or the plan is stopped; in-flight
/// sequences then finish the action they are in and stop, and are awaited.
async fn run_sequences(
    run: &Arc<Run>,
    b: usize,
    cont: &ContWatch,
) -> Result<SequencesOutcome, RunError> {
    let (concurrency, tolerance, statuses) = {
        let plan = run.plan.lock();
        let block = plan
            .block_at(Loc::Block(b))
            .expect("the engine only runs blocks of its plan");
        let statuses: Vec<Status> = block.sequences().iter().map(|s| s.status()).collect();
        (block.concurrency.get(), block.tolerated_failures, statuses)
    };
    let total = statuses.len();
    let failures = Arc::new(AtomicUsize::new(
        statuses.iter().filter(|s| **s == Status::Failed).count(),
    ));
    let halt = run.stop.child_token();
    let exceeded = |n: usize| tolerance.is_exceeded(n, total);
    if exceeded(failures.load(Ordering::SeqCst)) {
        halt.cancel();
    }
    // A concurrency above the number of sequences (`usize::MAX` for "all at once") runs them
    // all at once; a semaphore cannot hold more permits than that anyway.
    let semaphore = Arc::new(Semaphore::new(concurrency.clamp(1, total.max(1))));
    let mut tasks = JoinSet::new();
    let mut cont_failed = cont.has_failed();
    if cont_failed {
        halt.cancel();
    }
    for (s, status) in statuses.into_iter().enumerate() {
        if status.is_terminal() {
            continue;
        }
        let permit = tokio::select! {
            biased;
            _ = halt.cancelled() => break,
            _ = cont.failed() => { cont_failed = true; halt.cancel(); break }
            p = semaphore.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        if !run.wait_unpaused(&halt).await || halt.is_cancelled() {
            break;
        }
        let ctx = SeqCtx {
            run: run.clone(),
            halt: halt.clone(),
            failures: failures.clone(),
            tolerance,
            total,
        };
        // The task keeps the block's span: the sequence's span is its child, not a new root.
        tasks.spawn(
            async move {
                let r = run_sequence(&ctx, b, s).await;
                drop(permit);
                r
            }
            .in_current_span(),
        );
        while let Some(done) = tasks.try_join_next() {
            join_result(done)?;
        }
    }
    let mut watch_cont = !cont_failed;
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                None => break,
                Some(done) => join_result(done)?,
            },
            _ = cont.failed(), if watch_cont => {
                watch_cont = false;
                // A block that already failed on its tolerance (or was stopped) keeps that cause.
                if !halt.is_cancelled() {
                    cont_failed = true;
                    halt.cancel();
                }
            }
        }
    }
    let failed = cont_failed || exceeded(failures.load(Ordering::SeqCst));
    Ok(SequencesOutcome {
        failed,
        cont_failed,
    })
}

fn join_result(r: Result<Result<(), RunError>, tokio::task::JoinError>) -> Result<(), RunError> {
    r.map_err(|e| RunError::Internal(format!("a sequence task failed: {e}")))?
}

struct SeqCtx {
    run: Arc<Run>,
    halt: CancellationToken,
    failures: Arc<AtomicUsize>,
    tolerance: Tolerance,
    total: usize,
}

async fn run_sequence(ctx: &SeqCtx, b: usize, s: usize) -> Result<(), RunError> {
    let run = &ctx.run;
    let loc = Loc::Sequence { block: b, seq: s };
    let (status, name, n) = {
        let plan = run.plan.lock();
        let seq = plan
            .sequence_at(loc)
            .expect("the engine only runs sequences of its plan");
        (seq.status(), seq.name.clone(), seq.actions.len())
    };
    let span = tracing::info_span!("sequence", plan = %run.id, sequence = %name);
    async {
        // A sequence is Running once its first action starts: one halted before that never ran
        // and stays NotStarted.
        let mut started = status != Status::NotStarted;
        let parent = Parent::Sequence { block: b, seq: s };
        let mut end = Status::Completed;
        // An action's last write rides with the next write of the sequence (the next action's
        // first, or the sequence's end): one commit per action instead of two. It is always
        // durable before anything else of the sequence runs.
        let mut pending = Vec::new();
        for index in 0..n {
            let aloc = Loc::Action { parent, index };
            if run.status_of(aloc) == Status::Completed {
                continue;
            }
            if ctx.halt.is_cancelled() {
                end = Status::Stopped;
                break;
            }
            if *run.paused.borrow() {
                // Never leave a finished action undurable while an operator holds the plan.
                if !pending.is_empty() {
                    run.commit(std::mem::take(&mut pending)).await?;
                }
                if !run.wait_unpaused(&ctx.halt).await {
                    end = Status::Stopped;
                    break;
                }
            }
            if !started {
                pending.push(run.status_change(loc, Status::Running));
                started = true;
            }
            let (ended, rest) =
                run_action_with(run, aloc, &run.stop, std::mem::take(&mut pending), true).await?;
            pending = rest;
            match ended {
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
        if !started {
            return Ok(());
        }
        pending.push(run.status_change(loc, end));
        run.commit(pending).await?;
        if end == Status::Failed {
            let failed = ctx.failures.fetch_add(1, Ordering::SeqCst) + 1;
            if ctx.tolerance.is_exceeded(failed, ctx.total) {
                ctx.halt.cancel();
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

//! One action: up to `retries + 1` attempts, each with its own timeout, backoff between them.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{Run, RunError, now};
use crate::plugin::{Context, PluginError, codes};
use crate::storage::Change;
use crate::workflow::{Attempt, Loc, Outcome, Status};

/// How an action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    Completed,
    Failed,
    Stopped,
}

impl Ended {
    pub(crate) fn status(self) -> Status {
        match self {
            Ended::Completed => Status::Completed,
            Ended::Failed => Status::Failed,
            Ended::Stopped => Status::Stopped,
        }
    }
}

/// Runs (or resumes) the action at `loc`. Completed, failed and stopped actions are not run
/// again; finished attempts stored by an earlier process count against the retries.
pub(crate) async fn run_action(
    run: &Arc<Run>,
    loc: Loc,
    stop: &CancellationToken,
) -> Result<Ended, RunError> {
    let (ended, rest) = run_action_with(run, loc, stop, Vec::new(), false).await?;
    debug_assert!(
        rest.is_empty(),
        "nothing is left to commit when the end is not deferred"
    );
    Ok(ended)
}

/// [`run_action`], with `prefix` committed together with the action's first write (a sequence
/// becoming `Running`), and with `defer_end` the action's last write returned instead of
/// committed, for the caller to commit with its own next write — the next action's first write
/// or the sequence's end — halving a sequence's commits. The returned changes must be committed
/// before anything else of the sequence runs.
pub(crate) async fn run_action_with(
    run: &Arc<Run>,
    loc: Loc,
    stop: &CancellationToken,
    prefix: Vec<Change>,
    defer_end: bool,
) -> Result<(Ended, Vec<Change>), RunError> {
    let finish = |ended: Ended, changes: Vec<Change>| async move {
        if defer_end || changes.is_empty() {
            Ok((ended, changes))
        } else {
            run.commit(changes).await?;
            Ok((ended, Vec::new()))
        }
    };
    let (
        status,
        id,
        plugin_name,
        request,
        timeout,
        retries,
        mut next,
        mut used,
        last,
        interrupted,
        name,
    ) = {
        let plan = run.plan.lock();
        let a = plan
            .action(loc)
            .expect("the engine only runs actions of its plan");
        // Attempts that ran to their end count against `retries + 1`; attempts cut short by
        // the end of the process running them do not (the resume promise holds for actions
        // without retries), but keep their place in the history.
        let real: Vec<&Attempt> = a
            .attempts()
            .iter()
            .filter(|t| t.end.is_some() && !t.was_interrupted())
            .collect();
        (
            a.status(),
            a.id,
            a.plugin.clone(),
            a.request.clone(),
            a.timeout,
            a.retries,
            // The index of the next attempt: after every attempt kept, interrupted ones too.
            a.attempts().len() as u32,
            real.len() as u32,
            real.last()
                .map(|t| (t.succeeded(), t.error().is_some_and(|e| e.permanent))),
            // An attempt that started but never finished: the process running it died.
            a.attempts()
                .last()
                .filter(|t| t.end.is_none())
                .map(|t| t.start),
            a.name.clone(),
        )
    };
    match status {
        Status::Completed => return finish(Ended::Completed, prefix).await,
        Status::Failed => return finish(Ended::Failed, prefix).await,
        Status::Stopped => return finish(Ended::Stopped, prefix).await,
        Status::NotStarted | Status::Running => {}
    }
    if stop.is_cancelled() || run.abort.is_cancelled() {
        return finish(Ended::Stopped, prefix).await;
    }
    let mut changes = prefix;
    // A resumed action whose last finished attempt decided it.
    if let Some((succeeded, permanent)) = last
        && interrupted.is_none()
    {
        if succeeded {
            changes.push(run.status_change(loc, Status::Completed));
            return finish(Ended::Completed, changes).await;
        }
        if permanent || used > retries {
            changes.push(run.status_change(loc, Status::Failed));
            return finish(Ended::Failed, changes).await;
        }
    }
    let span = tracing::info_span!("action", plan = %run.id, action = %name, plugin = %plugin_name);
    let plugin = run.registry.get(&plugin_name).cloned();
    if let Some(start) = interrupted {
        // The interrupted attempt stays in the history as such, closed now, at its own index;
        // a re-run gets the next one.
        let index = next.saturating_sub(1);
        let rerun = plugin.as_ref().is_none_or(|p| p.idempotent());
        let mut message = format!(
            "attempt {} was interrupted: the process running the plan stopped before it ended \
             (a crash, a kill or a lost lease); found when the plan was resumed",
            index + 1
        );
        if !rerun {
            // Running it again could do the work twice; the plugin said that must not happen.
            message.push_str(&format!(
                "; plugin {plugin_name:?} is marked not_idempotent, so it is not run again \
                 (check what it did, then retry the plan)"
            ));
        }
        changes.push(Change::Attempt {
            loc,
            id,
            index,
            attempt: Attempt {
                start,
                end: Some(now()),
                outcome: Some(Outcome::Error(Box::new(PluginError::engine(
                    codes::INTERRUPTED,
                    message,
                    !rerun,
                )))),
            },
        });
        if !rerun {
            changes.push(run.status_change(loc, Status::Failed));
            return finish(Ended::Failed, changes).await;
        }
        if plugin.is_some() {
            tracing::info!(plan = %run.id, action = %name, "running an interrupted attempt again (at-least-once)");
        }
    }
    let Some(plugin) = plugin else {
        let start = now();
        let err = PluginError::engine(
            codes::NOT_REGISTERED,
            format!("plugin {plugin_name:?} is not registered in this workstream's registry"),
            true,
        );
        let attempt = Attempt {
            start,
            end: Some(start),
            outcome: Some(Outcome::Error(Box::new(err))),
        };
        changes.push(Change::Attempt {
            loc,
            id,
            index: next,
            attempt,
        });
        changes.push(run.status_change(loc, Status::Failed));
        return finish(Ended::Failed, changes).await;
    };
    let mut delays = plugin.retry_policy().delays();
    // Skip the pauses that preceded attempts already made.
    for _ in 1..used.max(1) {
        delays.next();
    }
    if status != Status::Running {
        changes.push(run.status_change(loc, Status::Running));
    }
    loop {
        let start = now();
        changes.push(Change::Attempt {
            loc,
            id,
            index: next,
            attempt: Attempt {
                start,
                end: None,
                outcome: None,
            },
        });
        run.commit(std::mem::take(&mut changes)).await?;

        let ctx = Context {
            plan_id: run.id,
            action_id: id,
            loc,
            paths: Some(run.clone()),
            gates: Some(run.clone()),
            keys: Some(run.options.keys.clone()),
            attempt: next.saturating_add(1),
            deadline: super::deadline_in(timeout),
            cancel: stop.child_token(),
            span: span.clone(),
            preview: false,
        };
        let attempt = ctx.attempt;
        tracing::debug!(parent: &span, plan = %run.id, action = %id, attempt, "attempt started");
        let began = std::time::Instant::now();
        let (result, stopped) = attempt_once(run, stop, &*plugin, &ctx, &request)
            .instrument(span.clone())
            .await;
        let end = now();
        let retryable = matches!(&result, Err(e) if !e.permanent);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => {
                let error = e.chain();
                match e.code {
                    codes::TIMEOUT => {
                        tracing::warn!(parent: &span, plan = %run.id, action = %id, attempt, %error, "attempt timed out");
                        "timeout"
                    }
                    codes::CANCELLED => {
                        tracing::info!(parent: &span, plan = %run.id, action = %id, attempt, %error, "attempt cancelled");
                        "cancelled"
                    }
                    _ => {
                        tracing::warn!(parent: &span, plan = %run.id, action = %id, attempt, permanent = e.permanent, %error, "attempt failed");
                        "failed"
                    }
                }
            }
        };
        crate::metrics::attempt_ended(&plugin_name, outcome, began.elapsed());
        let outcome = match result {
            Ok(resp) => Outcome::Response(resp),
            Err(e) => Outcome::Error(Box::new(e)),
        };
        let succeeded = matches!(outcome, Outcome::Response(_));
        changes.push(Change::Attempt {
            loc,
            id,
            index: next,
            attempt: Attempt {
                start,
                end: Some(end),
                outcome: Some(outcome),
            },
        });
        next = next.saturating_add(1);
        used = used.saturating_add(1);
        let ended = if succeeded {
            Some(Ended::Completed)
        } else if stopped || stop.is_cancelled() || run.abort.is_cancelled() {
            Some(Ended::Stopped)
        } else if !retryable || used > retries {
            Some(Ended::Failed)
        } else {
            None
        };
        if let Some(ended) = ended {
            changes.push(run.status_change(loc, ended.status()));
            return finish(ended, changes).await;
        }
        run.commit(std::mem::take(&mut changes)).await?;
        // Back off before the next attempt; a stop during the pause ends the action.
        let pause = delays.next().unwrap_or_default();
        tracing::info!(parent: &span, plan = %run.id, action = %id, attempt, next_attempt = attempt.saturating_add(1), next_delay = %crate::report::human_duration(pause), "retry scheduled");
        crate::metrics::retry_scheduled(&plugin_name);
        let resumed = tokio::select! {
            _ = tokio::time::sleep(pause) => run.wait_unpaused(stop).await,
            _ = stop.cancelled() => false,
            _ = run.abort.cancelled() => false,
        };
        if !resumed {
            if run.abort.is_cancelled() {
                return Err(run.failure());
            }
            return finish(
                Ended::Stopped,
                vec![run.status_change(loc, Status::Stopped)],
            )
            .await;
        }
    }
}

/// Runs one attempt with its timeout, catching panics. Returns the result and whether a stop
/// arrived while it ran.
async fn attempt_once(
    run: &Run,
    stop: &CancellationToken,
    plugin: &dyn crate::plugin::DynPlugin,
    ctx: &Context,
    request: &crate::workflow::Json,
) -> (Result<crate::workflow::Json, PluginError>, bool) {
    let timeout = ctx.deadline.saturating_duration_since(Instant::now());
    let fut = super::watchdog::Watched::new(
        AssertUnwindSafe(plugin.execute_json(ctx, request)).catch_unwind(),
        run.id,
        ctx.loc,
        ctx.paths
            .clone()
            .expect("the engine's attempts name their paths"),
        plugin.name(),
    );
    tokio::pin!(fut);
    let deadline = tokio::time::sleep_until(ctx.deadline);
    tokio::pin!(deadline);
    let mut stopped = stop.is_cancelled();
    if stopped {
        deadline.as_mut().reset(
            ctx.deadline
                .min(super::deadline_in(run.options.stop_grace.min(timeout))),
        );
    }
    loop {
        tokio::select! {
            biased;
            r = &mut fut => {
                let r = match r {
                    Ok(r) => r,
                    Err(panic) => Err(PluginError::engine(
                        codes::PANIC,
                        format!("the plugin panicked: {}", super::panic_message(&*panic)),
                        true,
                    )),
                };
                return (r, stopped);
            }
            _ = &mut deadline => {
                let err = if stopped {
                    PluginError::engine(
                        codes::CANCELLED,
                        format!("the plan was stopped and the attempt did not end within the grace period of {}", crate::report::human_duration(run.options.stop_grace)),
                        true,
                    )
                } else {
                    PluginError::engine(codes::TIMEOUT, format!("the attempt timed out after {}", crate::report::human_duration(timeout)), false)
                };
                return (Err(err), stopped);
            }
            _ = stop.cancelled(), if !stopped => {
                stopped = true;
                let grace_end = super::deadline_in(run.options.stop_grace);
                if grace_end < ctx.deadline {
                    deadline.as_mut().reset(grace_end);
                }
            }
            _ = run.abort.cancelled() => {
                return (Err(PluginError::engine(codes::CANCELLED, "the run was aborted because the store failed", true)), true);
            }
        }
    }
}

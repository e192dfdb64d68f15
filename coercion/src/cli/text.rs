//! Terminal views: the plan list and the coloured tree of `show`, and `show --json`.

use std::collections::HashMap;
use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use super::format::{self, clean};
use crate::storage::{PlanPage, PlanSummary};
use crate::workflow::{Loc, ObjectRef, Plan, PlanId, Status, Timestamp};

fn status_style(status: Status) -> Style {
    let color = match status {
        Status::NotStarted => AnsiColor::BrightBlack,
        Status::Running => AnsiColor::Blue,
        Status::Completed => AnsiColor::Green,
        Status::Failed => AnsiColor::Red,
        Status::Stopped => AnsiColor::Yellow,
    };
    Style::new().fg_color(Some(color.into())).bold()
}

fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

fn status(status: Status) -> String {
    paint(status_style(status), status.as_str())
}

const DIM: Style = Style::new().dimmed();
const BOLD: Style = Style::new().bold();

/// The style of a plan's status label: amber for a plan that completed with failures.
fn label_style(status: Status, completed_with_failures: bool) -> Style {
    if completed_with_failures {
        status_style(Status::Stopped)
    } else {
        status_style(status)
    }
}

/// The plan list: one line per plan, newest first, with a header. `labels` holds, by plan id,
/// the labels shown in amber instead of the plain status (see `attention_labels`): plans that
/// completed with failures ([`Plan::status_label`]) or wait at an approval gate.
pub(crate) fn list(
    plans: &[PlanSummary],
    labels: &HashMap<PlanId, String>,
    now: Timestamp,
) -> String {
    let label = |s: &PlanSummary| {
        labels
            .get(&s.id)
            .cloned()
            .unwrap_or_else(|| s.state.status.as_str().to_owned())
    };
    let width = plans
        .iter()
        .map(|s| label(s).chars().count())
        .max()
        .unwrap_or(0)
        .max(10);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        paint(
            BOLD,
            &format!(
                "{:<36}  {:<width$}  {:<23}  {:>9}  NAME",
                "ID", "STATUS", "SUBMITTED", "DURATION"
            )
        )
    );
    for s in plans {
        let dur = format::state_duration(s.state, now)
            .map(format::duration)
            .unwrap_or_else(|| "-".into());
        let mut reason = if s.reason == crate::workflow::Reason::None {
            String::new()
        } else {
            format!(" ({})", s.reason)
        };
        if let Some(resumed) = s.resumed_label() {
            reason.push_str(&format!(" [{resumed}]"));
        }
        let text = label(s);
        let _ = writeln!(
            out,
            "{:<36}  {}{}  {:<23}  {:>9}  {}{}",
            s.id,
            paint(
                label_style(s.state.status, labels.contains_key(&s.id)),
                &text
            ),
            " ".repeat(width.saturating_sub(text.chars().count())),
            format::opt_time(s.submit_time),
            dur,
            clean(&s.name),
            paint(DIM, &reason),
        );
    }
    out
}

/// What `show` learned of a Running plan beside the plan itself.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    /// The plugins the process listening on the store lacks to run the plan.
    pub(crate) missing_plugins: Vec<String>,
    /// No process runs the plan now (a SQLite file whose writer's lock nobody holds, a
    /// PostgreSQL plan whose lease nobody holds): the process that ran it stopped. What to say.
    pub(crate) stranded: Option<&'static str>,
}

/// What `show` says of a stranded plan of a SQLite file (see [`Liveness::stranded`]).
pub(crate) const STRANDED: &str = "no process runs it now: the process that ran it stopped; it \
     resumes when a program that runs plans opens this store";

/// What `show` says of a stranded plan of a shared store (see [`Liveness::stranded`]).
pub(crate) const STRANDED_SHARED: &str = "no process runs it now: no live process holds its \
     lease (the process that ran it stopped); a worker takes it over when one runs";

/// The tree of `page`, one object per line, indented by depth, coloured by status, with
/// durations, attempts and the last error of every failed action: every object but the
/// sequences off the page, of which each block says how many it leaves out and how to see
/// them; the counts are the whole plan's. `retried_by` is the plan that retries this one, if
/// any; `live` what is known of the process that runs it; `command` the start of the command
/// lines it suggests (`coercion --db …`).
pub(crate) fn tree(
    page: &PlanPage,
    retried_by: Option<PlanId>,
    live: &Liveness,
    now: Timestamp,
    command: &str,
) -> String {
    let plan = page.plan();
    let missing = &live.missing_plugins;
    let mut out = String::new();
    let c = page.actions();
    let _ = write!(
        out,
        "{} {} {}",
        paint(BOLD, "plan"),
        paint(BOLD, &format!("{:?}", plan.name())),
        plan.id()
    );
    let _ = write!(
        out,
        "  {}",
        paint(
            label_style(plan.status(), page.is_completed_with_failures()),
            &page.status_label()
        )
    );
    if plan.reason() != crate::workflow::Reason::None {
        let _ = write!(out, " (reason: {})", plan.reason());
    }
    if plan.is_paused() {
        let _ = write!(out, " ({})", paint(status_style(Status::Stopped), "paused"));
    }
    if let Some(d) = format::state_duration_text(plan.state(), now) {
        let _ = write!(out, "  {d}");
    }
    let _ = writeln!(out);
    if !plan.descr().is_empty() {
        let _ = writeln!(out, "  {}", paint(DIM, &clean(plan.descr())));
    }
    // A line under the plan's head: indented, in `style`.
    let mut fact = |style: Style, text: &str| {
        let _ = writeln!(out, "  {}", paint(style, text));
    };
    fact(
        DIM,
        &format!(
            "submitted {}, started {}, ended {}; actions: {} completed, {} failed, {} running of {}",
            format::opt_time(plan.submit_time()),
            format::opt_time(plan.state().start),
            format::opt_time(plan.state().end),
            c.completed,
            c.failed,
            c.running,
            c.total
        ),
    );
    if let Some(owner) = plan.owner() {
        if let Some(stranded) = live.stranded {
            fact(
                status_style(Status::Stopped),
                &format!("ran on {}; {stranded}", format::owner(owner)),
            );
        } else {
            let verb = if plan.state().status == Status::Running {
                "runs on"
            } else {
                "ran on"
            };
            fact(DIM, &format!("{verb} {}", format::owner(owner)));
        }
    } else if let Some(stranded) = live.stranded {
        fact(status_style(Status::Stopped), stranded);
    }
    if let Some(label) = plan.resumed_label() {
        let each: Vec<String> = plan
            .resumptions()
            .iter()
            .map(|r| format::owner(r))
            .collect();
        fact(
            status_style(Status::Stopped),
            &format!("{label}: {}", each.join("; ")),
        );
    }
    for gate in plan.waiting_gates() {
        fact(
            status_style(Status::Running),
            &format!(
                "{} ({command} approve {} {})",
                clean(&gate.to_string()),
                plan.id(),
                clean(&format::shell_word(&gate.name))
            ),
        );
    }
    for d in plan.decisions() {
        let name = plan
            .action(d.gate)
            .map(|a| a.definition().name())
            .unwrap_or("?");
        fact(
            if d.approved {
                status_style(Status::Completed)
            } else {
                status_style(Status::Failed)
            },
            &format!("gate {:?}: {}", clean(name), clean(&d.to_string())),
        );
    }
    if let Some(r) = plan.retry_of() {
        fact(
            DIM,
            &format!(
                "retry of plan {}, asked by {}",
                r.plan,
                clean(&r.requested_by)
            ),
        );
    }
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|n| format!("{:?}", clean(n))).collect();
        fact(
            status_style(Status::Failed),
            &format!(
                "waiting: the process that runs plans from this store lacks the plugins {} \
                 and leaves the plan as it is; link the crate that defines them (`use \
                 my_plugins as _;`) or register them, then start that program again",
                names.join(", ")
            ),
        );
    }
    if let Some(newer) = retried_by {
        fact(
            status_style(Status::Stopped),
            &format!("retried by plan {newer}"),
        );
    }
    for (loc, obj) in plan.walk().skip(1) {
        if let Loc::Sequence { block, seq } = loc
            && !page.shows(block, seq)
        {
            continue;
        }
        let path = plan.path(loc);
        let indent = "  ".repeat(path.depth());
        let label = path
            .segments()
            .last()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let state = obj.state();
        let _ = write!(out, "{indent}{}: {}", label, status(state.status));
        if let Some(d) = format::state_duration_text(state, now) {
            let _ = write!(out, " {}", paint(DIM, &d));
        }
        if let ObjectRef::Action(a) = obj {
            if !a.attempts().is_empty() {
                let _ = write!(out, ", {}", format::attempts(a.attempts()));
            }
            let _ = writeln!(out);
            if let Some(e) = a.last_error() {
                let _ = writeln!(
                    out,
                    "{indent}  {} {}",
                    paint(status_style(Status::Failed), "error:"),
                    clean(&e.chain())
                );
            }
        } else {
            let _ = writeln!(out);
        }
        if let Loc::Block(block) = loc
            && let Some(w) = format::Window::of(page, block)
        {
            let _ = writeln!(
                out,
                "{indent}  {}",
                paint(DIM, &window_note(command, plan.id(), &w))
            );
        }
    }
    out
}

/// What a page leaves out of a block, and the commands that show the rest.
fn window_note(command: &str, id: PlanId, w: &format::Window) -> String {
    let mut note = w.to_string();
    if let Some(from) = w.previous {
        let _ = write!(
            note,
            "; previous {}: {command} show {id} --from {from}",
            w.spec.len
        );
    }
    if let Some(from) = w.next {
        let _ = write!(
            note,
            "; next {}: {command} show {id} --from {from}",
            w.spec.len
        );
    }
    note.push_str("; every one: --all");
    note
}

/// The document of `show --json`.
#[derive(Serialize)]
struct JsonPlan<'a> {
    id: crate::workflow::PlanId,
    name: &'a str,
    group_id: Option<uuid::Uuid>,
    status: Status,
    /// `Completed with 2 failed` for a plan that completed with failures, else the status.
    status_label: String,
    reason: crate::workflow::Reason,
    failure_counts: crate::report::FailureCounts,
    paused: bool,
    submit_time: Option<Timestamp>,
    /// The plan this one retries, and who asked.
    retry_of: Option<&'a crate::workflow::RetryOf>,
    /// The plan that retries this one.
    retried_by: Option<PlanId>,
    /// The plugins the process listening on the store lacks to run this Running plan.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    missing_plugins: &'a [String],
    /// The plan is Running but no process runs plans from the store (its process stopped).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stranded: bool,
    /// Every process that ran the plan, oldest first ([`Plan::owners`]).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    owners: &'a [crate::workflow::Owner],
    /// The owners that resumed the plan after the one running it stopped.
    resumptions: Vec<&'a crate::workflow::Owner>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    decisions: &'a [crate::workflow::Decision],
    objects: Vec<JsonNode>,
}

/// One object of `show --json`.
#[derive(Serialize)]
struct JsonNode {
    path: String,
    kind: &'static str,
    id: uuid::Uuid,
    status: Status,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    duration_ms: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<usize>,
    /// Of those, the attempts cut short by the end of the process running them.
    #[serde(skip_serializing_if = "Option::is_none")]
    interrupted_attempts: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

/// `show --json`: the plan's summary and every object with its path, status, times, attempts
/// and last error, as one JSON document.
pub(crate) fn tree_json(
    plan: &Plan,
    retried_by: Option<PlanId>,
    live: &Liveness,
    now: Timestamp,
) -> String {
    let nodes: Vec<JsonNode> = plan
        .walk()
        .map(|(loc, obj)| {
            let state = obj.state();
            let (attempts, interrupted_attempts, last_error) = match obj {
                ObjectRef::Action(a) => (
                    Some(a.attempts().len()),
                    Some(a.attempts().iter().filter(|t| t.was_interrupted()).count()),
                    a.last_error().map(|e| e.chain()),
                ),
                _ => (None, None, None),
            };
            JsonNode {
                path: plan.path(loc).to_string(),
                kind: obj.kind_name(),
                id: obj.id(),
                status: state.status,
                start: state.start,
                end: state.end,
                duration_ms: format::state_duration(state, now).map(|d| d.as_millis()),
                attempts,
                interrupted_attempts,
                last_error,
            }
        })
        .collect();
    let doc = JsonPlan {
        id: plan.id(),
        name: plan.name(),
        group_id: plan.group_id(),
        status: plan.status(),
        status_label: plan.status_label(),
        reason: plan.reason(),
        failure_counts: plan.failure_counts(),
        paused: plan.is_paused(),
        submit_time: plan.submit_time(),
        retry_of: plan.retry_of(),
        retried_by,
        missing_plugins: &live.missing_plugins,
        stranded: live.stranded.is_some(),
        owners: plan.owners(),
        resumptions: plan.resumptions(),
        decisions: plan.decisions(),
        objects: nodes,
    };
    serde_json::to_string_pretty(&doc).expect("JSON values serialize")
}

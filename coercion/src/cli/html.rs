//! HTML views of a plan, compiled and escaped by `maud`: the self-contained report file and the
//! pieces the web UI serves.
//!
//! Every string that comes from a plan (names, descriptions, requests, responses, errors) is
//! spliced with maud's `(…)`, which escapes it; the only unescaped text is this module's own
//! CSS and JavaScript constants.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::format;
use crate::storage::PlanPage;
use crate::workflow::{
    ActionView, BatchView, BlockView, CheckSlot, ChecksView, Loc, ObjectRef, Outcome, Plan,
    SequenceView, State, Status, Timestamp,
};

/// The style sheet of the report and the web UI.
pub(crate) const CSS: &str = include_str!("assets/style.css");

/// The script of the web UI (live updates, uploads, remembering which nodes are open).
pub(crate) const APP_JS: &str = include_str!("assets/app.js");

/// The HTML report of `plan`: one self-contained file (no script, no external resource; a
/// Content-Security-Policy forbids both) with a summary header, the failure report when the
/// plan failed or completed with failures, and the collapsible tree with statuses, durations and every attempt's error or
/// response. Secrets are redacted ([`Plan::clone_for_display`]) before rendering.
pub fn report(plan: &Plan) -> String {
    let plan = plan.clone_for_display();
    let now = chrono::Utc::now();
    standalone(
        &format!("coercion report: {}", plan.name()),
        html! { "report generated " (format::time(now)) },
        plan_body(&PlanPage::whole(plan), now, false),
    )
}

/// A self-contained page (the report, a preview): the style sheet inline, no script and no
/// external resource, which a Content-Security-Policy forbids; `note` beside the brand.
fn standalone(title: &str, note: Markup, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy"
                    content="default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                header.top {
                    span.brand { "coercion" }
                    span.muted { (note) }
                }
                main { (body) }
            }
        }
    }
    .into_string()
}

/// The summary header, the failure report (when the plan failed, was stopped or has any
/// failure, as a plan that completed with failures does) and the tree of the sequences `page`
/// holds: what the report shows and what the web UI's plan page replaces on every live update.
/// `stranded`: no process runs the Running plan now (see [`plan_head`]).
pub(crate) fn plan_body(page: &PlanPage, now: Timestamp, stranded: bool) -> Markup {
    html! {
        div.plan-head { (plan_head(page, now, stranded)) }
        section.tree {
            h2 { "Plan tree" }
            (tree(page, now))
        }
    }
}

/// Whether the sequences `next` holds differ from those `prev` holds (one started, failed or
/// was stopped off the page): the page must be rendered again.
pub(crate) fn window_moved(prev: &PlanPage, next: &PlanPage) -> bool {
    (0..next.plan().blocks().len())
        .any(|b| prev.shown(b) != next.shown(b) || prev.left_out(b) != next.left_out(b))
}

/// What stands above the tree: the summary and, when something failed, the failure report.
/// `stranded`: the plan is Running but no process runs plans from its store (its process
/// stopped), said where the page names who runs it.
pub(crate) fn plan_head(page: &PlanPage, now: Timestamp, stranded: bool) -> Markup {
    let plan = page.plan();
    let with_failures = page.is_completed_with_failures();
    html! {
        (summary(page, now, stranded))
        @if matches!(plan.status(), Status::Failed | Status::Stopped) || page.failure_counts().has_failures() {
            section.failure-report.completed-with-failures[with_failures] {
                h2 { "Failure report" }
                pre { (page.failure_report()) }
            }
        }
    }
}

/// One node of a live page to bring up to date: an action whole (its attempts changed), or
/// a container's status and head line (its children are patched on their own).
#[derive(serde::Serialize)]
pub(crate) struct NodePatch {
    /// The object's id (`data-id` of its `details`).
    id: String,
    /// The whole `details` of an action.
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<String>,
    /// A container's `class`, `data-status` and `summary` content.
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<String>,
}

/// The nodes of `next` to re-render on a page that shows `prev` (the same plan, earlier, with
/// the same sequences whole: see [`window_moved`]): the objects whose state or attempts
/// changed, and the running ones (their durations tick).
pub(crate) fn node_patches(prev: &PlanPage, next: &PlanPage, now: Timestamp) -> Vec<NodePatch> {
    let opening = Opening::of(next);
    // Whether the page shows the object at `loc` (sequences off the page are not on it).
    let shown = |loc: Loc| {
        let seq = match loc {
            Loc::Sequence { block, seq } => Some((block, seq)),
            Loc::Action {
                parent: crate::workflow::Parent::Sequence { block, seq },
                ..
            } => Some((block, seq)),
            _ => None,
        };
        seq.is_none_or(|(b, s)| next.shows(b, s))
    };
    let mut patches = Vec::new();
    for ((loc, old), (_, new)) in prev.plan().walk().zip(next.plan().walk()) {
        if !shown(loc) {
            continue;
        }
        let state = new.state();
        let changed = old.state() != state
            || matches!((old, new), (ObjectRef::Action(a), ObjectRef::Action(b)) if a.attempts() != b.attempts());
        if !changed && state.status != Status::Running {
            continue;
        }
        let container = |kind: &str, id: String, head: Markup| NodePatch {
            id,
            html: None,
            class: Some(format!(
                "node {kind} {}",
                format::status_class(state.status)
            )),
            status: Some(state.status.as_str()),
            summary: Some(head.into_string()),
        };
        patches.push(match (new, loc) {
            (ObjectRef::Action(a), Loc::Action { index, .. }) => NodePatch {
                id: a.id().to_string(),
                html: Some(action_node(index, a, opening, now).into_string()),
                class: None,
                status: None,
                summary: None,
            },
            (ObjectRef::Block(b), Loc::Block(i)) => {
                container("block", b.id().to_string(), block_head(i, b, now))
            }
            (ObjectRef::Sequence(q), Loc::Sequence { seq, .. }) => container(
                "sequence",
                q.id().to_string(),
                node_head("sequence", Some(seq), q.name(), state, now, None),
            ),
            (ObjectRef::Batch(b), Loc::Batch(i)) => {
                container("batch", b.id().to_string(), batch_head(i, b, now))
            }
            (ObjectRef::Checks(c), Loc::Checks { slot, .. }) => container(
                "checks",
                c.id().to_string(),
                node_head(slot.as_str(), None, "", state, now, None),
            ),
            // The plan itself is the page's head, sent whole.
            _ => continue,
        });
    }
    patches
}

fn badge(status: Status) -> Markup {
    html! { span class={ "badge " (format::status_class(status)) } { (status.as_str()) } }
}

/// The plan's own badge: its status label ([`Plan::status_label`]), amber
/// (`s-completed-with-failures`) for a plan that completed with failures.
fn plan_badge(page: &PlanPage) -> Markup {
    label_badge(
        page.plan().status(),
        page.is_completed_with_failures(),
        &page.status_label(),
    )
}

/// A badge with `label` for a plan whose status is `status`.
pub(crate) fn label_badge(status: Status, completed_with_failures: bool, label: &str) -> Markup {
    let class = if completed_with_failures {
        format::COMPLETED_WITH_FAILURES_CLASS
    } else {
        format::status_class(status)
    };
    html! { span class={ "badge " (class) } { (label) } }
}

fn summary(page: &PlanPage, now: Timestamp, stranded: bool) -> Markup {
    let plan = page.plan();
    let c = page.actions();
    let state = plan.state();
    html! {
        section.summary {
            h1 {
                span.plan-name { bdi { (plan.name()) } }
                " " (plan_badge(page))
                @if plan.is_paused() { " " span.badge.paused { "Paused" } }
            }
            @if !plan.descr().is_empty() { p.descr { (plan.descr()) } }
            dl.facts {
                dt { "Plan id" } dd.mono { (plan.id()) }
                @if let Some(g) = plan.group_id() { dt { "Group" } dd.mono { (g) } }
                @if let Some(o) = plan.owner() {
                    dt { @if state.status == Status::Running && !stranded { "Runs on" } @else { "Ran on" } }
                    dd #owner { (format::owner(o)) }
                }
                @if stranded {
                    dt { "Not running" }
                    dd #stranded.s-stopped { (super::text::STRANDED) }
                }
                @if let Some(label) = plan.resumed_label() {
                    dt { "Resumed" } dd #resumptions {
                        (label) ":"
                        @for r in plan.resumptions() {
                            br; (format::owner(r))
                        }
                    }
                }
                @if let Some(r) = plan.retry_of() {
                    dt { "Retry of" } dd { span.mono { (r.plan) } ", asked by " (format::clean(&r.requested_by)) }
                }
                @let gates = plan.waiting_gates();
                @if !gates.is_empty() {
                    dt { "Waiting" } dd #waiting-gates {
                        @for (i, g) in gates.iter().enumerate() {
                            @if i > 0 { br; }
                            "for approval: " bdi { (g.name) } ", since " (format::time(g.since))
                        }
                    }
                }
                @if !plan.decisions().is_empty() {
                    dt { "Decisions" } dd #decisions {
                        @for (i, d) in plan.decisions().iter().enumerate() {
                            @if i > 0 { br; }
                            bdi { (plan.action(d.gate).map(|a| a.definition().name()).unwrap_or("?")) } ": "
                            span class=(if d.approved { "s-completed" } else { "s-failed" }) {
                                (if d.approved { "approved" } else { "rejected" })
                            }
                            " by " (format::clean(&d.by)) " at " (format::time(d.at))
                            @if let Some(c) = &d.comment { " — " q { bdi { (c) } } }
                        }
                    }
                }
                dt { "Status" } dd { (page.status_label())
                    @if plan.reason() != crate::workflow::Reason::None { " (reason: " (plan.reason()) ")" } }
                dt { "Submitted" } dd { (format::opt_time(plan.submit_time())) }
                dt { "Started" } dd { (format::opt_time(state.start)) }
                dt { "Ended" } dd { (format::opt_time(state.end)) }
                dt { "Duration" } dd { (format::state_duration_text(state, now).unwrap_or_else(|| "-".into())) }
                dt { "Actions" } dd.counts {
                    span.s-completed { (c.completed) " completed" } ", "
                    span.s-failed { (c.failed) " failed" } ", "
                    span.s-running { (c.running) " running" } ", "
                    @if c.stopped > 0 { span.s-stopped { (c.stopped) " stopped" } ", " }
                    (c.total) " in all"
                }
            }
            @let done = c.completed + c.failed + c.stopped;
            div.progress title={ (done) " of " (c.total) " actions finished" } {
                @if c.total > 0 {
                    span.bar.s-completed style={ "width:" (pct(c.completed, c.total)) "%" } {}
                    span.bar.s-failed style={ "width:" (pct(c.failed + c.stopped, c.total)) "%" } {}
                    span.bar.s-running style={ "width:" (pct(c.running, c.total)) "%" } {}
                }
            }
        }
    }
}

fn pct(n: usize, total: usize) -> String {
    format!("{:.2}", n as f64 * 100.0 / total.max(1) as f64)
}

/// Whether a container starts open: small plans show everything; large ones only what runs or
/// failed.
fn open_by_default(opening: Opening, state: State) -> bool {
    opening.small
        || matches!(
            state.status,
            Status::Running | Status::Failed | Status::Stopped
        )
}

/// Which nodes of the tree start open, and which sequences it shows.
#[derive(Clone, Copy)]
struct Opening<'a> {
    /// The processes that ran the plan, when there were several: each attempt names its own.
    owners: Option<&'a Plan>,
    /// Small plans show everything; large ones only what runs or failed.
    small: bool,
    /// The page: which sequences the tree shows.
    page: &'a PlanPage,
    /// Failed actions start open (a plan that completed with failures: their errors are the
    /// news).
    failed_actions: bool,
}

impl Opening<'_> {
    fn of(page: &PlanPage) -> Opening<'_> {
        let plan = page.plan();
        Opening {
            owners: (plan.owners().len() > 1).then_some(plan),
            page,
            small: page.actions().total <= 40,
            failed_actions: page.is_completed_with_failures(),
        }
    }
}

/// The collapsible tree of the plan, in walk order.
fn tree(page: &PlanPage, now: Timestamp) -> Markup {
    let opening = Opening::of(page);
    let plan = page.plan();
    let before = [CheckSlot::Bypass, CheckSlot::Pre, CheckSlot::Cont];
    html! {
        div.plan-tree data-plan=(plan.id()) {
            @for slot in before {
                @if let Some(c) = plan.checks().get(slot) { (checks_node(slot, c, opening, now)) }
            }
            @for (i, b) in plan.blocks().into_iter().enumerate() { (block_node(i, b, opening, now)) }
            @if let Some(c) = plan.checks().get(CheckSlot::Post) { (checks_node(CheckSlot::Post, c, opening, now)) }
            @for (i, b) in plan.deferred().into_iter().enumerate() { (batch_node(i, b, opening, now)) }
            @if let Some(c) = plan.checks().get(CheckSlot::Deferred) { (checks_node(CheckSlot::Deferred, c, opening, now)) }
            @if plan.blocks().is_empty() && plan.checks().is_empty() && plan.deferred().is_empty() {
                p.muted { "This plan has no blocks, checks or deferred batches." }
            }
        }
    }
}

fn node_head(
    kind: &str,
    index: Option<usize>,
    name: &str,
    state: State,
    now: Timestamp,
    extra: Option<String>,
) -> Markup {
    html! {
        (badge(state.status))
        " "
        span.kind { (kind) @if let Some(i) = index { "[" (i) "]" } }
        " "
        // <bdi>: a name's own direction controls cannot reorder what surrounds it.
        span.name { bdi { (name) } }
        @if let Some(d) = format::state_duration_text(state, now) { " " span.dur { (d) } }
        @if let Some(x) = extra { " " span.extra { (x) } }
    }
}

fn checks_node(
    slot: CheckSlot,
    checks: ChecksView<'_>,
    opening: Opening,
    now: Timestamp,
) -> Markup {
    let state = checks.state();
    // A failing bypass check only means "do not skip": not a failure to show open.
    let opening = Opening {
        failed_actions: opening.failed_actions && slot != CheckSlot::Bypass,
        ..opening
    };
    html! {
        details class={ "node checks " (format::status_class(state.status)) } data-id=(checks.id())
            data-status=(state.status.as_str()) open[open_by_default(opening, state)] {
            summary { (node_head(slot.as_str(), None, "", state, now, None)) }
            div.children {
                @for (i, a) in checks.actions().into_iter().enumerate() { (action_node(i, a, opening, now)) }
            }
        }
    }
}

fn block_node(index: usize, block: BlockView<'_>, opening: Opening, now: Timestamp) -> Markup {
    let page = opening.page;
    let state = block.state();
    let sequences = block.sequences();
    // A completed block may hold failed sequences (within its tolerance): open, to show them.
    let holds_failure = sequences
        .iter()
        .any(|s| matches!(s.status(), Status::Failed | Status::Stopped));
    html! {
        details class={ "node block " (format::status_class(state.status)) } data-id=(block.id())
            data-status=(state.status.as_str()) open[open_by_default(opening, state) || holds_failure] {
            summary { (block_head(index, block, now)) }
            div.children {
                @if !block.descr().is_empty() { p.descr { (block.descr()) } }
                @for slot in [CheckSlot::Bypass, CheckSlot::Pre, CheckSlot::Cont] {
                    @if let Some(c) = block.checks().get(slot) { (checks_node(slot, c, opening, now)) }
                }
                @for &i in page.shown(index) {
                    @if let Some(&s) = sequences.get(i) { (sequence_node(i, s, opening, now)) }
                }
                @if let Some(w) = format::Window::of(page, index) {
                    p.more-sequences {
                        (w)
                        @if let Some(from) = w.previous {
                            " · " a.prev-page href={ "?from=" (from) } { "previous " (w.spec.len) }
                        }
                        @if let Some(from) = w.next {
                            " · " a.next-page href={ "?from=" (from) } { "next " (w.spec.len) }
                        }
                    }
                }
                @for slot in [CheckSlot::Post, CheckSlot::Deferred] {
                    @if let Some(c) = block.checks().get(slot) { (checks_node(slot, c, opening, now)) }
                }
            }
        }
    }
}

fn block_head(index: usize, block: BlockView<'_>, now: Timestamp) -> Markup {
    let info = format!(
        "{} sequence(s), concurrency {}, tolerates {}",
        block.sequences.len(),
        block.concurrency(),
        block.tolerated_failures()
    );
    node_head(
        "block",
        Some(index),
        block.name(),
        block.state(),
        now,
        Some(info),
    )
}

fn sequence_node(index: usize, seq: SequenceView<'_>, opening: Opening, now: Timestamp) -> Markup {
    let state = seq.state();
    html! {
        details class={ "node sequence " (format::status_class(state.status)) } data-id=(seq.id())
            data-status=(state.status.as_str()) open[open_by_default(opening, state)] {
            summary { (node_head("sequence", Some(index), seq.name(), state, now, None)) }
            div.children {
                @if !seq.descr().is_empty() { p.descr { (seq.descr()) } }
                @for (i, a) in seq.actions().into_iter().enumerate() { (action_node(i, a, opening, now)) }
            }
        }
    }
}

fn batch_node(index: usize, batch: BatchView<'_>, opening: Opening, now: Timestamp) -> Markup {
    let state = batch.state();
    html! {
        details class={ "node batch " (format::status_class(state.status)) } data-id=(batch.id())
            data-status=(state.status.as_str()) open[open_by_default(opening, state)] {
            summary { (batch_head(index, batch, now)) }
            div.children {
                @if !batch.descr().is_empty() { p.descr { (batch.descr()) } }
                @for (i, a) in batch.actions().into_iter().enumerate() { (action_node(i, a, opening, now)) }
            }
        }
    }
}

fn batch_head(index: usize, batch: BatchView<'_>, now: Timestamp) -> Markup {
    let info = format!(
        "when {}{}",
        batch.when(),
        if batch.fail_plan() {
            ", fails the plan"
        } else {
            ""
        }
    );
    node_head(
        "deferred batch",
        Some(index),
        batch.name(),
        batch.state(),
        now,
        Some(info),
    )
}

fn action_node(
    index: usize,
    action: ActionView<'_>,
    opening: Opening<'_>,
    now: Timestamp,
) -> Markup {
    let state = action.state();
    let open = opening.failed_actions && state.status == Status::Failed;
    let extra = (!action.attempts().is_empty()).then(|| format::attempts(action.attempts()));
    html! {
        details class={ "node action " (format::status_class(state.status)) } data-id=(action.id())
            data-status=(state.status.as_str()) open[open] {
            summary { (node_head("action", Some(index), action.name(), state, now, extra)) }
            div.action-body {
                @if !action.descr().is_empty() { p.descr { (action.descr()) } }
                dl.facts {
                    dt { "Plugin" } dd.mono { (action.plugin()) }
                    dt { "Timeout" } dd { (format::duration(action.timeout())) " per attempt" }
                    dt { "Retries" } dd { (action.retries()) }
                    @if let Some(k) = action.key() { dt { "Key" } dd.mono { (k) } }
                    dt { "Id" } dd.mono { (action.id()) }
                }
                details.request {
                    summary { "Request" }
                    pre.json { (format::pretty_json(action.request_json().as_str())) }
                }
                @if action.attempts().is_empty() {
                    p.muted { "No attempt yet." }
                } @else {
                    ol.attempts {
                        @for (i, a) in action.attempts().iter().enumerate() {
                            @let attempt_state = State {
                                status: if a.end.is_some() { Status::Completed } else { Status::Running },
                                start: Some(a.start),
                                end: a.end,
                            };
                            li class={ "attempt " (match &a.outcome {
                                Some(Outcome::Error(_)) if a.was_interrupted() => "interrupted",
                                Some(Outcome::Error(_)) => "failed",
                                Some(Outcome::Response(_)) => "ok",
                                None => "running",
                            }) } {
                                div.attempt-head {
                                    "Attempt " (i + 1)
                                    @if a.was_interrupted() { " " span.badge.interrupted { "Interrupted" } }
                                    ", started " (format::time(a.start))
                                    @if let (true, Some(end)) = (a.was_interrupted(), a.end) { ", found interrupted " (format::time(end)) }
                                    @if let Some(d) = format::state_duration_text(attempt_state, now) { ", " (d) }
                                    @if let Some(o) = opening.owners.and_then(|p| p.owner_at(a.start)) {
                                        ", by " span.owner { (format::clean(&o.by)) }
                                    }
                                }
                                @match &a.outcome {
                                    Some(Outcome::Error(e)) => {
                                        div.error {
                                            strong { "Error: " } span.error-message { (e.chain()) }
                                            @if e.code != 0 || e.permanent {
                                                span.muted {
                                                    " ("
                                                    @if e.code != 0 { "code " (e.code) }
                                                    @if e.code != 0 && e.permanent { ", " }
                                                    @if e.permanent { "permanent" }
                                                    ")"
                                                }
                                            }
                                        }
                                    }
                                    Some(Outcome::Response(r)) => {
                                        div.response { strong { "Response:" } pre.json { (format::pretty_json(r.as_str())) } }
                                    }
                                    None => { div.muted { "Running…" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The HTML page of a [preview](crate::preview): one self-contained file as [`report`] is (no
/// script, a Content-Security-Policy), with the summary line and, in plan order, every action's
/// preview (its diff coloured) and every check's result. Everything from the plan and the
/// plugins is escaped; names are isolated (`<bdi>`).
pub fn preview_report(report: &crate::preview::Report) -> String {
    use crate::preview::{Outcome as Found, Preview};
    let plan = &report.plan;
    let mut entries = report.entries.iter().peekable();
    let rows = html! {
        @for (loc, obj) in plan.walk() {
            @let depth = plan.path(loc).depth();
            @let indent = format!("margin-left: {}em", depth.saturating_sub(1) * 2);
            @match obj {
                ObjectRef::Plan(_) => {}
                ObjectRef::Action(a) => {
                    @if let Some(entry) = entries.next_if(|e| e.loc == loc) {
                        @let (class, label, detail, diff) = match &entry.outcome {
                            Found::Action { preview } => match preview {
                                Preview::NoChange { summary } => ("unchanged", "no change", summary.clone(), None),
                                Preview::WouldChange { summary, diff } => ("changed", "would change", summary.clone(), diff.clone()),
                                Preview::CannotTell { reason } => ("unknown", "cannot tell", reason.clone(), None),
                            },
                            Found::Check { passed: true, .. } => ("passed", "passed", String::new(), None),
                            Found::Check { passed: false, error } => ("failed", "failed", error.clone().unwrap_or_default(), None),
                            Found::After => ("after", "would run after", String::new(), None),
                            Found::Gate { message } => ("gate", "would wait for approval", message.clone(), None),
                            Found::Skipped { reason } => ("skipped", "skipped", reason.clone(), None),
                        };
                        div.preview-entry style=(indent) {
                            span class={ "preview-badge " (class) } { (label) }
                            " "
                            span.name { bdi { (a.name()) } }
                            " "
                            span.muted { "(" (a.plugin()) ")" }
                            @if !detail.is_empty() { " " span.detail { (detail) } }
                            @if let Some(diff) = diff {
                                pre.diff {
                                    @for line in diff.lines() {
                                        @let class = if line.starts_with("+++") || line.starts_with("---") {
                                            "file"
                                        } else if line.starts_with('+') {
                                            "add"
                                        } else if line.starts_with('-') {
                                            "del"
                                        } else if line.starts_with("@@") {
                                            "hunk"
                                        } else {
                                            "ctx"
                                        };
                                        span class=(class) { (line) } "\n"
                                    }
                                }
                            }
                        }
                    }
                }
                ObjectRef::Checks(_) => {
                    @if let Loc::Checks { slot, .. } = loc {
                        div.preview-section.muted style=(indent) { (slot.as_str()) }
                    }
                }
                ObjectRef::Block(b) => { div.preview-section style=(indent) { "block " bdi { (b.name()) } } }
                ObjectRef::Sequence(q) => { div.preview-section style=(indent) { "sequence " bdi { (q.name()) } } }
                ObjectRef::Batch(b) => { div.preview-section style=(indent) { "deferred batch " bdi { (b.name()) } " (" (b.when()) ")" } }
            }
        }
    };
    standalone(
        &format!("coercion preview: {}", plan.name()),
        html! { "preview made " (format::time(chrono::Utc::now())) "; nothing was changed" },
        html! {
            h1 { "Preview of " span.plan-name { bdi { (plan.name()) } } }
            p.preview-summary { (report.summary().to_string()) }
            (rows)
        },
    )
}

/// A page of the web UI: the shared layout with the style sheet and script served by the UI.
pub(crate) fn page(title: &str, store: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · coercion" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "coercion" }
                    nav {
                        a href="/" { "Plans" }
                        a href="/upload" { "Open an exported plan" }
                    }
                    span.muted.store title="store file" { (store) }
                }
                main { (body) }
            }
        }
    }
    .into_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_preview_page_escapes_diffs_and_colours_their_lines() {
        use crate::preview::{Entry, Outcome, Preview, Report, unified_diff};
        use crate::workflow::{Loc, Parent};
        let plan = crate::Plan::builder("configure <web>")
            .block(
                crate::Block::builder("b").sequence(crate::Sequence::builder("s").action(
                    crate::ActionSpec::new::<crate::plugins::Sleep>(
                        "write \u{202E}gnp.exe",
                        crate::plugins::SleepReq::new(std::time::Duration::from_secs(1)),
                    ),
                )),
            )
            .build();
        let loc = Loc::Action {
            parent: Parent::Sequence { block: 0, seq: 0 },
            index: 0,
        };
        let diff = unified_diff("a = 1\n", "a = <script>alert(1)</script>\n", "f", "f");
        let report = Report {
            entries: vec![Entry {
                loc,
                path: plan.path(loc),
                plugin: "coercion/sleep".into(),
                outcome: Outcome::Action {
                    preview: Preview::would_change("would rewrite f").with_diff(diff),
                },
            }],
            plan,
        };
        let html = super::preview_report(&report);
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("<span class=\"add\">+a = &lt;script&gt;alert(1)&lt;/script&gt;</span>"),
            "{html}"
        );
        assert!(html.contains("<span class=\"del\">-a = 1</span>"), "{html}");
        assert!(html.contains("<bdi>write \u{202E}gnp.exe</bdi>"), "{html}");
        assert!(
            html.contains(
                "Preview of <span class=\"plan-name\"><bdi>configure &lt;web&gt;</bdi></span>"
            ),
            "{html}"
        );
        assert!(
            html.contains("1 would change, 0 unchanged, 0 unknown"),
            "{html}"
        );
        assert!(html.contains("Content-Security-Policy"), "{html}");
    }

    #[test]
    fn a_page_counts_the_whole_plan_and_says_what_it_leaves_out() {
        use crate::storage::{PageSpec, PlanPage};
        use crate::testing::*;
        use crate::{ActionSpec, Block, Plan, Sequence};
        let fakes = Fakes::new();
        let plan = Plan::builder("fleet")
            .block(
                Block::builder("web")
                    .tolerated_failures(10)
                    .sequences((0..50).map(|i| {
                        let req = if [20, 30, 40].contains(&i) {
                            FakeReq::fail_permanently()
                        } else {
                            FakeReq::ok()
                        };
                        Sequence::builder(format!("host-{i:02}"))
                            .action(ActionSpec::new::<FakeAction>("copy", req))
                            .action(ActionSpec::new::<FakeAction>("restart", FakeReq::ok()))
                    })),
            )
            .build();
        let done = run_paused(fakes.registry(), plan).unwrap();
        let spec = PageSpec {
            from: 0,
            len: 10,
            attention: 2,
        };
        let page = PlanPage::of(done, spec);
        let html = super::plan_body(&page, chrono::Utc::now(), false).into_string();
        assert_eq!(html.matches("class=\"node sequence ").count(), 12, "{html}");
        assert!(html.contains("host-20") && html.contains("host-30"));
        assert!(
            html.contains("94 completed</span>, <span class=\"s-failed\">3 failed</span>"),
            "the counts are the whole plan's: {html}"
        );
        assert!(html.contains("100 in all"), "{html}");
        assert!(html.contains("Completed with 3 failed"), "{html}");
        assert!(
            html.contains("38 more sequence(s) not shown (this page: 1–10 of 50"),
            "{html}"
        );
        assert!(
            html.contains("1 of those past the first 2 are not shown either"),
            "{html}"
        );
        assert!(html.contains("href=\"?from=10\""), "{html}");
    }

    #[test]
    fn names_are_isolated_so_their_direction_controls_stay_inside() {
        let plan = crate::Plan::builder("deploy \u{202E}gnp.exe").build();
        let html = super::report(&plan);
        assert!(
            html.contains("<span class=\"plan-name\"><bdi>deploy \u{202E}gnp.exe</bdi></span>"),
            "{html}"
        );
    }
}

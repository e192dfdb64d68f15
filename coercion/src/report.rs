//! What failed and where: [`Plan::failures`], the counts every face shows
//! ([`Plan::failure_counts`], [`Plan::status_label`]) and the human failure report.
//!
//! ```
//! # use coercion::prelude::*;
//! # use coercion::testing::*;
//! let fakes = Fakes::new();
//! let plan = Plan::builder("deploy")
//!     .block(Block::builder("web").sequence(
//!         Sequence::builder("web-1").action(ActionSpec::new::<FakeAction>("copy", FakeReq::fail_permanently().tag("disk full"))),
//!     ))
//!     .build();
//! let done = run_paused(fakes.registry(), plan).unwrap();
//! let failures = done.failures();
//! assert_eq!(failures.last().unwrap().path.to_string(), r#"block[0] "web" / sequence[0] "web-1" / action[0] "copy""#);
//! println!("{done}"); // the failure report
//! ```

use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::plugin::PluginError;
use crate::workflow::{CheckSlot, Loc, ObjectPath, ObjectRef, Parent, Plan, Status};

/// A failed or stopped object of a finished plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// Where it is.
    pub path: ObjectPath,
    /// Its location by indices.
    pub loc: Loc,
    /// `block`, `sequence`, `action`, …
    pub kind: &'static str,
    /// `Failed` or `Stopped`.
    pub status: Status,
    /// For actions: the error of the last attempt.
    pub error: Option<PluginError>,
    /// For actions: how many attempts ran.
    pub attempts: usize,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.status)?;
        if let Some(e) = &self.error {
            write!(f, " after {} attempt(s): {}", self.attempts, e.chain())?;
        }
        Ok(())
    }
}

/// How many sequences and actions of a plan failed or were stopped: the one definition the
/// CLI, the web UI, the HTML report and the failure report use to say that a plan
/// *completed with failures* (sequences that failed within their block's tolerance, or a
/// deferred batch that does not fail the plan).
///
/// Bypass checks are left out: a failing bypass check only means "do not skip this", not a
/// failure. See [`Plan::failure_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub struct FailureCounts {
    /// Every sequence of the plan.
    pub sequences: usize,
    /// Sequences that failed.
    pub failed_sequences: usize,
    /// Sequences that were stopped.
    pub stopped_sequences: usize,
    /// Actions that failed (checks and deferred batches included, bypass checks excluded).
    pub failed_actions: usize,
    /// Actions that were stopped (bypass checks excluded).
    pub stopped_actions: usize,
}

impl FailureCounts {
    /// Whether any sequence or action failed or was stopped.
    pub fn has_failures(&self) -> bool {
        self.failed_sequences + self.stopped_sequences + self.failed_actions + self.stopped_actions
            > 0
    }
}

/// Whether the object at `loc` is a bypass check section or one of its actions.
fn is_bypass(loc: Loc) -> bool {
    matches!(
        loc,
        Loc::Checks {
            slot: CheckSlot::Bypass,
            ..
        } | Loc::Action {
            parent: Parent::Checks {
                slot: CheckSlot::Bypass,
                ..
            },
            ..
        }
    )
}

impl Plan {
    /// The plan's failed and stopped sequences and actions, counted (see [`FailureCounts`]).
    ///
    /// ```
    /// # use coercion::prelude::*;
    /// # use coercion::testing::*;
    /// let fakes = Fakes::new();
    /// let plan = Plan::builder("deploy")
    ///     .block(Block::builder("web").tolerated_failures(1).sequences((1..=3).map(|i| {
    ///         let req = if i == 2 { FakeReq::fail_permanently().tag("disk full") } else { FakeReq::ok() };
    ///         Sequence::builder(format!("web-{i}")).action(ActionSpec::new::<FakeAction>("copy", req))
    ///     })))
    ///     .build();
    /// let done = run_paused(fakes.registry(), plan).unwrap();
    /// assert_eq!(done.status(), Status::Completed);
    /// let counts = done.failure_counts();
    /// assert_eq!((counts.sequences, counts.failed_sequences, counts.failed_actions), (3, 1, 1));
    /// assert!(counts.has_failures() && done.is_completed_with_failures());
    /// assert_eq!(done.status_label(), "Completed with 1 failed");
    /// ```
    pub fn failure_counts(&self) -> FailureCounts {
        let mut c = FailureCounts::default();
        for (loc, obj) in self.walk() {
            if is_bypass(loc) {
                continue;
            }
            match obj {
                ObjectRef::Sequence(s) => {
                    c.sequences += 1;
                    match s.status() {
                        Status::Failed => c.failed_sequences += 1,
                        Status::Stopped => c.stopped_sequences += 1,
                        _ => {}
                    }
                }
                ObjectRef::Action(a) => match a.status() {
                    Status::Failed => c.failed_actions += 1,
                    Status::Stopped => c.stopped_actions += 1,
                    _ => {}
                },
                _ => {}
            }
        }
        c
    }

    /// Whether the plan completed although some of its sequences or actions failed (within
    /// the tolerance of their block, or in a deferred batch that does not fail the plan).
    pub fn is_completed_with_failures(&self) -> bool {
        self.status() == Status::Completed && self.failure_counts().has_failures()
    }

    /// Every action of the plan (checks and deferred batches included) counted by status.
    pub fn action_counts(&self) -> ActionCounts {
        let mut c = ActionCounts::default();
        for (_, obj) in self.walk() {
            if let ObjectRef::Action(a) = obj {
                c.add(a.status());
            }
        }
        c
    }

    /// The plan's status in the words every face shows: `Completed with 2 failed` (the
    /// number of failed actions, one per failed sequence) for a plan that
    /// [completed with failures](Plan::is_completed_with_failures), otherwise the status
    /// itself (`Completed`, `Failed`, …).
    pub fn status_label(&self) -> String {
        status_label(self, &self.failure_counts())
    }

    /// `resumed once`, `resumed twice`, `resumed 3 times` for a plan that processes resumed
    /// after the one running it stopped ([`Plan::resumptions`]); `None` for a plan that ran in
    /// one go. The faces show it beside the status.
    pub fn resumed_label(&self) -> Option<String> {
        resumed_label(self.resumptions().len())
    }

    /// Every failed or stopped object (the plan itself excluded), in walk order, each with its
    /// path and, for actions, the last plugin error — the exact cause of a failure.
    pub fn failures(&self) -> Vec<Failure> {
        self.walk()
            .filter(|(loc, obj)| {
                *loc != Loc::Plan && matches!(obj.state().status, Status::Failed | Status::Stopped)
            })
            .map(|(loc, obj)| {
                let (error, attempts) = match obj {
                    ObjectRef::Action(a) => (a.last_error().cloned(), a.attempts().len()),
                    _ => (None, 0),
                };
                Failure {
                    path: self.path(loc),
                    loc,
                    kind: obj.kind_name(),
                    status: obj.state().status,
                    error,
                    attempts,
                }
            })
            .collect()
    }

    /// The failure report: a one-line summary, then an indented tree of every failed or stopped
    /// object (with the objects that contain them) showing status, duration, attempts and the
    /// last error. Also what `Display` prints.
    pub fn failure_report(&self) -> String {
        failure_report(self, &self.failure_counts())
    }
}

/// [`Plan::status_label`] of a plan whose failures are counted in `counts`.
pub(crate) fn status_label(plan: &Plan, counts: &FailureCounts) -> String {
    if plan.status() == Status::Completed && counts.has_failures() {
        return completed_with_failures(counts);
    }
    plan.status().as_str().to_owned()
}

/// [`Plan::failure_report`] of a plan whose failures are counted in `counts` (a page of a
/// plan lists the failures it holds under the counts of the whole).
pub(crate) fn failure_report(plan: &Plan, counts: &FailureCounts) -> String {
    let mut out = String::new();
    let _ = write_report(plan, counts, &mut out);
    out
}

/// Counts of actions by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ActionCounts {
    /// Every action.
    pub total: usize,
    /// Actions that did not start.
    pub not_started: usize,
    /// Actions that run.
    pub running: usize,
    /// Actions that completed.
    pub completed: usize,
    /// Actions that failed.
    pub failed: usize,
    /// Actions that were stopped.
    pub stopped: usize,
}

impl ActionCounts {
    /// Counts one more action in `status`.
    pub fn add(&mut self, status: Status) {
        self.total += 1;
        match status {
            Status::NotStarted => self.not_started += 1,
            Status::Running => self.running += 1,
            Status::Completed => self.completed += 1,
            Status::Failed => self.failed += 1,
            Status::Stopped => self.stopped += 1,
        }
    }
}

/// A duration for people, the one form every face uses (reports, the CLI, the web UI, the
/// engine's and the built-in plugins' errors): `750ns`, `12µs`, `340ms`, `1.2s`, `3m07s`,
/// `2h05m`, `3d04h` (and `5s`, not `5.0s`). Precision shrinks as durations grow.
///
/// ```
/// # use std::time::Duration;
/// use coercion::report::human_duration;
/// assert_eq!(human_duration(Duration::from_millis(2770)), "2.8s");
/// assert_eq!(human_duration(Duration::from_secs(187)), "3m07s");
/// ```
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 86_400 {
        format!("{}d{:02}h", secs / 86_400, (secs % 86_400) / 3600)
    } else if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if d.as_millis() >= 1000 {
        let tenths = format!("{:.1}", d.as_secs_f64());
        format!("{}s", tenths.strip_suffix(".0").unwrap_or(&tenths))
    } else if d.as_micros() >= 1000 {
        format!("{}ms", d.as_millis())
    } else if d.as_nanos() >= 1000 {
        format!("{}µs", d.as_micros())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

fn fmt_duration(d: Option<Duration>) -> String {
    d.map(|d| format!(" in {}", human_duration(d)))
        .unwrap_or_default()
}

/// `Completed with 2 failed`: the one wording of a plan that completed with failures.
fn completed_with_failures(c: &FailureCounts) -> String {
    // A plan could complete with only stopped actions; it still says how many did not succeed.
    let n = if c.failed_actions > 0 {
        c.failed_actions
    } else {
        c.failed_sequences + c.stopped_sequences + c.stopped_actions
    };
    format!("Completed with {n} failed")
}

fn summary(plan: &Plan, c: &FailureCounts) -> String {
    let mut line = format!(
        "plan {:?} ({}) {}",
        plan.name(),
        plan.id(),
        status_label(plan, c)
    );
    if plan.reason() != crate::workflow::Reason::None {
        let _ = write!(line, " (reason: {})", plan.reason());
    }
    line.push_str(&fmt_duration(plan.state().duration()));
    let _ = write!(
        line,
        ": {} of {} sequences failed",
        c.failed_sequences, c.sequences
    );
    if c.stopped_sequences > 0 {
        let _ = write!(line, ", {} stopped", c.stopped_sequences);
    }
    let _ = write!(line, ", {} action(s) failed", c.failed_actions);
    line
}

fn write_report(plan: &Plan, counts: &FailureCounts, out: &mut String) -> fmt::Result {
    writeln!(out, "{}", summary(plan, counts))?;
    let failures = plan.failures();
    if failures.is_empty() {
        return Ok(());
    }
    // Show each failed object under its ancestors, each ancestor once.
    let mut shown: Vec<ObjectPath> = Vec::new();
    for f in &failures {
        for depth in 1..=f.path.depth() {
            let prefix = ObjectPath(f.path.segments()[..depth].to_vec());
            if shown.contains(&prefix) {
                continue;
            }
            shown.push(prefix.clone());
            let indent = "  ".repeat(depth);
            let seg = &f.path.segments()[depth - 1];
            // The object at this prefix: a failure itself, or an ancestor shown for context.
            match failures.iter().find(|g| g.path == prefix) {
                Some(g) => {
                    let state = plan.state_at(g.loc).unwrap_or_default();
                    write!(
                        out,
                        "{indent}{seg}: {}{}",
                        g.status,
                        fmt_duration(state.duration())
                    )?;
                    if g.kind == "action" {
                        write!(out, ", {} attempt(s)", g.attempts)?;
                    }
                    writeln!(out)?;
                    if let Some(e) = &g.error {
                        writeln!(out, "{indent}  error: {}", e.chain())?;
                    }
                }
                None => writeln!(out, "{indent}{seg}")?,
            }
        }
    }
    Ok(())
}

impl fmt::Display for Plan {
    /// The failure report (see [`Plan::failure_report`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.failure_report())
    }
}

/// `resumed once`, `resumed twice`, `resumed 3 times`; `None` for 0.
/// `text` with control characters (terminal escapes, newlines) shown escaped, so a hostile
/// name cannot rewrite the terminal.
pub(crate) fn clean_for_terminal(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() || is_bidi_control(c) {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// The characters that reorder text around them (embeddings, overrides, isolates, marks): a
/// name holding one could make a terminal line say something else than it does.
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

pub(crate) fn resumed_label(times: usize) -> Option<String> {
    match times {
        0 => None,
        1 => Some("resumed once".to_owned()),
        2 => Some("resumed twice".to_owned()),
        n => Some(format!("resumed {n} times")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{ActionSpec, CheckSpec};
    use crate::testing::{FakeAction, FakeCheck, FakeReq, Fakes, run_paused};
    use crate::workflow::{Block, Checks, DeferredBatch, Sequence, When};

    fn act(name: &str, req: FakeReq) -> ActionSpec {
        ActionSpec::new::<FakeAction>(name, req.tag(name))
    }

    /// A block of `hosts` sequences tolerating `tolerated` failures; `failing` hosts fail.
    fn fleet(hosts: usize, failing: &[usize], tolerated: u32) -> crate::builder::BlockBuilder {
        Block::builder("web")
            .tolerated_failures(tolerated)
            .sequences((1..=hosts).map(|i| {
                let req = if failing.contains(&i) {
                    FakeReq::fail_permanently()
                } else {
                    FakeReq::ok()
                };
                Sequence::builder(format!("web-{i}"))
                    .action(act("copy", FakeReq::ok()))
                    .action(act("restart", req))
            }))
    }

    fn run(plan: crate::builder::PlanBuilder) -> Plan {
        run_paused(Fakes::new().registry(), plan.build()).expect("the plan runs")
    }

    #[test]
    fn tolerated_failures_are_counted_and_named_completed_with_failures() {
        let done = run(Plan::builder("deploy").block(fleet(5, &[2, 4], 2)));
        assert_eq!(done.status(), Status::Completed);
        let c = done.failure_counts();
        assert_eq!(
            (c.sequences, c.failed_sequences, c.stopped_sequences),
            (5, 2, 0)
        );
        assert_eq!((c.failed_actions, c.stopped_actions), (2, 0));
        assert!(c.has_failures());
        assert!(done.is_completed_with_failures());
        assert_eq!(done.status_label(), "Completed with 2 failed");
        let report = done.failure_report();
        let first = report.lines().next().unwrap();
        assert!(
            first.starts_with(&format!(
                "plan \"deploy\" ({}) Completed with 2 failed in ",
                done.id()
            )) && first.ends_with(": 2 of 5 sequences failed, 2 action(s) failed"),
            "{report}"
        );
        assert!(
            report.contains("error: restart: "),
            "the tree of failures follows: {report}"
        );
    }

    #[test]
    fn a_clean_plan_has_no_failures_and_its_label_is_its_status() {
        let done = run(Plan::builder("deploy").block(fleet(3, &[], 0)));
        let c = done.failure_counts();
        assert_eq!(
            c,
            FailureCounts {
                sequences: 3,
                ..FailureCounts::default()
            }
        );
        assert!(!c.has_failures() && !done.is_completed_with_failures());
        assert_eq!(done.status_label(), "Completed");
    }

    #[test]
    fn a_failed_plan_is_labelled_failed_whatever_its_counts() {
        let done = run(Plan::builder("deploy").block(fleet(3, &[1, 2], 1)));
        assert_eq!(done.status(), Status::Failed);
        assert!(done.failure_counts().has_failures());
        assert!(!done.is_completed_with_failures());
        assert_eq!(done.status_label(), "Failed");
    }

    #[test]
    fn a_failing_bypass_check_is_not_a_failure() {
        let done = run(Plan::builder("deploy")
            .bypass_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>(
                "already deployed?",
                FakeReq::fail_permanently(),
            )))
            .block(fleet(2, &[], 0)));
        assert_eq!(done.status(), Status::Completed);
        assert!(
            !done.failures().is_empty(),
            "the bypass check's failure is in the tree"
        );
        assert!(!done.failure_counts().has_failures());
        assert_eq!(done.status_label(), "Completed");
    }

    #[test]
    fn a_deferred_batch_that_does_not_fail_the_plan_still_counts() {
        let done = run(Plan::builder("deploy").block(fleet(2, &[], 0)).deferred(
            DeferredBatch::builder("notify", When::Always)
                .fail_plan(false)
                .action(act("post to chat", FakeReq::fail_permanently())),
        ));
        assert_eq!(done.status(), Status::Completed);
        let c = done.failure_counts();
        assert_eq!((c.failed_sequences, c.failed_actions), (0, 1));
        assert_eq!(done.status_label(), "Completed with 1 failed");
    }
}

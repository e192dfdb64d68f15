//! What failed and where: [`Plan::failures`] and the human failure report.
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
use crate::workflow::{Loc, ObjectPath, ObjectRef, Plan, Status};

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

impl Plan {
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
        let mut out = String::new();
        let _ = write_report(self, &mut out);
        out
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

fn summary(plan: &Plan) -> String {
    let mut seqs = (0, 0, 0);
    let mut actions_failed = 0;
    for (_, obj) in plan.walk() {
        match obj {
            ObjectRef::Sequence(s) => {
                seqs.0 += 1;
                match s.status() {
                    Status::Failed => seqs.1 += 1,
                    Status::Stopped => seqs.2 += 1,
                    _ => {}
                }
            }
            ObjectRef::Action(a) if a.status() == Status::Failed => actions_failed += 1,
            _ => {}
        }
    }
    let mut line = format!("plan {:?} ({}) {}", plan.name(), plan.id(), plan.status());
    if plan.reason() != crate::workflow::Reason::None {
        let _ = write!(line, " (reason: {})", plan.reason());
    }
    line.push_str(&fmt_duration(plan.state().duration()));
    let _ = write!(line, ": {} of {} sequences failed", seqs.1, seqs.0);
    if seqs.2 > 0 {
        let _ = write!(line, ", {} stopped", seqs.2);
    }
    let _ = write!(line, ", {actions_failed} action(s) failed");
    line
}

fn write_report(plan: &Plan, out: &mut String) -> fmt::Result {
    writeln!(out, "{}", summary(plan))?;
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

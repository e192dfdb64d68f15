//! Previews: what a plan would do, before it touches anything.
//!
//! An action plugin that can tell, without side effects, what an attempt would do with a
//! request is declared `#[plugin(preview)]` and implements [`Previews`]: it answers
//! [`Preview::NoChange`], [`Preview::WouldChange`] (a one-line summary and an optional unified
//! diff) or [`Preview::CannotTell`]. [`Workstream::preview`](crate::Workstream::preview) then
//! dry-runs a plan:
//!
//! * the checks that judge the world as it is run for real, one attempt each (they are side-effect
//!   free by construction): bypass and pre-checks, continuous checks once, a `wait-for` once
//!   without polling ([`Context::is_preview`]);
//! * post-checks and deferred checks are listed as "would run after": they would judge a world
//!   the preview did not change;
//! * every action is asked for its preview, block after block, each block's actions as many at
//!   a time as its concurrency (the report keeps plan order); an action whose plugin cannot
//!   preview is reported "cannot tell", never skipped silently;
//! * nothing is stored: a preview is not a run, the plan store never sees it.
//!
//! A plan (or a block) that says `require_previews: true` in `plan!` does not compile when one
//! of the action plugins written in it cannot preview; actions spliced in from elsewhere
//! (`..fragment`) are checked when the plan is submitted or previewed.
//!
//! ```
//! use coercion::plugins::{WriteFile, WriteFileReq};
//! use coercion::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("coercion-preview-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! std::fs::write(dir.join("a.conf"), "version=1\n")?;
//! let plan = coercion::plan! {
//!     name: "configure",
//!     require_previews: true,
//!     block {
//!         name: "files",
//!         sequence {
//!             name: "a",
//!             action { name: "write a", plugin: WriteFile, request: WriteFileReq::text(dir.join("a.conf"), "version=2\n") }
//!         }
//!     }
//! };
//! let ws = Workstream::in_memory(Registry::from_inventory()?).await?;
//! let report = ws.preview(plan).await?;
//! assert_eq!(report.summary().would_change, 1);
//! assert!(report.to_text(true).contains("+version=2"), "the diff");
//! assert_eq!(std::fs::read_to_string(dir.join("a.conf"))?, "version=1\n", "nothing written");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```

use std::fmt::{self, Write as _};
use std::future::Future;

use anstyle::{AnsiColor, Style};
use serde::{Deserialize, Serialize};

use crate::plugin::{Context, Plugin, PluginError};
use crate::workflow::{CheckSlot, Loc, ObjectPath, ObjectRef, Parent, Plan};

/// What an attempt would do with a request, told without doing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Preview {
    /// Nothing would change (the file already holds that content, the path `creates` names
    /// exists). `summary` may say what was compared.
    NoChange {
        /// What was found, in one line (may be empty).
        summary: String,
    },
    /// Something would change.
    WouldChange {
        /// What, in one line: "would write 12 bytes to /etc/app.conf (mode 644)".
        summary: String,
        /// A unified diff of the change, when there is text to compare ([`unified_diff`]).
        diff: Option<String>,
    },
    /// The plugin cannot know without doing it.
    CannotTell {
        /// Why, in one line.
        reason: String,
    },
}

impl Preview {
    /// Nothing would change.
    pub fn no_change(summary: impl Into<String>) -> Preview {
        Preview::NoChange {
            summary: summary.into(),
        }
    }

    /// Something would change, as `summary` says.
    pub fn would_change(summary: impl Into<String>) -> Preview {
        Preview::WouldChange {
            summary: summary.into(),
            diff: None,
        }
    }

    /// The plugin cannot tell, for `reason`.
    pub fn cannot_tell(reason: impl Into<String>) -> Preview {
        Preview::CannotTell {
            reason: reason.into(),
        }
    }

    /// This preview with a unified diff (only a [`WouldChange`](Preview::WouldChange) keeps
    /// one; an empty diff is dropped).
    pub fn with_diff(self, diff: impl Into<String>) -> Preview {
        match self {
            Preview::WouldChange { summary, .. } => {
                let diff = diff.into();
                Preview::WouldChange {
                    summary,
                    diff: (!diff.is_empty()).then_some(diff),
                }
            }
            other => other,
        }
    }

    /// The diff of a change, if there is one.
    pub fn diff(&self) -> Option<&str> {
        match self {
            Preview::WouldChange { diff, .. } => diff.as_deref(),
            _ => None,
        }
    }

    /// The one-line text: the summary, or the reason.
    pub fn text(&self) -> &str {
        match self {
            Preview::NoChange { summary } | Preview::WouldChange { summary, .. } => summary,
            Preview::CannotTell { reason } => reason,
        }
    }
}

/// A unified diff of `old` to `new` (three lines of context), with `---`/`+++` headers naming
/// `old_name` and `new_name`; empty when the texts are equal.
pub fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

/// An action plugin that can tell what an attempt would do, without side effects. Declare the
/// plugin `#[plugin(preview)]` and implement this trait:
///
/// ```
/// use coercion::prelude::*;
/// use coercion::{Preview, Previews};
///
/// /// Sets a feature flag in a file (here, pretends to).
/// #[coercion::plugin(preview, name = "example.com/flag")]
/// #[derive(Default)]
/// pub struct Flag;
///
/// impl Plugin for Flag {
///     type Request = (String, bool);
///     type Response = ();
///     async fn execute(&self, _ctx: &Context, _req: (String, bool)) -> Result<(), PluginError> {
///         Ok(())
///     }
/// }
///
/// impl Previews for Flag {
///     async fn preview(&self, _ctx: &Context, (name, on): &(String, bool)) -> Result<Preview, PluginError> {
///         let current = false; // read the current value here, without changing it
///         Ok(if current == *on {
///             Preview::no_change(format!("{name} is already {on}"))
///         } else {
///             Preview::would_change(format!("would set {name} to {on}"))
///         })
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is declared `#[plugin(preview)]` but does not implement `coercion::Previews`",
    label = "no `impl Previews for {Self}`",
    note = "implement `coercion::Previews` for `{Self}` (`async fn preview(&self, ctx: &Context, req: &Self::Request) -> Result<Preview, PluginError>`, without side effects), or remove `preview` from `#[plugin(...)]`"
)]
pub trait Previews: Plugin {
    /// What an attempt with `req` would do. It must not change anything: it may read (a file,
    /// a remote checksum), never write. An error is reported as "cannot tell" with its
    /// message.
    fn preview(
        &self,
        ctx: &Context,
        req: &Self::Request,
    ) -> impl Future<Output = Result<Preview, PluginError>> + Send;
}

/// What the preview found for one action or check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// An action's preview.
    Action {
        /// What the plugin said.
        preview: Preview,
    },
    /// A check that judges the world as it is, run for real (one attempt).
    Check {
        /// Whether it passed.
        passed: bool,
        /// Its error when it failed.
        error: Option<String>,
    },
    /// A post- or deferred check: it would run after the actions, judging a world the preview
    /// did not change.
    After,
    /// An approval gate: a run would wait there for a person (a preview does not wait).
    Gate {
        /// What the person would be asked.
        message: String,
    },
    /// Not previewed: a bypass check that passed means a run would skip it.
    Skipped {
        /// Which bypass.
        reason: String,
    },
}

/// One action or check of a previewed plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it is in the plan.
    pub loc: Loc,
    /// Where it is, for people.
    pub path: ObjectPath,
    /// Its plugin's registered name.
    pub plugin: String,
    /// What the preview found.
    pub outcome: Outcome,
}

/// The counts of a preview: its summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Actions that would change something.
    pub would_change: usize,
    /// Actions that would change nothing.
    pub unchanged: usize,
    /// Actions whose plugin cannot tell (or cannot preview at all).
    pub unknown: usize,
    /// Actions and checks a passed bypass check would skip.
    pub skipped: usize,
    /// Checks run now that passed.
    pub checks_passed: usize,
    /// Checks run now that failed: a run would fail (or be bypassed) there.
    pub checks_failed: usize,
    /// Post- and deferred checks, which would run after.
    pub checks_after: usize,
    /// Approval gates a run would wait at.
    pub gates: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} would change, {} unchanged, {} unknown",
            self.would_change, self.unchanged, self.unknown
        )?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        write!(
            f,
            "; checks: {} passed, {} failed",
            self.checks_passed, self.checks_failed
        )?;
        if self.checks_after > 0 {
            write!(f, ", {} would run after", self.checks_after)?;
        }
        if self.gates > 0 {
            write!(f, "; {} approval gate(s)", self.gates)?;
        }
        Ok(())
    }
}

/// What a plan would do: per action no change / would change (with its diff) / cannot tell,
/// per check passed or failed, in plan order. Made by
/// [`Workstream::preview`](crate::Workstream::preview); nothing of it is stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The plan previewed (its definition; nothing ran).
    pub plan: Plan,
    /// Every action and check, in plan order ([`Plan::walk`]).
    pub entries: Vec<Entry>,
}

impl Report {
    /// The counts: "12 would change, 30 unchanged, 0 unknown; checks: 3 passed, 0 failed".
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for e in &self.entries {
            match &e.outcome {
                Outcome::Action { preview } => match preview {
                    Preview::NoChange { .. } => s.unchanged += 1,
                    Preview::WouldChange { .. } => s.would_change += 1,
                    Preview::CannotTell { .. } => s.unknown += 1,
                },
                Outcome::Check { passed: true, .. } => s.checks_passed += 1,
                Outcome::Check { passed: false, .. } => s.checks_failed += 1,
                Outcome::After => s.checks_after += 1,
                Outcome::Gate { .. } => s.gates += 1,
                Outcome::Skipped { .. } => s.skipped += 1,
            }
        }
        s
    }

    /// The entry of the action or check at `loc`.
    pub fn entry(&self, loc: Loc) -> Option<&Entry> {
        self.entries.iter().find(|e| e.loc == loc)
    }

    /// The report as a tree for the terminal, with the summary line last; with `diffs`, each
    /// change's diff under it. Colours (ANSI) only with `color`. Names and diffs are shown
    /// with control characters escaped.
    pub fn render(&self, diffs: bool, color: bool) -> String {
        let paint = |style: Style, text: &str| {
            if color {
                format!("{style}{text}{style:#}")
            } else {
                text.to_owned()
            }
        };
        let fg = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
        let mut out = String::new();
        let mut entries = self.entries.iter().peekable();
        for (loc, obj) in self.plan.walk() {
            let depth = self.plan.path(loc).depth();
            let indent = "  ".repeat(depth);
            let name = clean(obj_name(&obj));
            match obj {
                ObjectRef::Plan(_) => {
                    let _ = writeln!(
                        out,
                        "{}",
                        paint(Style::new().bold(), &format!("preview of {name}"))
                    );
                }
                ObjectRef::Action(a) => {
                    let Some(entry) = entries.next_if(|e| e.loc == loc) else {
                        continue;
                    };
                    let (mark, style, text) = match &entry.outcome {
                        Outcome::Action { preview } => match preview {
                            Preview::NoChange { .. } => ("=", fg(AnsiColor::Green), "no change"),
                            Preview::WouldChange { .. } => {
                                ("~", fg(AnsiColor::Yellow), "would change")
                            }
                            Preview::CannotTell { .. } => {
                                ("?", fg(AnsiColor::Magenta), "cannot tell")
                            }
                        },
                        Outcome::Check { passed: true, .. } => {
                            ("✓", fg(AnsiColor::Green), "passed")
                        }
                        Outcome::Check { passed: false, .. } => ("✗", fg(AnsiColor::Red), "failed"),
                        Outcome::After => ("…", Style::new().dimmed(), "would run after"),
                        Outcome::Gate { .. } => {
                            ("⏸", fg(AnsiColor::Cyan), "would wait for approval")
                        }
                        Outcome::Skipped { .. } => ("-", Style::new().dimmed(), "skipped"),
                    };
                    let detail = match &entry.outcome {
                        Outcome::Action { preview } => preview.text().to_owned(),
                        Outcome::Check { error, .. } => error.clone().unwrap_or_default(),
                        Outcome::Skipped { reason } => reason.clone(),
                        Outcome::Gate { message } => message.clone(),
                        Outcome::After => String::new(),
                    };
                    let detail = if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", clean(&detail))
                    };
                    let _ = writeln!(
                        out,
                        "{indent}{} {name} {} {}{detail}",
                        paint(style, mark),
                        paint(style.bold(), text),
                        paint(Style::new().dimmed(), &format!("({})", clean(a.plugin()))),
                    );
                    if diffs
                        && let Some(diff) = match &entry.outcome {
                            Outcome::Action { preview } => preview.diff(),
                            _ => None,
                        }
                    {
                        for line in diff.lines() {
                            let line = clean(line);
                            let style = if line.starts_with("+++") || line.starts_with("---") {
                                Style::new().bold()
                            } else if line.starts_with('+') {
                                fg(AnsiColor::Green)
                            } else if line.starts_with('-') {
                                fg(AnsiColor::Red)
                            } else if line.starts_with("@@") {
                                fg(AnsiColor::Cyan)
                            } else {
                                Style::new()
                            };
                            let _ = writeln!(out, "{indent}    {}", paint(style, &line));
                        }
                    }
                }
                ObjectRef::Checks(_) => {
                    if let Loc::Checks { slot, .. } = loc {
                        let _ = writeln!(
                            out,
                            "{indent}{}",
                            paint(Style::new().dimmed(), slot.as_str())
                        );
                    }
                }
                ObjectRef::Batch(b) => {
                    let _ = writeln!(out, "{indent}deferred batch {name} ({})", b.when());
                }
                other => {
                    let _ = writeln!(out, "{indent}{} {name}", other.kind_name());
                }
            }
        }
        let _ = writeln!(
            out,
            "{}",
            paint(Style::new().bold(), &self.summary().to_string())
        );
        out
    }

    /// [`render`](Self::render) without colours.
    pub fn to_text(&self, diffs: bool) -> String {
        self.render(diffs, false)
    }
}

fn obj_name<'a>(obj: &ObjectRef<'a>) -> &'a str {
    match obj {
        ObjectRef::Plan(p) => p.name(),
        ObjectRef::Checks(_) => "",
        ObjectRef::Block(b) => b.definition().name(),
        ObjectRef::Sequence(s) => s.definition().name(),
        ObjectRef::Batch(b) => b.definition().name(),
        ObjectRef::Action(a) => a.definition().name(),
    }
}

/// `text` with control characters (terminal escapes, bidi overrides) shown escaped.
fn clean(text: &str) -> String {
    crate::report::clean_for_terminal(text)
}

/// Which checks a preview runs now, and which it lists as running after.
pub(crate) fn runs_now(slot: CheckSlot) -> bool {
    matches!(slot, CheckSlot::Bypass | CheckSlot::Pre | CheckSlot::Cont)
}

/// The bypass section that would skip `loc`, given which bypass sections passed (`None`: the
/// plan's own, `Some(i)`: block `i`'s).
pub(crate) fn skipped_by(loc: Loc, passed: &[Option<usize>]) -> Option<Option<usize>> {
    let block = match loc {
        Loc::Action { parent, .. } => match parent {
            Parent::Checks { block, slot } => {
                if slot == CheckSlot::Bypass {
                    // A bypass section is never skipped by itself; block bypasses are skipped
                    // by the plan's.
                    return block.and(passed.contains(&None).then_some(None));
                }
                block
            }
            Parent::Sequence { block, .. } => Some(block),
            Parent::Batch(_) => None,
        },
        _ => return None,
    };
    if passed.contains(&None) {
        return Some(None);
    }
    block.filter(|b| passed.contains(&Some(*b))).map(Some)
}

/// Dry-runs a validated `plan` (see the [module docs](self)); `keys` decode its secrets.
pub(crate) async fn run(
    plan: Plan,
    registry: &crate::Registry,
    keys: &std::sync::Arc<crate::secret::KeyRing>,
) -> Report {
    use std::collections::HashMap;

    let mut entries = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    // Per bypass section (`None`: the plan's), whether every check of it passed so far. A
    // section is walked before everything it can skip.
    let mut bypass: HashMap<Option<usize>, bool> = HashMap::new();
    for (loc, obj) in plan.walk() {
        let ObjectRef::Action(a) = obj else { continue };
        let Loc::Action { parent, .. } = loc else {
            continue;
        };
        let passed: Vec<Option<usize>> = bypass
            .iter()
            .filter(|(_, ok)| **ok)
            .map(|(section, _)| *section)
            .collect();
        let outcome = if let Some(section) = skipped_by(loc, &passed) {
            Outcome::Skipped {
                reason: match section {
                    None => "the plan's bypass checks passed".to_owned(),
                    Some(_) => "the block's bypass checks passed".to_owned(),
                },
            }
        } else {
            let ctx = Context {
                preview: true,
                keys: Some(keys.clone()),
                loc,
                ..Context::detached(a.timeout())
            };
            let plugin = registry.get(a.plugin());
            match (parent, plugin) {
                (_, None) => Outcome::Action {
                    preview: Preview::cannot_tell(format!(
                        "plugin {:?} is not registered",
                        a.plugin()
                    )),
                },
                (Parent::Checks { slot, .. }, Some(plugin))
                    if runs_now(slot) && plugin.name() == crate::plugins::GATE =>
                {
                    Outcome::Gate {
                        message: a
                            .request_json()
                            .decode::<crate::plugins::GateReq>()
                            .map(|r| r.message)
                            .unwrap_or_default(),
                    }
                }
                (Parent::Checks { block, slot }, Some(plugin)) if runs_now(slot) => {
                    let result =
                        call(a.timeout(), plugin.execute_json(&ctx, a.request_json())).await;
                    let outcome = match result {
                        Ok(_) => Outcome::Check {
                            passed: true,
                            error: None,
                        },
                        Err(e) => Outcome::Check {
                            passed: false,
                            error: Some(e),
                        },
                    };
                    if slot == CheckSlot::Bypass {
                        let ok = matches!(outcome, Outcome::Check { passed: true, .. });
                        *bypass.entry(block).or_insert(true) &= ok;
                    }
                    outcome
                }
                (Parent::Checks { .. }, Some(_)) => Outcome::After,
                (_, Some(plugin)) if !plugin.previews() => Outcome::Action {
                    preview: Preview::cannot_tell(format!(
                        "plugin {:?} cannot preview: an attempt would run it",
                        a.plugin()
                    )),
                },
                (parent, Some(plugin)) => {
                    // Asked below, several at a time: the entry is filled in then.
                    let (group, limit) = match parent {
                        Parent::Sequence { block, .. } => {
                            let limit = plan.blocks.get(block).map_or(1, |b| b.concurrency.get());
                            (Some(block), limit)
                        }
                        _ => (None, 1),
                    };
                    jobs.push(Job {
                        entry: entries.len(),
                        group,
                        limit,
                        plugin: plugin.clone(),
                        ctx,
                        request: a.request_json().clone(),
                        timeout: a.timeout(),
                    });
                    Outcome::Action {
                        preview: Preview::cannot_tell("not asked"),
                    }
                }
            }
        };
        entries.push(Entry {
            loc,
            path: plan.path(loc),
            plugin: a.plugin().to_owned(),
            outcome,
        });
    }
    // The actions' previews, block by block in plan order, each block's as many at a time as
    // its concurrency allows (a fleet is asked as a run would touch it); deferred batches' one
    // at a time.
    use futures_util::StreamExt as _;
    let mut jobs = jobs.into_iter().peekable();
    while let Some(first) = jobs.next() {
        let (group, limit) = (first.group, first.limit);
        let mut batch = vec![first];
        while let Some(job) = jobs.next_if(|j| j.group == group) {
            batch.push(job);
        }
        let answers: Vec<(usize, Preview)> = futures_util::stream::iter(batch)
            .map(|job| async move {
                let preview = match job.plugin.preview_json(&job.ctx, &job.request) {
                    None => Preview::cannot_tell("the plugin cannot preview"),
                    Some(fut) => match call(job.timeout, fut).await {
                        Ok(preview) => preview,
                        Err(e) => Preview::cannot_tell(format!("the preview failed: {e}")),
                    },
                };
                (job.entry, preview)
            })
            .buffer_unordered(limit.max(1))
            .collect()
            .await;
        for (entry, preview) in answers {
            entries[entry].outcome = Outcome::Action { preview };
        }
    }
    Report { plan, entries }
}

/// One action's preview to ask.
struct Job {
    /// Its index in the report's entries.
    entry: usize,
    /// Its block (`None`: a deferred batch), and how many of the group are asked at a time.
    group: Option<usize>,
    limit: usize,
    plugin: std::sync::Arc<dyn crate::plugin::DynPlugin>,
    ctx: Context,
    request: crate::workflow::Json,
    timeout: std::time::Duration,
}

/// Awaits a plugin call within `timeout`, a panic or an error as its message.
async fn call<T>(
    timeout: std::time::Duration,
    fut: crate::plugin::BoxFuture<'_, Result<T, PluginError>>,
) -> Result<T, String> {
    use futures_util::FutureExt as _;
    let fut = std::panic::AssertUnwindSafe(fut).catch_unwind();
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(e))) => Err(e.chain()),
        Ok(Err(panic)) => Err(format!(
            "the plugin panicked: {}",
            crate::engine::panic_message(&*panic)
        )),
        Err(_) => Err(format!(
            "no answer within the timeout ({})",
            crate::report::human_duration(timeout)
        )),
    }
}

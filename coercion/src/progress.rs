//! Live progress of a plan in the terminal (feature `progress`): one bar per block counting its
//! finished sequences, a line for each sequence that does not complete, and the outcome line at
//! the end — what the `rollout` example shows, for any program.
//!
//! ```no_run
//! # async fn demo(ws: coercion::Workstream, plan: coercion::Plan) -> Result<(), coercion::Error> {
//! let id = ws.submit_and_start(plan).await?;
//! let done = coercion::progress::watch(&ws, id).await?;
//! println!("{}", coercion::progress::outcome(&done));
//! # Ok(()) }
//! ```
//!
//! [`Progress`] is the same display driven by hand, for programs that also act on the events
//! (the `rollout` example counts finished hosts with it).

use futures_util::StreamExt as _;
/// Where the bars are drawn (indicatif's type, re-exported: `ProgressDrawTarget::hidden()` in
/// tests).
pub use indicatif::ProgressDrawTarget;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::engine::{Event, UpdateKind};
use crate::workflow::{Loc, Plan, PlanId, Status};
use crate::workstream::{Error, Workstream};

/// Per-block progress bars of one plan.
pub struct Progress {
    multi: MultiProgress,
    bars: Vec<ProgressBar>,
    names: Vec<Vec<String>>,
}

/// A sequence that just ended, as [`Progress::update`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SequenceEnd {
    /// The block's index.
    pub block: usize,
    /// The sequence's index in its block.
    pub sequence: usize,
    /// The sequence's name.
    pub name: String,
    /// How it ended.
    pub status: Status,
}

impl Progress {
    /// Bars for the blocks of `plan` on standard error, each already counting the sequences
    /// that have ended (a resumed plan starts where it stopped).
    pub fn new(plan: &Plan) -> Progress {
        Progress::with_target(plan, ProgressDrawTarget::stderr())
    }

    /// The same, drawn to `target` (`ProgressDrawTarget::hidden()` in tests).
    pub fn with_target(plan: &Plan, target: ProgressDrawTarget) -> Progress {
        let multi = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> ");
        let bars = plan
            .blocks()
            .iter()
            .map(|b| {
                let bar = multi.add(ProgressBar::new(b.sequences().len() as u64));
                bar.set_style(style.clone());
                bar.set_prefix(b.name().to_owned());
                let ended = b
                    .sequences()
                    .iter()
                    .filter(|s| s.status().is_terminal())
                    .count();
                bar.set_position(ended as u64);
                bar
            })
            .collect();
        let names = plan
            .blocks()
            .iter()
            .map(|b| b.sequences().iter().map(|s| s.name().to_owned()).collect())
            .collect();
        Progress { multi, bars, names }
    }

    /// Moves the bars on for `event`; returns the sequences it ended. A sequence that did not
    /// complete also gets a line above the bars.
    pub fn update(&self, event: &Event) -> Vec<SequenceEnd> {
        let Event::Updated(updates) = event else {
            return Vec::new();
        };
        let mut ended = Vec::new();
        for update in updates.iter() {
            let (Loc::Sequence { block, seq }, UpdateKind::Status(state)) =
                (update.loc, &update.what)
            else {
                continue;
            };
            if !state.status.is_terminal() {
                continue;
            }
            let (Some(bar), Some(name)) = (
                self.bars.get(block),
                self.names.get(block).and_then(|n| n.get(seq)),
            ) else {
                continue;
            };
            bar.inc(1);
            if state.status != Status::Completed {
                bar.println(format!("  {name} {}", state.status));
            }
            ended.push(SequenceEnd {
                block,
                sequence: seq,
                name: name.clone(),
                status: state.status,
            });
        }
        ended
    }

    /// Runs `f` with the bars cleared from the terminal, so that what it prints is not drawn
    /// over.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.multi.suspend(f)
    }

    /// How many sequences of block `block` have ended, as its bar shows.
    pub fn ended(&self, block: usize) -> Option<u64> {
        self.bars.get(block).map(ProgressBar::position)
    }

    /// Leaves the bars as they are, finished.
    pub fn finish(&self) {
        for bar in &self.bars {
            bar.finish();
        }
    }
}

/// Shows the progress of plan `id` until it ends; returns the final plan. Subscribes before
/// anything else, so a plan not started yet is followed from its first change.
pub async fn watch(ws: &Workstream, id: PlanId) -> Result<Plan, Error> {
    let mut events = ws.events(id).await?;
    let mut progress = None;
    while let Some(event) = events.next().await {
        match &event {
            Event::Snapshot(plan) if progress.is_none() => progress = Some(Progress::new(plan)),
            Event::Finished(_) => break,
            _ => {}
        }
        if let Some(p) = &progress {
            p.update(&event);
        }
    }
    if let Some(p) = &progress {
        p.finish();
    }
    ws.wait(id).await
}

/// The outcome line of a finished plan: `plan ID Completed`, `plan ID Completed with 2 failed`
/// or `plan ID Failed (reason: Block)`, followed by `, resumed twice` for a plan resumed after
/// crashes.
pub fn outcome(plan: &Plan) -> String {
    let mut line = format!("plan {} {}", plan.id(), plan.status_label());
    if plan.status() != Status::Completed {
        line.push_str(&format!(" (reason: {})", plan.reason()));
    }
    if let Some(resumed) = plan.resumed_label() {
        line.push_str(&format!(", {resumed}"));
    }
    line
}

//! Small formatting helpers shared by the terminal and HTML views.

use std::time::Duration;

use crate::workflow::{State, Status, Timestamp};

pub(crate) use crate::report::human_duration as duration;

/// How long the object ran (or, while it runs, has been running until `now`).
pub(crate) fn state_duration(state: State, now: Timestamp) -> Option<Duration> {
    match (state.start, state.end) {
        (Some(s), Some(e)) => (e - s).to_std().ok(),
        (Some(s), None) if state.status == Status::Running => (now - s).to_std().ok(),
        _ => None,
    }
}

/// The duration as text, with `running for` while the object runs.
pub(crate) fn state_duration_text(state: State, now: Timestamp) -> Option<String> {
    let d = state_duration(state, now)?;
    Some(if state.end.is_none() {
        format!("running for {}", duration(d))
    } else {
        duration(d)
    })
}

/// `2026-11-25 18:15:06 UTC`.
pub(crate) fn time(t: Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `pid 4242 on build-7 since 2026-12-03 16:20:01 UTC (lease epoch 3)`: who ran a plan, since
/// when, under which lease; cleaned for a terminal.
pub(crate) fn owner(o: &crate::workflow::Owner) -> String {
    let mut text = format!("{} since {}", clean(&o.by), time(o.at));
    if let Some(epoch) = o.epoch {
        text.push_str(&format!(" (lease epoch {epoch})"));
    }
    text
}

/// `time(t)` or `-`.
pub(crate) fn opt_time(t: Option<Timestamp>) -> String {
    t.map(time).unwrap_or_else(|| "-".to_owned())
}

/// The CSS class of a status (`s-failed`, …).
pub(crate) fn status_class(status: Status) -> &'static str {
    match status {
        Status::NotStarted => "s-notstarted",
        Status::Running => "s-running",
        Status::Completed => "s-completed",
        Status::Failed => "s-failed",
        Status::Stopped => "s-stopped",
    }
}

/// The CSS class of a plan that completed with failures (amber), instead of `s-completed`.
pub(crate) const COMPLETED_WITH_FAILURES_CLASS: &str = "s-completed-with-failures";

/// `1 attempt`, `3 attempts`, `4 attempts (1 interrupted)`.
pub(crate) fn attempts(attempts: &[crate::workflow::Attempt]) -> String {
    let n = attempts.len();
    let mut text = if n == 1 {
        "1 attempt".to_owned()
    } else {
        format!("{n} attempts")
    };
    let interrupted = attempts.iter().filter(|a| a.was_interrupted()).count();
    if interrupted > 0 {
        text.push_str(&format!(" ({interrupted} interrupted)"));
    }
    text
}

pub(crate) use crate::report::clean_for_terminal as clean;

/// What a page of a plan leaves out of one block, as both faces say it (`Display`): "`hidden`
/// more sequence(s) not shown (this page: `first`–`last` of `all`, and the ones that run,
/// failed or were stopped; `left_out` of those past the first `attention` are not shown
/// either)", with where the pages before and after it start.
pub(crate) struct Window {
    /// The page's spec.
    pub spec: crate::storage::PageSpec,
    /// The block's sequences.
    pub all: usize,
    /// Those not shown.
    pub hidden: usize,
    /// The page's first and last sequence, counted from 1 (`first > last`: the page starts
    /// past the block's end).
    pub first: usize,
    pub last: usize,
    /// Running, failed or stopped sequences past the page's attention limit.
    pub left_out: usize,
    /// Where the previous and the next page start (`--from`, `?from=`), if there is one.
    pub previous: Option<usize>,
    pub next: Option<usize>,
}

impl Window {
    /// What `page` leaves out of block `block`; `None` if it shows every sequence of it.
    pub fn of(page: &crate::storage::PlanPage, block: usize) -> Option<Window> {
        let spec = page.spec()?;
        let all = page.plan().blocks.get(block)?.sequences.len();
        let hidden = all.saturating_sub(page.shown(block).len());
        let end = spec.from.saturating_add(spec.len);
        (hidden > 0).then(|| Window {
            spec,
            all,
            hidden,
            first: spec.from.saturating_add(1),
            last: end.min(all),
            left_out: page.left_out(block),
            // Past the block's end, the previous page is its last one.
            previous: (spec.from > 0 && all > 0).then(|| {
                let len = spec.len.max(1);
                spec.from.saturating_sub(len).min((all - 1) / len * len)
            }),
            next: (end < all).then_some(end),
        })
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} more sequence(s) not shown (this page: ", self.hidden)?;
        if self.first > self.last {
            write!(f, "none of {}", self.all)?;
        } else {
            write!(f, "{}–{} of {}", self.first, self.last, self.all)?;
        }
        f.write_str(", and the ones that run, failed or were stopped")?;
        if self.left_out > 0 {
            write!(
                f,
                "; {} of those past the first {} are not shown either",
                self.left_out, self.spec.attention
            )?;
        }
        f.write_str(")")
    }
}

/// Pretty-prints a JSON text; returns it unchanged if it does not parse.
pub(crate) fn pretty_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

/// `text` quoted for a POSIX shell, so a suggested command can be pasted as it is (a name with
/// `$(…)` stays a name); `'…'` when it cannot be quoted (a NUL byte).
pub(crate) fn shell_word(text: &str) -> String {
    shlex::try_quote(text)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| "'…'".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_millis(340)), "340ms");
        assert_eq!(duration(Duration::from_millis(1250)), "1.2s");
        assert_eq!(duration(Duration::from_secs(187)), "3m07s");
        assert_eq!(duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(
            duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d04h"
        );
        assert_eq!(duration(Duration::from_micros(1500)), "1ms");
        assert_eq!(duration(Duration::from_micros(12)), "12µs");
        assert_eq!(duration(Duration::from_nanos(750)), "750ns");
        assert_eq!(duration(Duration::ZERO), "0ns");
        assert_eq!(duration(Duration::from_secs(5)), "5s");
    }

    #[test]
    fn bidi_controls_are_escaped_for_the_terminal() {
        assert_eq!(clean("abc\u{202E}fed.exe"), "abc\\u{202e}fed.exe");
        assert_eq!(clean("a\u{2066}b\u{2069}"), "a\\u{2066}b\\u{2069}");
        assert_eq!(clean("plain name"), "plain name");
    }

    #[test]
    fn attempts_are_counted_with_the_interrupted_ones() {
        use crate::plugin::{PluginError, codes};
        use crate::workflow::{Attempt, Outcome};
        let at = chrono::Utc::now();
        let ended = |outcome| Attempt {
            start: at,
            end: Some(at),
            outcome: Some(outcome),
        };
        let failed = || ended(Outcome::Error(Box::new(PluginError::new("no"))));
        let cut = || {
            ended(Outcome::Error(Box::new(PluginError::engine(
                codes::INTERRUPTED,
                "interrupted",
                false,
            ))))
        };
        assert_eq!(attempts(&[failed()]), "1 attempt");
        assert_eq!(attempts(&[failed(), failed(), failed()]), "3 attempts");
        assert_eq!(attempts(&[cut()]), "1 attempt (1 interrupted)");
        assert_eq!(
            attempts(&[failed(), cut(), failed(), failed()]),
            "4 attempts (1 interrupted)"
        );
    }
}

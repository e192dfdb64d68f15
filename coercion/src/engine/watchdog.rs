//! Notices plugins that block their thread (sync I/O, a busy loop): a tokio worker stuck in one
//! poll freezes the timers, stops and heartbeats of everything scheduled on it, and a plugin
//! that never yields cannot even be timed out.
//!
//! Every poll of a plugin's future is timed: the attempt records when its current poll began
//! (two atomic stores per poll). A watchdog on a thread of its own — it must not depend on the
//! runtime it watches — looks every half second for a poll that has lasted longer than the
//! threshold and logs the action once, with the rule for plugin authors. The engine asks the
//! same table before renewing a plan's heartbeat (a plan whose plugin blocks its thread stops
//! renewing, so a shared store's other workers can take it over), and the control server before
//! it acts ("busy").

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Once};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::plugin::PathSource;
use crate::workflow::{Loc, ObjectPath, PlanId};

/// How long one poll of a plugin may last before it counts as blocking its thread.
pub(crate) const DEFAULT_THRESHOLD: Duration = Duration::from_secs(2);

/// The start of the process's clock: poll starts are stored as nanoseconds after it (0: not
/// in a poll).
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The attempts in flight, by a number of their own.
static IN_FLIGHT: LazyLock<Mutex<HashMap<u64, Arc<Attempt>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

static NEXT: AtomicU64 = AtomicU64::new(1);

/// The threshold, in nanoseconds (the smallest any workstream of the process asked for).
static THRESHOLD_NS: AtomicU64 = AtomicU64::new(2_000_000_000);

/// An attempt being run: what it is, and when its current poll began.
struct Attempt {
    plan: PlanId,
    /// Named only when reported: naming costs allocations every attempt would pay.
    loc: Loc,
    paths: Arc<dyn PathSource>,
    plugin: &'static str,
    poll_started_ns: AtomicU64,
    reported: AtomicBool,
}

/// A plugin poll that has lasted longer than the threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockedAction {
    /// The plan.
    pub plan: PlanId,
    /// The action.
    pub path: ObjectPath,
    /// Its plugin.
    pub plugin: String,
    /// How long the current poll has lasted.
    pub blocked_for: Duration,
}

impl std::fmt::Display for BlockedAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of plan {} (plugin {:?}) has blocked its thread for {}",
            self.path,
            self.plan,
            self.plugin,
            crate::report::human_duration(self.blocked_for)
        )
    }
}

/// Starts the watchdog thread once per process and lowers the threshold to `threshold` if it
/// is smaller than the one in force.
pub(crate) fn start(threshold: Duration) {
    let ns = u64::try_from(threshold.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    THRESHOLD_NS.fetch_min(ns, Ordering::Relaxed);
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        LazyLock::force(&EPOCH);
        let spawned = std::thread::Builder::new()
            .name("coercion-watchdog".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_millis(500));
                    report();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the watchdog thread; plugins that block their thread will not be reported");
        }
    });
}

/// Logs each newly blocked action once.
fn report() {
    let attempts: Vec<Arc<Attempt>> = IN_FLIGHT.lock().values().cloned().collect();
    for a in attempts {
        if let Some(blocked) = blocked(&a)
            && !a.reported.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                plan = %blocked.plan,
                action = %blocked.path,
                plugin = %blocked.plugin,
                "{blocked}: it does synchronous work (blocking I/O, a busy loop) on the async runtime, which freezes timers, stops and heartbeats; plugin authors: run such work with tokio::task::spawn_blocking"
            );
        }
    }
}

fn now_ns() -> u64 {
    u64::try_from(EPOCH.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn blocked(a: &Attempt) -> Option<BlockedAction> {
    let started = a.poll_started_ns.load(Ordering::Relaxed);
    if started == 0 {
        return None;
    }
    let for_ns = now_ns().saturating_sub(started);
    (for_ns > THRESHOLD_NS.load(Ordering::Relaxed)).then(|| BlockedAction {
        plan: a.plan,
        path: a.paths.path(a.loc),
        plugin: a.plugin.to_owned(),
        blocked_for: Duration::from_nanos(for_ns),
    })
}

/// The actions (of `plan`, or of every plan) whose plugin blocks its thread now.
pub(crate) fn blocked_actions(plan: Option<PlanId>) -> Vec<BlockedAction> {
    let attempts: Vec<Arc<Attempt>> = IN_FLIGHT.lock().values().cloned().collect();
    let mut out: Vec<BlockedAction> = attempts
        .iter()
        .filter(|a| plan.is_none_or(|p| a.plan == p))
        .filter_map(|a| blocked(a))
        .collect();
    out.sort_by_key(|b| std::cmp::Reverse(b.blocked_for));
    out
}

/// A plugin's future whose polls are timed for the watchdog while it is in flight.
pub(crate) struct Watched<F> {
    inner: F,
    key: u64,
    attempt: Arc<Attempt>,
}

impl<F> Watched<F> {
    pub(crate) fn new(
        inner: F,
        plan: PlanId,
        loc: Loc,
        paths: Arc<dyn PathSource>,
        plugin: &'static str,
    ) -> Watched<F> {
        let key = NEXT.fetch_add(1, Ordering::Relaxed);
        let attempt = Arc::new(Attempt {
            plan,
            loc,
            paths,
            plugin,
            poll_started_ns: AtomicU64::new(0),
            reported: AtomicBool::new(false),
        });
        IN_FLIGHT.lock().insert(key, attempt.clone());
        Watched {
            inner,
            key,
            attempt,
        }
    }
}

impl<F: Future + Unpin> Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.attempt
            .poll_started_ns
            .store(now_ns(), Ordering::Relaxed);
        let out = Pin::new(&mut this.inner).poll(cx);
        this.attempt.poll_started_ns.store(0, Ordering::Relaxed);
        if this.attempt.reported.swap(false, Ordering::Relaxed) {
            tracing::info!(plan = %this.attempt.plan, action = %this.attempt.paths.path(this.attempt.loc), "the plugin that blocked its thread yielded again");
        }
        out
    }
}

impl<F> Drop for Watched<F> {
    fn drop(&mut self) {
        IN_FLIGHT.lock().remove(&self.key);
    }
}

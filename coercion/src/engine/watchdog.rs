//! Notices plugins that block their thread (sync I/O, a busy loop): a tokio worker stuck in one
//! poll freezes the timers, stops and heartbeats of everything scheduled on it, and a plugin
//! that never yields cannot even be timed out.
//!
//! Every poll of a plugin's future is timed: the polling thread's own slot records what it polls
//! and since when (a clock read, two stores and two uncontended locks per poll; no shared lock). A watchdog on a thread of its own — it must not depend on the
//! runtime it watches — looks every half second for a poll that has lasted longer than the
//! threshold and logs the action once, with the rule for plugin authors. The engine asks the
//! same table before renewing a plan's heartbeat (a plan whose plugin blocks its thread stops
//! renewing, so a shared store's other workers can take it over), and the control server before
//! it acts ("busy").

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Once, Weak};
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

/// The threshold, in nanoseconds (the smallest any workstream of the process asked for).
static THRESHOLD_NS: AtomicU64 = AtomicU64::new(2_000_000_000);

/// One slot per thread that has polled a plugin: what it polls now, and since when. A poll
/// writes only its own thread's slot (no shared lock on the engine's path); the watchdog reads
/// them all.
#[derive(Default)]
struct Slot {
    started_ns: AtomicU64,
    /// The poll start the watchdog reported last, so each blocking poll is reported once.
    reported_ns: AtomicU64,
    current: Mutex<Option<Polled>>,
}

/// What a thread is polling.
#[derive(Clone)]
struct Polled {
    plan: PlanId,
    /// Named only when reported: naming costs allocations every attempt would pay.
    loc: Loc,
    paths: Arc<dyn PathSource>,
    plugin: &'static str,
}

static SLOTS: LazyLock<Mutex<Vec<Weak<Slot>>>> = LazyLock::new(|| Mutex::new(Vec::new()));

thread_local! {
    static SLOT: Arc<Slot> = {
        let slot = Arc::new(Slot::default());
        let mut slots = SLOTS.lock();
        slots.retain(|s| s.strong_count() > 0);
        slots.push(Arc::downgrade(&slot));
        slot
    };
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

fn slots() -> Vec<Arc<Slot>> {
    SLOTS.lock().iter().filter_map(Weak::upgrade).collect()
}

/// Logs each newly blocked poll once.
fn report() {
    for slot in slots() {
        let Some((started, blocked)) = blocked(&slot) else {
            continue;
        };
        if slot.reported_ns.swap(started, Ordering::Relaxed) != started {
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

/// The slot's poll, with its start, if it has lasted longer than the threshold.
fn blocked(slot: &Slot) -> Option<(u64, BlockedAction)> {
    let started = slot.started_ns.load(Ordering::Relaxed);
    if started == 0 {
        return None;
    }
    let for_ns = now_ns().saturating_sub(started);
    if for_ns <= THRESHOLD_NS.load(Ordering::Relaxed) {
        return None;
    }
    let polled = slot.current.lock().clone()?;
    Some((
        started,
        BlockedAction {
            plan: polled.plan,
            path: polled.paths.path(polled.loc),
            plugin: polled.plugin.to_owned(),
            blocked_for: Duration::from_nanos(for_ns),
        },
    ))
}

/// The actions (of `plan`, or of every plan) whose plugin blocks its thread now.
pub(crate) fn blocked_actions(plan: Option<PlanId>) -> Vec<BlockedAction> {
    let mut out: Vec<BlockedAction> = slots()
        .iter()
        .filter_map(|s| blocked(s).map(|(_, b)| b))
        .filter(|b| plan.is_none_or(|p| b.plan == p))
        .collect();
    out.sort_by_key(|b| std::cmp::Reverse(b.blocked_for));
    out
}

/// A plugin's future whose polls are timed for the watchdog.
pub(crate) struct Watched<F> {
    inner: F,
    polled: Polled,
}

impl<F> Watched<F> {
    pub(crate) fn new(
        inner: F,
        plan: PlanId,
        loc: Loc,
        paths: Arc<dyn PathSource>,
        plugin: &'static str,
    ) -> Watched<F> {
        Watched {
            inner,
            polled: Polled {
                plan,
                loc,
                paths,
                plugin,
            },
        }
    }
}

impl<F: Future + Unpin> Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let started = now_ns();
        SLOT.with(|slot| {
            *slot.current.lock() = Some(this.polled.clone());
            slot.started_ns.store(started, Ordering::Relaxed);
        });
        let out = Pin::new(&mut this.inner).poll(cx);
        let reported = SLOT.with(|slot| {
            slot.started_ns.store(0, Ordering::Relaxed);
            *slot.current.lock() = None;
            slot.reported_ns.load(Ordering::Relaxed) == started
        });
        if reported {
            tracing::info!(plan = %this.polled.plan, action = %this.polled.paths.path(this.polled.loc), "the plugin that blocked its thread yielded again");
        }
        out
    }
}

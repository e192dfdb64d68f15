//! Test kit: scriptable fake plugins, so plans can be tested without touching the world.
//!
//! Enabled by the `testing` feature, meant for `[dev-dependencies]` only:
//!
//! ```toml
//! [dev-dependencies]
//! coercion = { version = "0.1", features = ["testing"] }
//! ```
//!
//! [`FakeAction`] (an action plugin) and [`FakeCheck`] (a check plugin) do what their
//! [`FakeReq`] says: succeed, fail a number of times then succeed, fail permanently, take time,
//! panic, or wait to be cancelled. Every call is recorded in the instance's [`CallLog`], so a test
//! can assert which actions ran, in which order, how often, and how many ran at once.
//!
//! The fakes are never registered on their own: [`Registry::from_inventory`] does not hold them.
//! A test asks for them with [`Fakes::registry`] (the two fakes and nothing else, with call logs
//! the test keeps) or [`registry()`] (every `#[plugin]` of the program plus fresh fakes).
//! [`run_paused`] and [`run_in_memory`] run a plan in memory with tokio's clock paused, so
//! retries, backoff and sleeps cost no wall time; [`outline`] prints the whole tree's statuses.
//!
//! ```
//! use coercion::prelude::*;
//! use coercion::testing::{FakeAction, FakeReq, Fakes, run_paused};
//!
//! let fakes = Fakes::new();
//! let plan = Plan::builder("deploy")
//!     .block(Block::builder("web").sequence(
//!         Sequence::builder("web-1")
//!             .action(ActionSpec::new::<FakeAction>("copy", FakeReq::fail_times(2).tag("copy")).retries(2)),
//!     ))
//!     .build();
//! let done = run_paused(fakes.registry(), plan).unwrap();
//! assert_eq!(done.status(), Status::Completed);
//! assert_eq!(fakes.action.log().count("copy"), 3);
//! ```
//!
//! # Testing your own store
//!
//! The same feature brings the store contract suite, [`storage::contract`](crate::storage::contract):
//! the checks every [`Store`](crate::Store) must pass, the ones [`MemoryStore`](crate::MemoryStore)
//! and [`SqliteStore`](crate::storage::SqliteStore) are tested with. Each check is an `async fn`
//! taking `&dyn Store` that panics, naming the store, when the store breaks the contract; the
//! checks create their own plans and filter by their own group ids, so they can share one store.
//! Run them from a test of the crate that defines the store (some checks write concurrently, so
//! use a multi-threaded runtime):
//!
//! ```no_run
//! # use coercion::storage::{MemoryStore as MyStore, Store};
//! # fn open_a_fresh_store() -> MyStore { MyStore::new() }
//! use coercion::storage::contract;
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn my_store_keeps_the_contract() {
//!     let store = open_a_fresh_store();
//!     contract::all(&store).await;
//! }
//!
//! // Or one check per test, for clearer failures:
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn my_store_applies_batches_atomically() {
//!     contract::batches_are_atomic(&open_a_fresh_store()).await;
//! }
//! ```
//!
//! [`FaultyStore`](crate::storage::FaultyStore) wraps a store and makes chosen writes fail, and
//! [`RecordingStore`](crate::storage::RecordingStore) records every write so a test can replay
//! any prefix of a run: both for testing how the engine (or your plugins) survive storage faults
//! and crashes.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::plugin::{Context, Plugin, PluginError, RetryPolicy};
use crate::registry::Registry;
use crate::workflow::PlanId;

/// What a fake plugin does on each attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeReq {
    /// A label recorded with every call and echoed in the response.
    #[serde(default)]
    pub tag: String,
    /// The first `fail_times` attempts fail (retryably, unless `permanent`).
    #[serde(default)]
    pub fail_times: u32,
    /// Fail on every attempt.
    #[serde(default)]
    pub always_fail: bool,
    /// Failures are permanent (no retry).
    #[serde(default)]
    pub permanent: bool,
    /// Sleep this long before answering (tokio's clock, so paused-clock tests cost nothing).
    #[serde(default, with = "humantime_serde")]
    pub sleep: Option<Duration>,
    /// Panic instead of answering.
    #[serde(default)]
    pub panic: bool,
    /// Wait until the plan is stopped, then fail with "cancelled".
    #[serde(default)]
    pub wait_for_cancel: bool,
}

impl FakeReq {
    /// Succeeds at once.
    pub fn ok() -> FakeReq {
        FakeReq::default()
    }
    /// Fails retryably on every attempt.
    pub fn fail() -> FakeReq {
        FakeReq {
            always_fail: true,
            ..FakeReq::default()
        }
    }
    /// Fails retryably `n` times, then succeeds.
    pub fn fail_times(n: u32) -> FakeReq {
        FakeReq {
            fail_times: n,
            ..FakeReq::default()
        }
    }
    /// Fails permanently on the first attempt.
    pub fn fail_permanently() -> FakeReq {
        FakeReq {
            always_fail: true,
            permanent: true,
            ..FakeReq::default()
        }
    }
    /// Panics.
    pub fn panic() -> FakeReq {
        FakeReq {
            panic: true,
            ..FakeReq::default()
        }
    }
    /// Waits until the plan is stopped.
    pub fn wait_for_cancel() -> FakeReq {
        FakeReq {
            wait_for_cancel: true,
            ..FakeReq::default()
        }
    }
    /// Succeeds after `d`.
    pub fn sleep(d: Duration) -> FakeReq {
        FakeReq {
            sleep: Some(d),
            ..FakeReq::default()
        }
    }
    /// Sets the tag.
    pub fn tag(mut self, tag: impl Into<String>) -> FakeReq {
        self.tag = tag.into();
        self
    }
    /// Also sleeps `d` before answering.
    pub fn after(mut self, d: Duration) -> FakeReq {
        self.sleep = Some(d);
        self
    }
}

/// What a fake plugin answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeResp {
    /// The request's tag.
    pub tag: String,
    /// The attempt that answered.
    pub attempt: u32,
    /// The plan id the context carried.
    pub plan_id: PlanId,
    /// The action id the context carried.
    pub action_id: Uuid,
}

/// One recorded call of a fake plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The request's tag.
    pub tag: String,
    /// The attempt number.
    pub attempt: u32,
    /// The plan.
    pub plan_id: PlanId,
    /// The action.
    pub action_id: Uuid,
}

#[derive(Default)]
struct LogInner {
    calls: Vec<Call>,
    in_flight: usize,
    max_in_flight: usize,
}

/// The calls a fake plugin instance received, shared between the instance and the test.
#[derive(Clone, Default)]
pub struct CallLog(Arc<Mutex<LogInner>>);

impl CallLog {
    /// Every call so far, in the order they started.
    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().calls.clone()
    }
    /// The tags of every call, in the order they started.
    pub fn tags(&self) -> Vec<String> {
        self.0.lock().calls.iter().map(|c| c.tag.clone()).collect()
    }
    /// How many calls carried `tag`.
    pub fn count(&self, tag: &str) -> usize {
        self.0.lock().calls.iter().filter(|c| c.tag == tag).count()
    }
    /// The number of calls.
    pub fn len(&self) -> usize {
        self.0.lock().calls.len()
    }
    /// Whether there was no call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The most calls that were running at the same time.
    pub fn max_concurrency(&self) -> usize {
        self.0.lock().max_in_flight
    }
}

struct InFlight<'a>(&'a CallLog);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.0.lock().in_flight -= 1;
    }
}

async fn run_fake(log: &CallLog, ctx: &Context, req: FakeReq) -> Result<FakeResp, PluginError> {
    {
        let mut l = log.0.lock();
        l.calls.push(Call {
            tag: req.tag.clone(),
            attempt: ctx.attempt(),
            plan_id: ctx.plan_id(),
            action_id: ctx.action_id(),
        });
        l.in_flight += 1;
        l.max_in_flight = l.max_in_flight.max(l.in_flight);
    }
    let _guard = InFlight(log);
    if let Some(d) = req.sleep {
        tokio::time::sleep(d).await;
    }
    if req.panic {
        panic!("fake plugin panicked as scripted (tag {:?})", req.tag);
    }
    if req.wait_for_cancel {
        ctx.cancelled().await;
        return Err(PluginError::permanent(format!("{}: cancelled", req.tag)));
    }
    if req.always_fail || ctx.attempt() <= req.fail_times {
        let msg = format!("{}: scripted failure on attempt {}", req.tag, ctx.attempt());
        return Err(PluginError::new(msg).set_permanent(req.permanent));
    }
    Ok(FakeResp {
        tag: req.tag,
        attempt: ctx.attempt(),
        plan_id: ctx.plan_id(),
        action_id: ctx.action_id(),
    })
}

/// A scriptable action plugin (for sequences and deferred batches), named
/// `coercion.testing/action`. Its retry policy is [`RetryPolicy::fast`]. Not in the inventory:
/// see [`Fakes::registry`] and [`registry()`].
#[crate::plugin(manual, name = "coercion.testing/action")]
#[derive(Clone, Default)]
pub struct FakeAction {
    log: CallLog,
}

impl FakeAction {
    /// The calls this instance received.
    pub fn log(&self) -> &CallLog {
        &self.log
    }
}

impl Plugin for FakeAction {
    type Request = FakeReq;
    type Response = FakeResp;
    async fn execute(&self, ctx: &Context, req: FakeReq) -> Result<FakeResp, PluginError> {
        run_fake(&self.log, ctx, req).await
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::fast()
    }
}

/// A scriptable check plugin (for check sections), named `coercion.testing/check`. Not in the
/// inventory: see [`Fakes::registry`] and [`registry()`].
#[crate::plugin(check, manual, name = "coercion.testing/check")]
#[derive(Clone, Default)]
pub struct FakeCheck {
    log: CallLog,
}

impl FakeCheck {
    /// The calls this instance received.
    pub fn log(&self) -> &CallLog {
        &self.log
    }
}

impl Plugin for FakeCheck {
    type Request = FakeReq;
    type Response = FakeResp;
    async fn execute(&self, ctx: &Context, req: FakeReq) -> Result<FakeResp, PluginError> {
        run_fake(&self.log, ctx, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_follows_its_script() {
        let p = FakeAction::default();
        let mut ctx = Context::detached(Duration::from_secs(1));
        assert!(
            p.execute(&ctx, FakeReq::fail_times(1).tag("a"))
                .await
                .is_err()
        );
        ctx.attempt = 2;
        let resp = p
            .execute(&ctx, FakeReq::fail_times(1).tag("a"))
            .await
            .unwrap();
        assert_eq!(resp.attempt, 2);
        let err = p
            .execute(&ctx, FakeReq::fail_permanently().tag("b"))
            .await
            .unwrap_err();
        assert!(err.permanent);
        assert_eq!(p.log().tags(), ["a", "a", "b"]);
        assert_eq!(p.log().max_concurrency(), 1);
    }
}

/// One [`FakeAction`] and one [`FakeCheck`] whose call logs the test keeps.
#[derive(Clone, Default)]
pub struct Fakes {
    /// The action plugin.
    pub action: FakeAction,
    /// The check plugin.
    pub check: FakeCheck,
}

impl Fakes {
    /// Fresh fakes with empty logs.
    pub fn new() -> Fakes {
        Fakes::default()
    }

    /// A registry holding these two instances (and nothing else).
    pub fn registry(&self) -> Registry {
        let mut r = Registry::new();
        r.register(self.action.clone()).expect("fresh registry");
        r.register(self.check.clone()).expect("fresh registry");
        r
    }
}

/// Every plugin of [`Registry::from_inventory`] plus a fresh [`FakeAction`] and [`FakeCheck`]
/// (whose call logs are reachable through [`Registry::instance`]).
///
/// # Panics
///
/// When the inventory holds a duplicate name or a plugin already named like a fake.
pub fn registry() -> Registry {
    Registry::from_inventory()
        .and_then(|r| r.with(FakeAction::default()))
        .and_then(|r| r.with(FakeCheck::default()))
        .unwrap_or_else(|e| panic!("the test registry: {e}"))
}

/// Runs `plan` to its end in a fresh in-memory workstream over `registry`. Inside
/// `#[tokio::test(start_paused = true)]` retries, backoff and sleeps cost no wall time.
pub async fn run_in_memory(
    registry: Registry,
    plan: crate::Plan,
) -> Result<crate::Plan, crate::Error> {
    let ws = crate::Workstream::in_memory(registry).await?;
    ws.run(plan).await
}

/// Runs `plan` to its end in memory on a current-thread runtime with tokio's clock paused, so
/// retries and backoff cost no wall time. For tests that are not async themselves.
pub fn run_paused(registry: Registry, plan: crate::Plan) -> Result<crate::Plan, crate::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    rt.block_on(run_in_memory(registry, plan))
}

/// The whole tree as text, one object per line, indented by depth:
/// `sequence[0] "web-1": Completed` and, for actions, `(attempts: 2)`. Assert on it to check
/// every object's status at once.
pub fn outline(plan: &crate::Plan) -> String {
    use crate::workflow::ObjectRef;
    let mut out = format!(
        "plan {:?}: {} ({})\n",
        plan.name(),
        plan.status(),
        plan.reason()
    );
    for (loc, obj) in plan.walk().skip(1) {
        let path = plan.path(loc);
        let indent = "  ".repeat(path.depth());
        let last = path
            .segments()
            .last()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let extra = match obj {
            ObjectRef::Action(a) => format!(" (attempts: {})", a.attempts().len()),
            _ => String::new(),
        };
        out.push_str(&format!("{indent}{last}: {}{extra}\n", obj.state().status));
    }
    out
}

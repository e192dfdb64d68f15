//! Metrics: what the process running plans does, and what a store holds.
//!
//! The engine records through the [`metrics`](https://docs.rs/metrics) facade, as it logs through `tracing`:
//! nothing is kept until the program installs a recorder — [`install_prometheus`] (feature
//! `prometheus`) for Prometheus in one call, or any other `metrics` exporter (StatsD,
//! OpenTelemetry, …).
//!
//! Recorded by the process that runs plans:
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `coercion_attempt_duration_seconds` | histogram | `plugin`, `outcome` | each attempt of an action or check, start to end; `outcome` is `ok`, `failed`, `timeout` or `cancelled` |
//! | `coercion_attempt_retries_total` | counter | `plugin` | retries scheduled after a failed attempt |
//! | `coercion_attempt_timeouts_total` | counter | `plugin` | attempts ended by their timeout |
//! | `coercion_store_commit_seconds` | histogram | | a batch of the engine's changes, from the call to the store's durable answer (its retries included) |
//! | `coercion_store_write_retries_total` | counter | | store writes that failed transiently and were tried again |
//! | `coercion_plans_started_total` | counter | | plans this process started |
//! | `coercion_plans_resumed_total` | counter | | plans this process resumed after the one running them stopped |
//! | `coercion_plans_ended_total` | counter | `status` | runs that ended in this process, by the plan's status (`Running`: the store failed for good and the plan is left for recovery) |
//! | `coercion_plans_running` | gauge | | plans this process runs now |
//!
//! What a store holds, from [`StoreFacts`] (the `/metrics` page of `coercion serve`):
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `coercion_store_plans` | gauge | `status` | plans in the store |
//! | `coercion_store_running_plan_actions` | gauge | `status` | the actions of the running plans |
//! | `coercion_store_paused_plans` | gauge | | running plans that are paused |
//! | `coercion_store_oldest_running_plan_age_seconds` | gauge | | since the start of the longest-running plan (0: none runs) |
//! | `coercion_store_heartbeat_age_seconds` | gauge | | since the stalest heartbeat of a running plan (0: none runs); a plan whose process died keeps growing it |
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Serve this process's metrics at http://127.0.0.1:9464/metrics (feature `prometheus`).
//! coercion::metrics::install_prometheus(([127, 0, 0, 1], 9464).into())?;
//! let ws = coercion::Workstream::in_memory(coercion::Registry::from_inventory()?).await?;
//! # let _ = ws; Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use crate::storage::{ListFilter, Store, StoreError};
use crate::workflow::{ObjectRef, Status};

/// `coercion_attempt_duration_seconds`: each attempt, by plugin and outcome.
pub const ATTEMPT_DURATION: &str = "coercion_attempt_duration_seconds";
/// `coercion_attempt_retries_total`: retries scheduled, by plugin.
pub const ATTEMPT_RETRIES: &str = "coercion_attempt_retries_total";
/// `coercion_attempt_timeouts_total`: attempts ended by their timeout, by plugin.
pub const ATTEMPT_TIMEOUTS: &str = "coercion_attempt_timeouts_total";
/// `coercion_store_commit_seconds`: the engine's store writes.
pub const STORE_COMMIT: &str = "coercion_store_commit_seconds";
/// `coercion_store_write_retries_total`: store writes tried again after a transient failure.
pub const STORE_WRITE_RETRIES: &str = "coercion_store_write_retries_total";
/// `coercion_plans_started_total`: plans this process started.
pub const PLANS_STARTED: &str = "coercion_plans_started_total";
/// `coercion_plans_resumed_total`: plans this process resumed.
pub const PLANS_RESUMED: &str = "coercion_plans_resumed_total";
/// `coercion_plans_ended_total`: runs ended in this process, by status.
pub const PLANS_ENDED: &str = "coercion_plans_ended_total";
/// `coercion_plans_running`: plans this process runs now.
pub const PLANS_RUNNING: &str = "coercion_plans_running";

/// `coercion_store_plans`: plans in the store, by status.
pub const STORE_PLANS: &str = "coercion_store_plans";
/// `coercion_store_running_plan_actions`: the running plans' actions, by status.
pub const STORE_RUNNING_PLAN_ACTIONS: &str = "coercion_store_running_plan_actions";
/// `coercion_store_paused_plans`: running plans that are paused.
pub const STORE_PAUSED_PLANS: &str = "coercion_store_paused_plans";
/// `coercion_store_oldest_running_plan_age_seconds`: since the oldest running plan started.
pub const STORE_OLDEST_RUNNING_AGE: &str = "coercion_store_oldest_running_plan_age_seconds";
/// `coercion_store_heartbeat_age_seconds`: since the stalest heartbeat of a running plan.
pub const STORE_HEARTBEAT_AGE: &str = "coercion_store_heartbeat_age_seconds";

/// The bucket bounds (seconds) of [`ATTEMPT_DURATION`]: a millisecond to an hour.
pub const ATTEMPT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];
/// The bucket bounds (seconds) of [`STORE_COMMIT`]: 50 µs to 5 s.
pub const COMMIT_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Describes every metric above (unit and help text) to the current recorder, for exporters
/// that show descriptions (Prometheus' `# HELP`). [`install_prometheus`] does it; call it
/// after installing another recorder.
pub fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        ATTEMPT_DURATION,
        Unit::Seconds,
        "Attempts of actions and checks, start to end, by plugin and outcome (ok, failed, timeout, cancelled)."
    );
    describe_counter!(
        ATTEMPT_RETRIES,
        "Retries scheduled after a failed attempt, by plugin."
    );
    describe_counter!(
        ATTEMPT_TIMEOUTS,
        "Attempts ended by their timeout, by plugin."
    );
    describe_histogram!(
        STORE_COMMIT,
        Unit::Seconds,
        "The engine's store writes, from the call to the durable answer (retries included)."
    );
    describe_counter!(
        STORE_WRITE_RETRIES,
        "Store writes that failed transiently and were tried again."
    );
    describe_counter!(PLANS_STARTED, "Plans this process started.");
    describe_counter!(
        PLANS_RESUMED,
        "Plans this process resumed after the process running them stopped."
    );
    describe_counter!(
        PLANS_ENDED,
        "Runs ended in this process, by the plan's status (Running: left for recovery)."
    );
    describe_gauge!(PLANS_RUNNING, "Plans this process runs now.");
    describe_gauge!(STORE_PLANS, "Plans in the store, by status.");
    describe_gauge!(
        STORE_RUNNING_PLAN_ACTIONS,
        "The actions of the running plans, by status."
    );
    describe_gauge!(STORE_PAUSED_PLANS, "Running plans that are paused.");
    describe_gauge!(
        STORE_OLDEST_RUNNING_AGE,
        Unit::Seconds,
        "Since the start of the oldest running plan (0: none runs)."
    );
    describe_gauge!(
        STORE_HEARTBEAT_AGE,
        Unit::Seconds,
        "Since the stalest heartbeat of a running plan (0: none runs); grows while the process running it is gone."
    );
}

/// How an attempt ended, as the `outcome` label says it.
pub(crate) fn attempt_ended(plugin: &str, outcome: &'static str, took: Duration) {
    ::metrics::histogram!(ATTEMPT_DURATION, "plugin" => plugin.to_owned(), "outcome" => outcome)
        .record(took.as_secs_f64());
    if outcome == "timeout" {
        ::metrics::counter!(ATTEMPT_TIMEOUTS, "plugin" => plugin.to_owned()).increment(1);
    }
}

pub(crate) fn retry_scheduled(plugin: &str) {
    ::metrics::counter!(ATTEMPT_RETRIES, "plugin" => plugin.to_owned()).increment(1);
}

pub(crate) fn store_committed(took: Duration) {
    ::metrics::histogram!(STORE_COMMIT).record(took.as_secs_f64());
}

pub(crate) fn store_write_retried() {
    ::metrics::counter!(STORE_WRITE_RETRIES).increment(1);
}

/// Counts a run of this process from its start to its end: `coercion_plans_running` while it
/// lives, `coercion_plans_ended_total` by the status given to [`RunGauge::ended`].
pub(crate) struct RunGauge;

impl RunGauge {
    pub(crate) fn begin() -> RunGauge {
        ::metrics::gauge!(PLANS_RUNNING).increment(1.0);
        RunGauge
    }

    pub(crate) fn ended(self, status: Status) {
        ::metrics::counter!(PLANS_ENDED, "status" => status.as_str()).increment(1);
    }
}

impl Drop for RunGauge {
    fn drop(&mut self) {
        ::metrics::gauge!(PLANS_RUNNING).decrement(1.0);
    }
}

pub(crate) fn plan_started(resumed: bool) {
    if resumed {
        ::metrics::counter!(PLANS_RESUMED).increment(1);
    } else {
        ::metrics::counter!(PLANS_STARTED).increment(1);
    }
}

/// What a store holds, read at one moment: the figures of the `coercion_store_*` gauges.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct StoreFacts {
    /// Plans by status (every status present, zero included).
    pub plans: BTreeMap<Status, u64>,
    /// The actions (checks included) of the running plans, by status (every status present).
    pub running_plan_actions: BTreeMap<Status, u64>,
    /// Running plans that are paused.
    pub paused_plans: u64,
    /// Since the start of the oldest running plan; `None` when none runs.
    pub oldest_running_age: Option<Duration>,
    /// Since the stalest heartbeat of a running plan (its start if it has none yet); `None`
    /// when none runs.
    pub stalest_heartbeat_age: Option<Duration>,
}

impl StoreFacts {
    /// Reads them from `store`: a count per status ([`Store::count`]) and each running plan.
    pub async fn read(store: &dyn Store) -> Result<StoreFacts, StoreError> {
        let mut facts = StoreFacts::default();
        for status in Status::ALL {
            facts
                .plans
                .insert(status, store.count(&ListFilter::status(status)).await?);
            facts.running_plan_actions.insert(status, 0);
        }
        let now = chrono::Utc::now();
        let age = |t: crate::workflow::Timestamp| (now - t).to_std().unwrap_or_default();
        for summary in store.list(&ListFilter::status(Status::Running)).await? {
            let plan = match store.read(summary.id).await {
                Ok(plan) => plan,
                // Deleted since the listing.
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if plan.status() != Status::Running {
                continue;
            }
            if plan.is_paused() {
                facts.paused_plans += 1;
            }
            for (_, object) in plan.walk() {
                if let ObjectRef::Action(a) = object {
                    *facts.running_plan_actions.entry(a.status()).or_default() += 1;
                }
            }
            if let Some(start) = plan.state().start {
                let running_for = age(start);
                facts.oldest_running_age = facts.oldest_running_age.max(Some(running_for));
                let beat = plan.heartbeat().map_or(running_for, age);
                facts.stalest_heartbeat_age = facts.stalest_heartbeat_age.max(Some(beat));
            }
        }
        Ok(facts)
    }

    /// Sets the `coercion_store_*` gauges of the current recorder to these figures.
    pub fn record(&self) {
        for (status, n) in &self.plans {
            ::metrics::gauge!(STORE_PLANS, "status" => status.as_str()).set(*n as f64);
        }
        for (status, n) in &self.running_plan_actions {
            ::metrics::gauge!(STORE_RUNNING_PLAN_ACTIONS, "status" => status.as_str())
                .set(*n as f64);
        }
        ::metrics::gauge!(STORE_PAUSED_PLANS).set(self.paused_plans as f64);
        let secs = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64();
        ::metrics::gauge!(STORE_OLDEST_RUNNING_AGE).set(secs(self.oldest_running_age));
        ::metrics::gauge!(STORE_HEARTBEAT_AGE).set(secs(self.stalest_heartbeat_age));
    }
}

#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub use prometheus::{PrometheusError, install_prometheus, prometheus_builder, render_store};

#[cfg(feature = "prometheus")]
mod prometheus {
    use std::net::SocketAddr;

    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

    use super::{ATTEMPT_BUCKETS, ATTEMPT_DURATION, COMMIT_BUCKETS, STORE_COMMIT, StoreFacts};

    /// Why the Prometheus exporter could not start.
    pub type PrometheusError = metrics_exporter_prometheus::BuildError;

    /// A Prometheus exporter's builder with the buckets of coercion's histograms set
    /// ([`ATTEMPT_BUCKETS`], [`COMMIT_BUCKETS`]), for programs that configure the rest
    /// themselves (a listener, a push gateway, their own buckets).
    pub fn prometheus_builder() -> PrometheusBuilder {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(ATTEMPT_DURATION.into()), ATTEMPT_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(STORE_COMMIT.into()), COMMIT_BUCKETS)
            })
            .expect("the bucket lists are not empty")
    }

    /// Installs a Prometheus recorder for this process and serves what it records over HTTP at
    /// `addr` (any path, `/metrics` by convention). Call it once, early, inside a Tokio runtime
    /// (the listener runs on it; outside one it gets a thread of its own). Fails if `addr`
    /// cannot be bound or the process already has a recorder.
    pub fn install_prometheus(addr: SocketAddr) -> Result<(), PrometheusError> {
        prometheus_builder().with_http_listener(addr).install()?;
        super::describe();
        Ok(())
    }

    /// `facts` as a Prometheus text page (the `/metrics` page of `coercion serve`), recorded
    /// apart from the process's own recorder.
    pub fn render_store(facts: &StoreFacts) -> String {
        let recorder = prometheus_builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            super::describe();
            facts.record();
        });
        handle.render()
    }
}

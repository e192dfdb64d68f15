//! Benchmark: a rolling rollout over a fleet of simulated hosts (10,000 by default), run by three
//! `pg_worker` processes sharing one PostgreSQL store, optionally with one worker killed by
//! SIGKILL mid-run.
//!
//! ```text
//! cargo build --release --features postgres --example pg_worker --example pg_fleet
//! bash scripts/with-postgres.sh ./target/release/examples/pg_fleet [--hosts 10000] [--kill]
//! bash scripts/with-postgres.sh ./target/release/examples/pg_fleet --alternate --runs 2
//! ```
//!
//! The hosts are split over `--plans` plans (10); each plan is one rolling rollout
//! (`coercion::rolling`, batches `--serial 1,10%,25%`, `--concurrency` hosts at a time per batch)
//! whose hosts each run `--actions` (2) `pgtest/ledger` actions of about `--sleep-ms` (50–150 %
//! of it). A client that runs nothing submits and starts the plans; the workers are
//! `examples/pg_worker.rs` processes (the `pg_worker` binary next to this one, or
//! `--worker-bin`) with a short lease (`--lease-ms 5000`, heartbeat `--heartbeat-ms 1000`).
//! With `--kill`, once `--kill-at` (40 %) of the actions succeeded the worker holding the most
//! running plans is killed with SIGKILL; the two others take its plans over.
//!
//! Each run uses a fresh schema of `COERCION_PG_URL` (dropped afterwards unless `--keep`) and
//! prints one JSON line on stdout; `--alternate` runs `--runs` pairs (no kill, then kill) and
//! prints a last `summary` line with the medians and the goals. Human-readable lines go to stderr.
//!
//! What is measured (every time on this machine's clock: the server's `clock_timestamp()`, the
//! workers' and this process's clocks are the same clock):
//!
//! - `total_s`: from just before the first start request to the latest end time of a plan (as the
//!   plans record it).
//! - Per plan the killed worker held (`lease_owner` = its store, status Running, read 300 ms after
//!   the kill, when it can write nothing more): `lease_expires` (its last renewal + the lease),
//!   then from the plan's `Plan::owners()` the first owner at a higher lease epoch (the taker:
//!   `at` is when it took the plan, just before it writes its owner record) and from the ledger
//!   the first attempt of that plan started after the kill by another worker.
//!   `takeover_claim_s` = taker's `at` − `lease_expires`; `takeover_first_action_s` = that first
//!   attempt's start − `lease_expires`; `kill_to_first_action_s` = that start − the kill.
//!   The maxima over the killed worker's plans are reported.
//! - Ledger checks over every action of every plan: no action has two successful attempts (the
//!   only exception counted apart, `at_least_once_reruns`: the killed worker's attempt succeeded
//!   but its success was not committed before the kill, so the new owner ran it again, as the
//!   at-least-once rule says), no action the store held as completed at the kill ran again, no
//!   two attempts of one action overlapped (an attempt cut by the kill ends at the kill), and
//!   the completing attempt the store recorded is the action's last ledger row, successful.
//!
//! Goals (with `--alternate`): takeover — the killed worker's plans resume (first action of the
//! new owner) within the lease + 2 s of the kill; the run with a kill takes at most the median
//! run without a kill × 1.10 + the lease.

#[path = "pg_worker.rs"]
mod pg_worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coercion::prelude::*;
use coercion::rolling::{BatchSize, Rolling, check_serial};
use coercion::storage::PostgresStore;
use coercion::workflow::{ObjectRef, Outcome};
use coercion::{ListFilter, Store};
use pg_worker::{Ledger, LedgerReq, LedgerResp, WorkerArgs};
use serde_json::json;

type Res<T> = Result<T, String>;

const USAGE: &str = "usage: pg_fleet [--hosts N] [--plans N] [--actions N] [--sleep-ms MS] \
[--concurrency N] [--serial 1,10%,25%] [--workers N] [--lease-ms MS] [--heartbeat-ms MS] \
[--poll-ms MS] [--claim-batch N] [--kill] [--kill-at FRACTION] [--alternate] [--runs N] \
[--timeout-s S] [--worker-bin PATH] [--url URL] [--keep]";

/// The benchmark's settings.
#[derive(Clone, Debug)]
struct Opts {
    url: String,
    hosts: usize,
    plans: usize,
    actions: usize,
    sleep_ms: u64,
    concurrency: usize,
    serial: Vec<BatchSize>,
    workers: usize,
    lease_ms: u64,
    heartbeat_ms: u64,
    poll_ms: u64,
    claim_batch: usize,
    kill: bool,
    kill_at: f64,
    alternate: bool,
    runs: usize,
    timeout: Duration,
    worker_bin: PathBuf,
    keep: bool,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Res<Opts> {
    let mut o = Opts {
        url: std::env::var("COERCION_PG_URL").unwrap_or_default(),
        hosts: 10_000,
        plans: 10,
        actions: 2,
        sleep_ms: 110,
        concurrency: 5,
        serial: vec![
            BatchSize::Count(1),
            BatchSize::Percent(10),
            BatchSize::Percent(25),
        ],
        workers: 3,
        lease_ms: 5_000,
        heartbeat_ms: 1_000,
        poll_ms: 200,
        claim_batch: 2,
        kill: false,
        kill_at: 0.4,
        alternate: false,
        runs: 1,
        timeout: Duration::from_secs(900),
        worker_bin: PathBuf::new(),
        keep: false,
    };
    let mut worker_bin = None;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Res<T> {
            v.parse()
                .map_err(|_| format!("{flag} takes a whole number, got {v:?}"))
        }
        match flag.as_str() {
            "--url" => o.url = value()?,
            "--hosts" => o.hosts = num(&flag, value()?)?,
            "--plans" => o.plans = num(&flag, value()?)?,
            "--actions" => o.actions = num(&flag, value()?)?,
            "--sleep-ms" => o.sleep_ms = num(&flag, value()?)?,
            "--concurrency" => o.concurrency = num(&flag, value()?)?,
            "--serial" => {
                let v = value()?;
                o.serial = v
                    .split(',')
                    .map(|s| s.parse::<BatchSize>().map_err(|e| format!("--serial: {e}")))
                    .collect::<Res<_>>()?;
            }
            "--workers" => o.workers = num(&flag, value()?)?,
            "--lease-ms" => o.lease_ms = num(&flag, value()?)?,
            "--heartbeat-ms" => o.heartbeat_ms = num(&flag, value()?)?,
            "--poll-ms" => o.poll_ms = num(&flag, value()?)?,
            "--claim-batch" => o.claim_batch = num(&flag, value()?)?,
            "--kill" => o.kill = true,
            "--kill-at" => {
                let v = value()?;
                o.kill_at = v
                    .parse()
                    .ok()
                    .filter(|f: &f64| *f > 0.0 && *f < 1.0)
                    .ok_or_else(|| {
                        format!("--kill-at takes a fraction of the actions between 0 and 1 (exclusive), got {v:?}")
                    })?;
            }
            "--alternate" => o.alternate = true,
            "--runs" => o.runs = num(&flag, value()?)?,
            "--timeout-s" => o.timeout = Duration::from_secs(num(&flag, value()?)?),
            "--worker-bin" => worker_bin = Some(PathBuf::from(value()?)),
            "--keep" => o.keep = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.url.is_empty() {
        return Err(
            "COERCION_PG_URL is not set and no --url was given (run through scripts/with-postgres.sh)"
                .to_owned(),
        );
    }
    let positive = [
        ("--hosts", o.hosts),
        ("--plans", o.plans),
        ("--actions", o.actions),
        ("--concurrency", o.concurrency),
        ("--claim-batch", o.claim_batch),
        ("--runs", o.runs),
    ];
    if let Some((flag, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(format!("{flag} must be at least 1"));
    }
    if o.plans > o.hosts {
        return Err(format!(
            "--plans {} is more than --hosts {}: every plan needs a host",
            o.plans, o.hosts
        ));
    }
    if o.workers < 2 {
        return Err(format!(
            "--workers must be at least 2 (one is killed, another takes over), got {}",
            o.workers
        ));
    }
    if o.lease_ms < 500 || o.heartbeat_ms == 0 || o.heartbeat_ms * 2 > o.lease_ms {
        return Err(format!(
            "--lease-ms must be at least 500 and --heartbeat-ms between 1 and half the lease; got lease {} ms, heartbeat {} ms",
            o.lease_ms, o.heartbeat_ms
        ));
    }
    if o.poll_ms == 0 {
        return Err("--poll-ms must be at least 1".to_owned());
    }
    check_serial(&o.serial).map_err(|e| format!("--serial: {e}"))?;
    o.worker_bin = match worker_bin {
        Some(p) => p,
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| format!("cannot find this program's path ({e}); give --worker-bin"))?;
            exe.with_file_name("pg_worker")
        }
    };
    if !o.worker_bin.is_file() {
        return Err(format!(
            "the worker binary {} does not exist: build it with `cargo build --release --features postgres --example pg_worker --example pg_fleet`, or give --worker-bin",
            o.worker_bin.display()
        ));
    }
    Ok(o)
}

/// Runs `--runs` runs (or pairs with `--alternate`); prints one JSON line per run, then a
/// summary with `--alternate`. Returns whether every run passed its checks.
async fn bench(o: &Opts) -> Res<bool> {
    let mut all_ok = true;
    let mut results: Vec<serde_json::Value> = Vec::new();
    for r in 0..o.runs {
        let kinds: &[bool] = if o.alternate {
            &[false, true]
        } else {
            &[o.kill]
        };
        for &kill in kinds {
            eprintln!(
                "pg_fleet: run {} of {} ({})",
                r + 1,
                o.runs,
                if kill { "with a SIGKILL" } else { "no kill" }
            );
            let result = run(o, kill).await?;
            all_ok &= result["checks"]["passed"].as_bool().unwrap_or(false);
            println!("{result}");
            results.push(result);
        }
    }
    if o.alternate {
        let summary = summarize(o, &results);
        eprintln!("pg_fleet: summary {summary:#}");
        println!("{summary}");
    }
    Ok(all_ok)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians of the runs with and without a kill, and the goals.
fn summarize(o: &Opts, results: &[serde_json::Value]) -> serde_json::Value {
    let pick = |kill: bool, f: &dyn Fn(&serde_json::Value) -> Option<f64>| -> Vec<f64> {
        results
            .iter()
            .filter(|r| r["kill"].as_bool() == Some(kill))
            .filter_map(f)
            .collect()
    };
    let total = |r: &serde_json::Value| r["total_s"].as_f64();
    let lease = o.lease_ms as f64 / 1e3;
    let nokill = median(pick(false, &total));
    let killed = median(pick(true, &total));
    let worst_resume = pick(true, &|r| {
        r["takeover"]["kill_to_first_action_s_max"].as_f64()
    })
    .into_iter()
    .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let total_limit = nokill.map(|n| n * 1.10 + lease);
    json!({
        "summary": "pg_fleet",
        "runs_each": o.runs,
        "median_total_s_no_kill": nokill,
        "median_total_s_kill": killed,
        "median_actions_per_s_no_kill": median(pick(false, &|r| r["actions_per_s"].as_f64())),
        "median_actions_per_s_kill": median(pick(true, &|r| r["actions_per_s"].as_f64())),
        "median_takeover_claim_s_max": median(pick(true, &|r| r["takeover"]["takeover_claim_s_max"].as_f64())),
        "median_takeover_first_action_s_max": median(pick(true, &|r| r["takeover"]["takeover_first_action_s_max"].as_f64())),
        "median_kill_to_first_action_s_max": median(pick(true, &|r| r["takeover"]["kill_to_first_action_s_max"].as_f64())),
        "worst_kill_to_first_action_s": worst_resume,
        "goal_takeover_limit_s": lease + 2.0,
        "goal_takeover_met": worst_resume.map(|w| w <= lease + 2.0),
        "goal_total_limit_s": total_limit,
        "goal_total_met": match (killed, total_limit) {
            (Some(k), Some(l)) => Some(k <= l),
            _ => None,
        },
        "checks_passed": results.iter().all(|r| r["checks"]["passed"].as_bool() == Some(true)),
    })
}

/// One `pg_worker` child process and what it printed.
struct Worker {
    name: String,
    child: Child,
    out: Arc<Mutex<WorkerOut>>,
    alive: bool,
}

#[derive(Default)]
struct WorkerOut {
    /// The store's owner id, from `ready <id> <owner>`.
    owner: Option<String>,
    /// The last `fenced=` count.
    fenced: u64,
}

impl Worker {
    fn spawn(bin: &PathBuf, args: &WorkerArgs) -> Res<Worker> {
        let mut cmd = Command::new(bin);
        cmd.args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the worker when
        // this process dies, so that no worker outlives an interrupted benchmark.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let out = Arc::new(Mutex::new(WorkerOut::default()));
        let stdout = child
            .stdout
            .take()
            .ok_or("the worker's stdout was not piped")?;
        let sink = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut out = sink.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(rest) = line.strip_prefix("ready ") {
                    out.owner = rest.split_whitespace().nth(1).map(str::to_owned);
                } else if let Some(n) = line
                    .strip_prefix("status fenced=")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                {
                    out.fenced = n;
                }
            }
        });
        Ok(Worker {
            name: args.id.clone(),
            child,
            out,
            alive: true,
        })
    }

    fn owner(&self) -> Option<String> {
        self.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .owner
            .clone()
    }

    fn fenced(&self) -> u64 {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).fenced
    }

    fn sigkill(&mut self) -> Res<()> {
        self.child
            .kill()
            .map_err(|e| format!("SIGKILL {}: {e}", self.name))?;
        let _ = self.child.wait();
        self.alive = false;
        Ok(())
    }

    /// Ctrl-C (the worker stops its loop), then SIGKILL after 10 s.
    fn stop(&mut self) {
        if !self.alive {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: sends a signal to our own child process.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.alive = false;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.alive = false;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.alive {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn db_err(what: &str) -> impl Fn(tokio_postgres::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

async fn db_now(sql: &tokio_postgres::Client) -> Res<f64> {
    Ok(sql
        .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
        .await
        .map_err(db_err("reading the server's clock"))?
        .get(0))
}

fn secs(t: coercion::workflow::Timestamp) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

/// The names of a host's actions.
fn action_name(a: usize, n: usize) -> String {
    match (n, a) {
        (1, _) => "deploy".to_owned(),
        (2, 0) | (3, 1) => "deploy".to_owned(),
        (2, 1) | (3, 2) => "verify".to_owned(),
        (3, 0) => "drain".to_owned(),
        _ => format!("step-{a}"),
    }
}

/// Plan `p` of the fleet: a rolling rollout over `hosts` (their numbers).
fn fleet_plan(o: &Opts, p: usize, hosts: std::ops::Range<usize>) -> Plan {
    let mut rng = fastrand::Rng::with_seed(p as u64);
    let sleep = |rng: &mut fastrand::Rng| {
        if o.sleep_ms == 0 {
            0
        } else {
            o.sleep_ms / 2 + rng.u64(0..=o.sleep_ms)
        }
    };
    let rollout = Rolling::new("hosts", o.serial.clone())
        .concurrency(o.concurrency)
        .sequences(hosts.map(|h| {
            Sequence::builder(format!("host-{h:05}")).actions(
                (0..o.actions)
                    .map(|a| {
                        ActionSpec::new::<Ledger>(
                            action_name(a, o.actions),
                            LedgerReq {
                                sleep_ms: sleep(&mut rng),
                                fail_first: 0,
                            },
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        }));
    Plan::builder(format!("fleet {p}")).rolling(rollout).build()
}

#[derive(Debug)]
struct Row {
    id: i64,
    plan: coercion::Uuid,
    action: String,
    worker: String,
    started: f64,
    ended: Option<f64>,
    ok: Option<bool>,
}

async fn ledger(sql: &tokio_postgres::Client, schema: &str) -> Res<Vec<Row>> {
    Ok(sql
        .query(
            &format!(
                "SELECT id, plan_id, action_id::text, worker, extract(epoch FROM started)::float8, \
                 extract(epoch FROM ended)::float8, ok FROM {schema}.ledger ORDER BY started, id"
            ),
            &[],
        )
        .await
        .map_err(db_err("reading the ledger"))?
        .iter()
        .map(|r| Row {
            id: r.get(0),
            plan: r.get(1),
            action: r.get(2),
            worker: r.get(3),
            started: r.get(4),
            ended: r.get(5),
            ok: r.get(6),
        })
        .collect())
}

/// What the kill did, read from the database.
struct Kill {
    victim: String,
    victim_pid: u32,
    at: f64,
    progress: f64,
    /// Plan → (lease expiry, lease epoch) of the plans the victim held.
    held: BTreeMap<coercion::Uuid, (f64, i64)>,
    /// Actions of those plans stored as completed when the victim died.
    completed: HashSet<String>,
}

/// One run: fresh schema, workers, plans, (kill), wait, audit. Returns its JSON line.
async fn run(o: &Opts, kill: bool) -> Res<serde_json::Value> {
    let schema = format!("fleet_{}", PlanId::new_v7().0.simple());
    let lease = Duration::from_millis(o.lease_ms);
    let wargs = |id: &str| WorkerArgs {
        url: o.url.clone(),
        schema: schema.clone(),
        id: id.to_owned(),
        lease,
        heartbeat: Duration::from_millis(o.heartbeat_ms),
        poll: Duration::from_millis(o.poll_ms),
        max_running: o.plans.max(1),
        claim_batch: o.claim_batch,
    };
    let load_start = load_avg();

    // The client: creates the schema and the ledger, submits and starts, runs nothing.
    let cargs = wargs("client");
    let store: PostgresStore = pg_worker::open_store(&cargs)
        .await
        .map_err(|e| format!("connecting to {}: {e}", o.url))?;
    let sql = pg_worker::connect(&o.url)
        .await
        .map_err(db_err("connecting for the ledger"))?;
    pg_worker::setup_ledger(&sql, &schema)
        .await
        .map_err(db_err("creating the ledger table"))?;
    let registry = Registry::new()
        .with(Ledger::new(&o.url, &schema, "client"))
        .map_err(|e| format!("registry: {e}"))?;
    let ws = Workstream::builder()
        .store(store.clone())
        .registry(registry)
        .heartbeat_interval(cargs.heartbeat)
        .client_only()
        .build()
        .await
        .map_err(|e| format!("building the client: {e}"))?;

    let mut workers: Vec<Worker> = (0..o.workers)
        .map(|w| Worker::spawn(&o.worker_bin, &wargs(&format!("w{w}"))))
        .collect::<Res<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while workers.iter().any(|w| w.owner().is_none()) {
        for w in &mut workers {
            if let Ok(Some(status)) = w.child.try_wait() {
                w.alive = false;
                return Err(format!(
                    "worker {} exited before it was ready: {status}",
                    w.name
                ));
            }
        }
        if Instant::now() > deadline {
            return Err("the workers did not print `ready` within 60 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Submit every plan, then start them all.
    let t_submit = Instant::now();
    let mut ids = Vec::with_capacity(o.plans);
    let mut next = 0;
    for p in 0..o.plans {
        let n = o.hosts / o.plans + usize::from(p < o.hosts % o.plans);
        let plan = fleet_plan(o, p, next..next + n);
        next += n;
        ids.push(
            ws.submit(plan)
                .await
                .map_err(|e| format!("submitting plan {p}: {e}"))?,
        );
    }
    let submit_s = t_submit.elapsed().as_secs_f64();
    let total_actions = o.hosts * o.actions;
    eprintln!(
        "pg_fleet: submitted {} plans ({} hosts, {total_actions} actions) in {submit_s:.1} s; starting them",
        o.plans, o.hosts
    );
    let t0 = db_now(&sql).await?;
    let wall0 = Instant::now();
    for id in &ids {
        ws.start(*id)
            .await
            .map_err(|e| format!("starting plan {id}: {e}"))?;
    }

    let mut killed: Option<Kill> = None;
    let mut last_report = Instant::now();
    let owner_of: HashMap<String, usize> = workers
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.owner().map(|o| (o, i)))
        .collect();
    let ended = loop {
        let list = store
            .list(&ListFilter::default())
            .await
            .map_err(|e| format!("listing plans: {e}"))?;
        let open = ids
            .iter()
            .filter(|id| {
                !list
                    .iter()
                    .any(|s| s.id == **id && s.state.status.is_terminal())
            })
            .count();
        if open == 0 {
            break true;
        }
        if wall0.elapsed() > o.timeout {
            break false;
        }
        let done: i64 = sql
            .query_one(
                &format!("SELECT count(*) FILTER (WHERE ok) FROM {schema}.ledger"),
                &[],
            )
            .await
            .map_err(db_err("counting the ledger"))?
            .get(0);
        let progress = done as f64 / total_actions as f64;
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "pg_fleet: {:5.1} s: {done}/{total_actions} actions done, {open} plans open (load {})",
                wall0.elapsed().as_secs_f64(),
                load_avg()
            );
        }
        if kill && killed.is_none() && progress >= o.kill_at {
            killed = Some(kill_one(&mut workers, &owner_of, &sql, &schema, progress).await?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall_s = wall0.elapsed().as_secs_f64();
    let load_end = load_avg();
    if kill && killed.is_none() {
        eprintln!(
            "pg_fleet: the plans ended before {:.0} % of the actions were seen done: nobody was killed",
            o.kill_at * 100.0
        );
    }

    // Read back every plan.
    let mut plans = Vec::with_capacity(ids.len());
    for id in &ids {
        plans.push(
            store
                .read(*id)
                .await
                .map_err(|e| format!("reading plan {id}: {e}"))?,
        );
    }
    let rows = ledger(&sql, &schema).await?;
    let pid_name: HashMap<String, String> = workers
        .iter()
        .map(|w| (w.child.id().to_string(), w.name.clone()))
        .collect();
    let worker_of = |by: &str| -> String {
        by.strip_prefix("pid ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|pid| pid_name.get(pid).cloned())
            .unwrap_or_else(|| by.to_owned())
    };

    let completed_plans = plans
        .iter()
        .filter(|p| p.state().status == Status::Completed)
        .count();
    let stranded: Vec<serde_json::Value> = plans
        .iter()
        .filter(|p| !p.state().status.is_terminal())
        .map(|p| json!({"plan": p.id().to_string(), "name": p.name(), "status": format!("{:?}", p.state().status)}))
        .collect();
    let last_end = plans
        .iter()
        .filter_map(|p| p.state().end.map(secs))
        .fold(f64::NAN, f64::max);
    let total_s = last_end - t0;
    // When each plan ended, from the first start request (plan order).
    let plan_ends_s: Vec<Option<f64>> = plans
        .iter()
        .map(|p| p.state().end.map(|e| secs(e) - t0))
        .collect();

    // Who started which plan, who took which over.
    let mut started_by: BTreeMap<String, usize> = BTreeMap::new();
    let mut taken_over_by: BTreeMap<String, usize> = BTreeMap::new();
    for p in &plans {
        for (i, owner) in p.owners().iter().enumerate() {
            let name = worker_of(&owner.by);
            *if i == 0 {
                started_by.entry(name)
            } else {
                taken_over_by.entry(name)
            }
            .or_default() += 1;
        }
    }
    let mut actions_by: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.ok == Some(true)) {
        *actions_by.entry(r.worker.clone()).or_default() += 1;
    }

    // Takeover, per plan the victim held.
    let mut takeover = serde_json::Value::Null;
    if let Some(k) = &killed {
        let lease_s = lease.as_secs_f64();
        let mut per_plan = Vec::new();
        let (mut claim_max, mut first_max, mut kill_first_max) =
            (f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
        let mut untaken = 0;
        for (plan_id, (expiry, epoch)) in &k.held {
            let plan = plans.iter().find(|p| p.id().0 == *plan_id);
            let taker = plan.and_then(|p| {
                p.owners()
                    .iter()
                    .find(|ow| ow.epoch.is_some_and(|e| e as i64 > *epoch))
            });
            let first = rows
                .iter()
                .filter(|r| r.plan == *plan_id && r.worker != k.victim && r.started > k.at)
                .map(|r| r.started)
                .fold(f64::INFINITY, f64::min);
            let Some(taker) = taker else {
                untaken += 1;
                per_plan.push(json!({"plan": plan_id.to_string(), "taken_over": false}));
                continue;
            };
            let claim = secs(taker.at) - expiry;
            let first_action = first.is_finite().then_some(first - expiry);
            let kill_first = first.is_finite().then_some(first - k.at);
            claim_max = claim_max.max(claim);
            if let (Some(f), Some(kf)) = (first_action, kill_first) {
                first_max = first_max.max(f);
                kill_first_max = kill_first_max.max(kf);
            }
            per_plan.push(json!({
                "plan": plan_id.to_string(),
                "lease_epoch": epoch,
                "new_epoch": taker.epoch,
                "taken_by": worker_of(&taker.by),
                "last_renewal_before_kill_s": k.at - (expiry - lease_s),
                "lease_left_at_kill_s": expiry - k.at,
                "takeover_claim_s": claim,
                "takeover_first_action_s": first_action,
                "kill_to_first_action_s": kill_first,
                "ended_s": plan.and_then(|p| p.state().end).map(|e| secs(e) - t0),
            }));
        }
        let finite = |x: f64| x.is_finite().then_some(x);
        takeover = json!({
            "victim": k.victim,
            "victim_pid": k.victim_pid,
            "killed_at_progress": k.progress,
            "victim_plans": k.held.len(),
            "plans_not_taken_over": untaken,
            "takeover_claim_s_max": finite(claim_max),
            "takeover_first_action_s_max": finite(first_max),
            "kill_to_first_action_s_max": finite(kill_first_max),
            "per_plan": per_plan,
        });
    }

    let checks = audit(&plans, &rows, killed.as_ref(), total_actions);
    let fenced: BTreeMap<String, u64> = workers
        .iter()
        .map(|w| (w.name.clone(), w.fenced()))
        .collect();
    let passed = ended
        && completed_plans == ids.len()
        && checks.violations() == 0
        && (!kill || killed.as_ref().is_some_and(|k| !k.held.is_empty()));

    for w in &mut workers {
        w.stop();
    }
    drop(ws);
    if !o.keep {
        if let Err(e) = sql
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
        {
            eprintln!("pg_fleet: could not drop schema {schema}: {e}");
        }
    } else {
        eprintln!("pg_fleet: kept schema {schema}");
    }

    let actions_per_s = total_actions as f64 / total_s;
    eprintln!(
        "pg_fleet: {} in {total_s:.1} s ({actions_per_s:.0} actions/s; observed {wall_s:.1} s), {completed_plans}/{} plans completed, plans started by {started_by:?}, taken over by {taken_over_by:?}, load {load_start} -> {load_end}",
        if kill {
            "run with a kill"
        } else {
            "run without a kill"
        },
        ids.len()
    );
    if let Some(k) = &killed {
        eprintln!(
            "pg_fleet: killed {} at {:.0} % ({} plans held); takeover after lease expiry: claim max {:.2} s, first action max {:.2} s; kill to first action max {:.2} s (lease {:.1} s)",
            k.victim,
            k.progress * 100.0,
            k.held.len(),
            takeover["takeover_claim_s_max"]
                .as_f64()
                .unwrap_or(f64::NAN),
            takeover["takeover_first_action_s_max"]
                .as_f64()
                .unwrap_or(f64::NAN),
            takeover["kill_to_first_action_s_max"]
                .as_f64()
                .unwrap_or(f64::NAN),
            lease.as_secs_f64()
        );
    }
    eprintln!(
        "pg_fleet: ledger: {} rows, {} actions with two successful attempts ({} of them at-least-once re-runs of the killed worker's uncommitted success), {} completed actions ran again, {} overlaps, {} attempts cut by the kill, {} stored completions not matching the ledger, {} actions not completed -> {}",
        checks.rows,
        checks.double_success,
        checks.at_least_once,
        checks.completed_rerun,
        checks.overlaps,
        checks.cut_by_kill,
        checks.stored_mismatch,
        checks.not_completed,
        if passed { "PASSED" } else { "FAILED" }
    );
    Ok(json!({
        "bench": "pg_fleet",
        "kill": kill,
        "hosts": o.hosts,
        "plans": o.plans,
        "actions": total_actions,
        "actions_per_host": o.actions,
        "sleep_ms": o.sleep_ms,
        "concurrency": o.concurrency,
        "serial": o.serial.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        "workers": o.workers,
        "lease_ms": o.lease_ms,
        "heartbeat_ms": o.heartbeat_ms,
        "poll_ms": o.poll_ms,
        "claim_batch": o.claim_batch,
        "submit_s": submit_s,
        "total_s": total_s,
        "observed_wall_s": wall_s,
        "actions_per_s": actions_per_s,
        "plans_completed": completed_plans,
        "plans_stranded": stranded,
        "plan_ends_s": plan_ends_s,
        "plans_started_by": started_by,
        "plans_taken_over_by": taken_over_by,
        "actions_by_worker": actions_by,
        "fenced_writes": fenced,
        "takeover": takeover,
        "checks": {
            "passed": passed,
            "ledger_rows": checks.rows,
            "double_success": checks.double_success,
            "at_least_once_reruns": checks.at_least_once,
            "completed_rerun": checks.completed_rerun,
            "overlaps": checks.overlaps,
            "unended_live": checks.unended_live,
            "cut_by_kill": checks.cut_by_kill,
            "stored_mismatch": checks.stored_mismatch,
            "not_completed": checks.not_completed,
        },
        "loadavg_start": load_start,
        "loadavg_end": load_end,
    }))
}

/// Kills (SIGKILL) the worker holding the most running plans; reads what it held.
async fn kill_one(
    workers: &mut [Worker],
    owner_of: &HashMap<String, usize>,
    sql: &tokio_postgres::Client,
    schema: &str,
    progress: f64,
) -> Res<Kill> {
    let held = sql
        .query(
            &format!(
                "SELECT lease_owner::text, count(*) FROM {schema}.plans \
                 WHERE status = 'Running' AND lease_owner IS NOT NULL GROUP BY 1"
            ),
            &[],
        )
        .await
        .map_err(db_err("reading the leases"))?;
    let mut counts = vec![0i64; workers.len()];
    for r in &held {
        let owner: String = r.get(0);
        if let Some(&i) = owner_of.get(&owner) {
            counts[i] = r.get(1);
        }
    }
    let victim = (0..workers.len())
        .max_by_key(|&i| (counts[i], std::cmp::Reverse(i)))
        .ok_or("no worker")?;
    let w = &mut workers[victim];
    let owner = w.owner().ok_or("the victim has no owner id")?;
    let pid = w.child.id();
    w.sigkill()?;
    let at = db_now(sql).await?;
    // Let the server notice the closed connections: nothing the victim sent arrives later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let owner_uuid: coercion::Uuid = owner
        .parse()
        .map_err(|e| format!("the victim's owner id {owner:?}: {e}"))?;
    let rows = sql
        .query(
            &format!(
                "SELECT id, extract(epoch FROM lease_expires)::float8, lease_epoch FROM {schema}.plans \
                 WHERE lease_owner = $1 AND status = 'Running'"
            ),
            &[&owner_uuid],
        )
        .await
        .map_err(db_err("reading the victim's leases"))?;
    let held: BTreeMap<coercion::Uuid, (f64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let plan_ids: Vec<coercion::Uuid> = held.keys().copied().collect();
    let completed = sql
        .query(
            &format!(
                "SELECT id::text FROM {schema}.objects \
                 WHERE plan_id = ANY($1) AND kind = 'action' AND status = 'Completed'"
            ),
            &[&plan_ids],
        )
        .await
        .map_err(db_err("reading the completed actions"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let after = db_now(sql).await? - at;
    eprintln!(
        "pg_fleet: SIGKILL {} (pid {pid}) at {:.0} % of the actions; it held {} running plans (snapshot {after:.2} s after the kill)",
        w.name,
        progress * 100.0,
        held.len()
    );
    Ok(Kill {
        victim: w.name.clone(),
        victim_pid: pid,
        at,
        progress,
        held,
        completed,
    })
}

#[derive(Default)]
struct Checks {
    rows: usize,
    double_success: usize,
    at_least_once: usize,
    completed_rerun: usize,
    overlaps: usize,
    unended_live: usize,
    cut_by_kill: usize,
    stored_mismatch: usize,
    not_completed: usize,
}

impl Checks {
    fn violations(&self) -> usize {
        (self.double_success - self.at_least_once)
            + self.completed_rerun
            + self.overlaps
            + self.unended_live
            + self.stored_mismatch
            + self.not_completed
    }
}

/// The ledger against the final plans (see the module docs).
fn audit(plans: &[Plan], rows: &[Row], killed: Option<&Kill>, total_actions: usize) -> Checks {
    let mut by_action: HashMap<&str, Vec<&Row>> = HashMap::new();
    for r in rows {
        by_action.entry(r.action.as_str()).or_default().push(r);
    }
    let mut c = Checks {
        rows: rows.len(),
        ..Checks::default()
    };
    let victim = killed.map(|k| k.victim.as_str());
    let mut seen = 0;
    for plan in plans {
        for (_, object) in plan.walk() {
            let ObjectRef::Action(action) = object else {
                continue;
            };
            seen += 1;
            let id = action.id().to_string();
            let runs = by_action.get(id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            if action.state().status != Status::Completed {
                c.not_completed += 1;
            } else {
                let stored = action.attempts().last().and_then(|a| match &a.outcome {
                    Some(Outcome::Response(json)) => json.decode::<LedgerResp>().ok(),
                    _ => None,
                });
                let last = runs.last();
                if !(stored.is_some_and(|s| last.is_some_and(|l| l.id == s.ledger_id))
                    && last.is_some_and(|l| l.ok == Some(true)))
                {
                    c.stored_mismatch += 1;
                    eprintln!(
                        "pg_fleet: action {id}: stored completion does not match the ledger's last row: {runs:?}"
                    );
                }
            }
            let oks: Vec<&&Row> = runs.iter().filter(|r| r.ok == Some(true)).collect();
            if oks.len() > 1 {
                c.double_success += 1;
                // Allowed only when every earlier success was the killed worker's, before the
                // kill, and the store did not hold the action as completed when it died.
                let allowed = killed.is_some_and(|k| {
                    !k.completed.contains(&id)
                        && oks[..oks.len() - 1]
                            .iter()
                            .all(|r| r.worker == k.victim && r.ended.is_some_and(|e| e <= k.at))
                });
                if allowed {
                    c.at_least_once += 1;
                } else {
                    eprintln!("pg_fleet: action {id} succeeded twice: {runs:?}");
                }
            }
            if let Some(k) = killed
                && k.completed.contains(&id)
                && runs.iter().any(|r| r.started > k.at)
            {
                c.completed_rerun += 1;
                eprintln!(
                    "pg_fleet: action {id} was stored as completed at the kill and ran again: {runs:?}"
                );
            }
            for r in runs.iter().filter(|r| r.ended.is_none()) {
                if Some(r.worker.as_str()) == victim {
                    c.cut_by_kill += 1;
                } else {
                    c.unended_live += 1;
                    eprintln!("pg_fleet: an attempt of a live worker never ended: {r:?}");
                }
            }
            for pair in runs.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let end = match (a.ended, killed) {
                    (Some(e), _) => e,
                    (None, Some(k)) if a.worker == k.victim => k.at,
                    (None, _) => f64::INFINITY,
                };
                if end > b.started {
                    c.overlaps += 1;
                    eprintln!("pg_fleet: two attempts of action {id} overlapped: {a:?} and {b:?}");
                }
            }
        }
    }
    if seen != total_actions {
        eprintln!("pg_fleet: the plans hold {seen} actions, {total_actions} expected");
        c.not_completed += total_actions.abs_diff(seen);
    }
    c
}

fn main() {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            if e.is_empty() {
                println!("{USAGE}");
                std::process::exit(0);
            }
            eprintln!("pg_fleet: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pg_fleet: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    match rt.block_on(bench(&opts)) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("pg_fleet: some run failed its checks (see above)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("pg_fleet: {e}");
            std::process::exit(1);
        }
    }
}

//! Several worker processes sharing one PostgreSQL store (feature `postgres`): workers are
//! child processes (this test binary re-executed as the `worker_child` entry point, which runs
//! `examples/pg_worker.rs`'s worker); plans are submitted and started by a client that executes
//! nothing. A ledger table written by the test plugin records every attempt with its worker.
//!
//! Needs a server: run through `scripts/with-postgres.sh` (exports `COERCION_PG_URL`).

#[path = "../examples/pg_worker.rs"]
mod pg_worker;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coercion::prelude::*;
use coercion::storage::PostgresStore;
use coercion::workflow::{ObjectRef, Outcome};
use coercion::{ListFilter, PlanId, Status, Store};
use pg_worker::{Ledger, LedgerResp, WorkerArgs, ledger_plan};

#[path = "../coercion/tests/cli_support/gated.rs"]
mod gated;

fn pg_url(test: &str) -> Option<String> {
    match std::env::var("COERCION_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("COERCION_SKIP_PG").as_deref() == Ok("1") => {
            eprintln!(
                "!!!!!!!! SKIPPED {test}: COERCION_SKIP_PG=1 and no COERCION_PG_URL — the PostgreSQL workers were NOT tested !!!!!!!!"
            );
            None
        }
        _ => panic!(
            "COERCION_PG_URL is not set: the PostgreSQL tests need a server. Run them through \
             `scripts/with-postgres.sh cargo test --features postgres --test postgres_workers` \
             (it installs PostgreSQL if needed and starts a throwaway cluster), or set \
             COERCION_SKIP_PG=1 to skip them"
        ),
    }
}

const WORKER_ENV: &str = "COERCION_PG_WORKER_ARGS";

/// Not a test: the entry point of the worker child processes (run with `--ignored --exact`).
#[test]
#[ignore = "entry point of the worker child processes the other tests start"]
fn worker_child() {
    let Ok(args) = std::env::var(WORKER_ENV) else {
        panic!("worker_child is started by the other tests, with {WORKER_ENV} set");
    };
    let args =
        WorkerArgs::parse(args.split('\u{1f}').map(str::to_owned)).expect("worker arguments");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(pg_worker::run_worker(args))
        .expect("the worker runs");
}

/// A worker child process and what it printed.
struct Worker {
    id: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn spawn(args: &WorkerArgs) -> Worker {
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = Command::new(exe)
            .args([
                "--ignored",
                "--exact",
                "worker_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_ENV, args.to_args().join("\u{1f}"))
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a worker");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Worker {
            id: args.id.clone(),
            child,
            lines,
        }
    }

    fn wait_ready(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // libtest prints `test worker_child ... ` before the worker's first line.
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.find("ready ").map(|i| &l[i..]))
            {
                return l.split_whitespace().nth(2).unwrap_or_default().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "worker {} did not start",
                self.id
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `fenced=` count the worker printed.
    fn fenced(&self) -> u64 {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|l| {
                l.split("status fenced=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {}", self.id);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn args(url: &str, schema: &str, id: &str, lease_ms: u64) -> WorkerArgs {
    WorkerArgs {
        url: url.to_owned(),
        schema: schema.to_owned(),
        id: id.to_owned(),
        lease: Duration::from_millis(lease_ms),
        heartbeat: Duration::from_millis(lease_ms / 5),
        poll: Duration::from_millis(100),
        max_running: 12,
        claim_batch: 4,
    }
}

fn schema(test: &str) -> String {
    format!("w_{}_{}", test, PlanId::new_v7().0.simple())
        .chars()
        .take(63)
        .collect()
}

/// A client that executes nothing: submits and starts plans for the workers.
async fn client(url: &str, schema: &str) -> (Workstream, PostgresStore, tokio_postgres::Client) {
    let a = args(url, schema, "client", 30_000);
    let store = pg_worker::open_store(&a).await.expect("client store");
    let registry = Registry::new()
        .with(Ledger::new(url, schema, "client"))
        .unwrap();
    let ws = Workstream::builder()
        .store(store.clone())
        .registry(registry)
        .client_only()
        .build()
        .await
        .unwrap();
    let sql = pg_worker::connect(url).await.expect("ledger client");
    pg_worker::setup_ledger(&sql, schema)
        .await
        .expect("ledger table");
    (ws, store, sql)
}

/// DB time now, seconds since the epoch.
async fn db_now(sql: &tokio_postgres::Client) -> f64 {
    sql.query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits until every plan ended; returns how long it took. Panics after `limit`.
async fn wait_all_ended(store: &PostgresStore, ids: &[PlanId], limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let list = store.list(&ListFilter::default()).await.unwrap();
        let status: HashMap<PlanId, Status> = list.iter().map(|s| (s.id, s.state.status)).collect();
        let open = ids
            .iter()
            .filter(|id| !status.get(id).is_some_and(|s| s.is_terminal()))
            .count();
        if open == 0 {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{open} of {} plans did not end within {limit:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Debug)]
struct Row {
    id: i64,
    plan: PlanId,
    action: String,
    worker: String,
    started: f64,
    ended: Option<f64>,
    ok: Option<bool>,
}

async fn ledger(sql: &tokio_postgres::Client, schema: &str) -> Vec<Row> {
    sql.query(
        &format!(
            "SELECT id, plan_id, action_id::text, worker, extract(epoch FROM started)::float8, \
             extract(epoch FROM ended)::float8, ok FROM {schema}.ledger ORDER BY started, id"
        ),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| Row {
        id: r.get(0),
        plan: PlanId(r.get(1)),
        action: r.get(2),
        worker: r.get(3),
        started: r.get(4),
        ended: r.get(5),
        ok: r.get(6),
    })
    .collect()
}

/// The completed actions of `ids` as stored now: action id → ledger row of the completing
/// attempt.
async fn stored_completions(store: &PostgresStore, ids: &[PlanId]) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for id in ids {
        let plan = store.read(*id).await.unwrap();
        for (_, object) in plan.walk() {
            let ObjectRef::Action(action) = object else {
                continue;
            };
            if action.state().status != Status::Completed {
                continue;
            }
            let Some(Outcome::Response(json)) =
                action.attempts().last().and_then(|a| a.outcome.as_ref())
            else {
                panic!("a completed action without a response")
            };
            let resp: LedgerResp = json.decode().unwrap();
            out.insert(action.id().to_string(), resp.ledger_id);
        }
    }
    out
}

/// What the ledger shows about one set of plans, after they all completed.
#[derive(Debug, Default)]
struct Audit {
    rows: usize,
    cut_by_kill: usize,
    reran_after_kill: usize,
    overlapped_by_pause: usize,
    completed_at_kill: usize,
}

/// Checks the ledger against the final plans: for every action, no two attempts overlap in
/// time (an attempt cut by a kill ends at `killed.1`), the attempt the store recorded as the
/// completing one is the action's last ledger row, succeeded, and no attempt started after it;
/// an earlier successful attempt is only allowed for the killed worker (its completion was not
/// yet stored: at-least-once).
///
/// `paused`: a worker that was frozen (SIGSTOP) while an attempt ran: that attempt resumes when
/// the process does and may overlap the attempt of the worker that took over (the lease fences
/// the store, not the plugin's own side effects); such overlaps are counted, not refused.
async fn audit(
    store: &PostgresStore,
    sql: &tokio_postgres::Client,
    schema: &str,
    ids: &[PlanId],
    killed: Option<(&str, f64)>,
    paused: Option<&str>,
    completed_at_kill: &HashMap<String, i64>,
) -> Audit {
    let rows = ledger(sql, schema).await;
    let mut by_action: HashMap<_, Vec<&Row>> = HashMap::new();
    for r in &rows {
        by_action.entry(r.action.clone()).or_default().push(r);
    }
    let mut audit = Audit {
        rows: rows.len(),
        ..Audit::default()
    };
    for id in ids {
        let plan = store.read(*id).await.unwrap();
        assert_eq!(
            plan.state().status,
            Status::Completed,
            "plan {id} did not complete: {:?}",
            plan.reason()
        );
        for (_, object) in plan.walk() {
            let ObjectRef::Action(action) = object else {
                continue;
            };
            assert_eq!(action.state().status, Status::Completed);
            let last = action.attempts().last().expect("an attempt");
            let Some(Outcome::Response(json)) = &last.outcome else {
                panic!("completed without a response: {last:?}")
            };
            let resp: LedgerResp = json.decode().expect("a ledger response");
            let runs = by_action
                .get(&action.id().to_string())
                .expect("ledger rows of a completed action");
            assert!(runs.iter().all(|r| r.plan == *id));
            let last_row = runs.last().unwrap();
            assert_eq!(
                last_row.id,
                resp.ledger_id,
                "action {} of plan {id}: an attempt started after the stored completing attempt: {runs:?}",
                action.id()
            );
            assert_eq!(last_row.ok, Some(true));
            assert_eq!(last_row.worker, resp.worker);
            if let Some(done) = completed_at_kill.get(&action.id().to_string()) {
                assert_eq!(
                    last_row.id,
                    *done,
                    "action {} was stored as completed at the kill, and ran again later: {runs:?}",
                    action.id()
                );
                audit.completed_at_kill += 1;
            }
            for pair in runs.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let end = match (a.ended, killed) {
                    (Some(e), _) => e,
                    (None, Some((w, t))) if a.worker == w => {
                        audit.cut_by_kill += 1;
                        t
                    }
                    // The frozen worker's attempt: its run stopped when its write was refused,
                    // dropping the attempt before the plugin recorded an end.
                    (None, _) if paused == Some(a.worker.as_str()) => {
                        audit.overlapped_by_pause += 1;
                        continue;
                    }
                    (None, _) => panic!(
                        "an attempt of a live worker never ended, and another started: {a:?} {b:?}"
                    ),
                };
                if end > b.started && paused == Some(a.worker.as_str()) {
                    audit.overlapped_by_pause += 1;
                    continue;
                }
                assert!(
                    end <= b.started,
                    "action {} ran on two workers at the same time: {a:?} and {b:?}",
                    action.id()
                );
                if a.ok == Some(true) {
                    assert!(
                        !completed_at_kill.contains_key(&a.action),
                        "action {} was stored as completed, then ran again: {a:?} then {b:?}",
                        a.action
                    );
                    assert!(
                        killed.is_some_and(|(w, _)| w == a.worker),
                        "completed action {} ran twice: {a:?} then {b:?}",
                        action.id()
                    );
                    audit.reran_after_kill += 1;
                }
            }
        }
    }
    audit
}

/// Three workers, 30 plans with concurrency and retries; one worker is killed with SIGKILL at
/// a different moment in each round; the others take its plans over; every plan completes and
/// the ledger shows no overlap and no re-run of a completed action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_a_worker_mid_run_every_plan_completes_once() {
    let Some(url) = pg_url("sigkill_a_worker_mid_run_every_plan_completes_once") else {
        return;
    };
    for (round, kill_after_ms) in [400u64, 1_200, 2_500].into_iter().enumerate() {
        let schema = schema(&format!("kill{round}"));
        let (ws, store, sql) = client(&url, &schema).await;
        let workers: Vec<Worker> = (0..3)
            .map(|w| Worker::spawn(&args(&url, &schema, &format!("w{w}"), 2_500)))
            .collect();
        for w in &workers {
            w.wait_ready();
        }
        let mut ids = Vec::new();
        for p in 0..30 {
            let plan = ledger_plan(
                &format!("round {round} plan {p}"),
                6,
                3,
                3,
                120,
                (round * 100 + p) as u64,
            );
            ids.push(ws.submit(plan).await.unwrap());
        }
        for id in &ids {
            ws.start(*id).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        let victim = &workers[round % 3];
        victim.signal("-KILL");
        let killed_at = db_now(&sql).await;
        // What the store holds as done when the worker died: none of it may run again.
        let done_at_kill = stored_completions(&store, &ids).await;
        let took = wait_all_ended(&store, &ids, Duration::from_secs(180)).await;
        let audit = audit(
            &store,
            &sql,
            &schema,
            &ids,
            Some((&victim.id, killed_at)),
            None,
            &done_at_kill,
        )
        .await;
        let rows = ledger(&sql, &schema).await;
        let by_victim = rows.iter().filter(|r| r.worker == victim.id).count();
        let after_kill_by_others = rows
            .iter()
            .filter(|r| r.worker != victim.id && r.started > killed_at)
            .count();
        eprintln!(
            "round {round}: killed {} after {kill_after_ms} ms; all 30 plans completed {took:?} later; \
             ledger rows {}, by the killed worker {by_victim}, attempts cut by the kill {}, \
             completed on the killed worker but not yet stored, so run again (at-least-once) {}, \
             actions stored as completed at the kill (none ran again) {}",
            victim.id,
            audit.rows,
            audit.cut_by_kill,
            audit.reran_after_kill,
            audit.completed_at_kill
        );
        assert!(
            by_victim > 0,
            "the killed worker had run nothing: the round tests no takeover"
        );
        assert!(
            audit.completed_at_kill > 0,
            "nothing was complete at the kill: the round tests little"
        );
        assert!(after_kill_by_others > 0, "nothing ran after the kill");
        // The plans the killed worker held were taken over: they are complete and their
        // completing attempts ran on the surviving workers.
    }
}

/// Control through the database: a client's pause, resume and stop reach the worker that holds
/// the plan; a pause sent while that worker is dead (SIGKILL) waits in the database for the
/// worker that takes the plan over, which starts it paused and runs nothing of it; a request for
/// an ended plan is refused; who asked is the client's database role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_requests_reach_whichever_worker_holds_the_plan_through_the_database() {
    use coercion::control::{self, ControlError, ControlOp, ControlRequest, Outcome};

    let Some(url) =
        pg_url("control_requests_reach_whichever_worker_holds_the_plan_through_the_database")
    else {
        return;
    };
    let schema = schema("control");
    let (ws, store, sql) = client(&url, &schema).await;
    let first = Worker::spawn(&args(&url, &schema, "first", 2_000));
    first.wait_ready();
    // Two hosts of 40 steps of ~150 ms: long enough to pause, resume and kill mid-run.
    let id = ws
        .submit(ledger_plan("controlled", 2, 40, 2, 150, 7))
        .await
        .unwrap();
    ws.start(id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.read(id).await.unwrap().status() != Status::Running {
        assert!(Instant::now() < deadline, "the plan did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let send = |op: ControlOp, wait_ms: u64| {
        let store = store.clone();
        async move {
            control::send_shared(
                &store,
                &ControlRequest::new(op, id),
                Duration::from_millis(wait_ms),
            )
            .await
        }
    };

    // The worker that holds the plan carries requests out and answers.
    assert_eq!(
        send(ControlOp::Pause, 20_000).await.unwrap(),
        Some(Outcome::Done)
    );
    assert!(store.read(id).await.unwrap().is_paused());
    assert_eq!(
        send(ControlOp::Resume, 20_000).await.unwrap(),
        Some(Outcome::Done)
    );
    assert!(!store.read(id).await.unwrap().is_paused());

    // Its worker dies; a pause sent now is kept, unanswered, for the next holder.
    first.signal("-KILL");
    assert_eq!(send(ControlOp::Pause, 500).await.unwrap(), None);
    let pending: i64 = sql
        .query_one(
            &format!("SELECT count(*) FROM {schema}.control_requests WHERE answered_at IS NULL"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 1);
    let second = Worker::spawn(&args(&url, &schema, "second", 2_000));
    second.wait_ready();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let unanswered: i64 = sql
            .query_one(
                &format!(
                    "SELECT count(*) FROM {schema}.control_requests WHERE answered_at IS NULL"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if unanswered == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker that took the plan over did not answer the pause"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plan = store.read(id).await.unwrap();
    assert!(plan.is_paused(), "taken over, the plan is paused");
    assert_eq!(
        plan.resumptions().len(),
        1,
        "the second worker took it over"
    );
    // Who ran it, under which lease: the first worker started it, the second resumed it under
    // the next grant of the lease (its claim: the run's own acquire keeps the lease it holds),
    // the epoch the database holds now.
    let owners = plan.owners();
    assert_eq!(owners.len(), 2, "{owners:?}");
    assert!(!owners[0].resumed && owners[1].resumed, "{owners:?}");
    let (first, second) = (owners[0].epoch.unwrap(), owners[1].epoch.unwrap());
    assert_eq!(second, first + 1, "{owners:?}");
    let held: i64 = sql
        .query_one(
            &format!("SELECT lease_epoch FROM {schema}.plans WHERE id = $1"),
            &[&id.0],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, i64::try_from(second).unwrap());
    let listed = store
        .list(&coercion::storage::ListFilter::default())
        .await
        .unwrap();
    let summary = listed.iter().find(|s| s.id == id).unwrap();
    assert_eq!(
        summary.owner.as_ref(),
        plan.owner(),
        "the summary names the owner"
    );
    assert_eq!(summary.resumptions, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let by_second = ledger(&sql, &schema)
        .await
        .iter()
        .filter(|r| r.worker == "second")
        .count();
    assert_eq!(by_second, 0, "the second worker ran steps of a paused plan");

    // A stop ends it; then there is nothing left to control.
    assert_eq!(
        send(ControlOp::Stop, 20_000).await.unwrap(),
        Some(Outcome::Done)
    );
    wait_all_ended(&store, &[id], Duration::from_secs(60)).await;
    assert_eq!(store.read(id).await.unwrap().status(), Status::Stopped);
    match send(ControlOp::Stop, 1_000).await {
        Err(ControlError::Refused(m)) => assert!(m.contains("has ended (Stopped)"), "{m}"),
        other => panic!("a stop of an ended plan gave {other:?}"),
    }

    // Every request was answered; each names the role the client logged in as.
    let rows = sql
        .query(
            &format!(
                "SELECT requested_by = session_user, answer FROM {schema}.control_requests ORDER BY id"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert!(r.get::<_, bool>(0));
        assert_eq!(
            r.get::<_, Option<String>>(1).as_deref(),
            Some(r#"{"ok":true}"#)
        );
    }
    // A client cannot write another role's name as who asked, nor change it afterwards.
    let row = sql
        .query_one(
            &format!(
                "INSERT INTO {schema}.control_requests (plan_id, request, requested_by) \
                 VALUES ($1, '{{}}', 'mallory') RETURNING id, requested_by = session_user"
            ),
            &[&id.0],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(1), "the forged name was kept");
    let forged: i64 = row.get(0);
    sql.execute(
        &format!("UPDATE {schema}.control_requests SET requested_by = 'mallory' WHERE id = $1"),
        &[&forged],
    )
    .await
    .unwrap();
    let kept: bool = sql
        .query_one(
            &format!(
                "SELECT requested_by = session_user FROM {schema}.control_requests WHERE id = $1"
            ),
            &[&forged],
        )
        .await
        .unwrap()
        .get(0);
    assert!(kept, "who asked was changed afterwards");
}

/// A worker paused (SIGSTOP) past its lease's expiry loses the plan to another worker; once
/// resumed (SIGCONT) it cannot write to the plan any more — its writes are refused — and it
/// stops running it on its own: it starts no further action of the plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_is_fenced_and_stops() {
    let Some(url) = pg_url("a_paused_worker_is_fenced_and_stops") else {
        return;
    };
    let schema = schema("pause");
    let (ws, store, sql) = client(&url, &schema).await;
    let a = Worker::spawn(&args(&url, &schema, "a", 1_000));
    a.wait_ready();
    // One sequence of 8 actions of 400 ms each, one after the other.
    let plan = pg_worker::sequential_plan("paused", 8, 400);
    let id = ws.submit(plan).await.unwrap();
    ws.start(id).await.unwrap();
    // Wait until A runs the plan's second action.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ledger(&sql, &schema)
        .await
        .iter()
        .filter(|r| r.worker == "a")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "worker a did not run the plan");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.signal("-STOP");
    let paused_at = db_now(&sql).await;
    let b = Worker::spawn(&args(&url, &schema, "b", 1_000));
    b.wait_ready();
    // B takes over once A's lease expired, and runs an action.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ledger(&sql, &schema).await.iter().any(|r| r.worker == "b") {
        assert!(
            Instant::now() < deadline,
            "worker b did not take the plan over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumed_at = db_now(&sql).await;
    a.signal("-CONT");
    wait_all_ended(&store, &[id], Duration::from_secs(60)).await;
    // Give A time to notice.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let rows = ledger(&sql, &schema).await;
    assert!(
        a.fenced() >= 1,
        "the resumed worker never had a write refused: {:?}",
        a.lines
            .lock()
            .unwrap()
            .iter()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
    );
    let late: Vec<&Row> = rows
        .iter()
        .filter(|r| r.worker == "a" && r.started > resumed_at)
        .collect();
    assert!(
        late.is_empty(),
        "the fenced worker went on running the plan: {late:?}"
    );
    // Everything the store recorded as done after the pause was done by B.
    let final_plan = store.read(id).await.unwrap();
    assert_eq!(final_plan.state().status, Status::Completed);
    let row_of: HashMap<i64, &Row> = rows.iter().map(|r| (r.id, r)).collect();
    for (_, object) in final_plan.walk() {
        let ObjectRef::Action(action) = object else {
            continue;
        };
        for attempt in action.attempts() {
            let Some(Outcome::Response(json)) = &attempt.outcome else {
                continue;
            };
            let resp: LedgerResp = json.decode().unwrap();
            let row = row_of[&resp.ledger_id];
            if resp.worker == "a" {
                assert!(
                    row.ended.is_some_and(|e| e <= paused_at),
                    "an attempt of the paused worker that ended after the pause was stored: {row:?}"
                );
            }
        }
    }
    let audited = audit(
        &store,
        &sql,
        &schema,
        &[id],
        None,
        Some("a"),
        &HashMap::new(),
    )
    .await;
    eprintln!(
        "paused worker: {} writes refused after SIGCONT; its in-flight attempt overlapped the takeover's re-run, or was cut when its run stopped, {} time(s); ledger rows by a {}, by b {}",
        a.fenced(),
        audited.overlapped_by_pause,
        rows.iter().filter(|r| r.worker == "a").count(),
        rows.iter().filter(|r| r.worker == "b").count()
    );
}

/// Load: 200 plans submitted and started at once, spread over three workers; all complete.
/// Prints plans/s and the p50/p99 time from the start request to the plan's first action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_200_plans_across_three_workers() {
    let Some(url) = pg_url("load_200_plans_across_three_workers") else {
        return;
    };
    let schema = schema("load");
    let (ws, store, sql) = client(&url, &schema).await;
    let workers: Vec<Worker> = (0..3)
        .map(|w| {
            let mut a = args(&url, &schema, &format!("w{w}"), 10_000);
            a.max_running = 100;
            a.claim_batch = 20;
            Worker::spawn(&a)
        })
        .collect();
    for w in &workers {
        w.wait_ready();
    }
    let mut ids = Vec::new();
    for p in 0..200 {
        ids.push(
            ws.submit(ledger_plan(&format!("load {p}"), 4, 2, 2, 0, p))
                .await
                .unwrap(),
        );
    }
    let t0 = db_now(&sql).await;
    let start = Instant::now();
    let mut requested: HashMap<PlanId, f64> = HashMap::new();
    for id in &ids {
        ws.start(*id).await.unwrap();
        requested.insert(*id, t0 + start.elapsed().as_secs_f64());
    }
    let took = wait_all_ended(&store, &ids, Duration::from_secs(300)).await
        + start.elapsed().min(Duration::ZERO);
    let wall = start.elapsed();
    audit(&store, &sql, &schema, &ids, None, None, &HashMap::new()).await;
    let rows = ledger(&sql, &schema).await;
    let mut first: HashMap<PlanId, f64> = HashMap::new();
    let mut per_worker: HashMap<&str, usize> = HashMap::new();
    for r in &rows {
        first
            .entry(r.plan)
            .and_modify(|t| *t = t.min(r.started))
            .or_insert(r.started);
        *per_worker.entry(r.worker.as_str()).or_default() += 1;
    }
    let mut waits: Vec<f64> = ids.iter().map(|id| first[id] - requested[id]).collect();
    waits.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        waits[((waits.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(waits.len() - 1)]
    };
    let _ = took;
    eprintln!(
        "LOAD: 200 plans x 8 actions over 3 workers: {:.1} plans/s ({:.2} s wall); start-to-first-action p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; actions per worker {per_worker:?}",
        200.0 / wall.as_secs_f64(),
        wall.as_secs_f64(),
        pct(0.50) * 1e3,
        pct(0.99) * 1e3,
        waits.last().unwrap() * 1e3
    );
    assert_eq!(
        per_worker.len(),
        3,
        "every worker ran plans: {per_worker:?}"
    );
}

/// The database role the tests' connections log in as.
async fn session_role(url: &str) -> String {
    let (sql, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    sql.query_one("SELECT session_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits (30 s at most) until each of `ids` waits at a gate.
async fn wait_for_gates(store: &PostgresStore, ids: &[PlanId]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for &id in ids {
        while store.read(id).await.unwrap().waiting_gates().is_empty() {
            assert!(
                Instant::now() < deadline,
                "plan {id} never reached its gate"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Gate approvals through the database: a client's approve reaches the worker that holds the
/// plan, which records the decision as the client's database role (`pg:<role>`) and lets the
/// plan through; a role the gate does not name is refused and nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_is_approved_through_the_database_as_the_clients_role() {
    use coercion::control::{self, ControlError, ControlRequest, Outcome};
    use coercion::storage::PostgresOptions;
    use coercion::worker::WorkerOptions;

    let Some(url) = pg_url("a_gate_is_approved_through_the_database_as_the_clients_role") else {
        return;
    };
    let schema = schema("gate");
    let store = PostgresStore::connect_with(&url, PostgresOptions::default().schema(&schema))
        .await
        .unwrap();
    let role = session_role(&url).await;
    let approver = format!("pg:{role}");
    let ws = Workstream::builder()
        .store(store.clone())
        .registry(coercion::testing::registry())
        .build()
        .await
        .unwrap();
    let worker = ws
        .spawn_worker(WorkerOptions::default().poll_interval(Duration::from_millis(100)))
        .unwrap();
    let only_alice = ws
        .submit(gated::gated_plan(&["pg:alice"], Duration::from_secs(3600)))
        .await
        .unwrap();
    let ours = ws
        .submit(gated::gated_plan(&[&approver], Duration::from_secs(3600)))
        .await
        .unwrap();
    for id in [only_alice, ours] {
        ws.start(id).await.unwrap();
    }
    wait_for_gates(&store, &[only_alice, ours]).await;
    let decide = |id: PlanId| {
        let store = store.clone();
        async move {
            control::send_shared(
                &store,
                &ControlRequest::decide(true, id, "promote canary", Some("looks good".into())),
                Duration::from_secs(20),
            )
            .await
        }
    };

    // This role is not among the gate's approvers: refused, nothing recorded, still waiting.
    match decide(only_alice).await {
        Err(ControlError::Refused(m)) => assert!(
            m.contains(&format!(
                "{approver} (database role) may not decide gate \"promote canary\""
            )),
            "{m}"
        ),
        other => panic!("an approval by a role the gate does not name gave {other:?}"),
    }
    let plan = store.read(only_alice).await.unwrap();
    assert!(plan.decisions().is_empty());
    assert_eq!(plan.waiting_gates().len(), 1);

    // Named: approved by the worker that holds the plan, recorded as the role, and the plan
    // goes through to its end.
    assert_eq!(decide(ours).await.unwrap(), Some(Outcome::Done));
    let done = ws.wait(ours).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{done}");
    let decisions = done.decisions();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert!(decisions[0].approved);
    assert_eq!(decisions[0].by, format!("{approver} (database role)"));
    assert_eq!(decisions[0].comment.as_deref(), Some("looks good"));

    ws.stop(only_alice).await.unwrap();
    worker.stop().await;
}

/// A program that runs its plans over PostgreSQL itself (a workstream, no `spawn_worker`)
/// carries out the control requests clients send through the database, as a worker does: a
/// gate approved, a plan stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_running_its_own_plans_answers_control_requests_through_the_database() {
    use coercion::control::{self, ControlRequest, Outcome};
    use coercion::storage::PostgresOptions;

    let Some(url) =
        pg_url("a_program_running_its_own_plans_answers_control_requests_through_the_database")
    else {
        return;
    };
    let schema = schema("own");
    let store = PostgresStore::connect_with(&url, PostgresOptions::default().schema(&schema))
        .await
        .unwrap();
    let role = session_role(&url).await;
    let ws = Workstream::builder()
        .store(store.clone())
        .registry(coercion::testing::registry())
        .build()
        .await
        .unwrap();
    let approver = format!("pg:{role}");
    let gated = ws
        .submit(gated::gated_plan(&[&approver], Duration::from_secs(3600)))
        .await
        .unwrap();
    let stopped = ws
        .submit(gated::gated_plan(&[&approver], Duration::from_secs(3600)))
        .await
        .unwrap();
    for id in [gated, stopped] {
        ws.start(id).await.unwrap();
    }
    wait_for_gates(&store, &[gated, stopped]).await;
    // A separate client: another store over the same schema, as the CLI would be.
    let client = PostgresStore::connect_with(&url, PostgresOptions::default().schema(&schema))
        .await
        .unwrap();
    let approve = ControlRequest::decide(true, gated, "promote canary", None);
    assert_eq!(
        control::send_shared(&client, &approve, Duration::from_secs(10))
            .await
            .unwrap(),
        Some(Outcome::Done)
    );
    let done = ws.wait(gated).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{done}");
    assert_eq!(
        done.decisions()[0].by,
        format!("{approver} (database role)")
    );

    let stop = ControlRequest::new(control::ControlOp::Stop, stopped);
    assert_eq!(
        control::send_shared(&client, &stop, Duration::from_secs(10))
            .await
            .unwrap(),
        Some(Outcome::Done)
    );
    let ended = ws.wait(stopped).await.unwrap();
    assert_eq!(ended.status(), Status::Stopped, "{ended}");
}

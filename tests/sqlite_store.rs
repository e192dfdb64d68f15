//! What only the SQLite store promises: one writer process (a clear `Locked` error for the
//! next, across processes too), read-only opening while a writer runs, everything survives a
//! reopen, the file stays consistent, foreign files are refused, bad input gives errors rather
//! than panics, and concurrent writes are group-committed.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use coercion::prelude::*;
use coercion::storage::contract::{at, sample_plan, sample_run};
use coercion::storage::{
    Change, ListFilter, PlanSummary, SqliteOptions, SqliteStore, Store, StoreError, Synchronous,
};
use coercion::testing::{FakeAction, FakeCheck, FakeReq, Fakes};
use coercion::workflow::{Loc, ObjectRef};
use coercion::{Attempt, State};

/// A fresh directory under the target's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("sqlite_store")
            .join(format!("{test}-{}", PlanId::new_v7()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("plans.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn locked_message(result: Result<SqliteStore, StoreError>) -> String {
    match result {
        Err(StoreError::Locked(message)) => message,
        other => panic!("expected StoreError::Locked, got {other:?}"),
    }
}

fn permanent_message(result: Result<SqliteStore, StoreError>) -> String {
    match result {
        Err(StoreError::Permanent { message, .. }) => message,
        other => panic!("expected StoreError::Permanent, got {other:?}"),
    }
}

#[tokio::test]
async fn a_second_open_in_this_process_is_locked_until_the_first_closes() {
    let dir = TempDir::new("second_open");
    let first = SqliteStore::open(dir.db()).unwrap();
    let message = locked_message(SqliteStore::open(dir.db()));
    assert!(
        message.contains(&dir.db().display().to_string()),
        "names the file: {message}"
    );
    assert!(
        message.contains("in use by this process"),
        "says who holds it: {message}"
    );
    assert!(
        message.contains("open_read_only"),
        "says what works instead: {message}"
    );
    // The same file under another spelling of its path.
    let other_spelling = dir.0.join(".").join("plans.db");
    locked_message(SqliteStore::open_with(
        &other_spelling,
        SqliteOptions::default(),
    ));
    // … and through a link to it, or to its directory.
    #[cfg(unix)]
    {
        let link = dir.0.join("alias.db");
        std::os::unix::fs::symlink(dir.db(), &link).unwrap();
        locked_message(SqliteStore::open(&link));
        let dir_link = dir.0.join("linked-dir");
        std::os::unix::fs::symlink(&dir.0, &dir_link).unwrap();
        locked_message(SqliteStore::open(dir_link.join("plans.db")));
    }
    drop(first);
    let again =
        SqliteStore::open(dir.db()).expect("the lock is released when the store is dropped");
    assert!(!again.is_read_only());
}

/// Not a test on its own: the child process of `a_second_process_is_locked_out…`, which holds
/// the store named by `COERCION_TEST_HOLD` until its stdin closes.
#[test]
#[ignore = "the child process of a_second_process_is_locked_out_with_the_holders_pid_and_may_read"]
fn hold_store_for_another_process() {
    let Ok(path) = std::env::var("COERCION_TEST_HOLD") else {
        return;
    };
    let store = SqliteStore::open(&path).expect("the child opens the store");
    println!("holding");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(store);
}

#[tokio::test]
async fn a_second_process_is_locked_out_with_the_holders_pid_and_may_read() {
    let dir = TempDir::new("second_process");
    {
        let store = SqliteStore::open(dir.db()).unwrap();
        store
            .create(&sample_plan("written before the child runs"))
            .await
            .unwrap();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hold_store_for_another_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("COERCION_TEST_HOLD", dir.db())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("holding") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child exited before holding the store"
        );
    }
    let message = locked_message(SqliteStore::open(dir.db()));
    assert!(
        message.contains(&format!("pid {}", child.id())),
        "names the holder's pid: {message}"
    );
    assert!(message.contains("open_read_only"), "{message}");
    let reader = SqliteStore::open_read_only(dir.db())
        .expect("reading while another process holds the store");
    assert_eq!(reader.list(&ListFilter::default()).await.unwrap().len(), 1);

    // The lock goes with the process, however it ends.
    child.kill().unwrap();
    child.wait().unwrap();
    SqliteStore::open(dir.db()).expect("the lock of a killed process is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_opening_works_while_a_writer_runs_and_sees_its_commits() {
    let dir = TempDir::new("read_only");
    let writer = SqliteStore::open(dir.db()).unwrap();
    let plan = sample_run("watched");
    writer.create(&plan).await.unwrap();

    let reader = SqliteStore::open_read_only(dir.db()).unwrap();
    assert!(reader.is_read_only());
    assert!(
        reader.describe().contains("read-only"),
        "{}",
        reader.describe()
    );
    assert_eq!(reader.read(plan.id()).await.unwrap(), plan);

    let changes = [
        Change::Reason(Reason::PostCheck),
        Change::Heartbeat(at(500, 5)),
    ];
    writer.apply(plan.id(), &changes).await.unwrap();
    let seen = reader.read(plan.id()).await.unwrap();
    assert_eq!(
        (seen.reason(), seen.heartbeat()),
        (Reason::PostCheck, Some(at(500, 5))),
        "a committed write is visible"
    );
    assert_eq!(
        reader.list(&ListFilter::default()).await.unwrap(),
        writer.list(&ListFilter::default()).await.unwrap()
    );

    for result in [
        reader.create(&sample_plan("refused")).await,
        reader.apply(plan.id(), &changes).await,
        reader.delete(plan.id()).await,
    ] {
        match result {
            Err(StoreError::Permanent { message: m, .. }) => {
                assert!(m.contains("read-only"), "{m}")
            }
            other => panic!("a write to a read-only store gave {other:?}"),
        }
    }
    assert_eq!(reader.stats().writes, 0);
    drop(writer);
    // After the writer closed (and SQLite removed its WAL), the file still reads.
    assert_eq!(reader.read(plan.id()).await.unwrap(), seen);
    let late_reader = SqliteStore::open_read_only(dir.db()).unwrap();
    assert_eq!(late_reader.read(plan.id()).await.unwrap(), seen);
}

#[tokio::test]
async fn read_only_opening_refuses_a_missing_or_empty_file() {
    let dir = TempDir::new("read_only_missing");
    let message = permanent_message(SqliteStore::open_read_only(dir.db()));
    assert!(
        message.contains(&dir.db().display().to_string()),
        "{message}"
    );
    std::fs::write(dir.db(), b"").unwrap();
    let message = permanent_message(SqliteStore::open_read_only(dir.db()));
    assert!(message.contains("not a coercion store yet"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_the_file_preserves_everything() {
    let dir = TempDir::new("reopen");
    let mut plans = vec![
        sample_run("first"),
        sample_plan("second"),
        sample_run("third"),
    ];
    {
        let store = SqliteStore::open_with(
            dir.db(),
            SqliteOptions::default().synchronous(Synchronous::Extra),
        )
        .unwrap();
        for p in &plans {
            store.create(p).await.unwrap();
        }
        let (loc, id) = plans[1]
            .walk()
            .find_map(|(l, o)| matches!(o, ObjectRef::Action(_)).then_some((l, o.id())))
            .unwrap();
        let changes = [
            Change::State {
                loc: Loc::Plan,
                id: plans[1].id().0,
                state: State {
                    status: Status::Running,
                    start: Some(at(1, 1)),
                    end: None,
                },
            },
            Change::Attempt {
                loc,
                id,
                index: 0,
                attempt: Attempt {
                    start: at(2, 2),
                    end: None,
                    outcome: None,
                },
            },
            Change::Paused(true),
        ];
        store.apply(plans[1].id(), &changes).await.unwrap();
        for c in &changes {
            c.apply_to(&mut plans[1]).unwrap();
        }
        store.delete(plans[2].id()).await.unwrap();
        plans.pop();
    }
    let store = SqliteStore::open(dir.db()).unwrap();
    for p in &plans {
        assert_eq!(&store.read(p.id()).await.unwrap(), p);
    }
    let mut expected: Vec<PlanSummary> = plans.iter().map(PlanSummary::of).collect();
    expected.sort_by(|a, b| b.submit_time.cmp(&a.submit_time).then(b.id.cmp(&a.id)));
    assert_eq!(store.list(&ListFilter::default()).await.unwrap(), expected);
    store.integrity_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_on_sqlite_reads_back_whole_and_passes_the_integrity_check() {
    let dir = TempDir::new("real_run");
    let store = SqliteStore::open(dir.db()).unwrap();
    let fakes = Fakes::new();
    let ws = Workstream::builder()
        .registry(fakes.registry())
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let plan = Plan::builder("deploy on sqlite")
        .pre_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>("pre", FakeReq::ok())))
        .block(
            Block::builder("web")
                .concurrency(4)
                .sequences((0..8).map(|i| {
                    Sequence::builder(format!("host-{i}"))
                        .action(
                            ActionSpec::new::<FakeAction>(
                                "copy",
                                FakeReq::fail_times(1).tag(format!("copy-{i}")),
                            )
                            .retries(2),
                        )
                        .action(ActionSpec::new::<FakeAction>(
                            "restart",
                            FakeReq::ok().tag(format!("restart-{i}")),
                        ))
                })),
        )
        .deferred(
            DeferredBatch::builder("cleanup", When::Always)
                .action(ActionSpec::new::<FakeAction>("clean", FakeReq::ok())),
        )
        .build();
    let done = ws.run(plan).await.unwrap();
    assert_eq!(done.status(), Status::Completed);
    assert_eq!(
        store.read(done.id()).await.unwrap(),
        done,
        "the store holds exactly the finished tree"
    );
    let stats = store.stats();
    assert!(
        stats.writes > 8 * 4,
        "the run wrote its progress: {stats:?}"
    );
    assert_eq!(stats.failed_writes, 0, "{stats:?}");
    store.integrity_check().await.unwrap();
    drop(ws);
    drop(store);
    let reopened = SqliteStore::open_read_only(dir.db()).unwrap();
    assert_eq!(reopened.read(done.id()).await.unwrap(), done);
    reopened.integrity_check().await.unwrap();
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_refused_with_its_path_and_left_alone() {
    let dir = TempDir::new("not_sqlite");
    let content = "name,status\nweb-1,ok\n".repeat(200);
    std::fs::write(dir.db(), &content).unwrap();
    for message in [
        permanent_message(SqliteStore::open(dir.db())),
        permanent_message(SqliteStore::open_read_only(dir.db())),
    ] {
        assert!(
            message.contains(&dir.db().display().to_string()),
            "names the file: {message}"
        );
        assert!(
            message.contains("not a SQLite database"),
            "says what is wrong: {message}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.db()).unwrap(),
        content,
        "the file is not modified"
    );
    assert!(!Path::new(&format!("{}-wal", dir.db().display())).exists());
}

#[tokio::test]
async fn a_missing_directory_is_a_clear_error() {
    let dir = TempDir::new("missing_dir");
    let path = dir.0.join("no").join("such").join("plans.db");
    let message = permanent_message(SqliteStore::open(&path));
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[tokio::test]
async fn a_store_error_keeps_the_operating_systems_error_as_its_source() {
    let dir = TempDir::new("source_chain");
    let path = dir.0.join("no").join("such").join("plans.db");
    let err = SqliteStore::open(&path).unwrap_err();
    let io = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .unwrap_or_else(|| panic!("no io::Error source: {err:?}"));
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert!(
        !err.to_string().contains(&io.to_string()),
        "the cause is the source, not repeated in the message: {err}"
    );

    // A workstream error wrapping it keeps the chain.
    let Err(ws_err) = coercion::Workstream::open(&path, coercion::Registry::new()).await else {
        panic!("the directory is missing")
    };
    let source = std::error::Error::source(&ws_err).expect("the store error's cause");
    assert!(
        source.downcast_ref::<std::io::Error>().is_some(),
        "{ws_err:?}"
    );
}

#[tokio::test]
async fn bad_input_gives_errors_not_panics_and_the_store_keeps_working() {
    let dir = TempDir::new("bad_input");
    let store = SqliteStore::open(dir.db()).unwrap();
    let plan = sample_plan("bad input");
    store.create(&plan).await.unwrap();
    let (loc, id) = plan
        .walk()
        .find_map(|(l, o)| matches!(o, ObjectRef::Action(_)).then_some((l, o.id())))
        .unwrap();
    let far_future = at(9_000_000_000, 0); // In the year 2309.
    let bad_batches: Vec<(Vec<Change>, &str)> = vec![
        (vec![Change::Heartbeat(far_future)], "2262"),
        (
            vec![Change::State {
                loc,
                id: plan.blocks()[0].id(),
                state: State::default(),
            }],
            "has no object",
        ),
        (
            vec![Change::State {
                loc: Loc::Plan,
                id,
                state: State::default(),
            }],
            "has no object",
        ),
        (
            vec![Change::Reset {
                loc: Loc::Block(0),
                id: plan.blocks()[0].id(),
            }],
            "has no action",
        ),
        (
            vec![Change::Attempt {
                loc: Loc::Block(0),
                id: plan.blocks()[0].id(),
                index: 0,
                attempt: Attempt {
                    start: at(0, 0),
                    end: None,
                    outcome: None,
                },
            }],
            "has no action",
        ),
    ];
    for (batch, expected) in &bad_batches {
        match store.apply(plan.id(), batch).await {
            Err(StoreError::Permanent { message: m, .. }) => {
                assert!(m.contains(expected), "{batch:?}: {m}")
            }
            other => panic!("{batch:?} gave {other:?}"),
        }
    }
    let mut twins = sample_plan("twins");
    let twin_id = twins.blocks()[0].id();
    let json = twins
        .to_json()
        .replace(&twins.blocks()[1].id().to_string(), &twin_id.to_string());
    twins = Plan::from_json(&json).unwrap();
    match store.create(&twins).await {
        Err(StoreError::Permanent { message: m, .. }) => assert!(m.contains("used twice"), "{m}"),
        other => panic!("a plan with a duplicate object id gave {other:?}"),
    }
    let mut ancient = sample_plan("ancient");
    ancient = Plan::from_json(&ancient.to_json().replace("2023-11-14", "1500-01-01")).unwrap();
    assert!(matches!(
        store.create(&ancient).await,
        Err(StoreError::Permanent { .. })
    ));

    assert_eq!(
        store.read(plan.id()).await.unwrap(),
        plan,
        "nothing of the refused writes was stored"
    );
    store
        .apply(plan.id(), &[Change::Paused(true)])
        .await
        .unwrap();
    assert!(store.read(plan.id()).await.unwrap().is_paused());
    let stats = store.stats();
    // The out-of-range time, the plan's state under another object's id (both found as the
    // batch is lowered to rows), the twin ids and the ancient plan are refused before they
    // reach the writer; the other bad batches are run and rolled back.
    assert_eq!(
        stats.failed_writes,
        bad_batches.len() as u64 - 2,
        "{stats:?}"
    );
    store.integrity_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_group_committed() {
    let dir = TempDir::new("group_commit");
    let store = SqliteStore::open(dir.db()).unwrap();
    let plan = sample_plan("group commit");
    store.create(&plan).await.unwrap();
    let actions: Vec<_> = plan
        .walk()
        .filter(|(_, o)| matches!(o, ObjectRef::Action(_)))
        .map(|(l, o)| (l, o.id()))
        .collect();
    let before = store.stats();

    // 1,000 applies from 100 tasks, each task writing its 10 one after another.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..100usize {
        let store = store.clone();
        let (loc, id) = actions[t % actions.len()];
        let plan_id = plan.id();
        tasks.spawn(async move {
            for i in 0..10 {
                let state = State {
                    status: Status::Running,
                    start: Some(at(t as i64, i)),
                    end: None,
                };
                store
                    .apply(
                        plan_id,
                        &[
                            Change::State { loc, id, state },
                            Change::Heartbeat(at(t as i64, i)),
                        ],
                    )
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let after = store.stats();
    let writes = after.writes - before.writes;
    let commits = after.commits - before.commits;
    assert_eq!(writes, 1_000, "{after:?}");
    assert!(
        commits <= writes / 5,
        "1,000 concurrent writes took {commits} commits: {after:?}"
    );
    assert!(after.largest_group >= 10, "{after:?}");

    // 1,000 applies created at once: a handful of transactions.
    let before = store.stats();
    let batches: Vec<[Change; 1]> = (0..1_000).map(|i| [Change::Heartbeat(at(i, 0))]).collect();
    let writes: Vec<_> = batches.iter().map(|b| store.apply(plan.id(), b)).collect();
    for w in await_in_order(writes).await {
        w.unwrap();
    }
    let after = store.stats();
    assert_eq!(after.writes - before.writes, 1_000);
    assert!(
        after.commits - before.commits <= 50,
        "{before:?} → {after:?}"
    );
    assert_eq!(
        store.read(plan.id()).await.unwrap().heartbeat(),
        Some(at(999, 0)),
        "the last write wins"
    );
    store.integrity_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_in_a_group_fails_alone() {
    let dir = TempDir::new("group_failure");
    let store = SqliteStore::open(dir.db()).unwrap();
    let mut plan = sample_plan("group failure");
    store.create(&plan).await.unwrap();
    let (loc, id) = plan
        .walk()
        .find_map(|(l, o)| matches!(o, ObjectRef::Action(_)).then_some((l, o.id())))
        .unwrap();
    let unknown = PlanId::new_v7();
    // Every tenth write is bad: an attempt of an action the plan does not have, or a plan that
    // does not exist.
    let mut next_attempt = 0;
    let batches: Vec<(PlanId, Vec<Change>)> = (0..300u32)
        .map(|i| {
            let attempt = Attempt {
                start: at(i.into(), 0),
                end: None,
                outcome: None,
            };
            match i % 10 {
                3 => (
                    plan.id(),
                    vec![
                        Change::Heartbeat(at(i.into(), 1)),
                        Change::Attempt {
                            loc: Loc::Sequence { block: 0, seq: 99 },
                            id,
                            index: 0,
                            attempt,
                        },
                    ],
                ),
                7 => (unknown, vec![Change::Heartbeat(at(i.into(), 1))]),
                _ => {
                    next_attempt += 1;
                    let index = next_attempt - 1;
                    (
                        plan.id(),
                        vec![
                            Change::Heartbeat(at(i.into(), 1)),
                            Change::Attempt {
                                loc,
                                id,
                                index,
                                attempt,
                            },
                        ],
                    )
                }
            }
        })
        .collect();
    let writes: Vec<_> = batches.iter().map(|(p, b)| store.apply(*p, b)).collect();
    let results = await_in_order(writes).await;
    for (i, result) in results.iter().enumerate() {
        match i % 10 {
            3 => assert!(
                matches!(result, Err(StoreError::Permanent { message: m, .. }) if m.contains("has no action")),
                "write {i}: {result:?}"
            ),
            7 => assert_eq!(result, &Err(StoreError::NotFound(unknown)), "write {i}"),
            _ => assert_eq!(result, &Ok(()), "write {i}"),
        }
    }
    for (p, batch) in &batches {
        if *p == plan.id() {
            let mut scratch = plan.clone();
            if batch.iter().all(|c| c.apply_to(&mut scratch).is_ok()) {
                plan = scratch;
            }
        }
    }
    assert_eq!(plan.action(loc).unwrap().attempts().len(), 240);
    assert_eq!(
        store.read(plan.id()).await.unwrap(),
        plan,
        "every good write and nothing of the bad ones"
    );
    let stats = store.stats();
    assert!(
        stats.largest_group > 10,
        "the writes shared transactions: {stats:?}"
    );
    assert_eq!(stats.failed_writes, 60, "{stats:?}");
}

async fn await_in_order<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        out.push(f.await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_handle_works_from_many_tasks_and_closes_with_the_last_handle() {
    let dir = TempDir::new("shared");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.db()).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.spawn(async move {
            let plan = sample_plan(&format!("plan {i}"));
            store.create(&plan).await.unwrap();
            assert_eq!(store.read(plan.id()).await.unwrap(), plan);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(store.list(&ListFilter::default()).await.unwrap().len(), 20);
    drop(store);
    SqliteStore::open(dir.db()).expect("closed with its last handle");
}

//! Measures how many `apply` batches of 2 changes per second the SQLite store sustains with many
//! concurrent writers — the write pattern of the engine: per action, "running + attempt
//! started", then "attempt finished + completed".
//!
//! ```text
//! cargo run --release --example sqlite_probe -- [writers=100] [seconds=5] [full|normal|extra] [actions per writer=1000]
//! ```
//!
//! Prints a human summary and one JSON line. Not a test: the figure depends on the machine.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use coercion::prelude::*;
use coercion::storage::contract::{assign_ids, at};
use coercion::storage::{Change, SqliteOptions, SqliteStore, Store, Synchronous};
use coercion::testing::{FakeAction, FakeReq};
use coercion::workflow::{Json, Loc, ObjectRef, Outcome};
use coercion::{Attempt, State};

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// CPU seconds (user + system) used so far by this process's threads named `name`, and by all.
fn cpu_seconds(name: &str) -> (f64, f64) {
    let ticks = 100.0; // USER_HZ on Linux.
    let (mut named, mut all) = (0.0, 0.0);
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let used = fields
            .get(11)
            .and_then(|u| u.parse::<f64>().ok())
            .unwrap_or(0.0)
            + fields
                .get(12)
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
        all += used / ticks;
        if name.starts_with(&stat[open + 1..close]) {
            named += used / ticks;
        }
    }
    (named, all)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let writers: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(100);
    let seconds: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let synchronous = match args.get(2).map(String::as_str) {
        Some("normal") => Synchronous::Normal,
        Some("extra") => Synchronous::Extra,
        _ => Synchronous::Full,
    };
    let per_writer: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1_000);

    let dir = std::env::temp_dir().join(format!("coercion-sqlite-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    let path: PathBuf = dir.join("probe.db");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(probe(path, writers, seconds, synchronous, per_writer));
    let _ = std::fs::remove_dir_all(&dir);
}

async fn probe(
    path: PathBuf,
    writers: usize,
    seconds: f64,
    synchronous: Synchronous,
    per_writer: usize,
) {
    let store = SqliteStore::open_with(&path, SqliteOptions::default().synchronous(synchronous))
        .expect("open the store");
    let mut plan = Plan::builder("probe")
        .block(
            Block::builder("all")
                .concurrency(writers)
                .sequences((0..writers).map(|w| {
                    Sequence::builder(format!("writer-{w}")).actions(
                        (0..per_writer)
                            .map(|a| ActionSpec::new::<FakeAction>(format!("a{a}"), FakeReq::ok())),
                    )
                })),
        )
        .build();
    assign_ids(&mut plan);
    let started = Instant::now();
    store.create(&plan).await.expect("create the plan");
    let create_time = started.elapsed();

    let sequences: Vec<Vec<(Loc, _)>> = (0..writers)
        .map(|w| {
            plan.walk()
                .filter(|(loc, o)| {
                    matches!(o, ObjectRef::Action(_))
                        && matches!(loc, Loc::Action { parent: coercion::workflow::Parent::Sequence { seq, .. }, .. } if *seq == w)
                })
                .map(|(loc, o)| (loc, o.id()))
                .collect()
        })
        .collect();
    let load_before = load();
    let stats_before = store.stats();
    let cpu_before = cpu_seconds("coercion-sqlite-writer");
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for actions in sequences {
        let store = store.clone();
        let plan_id = plan.id();
        tasks.spawn(async move {
            let response = Outcome::Response(Json::from_text(r#"{"ok":true}"#).expect("JSON"));
            let mut batches = 0u64;
            let mut round = 0u32;
            'outer: loop {
                for (i, (loc, id)) in actions.iter().enumerate() {
                    if Instant::now() >= deadline {
                        break 'outer;
                    }
                    let t = at(i as i64, round);
                    let begin = [
                        Change::State {
                            loc: *loc,
                            id: *id,
                            state: State {
                                status: Status::Running,
                                start: Some(t),
                                end: None,
                            },
                        },
                        Change::Attempt {
                            loc: *loc,
                            id: *id,
                            index: round,
                            attempt: Attempt {
                                start: t,
                                end: None,
                                outcome: None,
                            },
                        },
                    ];
                    store.apply(plan_id, &begin).await.expect("apply");
                    let end = [
                        Change::Attempt {
                            loc: *loc,
                            id: *id,
                            index: round,
                            attempt: Attempt {
                                start: t,
                                end: Some(t),
                                outcome: Some(response.clone()),
                            },
                        },
                        Change::State {
                            loc: *loc,
                            id: *id,
                            state: State {
                                status: Status::Completed,
                                start: Some(t),
                                end: Some(t),
                            },
                        },
                    ];
                    store.apply(plan_id, &end).await.expect("apply");
                    batches += 2;
                }
                round += 1;
            }
            batches
        });
    }
    let mut batches = 0;
    while let Some(n) = tasks.join_next().await {
        batches += n.expect("a writer");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds("coercion-sqlite-writer");
    let writer_cpu = cpu_after.0 - cpu_before.0;
    let process_cpu = cpu_after.1 - cpu_before.1;
    let stats = store.stats();
    let commits = stats.commits - stats_before.commits;
    let load_after = load();
    let reading = Instant::now();
    let read_back = store.read(plan.id()).await.expect("read the plan back");
    let read_time = reading.elapsed();
    assert_eq!(read_back.action_count(), plan.action_count());
    let check = Instant::now();
    store.integrity_check().await.expect("integrity");
    let check_time = check.elapsed();

    let per_sec = batches as f64 / elapsed;
    println!(
        "sqlite_probe: {writers} writers, synchronous={synchronous:?}, {elapsed:.1} s: {batches} batches of 2 changes \
         = {per_sec:.0} batches/s = {:.0} changes/s = {:.0} actions/s; {commits} commits ({:.1} writes/commit, \
         largest group {}); create of {} actions {:.2} s, read {:.2} s; integrity check {:.2} s; load before {load_before}, after {load_after}; \
         CPU: writer thread {writer_cpu:.2} s = {:.1} µs/batch (capacity with a core of its own ≈ {:.0} changes/s), process {process_cpu:.2} s",
        per_sec * 2.0,
        per_sec / 2.0,
        batches as f64 / commits.max(1) as f64,
        stats.largest_group,
        plan.action_count(),
        create_time.as_secs_f64(),
        read_time.as_secs_f64(),
        check_time.as_secs_f64(),
        writer_cpu * 1e6 / batches.max(1) as f64,
        2.0 * batches as f64 / writer_cpu.max(1e-9),
    );
    println!(
        "{{\"bench\":\"sqlite_probe\",\"writers\":{writers},\"synchronous\":\"{synchronous:?}\",\"seconds\":{elapsed:.2},\
         \"batches\":{batches},\"changes_per_sec\":{:.0},\"commits\":{commits},\"writer_cpu_us_per_batch\":{:.1},\"load_before\":\"{load_before}\",\"load_after\":\"{load_after}\"}}",
        per_sec * 2.0,
        writer_cpu * 1e6 / batches.max(1) as f64,
    );
}

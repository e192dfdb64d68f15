//! Benchmarks that print numbers: one JSON line per run.
//!
//! ```text
//! cargo run --release --example bench -- engine [--json] [--runs N]
//! cargo run --release --example bench -- footprint [--json]
//! cargo run --release --example bench -- durable [--json] [--runs N] [--sequences N]
//! cargo run --release --example bench -- recovery [--json] [--runs N]
//! cargo run --release --example bench -- rollout --hosts N [--json] [--runs N]
//! cargo run --release --example bench -- rollout --inventory FILE [--ssh-config FILE] [--json]
//! cargo run --release --example bench -- live --db FILE [--sequences N] [--step-ms N]
//! ```
//!
//! Workloads:
//! * `live` — a plan for others to watch (`scripts/web-load.sh`): `--sequences N` (default 24)
//!   hosts of 10 actions of `--step-ms` (default 80) each, one at a time, on the SQLite file
//!   `--db`; prints its wall time when it ends.
//! * `engine` — 1 block, 1,000 sequences × 10 no-op actions, concurrency 100, in memory.
//! * `footprint` — a 1,000,000-action plan (100,000 sequences × 10 no-op actions) held and run
//!   in memory; also prints `bytes_per_action` (peak RSS growth over the baseline per action).
//! * `durable` — the `engine` workload on a SQLite file with the default durability
//!   (`synchronous=FULL`, every state change committed before the next step). `--sequences N`
//!   runs N sequences of 10 actions instead of 1,000. Also prints `close_s`, the time the store
//!   then takes to close (it folds what is left of the plan's journal into its tables and
//!   checkpoints the WAL into the database file), and `actions_per_s_with_close`, the rate with
//!   that time counted.
//! * `recovery` — a 100,000-action plan half done on SQLite; the time from `Workstream` start
//!   (which resumes it) until its next action runs (`recovery_s`).
//! * `rollout` — the same work as `../shared/peers/ansible/rollout.yml` for N hosts: per host a
//!   pre-check (`true`), three actions (`true`, copy a small file into a per-host directory,
//!   `echo ok`) and a post-check (the copied file exists), with the built-in command and file
//!   plugins, concurrency 5, tolerance 10 %, on SQLite. With `--inventory FILE` (an Ansible
//!   inventory: every host of it, or `--limit PATTERN`), the same work on those hosts over SSH
//!   (`coercion::plugins::ssh`; `--ssh-config FILE` is the `ssh -F` file): the pre-check `true`,
//!   `true`, an upload of the small file into a per-host directory, `echo ok`, and the post-check
//!   `test -f` of the uploaded file, each a command on the host. Its `wall_s` counts from before
//!   the inventory is read, so the first connection's handshake is in it; connections to every
//!   host are opened ahead, 16 at a time, while the first batch runs.
//!
//! Each run prints `{"workload", "actions", "wall_s", "actions_per_s", "peak_rss_bytes", ...}`.

use std::time::Instant;

use coercion::prelude::*;
use serde::{Deserialize, Serialize};

/// Does nothing, as fast as possible: the engine's own cost is what is measured.
#[coercion::plugin(name = "bench/noop", manual)]
#[derive(Default)]
struct Noop;

#[derive(Serialize, Deserialize)]
struct NoopReq;

impl Plugin for Noop {
    type Request = NoopReq;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: NoopReq) -> Result<(), PluginError> {
        Ok(())
    }
}

fn noop_plan(sequences: usize, actions: usize, concurrency: usize) -> Plan {
    Plan::builder("bench")
        .block(
            Block::builder("block")
                .concurrency(concurrency)
                .sequences((0..sequences).map(|s| {
                    Sequence::builder(format!("seq-{s}")).actions(
                        (0..actions)
                            .map(|a| ActionSpec::new::<Noop>(format!("action-{a}"), NoopReq)),
                    )
                })),
        )
        .build()
}

/// Peak resident set size of this process, from /proc (Linux).
fn peak_rss_bytes() -> u64 {
    read_status_kib("VmHWM:") * 1024
}

fn current_rss_bytes() -> u64 {
    read_status_kib("VmRSS:") * 1024
}

fn read_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct Args {
    workload: String,
    json: bool,
    runs: usize,
    hosts: usize,
    sequences: usize,
    inventory: Option<std::path::PathBuf>,
    ssh_config: Option<std::path::PathBuf>,
    limit: String,
    db: Option<std::path::PathBuf>,
    step_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let workload = args.next().ok_or(
        "usage: bench <engine|footprint|durable|recovery|rollout|live> [--json] [--runs N] [--hosts N] [--sequences N] [--inventory FILE [--ssh-config FILE] [--limit PATTERN]] [--db FILE] [--step-ms N]",
    )?;
    let mut out = Args {
        workload,
        json: false,
        runs: 1,
        hosts: 20,
        sequences: 1_000,
        inventory: None,
        ssh_config: None,
        limit: "all".to_owned(),
        db: None,
        step_ms: 80,
    };
    let mut sequences_given = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => out.json = true,
            "--sequences" => {
                sequences_given = true;
                out.sequences = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--sequences takes a positive number")?;
            }
            "--hosts" => {
                out.hosts = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--hosts takes a number")?;
            }
            "--inventory" => {
                out.inventory = Some(args.next().ok_or("--inventory takes a file")?.into())
            }
            "--ssh-config" => {
                out.ssh_config = Some(args.next().ok_or("--ssh-config takes a file")?.into())
            }
            "--limit" => out.limit = args.next().ok_or("--limit takes a host pattern")?,
            "--db" => out.db = Some(args.next().ok_or("--db takes a file")?.into()),
            "--step-ms" => {
                out.step_ms = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--step-ms takes a number of milliseconds")?;
            }
            "--runs" => {
                out.runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--runs takes a number")?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if out.workload == "live" && !sequences_given {
        out.sequences = 24;
    }
    Ok(out)
}

async fn run_memory(plan: Plan) -> (usize, f64) {
    let registry = Registry::new().with(Noop).expect("one plugin");
    let ws = Workstream::in_memory(registry).await.expect("workstream");
    let actions = plan.action_count();
    let t = Instant::now();
    let done = ws.run(plan).await.expect("the plan runs");
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(done.status(), Status::Completed, "{done}");
    (actions, wall)
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("coercion-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Runs `plan` on a fresh SQLite file; returns its actions, the run's wall time, the store's
/// counters and the time the store then took to close (folding its journal, checkpointing).
async fn run_sqlite(
    path: &std::path::Path,
    plan: Plan,
) -> (usize, f64, coercion::storage::SqliteStats, f64) {
    let store = coercion::storage::SqliteStore::open(path).expect("store");
    let registry = Registry::new().with(Noop).expect("one plugin");
    let ws = Workstream::builder()
        .store(store.clone())
        .registry(registry)
        .build()
        .await
        .expect("workstream");
    let actions = plan.action_count();
    let t = Instant::now();
    let done = ws.run(plan).await.expect("the plan runs");
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(done.status(), Status::Completed, "{done}");
    drop(ws);
    let stats = store.stats();
    let t = Instant::now();
    drop(store);
    (actions, wall, stats, t.elapsed().as_secs_f64())
}

/// When the first action after a recovery ran.
/// (Reset before each run of the `recovery` workload.)
static FIRST_CALL: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

/// Like [`Noop`], but notes when it is first called.
#[coercion::plugin(name = "bench/noop", manual)]
#[derive(Default)]
struct FirstCall;

impl Plugin for FirstCall {
    type Request = NoopReq;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: NoopReq) -> Result<(), PluginError> {
        FIRST_CALL
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(Instant::now);
        Ok(())
    }
}

/// A 100,000-action plan, half done, on SQLite: time from `Workstream` start to its next action.
async fn recovery(path: &std::path::Path) -> (usize, usize, f64) {
    use coercion::storage::{Change, SqliteStore, Store};
    use coercion::workflow::{Attempt, Json, Loc, Outcome, Parent, State};
    let plan = noop_plan(10_000, 10, 100);
    let actions = plan.action_count();
    {
        // Submit, then write what a run that stopped half-way would have written.
        let ws = Workstream::builder()
            .sqlite(path)
            .registry(Registry::new().with(Noop).expect("one plugin"))
            .build()
            .await
            .expect("workstream");
        let id = ws.submit(plan).await.expect("submit");
        let plan = ws.read(id).await.expect("read");
        drop(ws);
        let store = SqliteStore::open(path).expect("store");
        let now = chrono::Utc::now();
        let running = State {
            status: Status::Running,
            start: Some(now),
            end: None,
        };
        let completed = State {
            status: Status::Completed,
            start: Some(now),
            end: Some(now),
        };
        let mut changes = vec![
            Change::State {
                loc: Loc::Plan,
                id: id.0,
                state: running,
            },
            Change::Heartbeat(now),
            Change::State {
                loc: Loc::Block(0),
                id: plan.blocks()[0].id(),
                state: running,
            },
        ];
        for (s, seq) in plan.blocks()[0].sequences().iter().enumerate().take(5_000) {
            for (a, action) in seq.actions().iter().enumerate() {
                let loc = Loc::Action {
                    parent: Parent::Sequence { block: 0, seq: s },
                    index: a,
                };
                let attempt = Attempt {
                    start: now,
                    end: Some(now),
                    outcome: Some(Outcome::Response(Json::encode(&()).unwrap())),
                };
                changes.push(Change::Attempt {
                    loc,
                    id: action.id(),
                    index: 0,
                    attempt,
                });
                changes.push(Change::State {
                    loc,
                    id: action.id(),
                    state: completed,
                });
            }
            changes.push(Change::State {
                loc: Loc::Sequence { block: 0, seq: s },
                id: seq.id(),
                state: completed,
            });
            if changes.len() > 20_000 {
                store
                    .apply(id, &std::mem::take(&mut changes))
                    .await
                    .expect("apply");
            }
        }
        store.apply(id, &changes).await.expect("apply");
    }
    let first_call = || *FIRST_CALL.lock().unwrap_or_else(|e| e.into_inner());
    *FIRST_CALL.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let t = Instant::now();
    let ws = Workstream::builder()
        .sqlite(path)
        .registry(Registry::new().with(FirstCall).expect("one plugin"))
        .build()
        .await
        .expect("workstream");
    let first = loop {
        match first_call() {
            Some(first) => break first,
            None => tokio::time::sleep(std::time::Duration::from_micros(200)).await,
        }
    };
    let wall = first.duration_since(t).as_secs_f64();
    let running = ws
        .list(&coercion::ListFilter::status(Status::Running))
        .await
        .expect("list");
    for plan in running {
        ws.wait(plan.id).await.expect("the resumed plan finishes");
    }
    (actions, 50_000, wall)
}

/// The Ansible peer's rollout workload, with the built-in plugins, on SQLite.
async fn rollout(dir: &std::path::Path, hosts: usize) -> (usize, f64) {
    use coercion::plugins::{
        Command, CommandCheck, CommandReq, FileExists, FileExistsReq, WriteFile, WriteFileReq,
    };
    let payload_path = dir.join("payload.txt");
    std::fs::write(&payload_path, "payload for the rollout benchmark\n").expect("payload");
    let payload = std::fs::read_to_string(&payload_path).expect("payload");
    let host_dir = |h: usize| dir.join("hosts").join(format!("host{:04}", h + 1));
    let plan = Plan::builder("rollout")
        .block(
            Block::builder("fleet")
                .concurrency(5)
                .tolerated_failures(Tolerance::Percent(10))
                .pre_checks(Checks::builder().actions((0..hosts).map(|h| {
                    CheckSpec::new::<CommandCheck>(
                        format!("pre-check host{:04}", h + 1),
                        CommandReq::new("true"),
                    )
                })))
                .sequences((0..hosts).map(|h| {
                    Sequence::builder(format!("host{:04}", h + 1))
                        .action(
                            ActionSpec::new::<Command>(
                                "action a (command true)",
                                CommandReq::new("true"),
                            )
                            .retries(2),
                        )
                        .action(
                            ActionSpec::new::<WriteFile>(
                                "action b (copy small file into per-host dir)",
                                WriteFileReq::text(
                                    host_dir(h).join("payload.txt"),
                                    payload.clone(),
                                )
                                .mode(0o644)
                                .create_dirs(),
                            )
                            .retries(2),
                        )
                        .action(
                            ActionSpec::new::<Command>(
                                "action c (shell echo ok)",
                                CommandReq::shell("echo ok"),
                            )
                            .retries(2),
                        )
                }))
                .post_checks(Checks::builder().actions((0..hosts).map(|h| {
                    CheckSpec::new::<FileExists>(
                        format!("post-check host{:04}", h + 1),
                        FileExistsReq::new(host_dir(h).join("payload.txt")),
                    )
                }))),
        )
        .build();
    let registry = Registry::from_inventory().expect("registry");
    let t = Instant::now();
    let ws = Workstream::open(dir.join("rollout.db"), registry)
        .await
        .expect("workstream");
    let actions = plan.action_count();
    let done = ws.run(plan).await.expect("the plan runs");
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(done.status(), Status::Completed, "{done}");
    (actions, wall)
}

/// The same workload over SSH, on the hosts of an Ansible inventory.
async fn rollout_ssh(
    dir: &std::path::Path,
    inventory: &std::path::Path,
    ssh_config: Option<&std::path::Path>,
    limit: &str,
) -> Result<(usize, usize, f64), String> {
    use coercion::inventory::Inventory;
    use coercion::plugins::ssh::{
        self, SshCheck, SshCommand, SshCommandReq, SshTarget, SshUpload, SshUploadReq,
    };
    let payload = "payload for the rollout benchmark\n";
    // The hosts may log in as another user (scripts/ssh-hosts.sh SSH_HOSTS_USER): let it write
    // the per-host directories into this scratch directory, as a shared /tmp would.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let registry = Registry::from_inventory().map_err(|e| e.to_string())?;
    let t = Instant::now();
    let inventory = Inventory::load(inventory).map_err(|e| e.to_string())?;
    let hosts: Vec<(String, SshTarget)> = inventory
        .select(limit)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|h| {
            (
                h.name().to_owned(),
                SshTarget::from(h).config_opt(ssh_config),
            )
        })
        .collect();
    if hosts.is_empty() {
        return Err(format!("no host matches {limit:?}"));
    }
    // Every host's connection is opened ahead, a few at a time, while the first ones work.
    let warm = tokio::spawn(ssh::connect_all(
        hosts.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>(),
        16,
    ));
    let host_dir = |name: &str| dir.join("hosts").join(name);
    let plan = Plan::builder("rollout")
        .block(
            Block::builder("fleet")
                .concurrency(5)
                .tolerated_failures(Tolerance::Percent(10))
                .pre_checks(
                    Checks::builder().actions(hosts.iter().map(|(name, target)| {
                        CheckSpec::new::<SshCheck>(
                            format!("pre-check {name}"),
                            SshCommandReq::new(target.clone(), "true"),
                        )
                    })),
                )
                .sequences(hosts.iter().map(|(name, target)| {
                    Sequence::builder(name.as_str())
                        .action(
                            ActionSpec::new::<SshCommand>(
                                "action a (command true)",
                                SshCommandReq::new(target.clone(), "true"),
                            )
                            .retries(2),
                        )
                        .action(
                            ActionSpec::new::<SshUpload>(
                                "action b (copy small file into per-host dir)",
                                SshUploadReq::text(
                                    target.clone(),
                                    host_dir(name).join("payload.txt"),
                                    payload,
                                )
                                .mode(0o644)
                                .create_dirs(),
                            )
                            .retries(2),
                        )
                        .action(
                            ActionSpec::new::<SshCommand>(
                                "action c (shell echo ok)",
                                SshCommandReq::shell(target.clone(), "echo ok"),
                            )
                            .retries(2),
                        )
                }))
                .post_checks(
                    Checks::builder().actions(hosts.iter().map(|(name, target)| {
                        CheckSpec::new::<SshCheck>(
                            format!("post-check {name}"),
                            SshCommandReq::new(target.clone(), "test")
                                .arg("-f")
                                .arg(host_dir(name).join("payload.txt").to_string_lossy()),
                        )
                    })),
                ),
        )
        .build();
    let ws = Workstream::open(dir.join("rollout.db"), registry)
        .await
        .map_err(|e| e.to_string())?;
    let actions = plan.action_count();
    let done = ws.run(plan).await.map_err(|e| e.to_string())?;
    let wall = t.elapsed().as_secs_f64();
    warm.abort();
    if done.status() != Status::Completed {
        return Err(format!("the rollout did not complete:\n{done}"));
    }
    Ok((hosts.len(), actions, wall))
}

/// `sequences` hosts of 10 sleeps of `step_ms`, one host at a time, on the SQLite file `db`.
async fn live(db: &std::path::Path, sequences: usize, step_ms: u64) -> (usize, f64) {
    use coercion::plugins::{Sleep, SleepReq};
    let step = std::time::Duration::from_millis(step_ms);
    let plan = Plan::builder("watched rollout")
        .block(
            Block::builder("hosts")
                .concurrency(1)
                .sequences((0..sequences).map(|h| {
                    (0..10).fold(Sequence::builder(format!("host-{h}")), |s, a| {
                        s.action(ActionSpec::new::<Sleep>(
                            format!("step {a}"),
                            SleepReq::new(step),
                        ))
                    })
                })),
        )
        .build();
    let actions = plan.action_count();
    let ws = Workstream::open(
        db,
        Registry::from_inventory().expect("the built-in plugins"),
    )
    .await
    .expect("the store");
    let t = Instant::now();
    let done = ws.run(plan).await.expect("the plan runs");
    assert_eq!(done.status(), Status::Completed, "{done}");
    (actions, t.elapsed().as_secs_f64())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for _ in 0..args.runs {
        let line = match args.workload.as_str() {
            "engine" => {
                let (actions, wall) = rt.block_on(run_memory(noop_plan(1_000, 10, 100)));
                serde_json::json!({
                    "workload": "engine", "store": "memory", "actions": actions, "wall_s": wall,
                    "actions_per_s": actions as f64 / wall, "peak_rss_bytes": peak_rss_bytes(),
                })
            }
            "footprint" => {
                let baseline = current_rss_bytes();
                let (actions, wall) = rt.block_on(run_memory(noop_plan(100_000, 10, 100)));
                let peak = peak_rss_bytes();
                serde_json::json!({
                    "workload": "footprint", "store": "memory", "actions": actions, "wall_s": wall,
                    "actions_per_s": actions as f64 / wall, "peak_rss_bytes": peak,
                    "bytes_per_action": (peak.saturating_sub(baseline)) as f64 / actions as f64,
                })
            }
            "durable" => {
                // With --db, the store is left there (to look at, serve, measure).
                let dir = scratch_dir("durable");
                let path = args.db.clone().unwrap_or_else(|| dir.join("durable.db"));
                let (actions, wall, stats, close) =
                    rt.block_on(run_sqlite(&path, noop_plan(args.sequences, 10, 100)));
                let _ = std::fs::remove_dir_all(&dir);
                serde_json::json!({
                    "workload": "durable", "store": "sqlite", "synchronous": "FULL", "actions": actions, "wall_s": wall,
                    "actions_per_s": actions as f64 / wall, "peak_rss_bytes": peak_rss_bytes(),
                    "writes": stats.writes, "commits": stats.commits, "largest_group": stats.largest_group,
                    "folds": stats.folds, "folded_rows": stats.folded_rows, "close_s": close, "syncs": stats.syncs,
                    "actions_per_s_with_close": actions as f64 / (wall + close),
                })
            }
            "recovery" => {
                let dir = scratch_dir("recovery");
                let (actions, done, wall) = rt.block_on(recovery(&dir.join("recovery.db")));
                let _ = std::fs::remove_dir_all(&dir);
                serde_json::json!({
                    "workload": "recovery", "store": "sqlite", "actions": actions, "completed_before": done,
                    "recovery_s": wall, "peak_rss_bytes": peak_rss_bytes(),
                })
            }
            "rollout" if args.inventory.is_some() && args.runs > 1 => {
                // The SSH connections stay open for the process: later runs would skip the
                // handshakes their `wall_s` is meant to count.
                eprintln!(
                    "bench: rollout --inventory measures one run per process (--runs 1); run the process again"
                );
                std::process::exit(2);
            }
            "rollout" if args.inventory.is_some() => {
                let dir = scratch_dir("rollout-ssh");
                let inventory = args.inventory.as_deref().expect("checked");
                let outcome = rt.block_on(rollout_ssh(
                    &dir,
                    inventory,
                    args.ssh_config.as_deref(),
                    &args.limit,
                ));
                let _ = std::fs::remove_dir_all(&dir);
                let (hosts, actions, wall) = outcome.unwrap_or_else(|e| {
                    eprintln!("bench: {e}");
                    std::process::exit(1);
                });
                serde_json::json!({
                    "workload": "rollout", "store": "sqlite", "transport": "ssh", "hosts": hosts, "host_tasks": hosts * 5,
                    "actions": actions, "wall_s": wall, "per_host_task_s": wall / (hosts * 5) as f64,
                    "peak_rss_bytes": peak_rss_bytes(),
                })
            }
            "rollout" => {
                let dir = scratch_dir("rollout");
                let (actions, wall) = rt.block_on(rollout(&dir, args.hosts));
                let _ = std::fs::remove_dir_all(&dir);
                serde_json::json!({
                    "workload": "rollout", "store": "sqlite", "transport": "local", "hosts": args.hosts, "host_tasks": args.hosts * 5,
                    "actions": actions, "wall_s": wall, "per_host_task_s": wall / (args.hosts * 5) as f64,
                    "peak_rss_bytes": peak_rss_bytes(),
                })
            }
            "live" => {
                let Some(db) = args.db.clone() else {
                    eprintln!("bench: live needs --db FILE (the store the watchers read)");
                    std::process::exit(2);
                };
                let (actions, wall) = rt.block_on(live(&db, args.sequences, args.step_ms));
                serde_json::json!({
                    "workload": "live", "store": "sqlite", "actions": actions, "wall_s": wall,
                })
            }
            other => {
                eprintln!(
                    "bench: unknown workload {other:?} (engine, footprint, durable, recovery, rollout, live)"
                );
                std::process::exit(2);
            }
        };
        if args.json {
            println!("{line}");
        } else {
            println!("{}", serde_json::to_string_pretty(&line).expect("json"));
        }
    }
}

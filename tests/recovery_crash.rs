//! Real crashes: a child process runs a plan on a SQLite file and is killed with SIGKILL at a
//! random moment; a new process recovers it. Each time the plan must complete, the file must pass
//! `PRAGMA integrity_check`, and a ledger the plugin writes outside the database must show every
//! action completed, none started more than twice, and only actions in flight at the kill twice.
//!
//! The child is this test binary itself, re-run with `--ignored --exact crash_child`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coercion::prelude::*;
use coercion::storage::SqliteStore;
use serde::{Deserialize, Serialize};

const SEQUENCES: usize = 12;
const ACTIONS: usize = 4;
const KILLS: u64 = 20;

#[derive(Serialize, Deserialize)]
struct LedgerReq {
    ledger: PathBuf,
    millis: u64,
}

/// Appends `start <action> <attempt>` and `end <action> <attempt>` lines to a ledger file, with
/// a pause between: the ledger is the ground truth of what ran, outside the database.
#[coercion::plugin(name = "crash-test/ledger")]
#[derive(Default)]
struct Ledger;

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("ledger opens");
    f.write_all(line.as_bytes()).expect("ledger write");
}

impl Plugin for Ledger {
    type Request = LedgerReq;
    type Response = ();
    async fn execute(&self, ctx: &Context, req: LedgerReq) -> Result<(), PluginError> {
        append(
            &req.ledger,
            &format!("start {} {}\n", ctx.action_id(), ctx.attempt()),
        );
        tokio::time::sleep(Duration::from_millis(req.millis)).await;
        append(
            &req.ledger,
            &format!("end {} {}\n", ctx.action_id(), ctx.attempt()),
        );
        Ok(())
    }
}

fn crash_plan(ledger: &Path) -> Plan {
    let req = |millis| LedgerReq {
        ledger: ledger.to_owned(),
        millis,
    };
    Plan::builder("crash test")
        .block(
            Block::builder("work")
                .concurrency(4)
                .sequences((0..SEQUENCES).map(|s| {
                    Sequence::builder(format!("seq-{s}")).actions((0..ACTIONS).map(|a| {
                        ActionSpec::new::<Ledger>(
                            format!("a{a}"),
                            req(15 + (s * 7 + a * 3) as u64 % 20),
                        )
                    }))
                })),
        )
        .deferred(
            DeferredBatch::builder("cleanup", When::Always)
                .action(ActionSpec::new::<Ledger>("cleanup", req(10))),
        )
        .build()
}

/// The child: `run` submits and runs a plan; `recover` opens the file (recovery resumes the
/// plan) and waits for it.
#[test]
#[ignore = "run as a child process by the crash test"]
fn crash_child() {
    let (Ok(db), Ok(ledger), Ok(mode)) = (
        std::env::var("COERCION_CRASH_DB"),
        std::env::var("COERCION_CRASH_LEDGER"),
        std::env::var("COERCION_CRASH_MODE"),
    ) else {
        panic!("crash_child is run by the crash test with COERCION_CRASH_* set");
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let registry = Registry::new().with(Ledger).unwrap();
        let ws = Workstream::builder()
            .sqlite(&db)
            .registry(registry)
            .heartbeat_interval(Duration::from_millis(100))
            .build()
            .await
            .unwrap();
        let id = if mode == "run" {
            let id = ws.submit(crash_plan(Path::new(&ledger))).await.unwrap();
            ws.start(id).await.unwrap();
            id
        } else {
            let running = ws.list(&coercion::ListFilter::default()).await.unwrap();
            running.first().expect("the plan is in the file").id
        };
        println!("STARTED {id}");
        std::io::stdout().flush().unwrap();
        let done = ws.wait(id).await.unwrap();
        println!("DONE {}", done.status());
    });
}

fn spawn_child(db: &Path, ledger: &Path, mode: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("COERCION_CRASH_DB", db)
        .env("COERCION_CRASH_LEDGER", ledger)
        .env("COERCION_CRASH_MODE", mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Reads the child's stdout until a line starting with `prefix`.
fn wait_for_line(child: &mut Child, prefix: &str) -> String {
    let out = child.stdout.as_mut().unwrap();
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("the child ended before printing {prefix:?}");
        }
        if let Some(pos) = line.find(prefix) {
            return line[pos..].trim().to_owned();
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    starts: u32,
    ends: u32,
}

fn read_ledger(path: &Path) -> HashMap<String, Tally> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut tally: HashMap<String, Tally> = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(kind), Some(action)) = (parts.next(), parts.next()) else {
            continue;
        };
        let t = tally.entry(action.to_owned()).or_default();
        match kind {
            "start" => t.starts += 1,
            "end" => t.ends += 1,
            other => panic!("unexpected ledger line kind {other:?}"),
        }
    }
    tally
}

#[test]
fn sigkill_at_random_moments_then_recover_loses_nothing() {
    let base = std::env::temp_dir().join(format!("coercion-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let seed0: u64 = std::env::var("COERCION_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    let mut twice_total = 0;
    for round in 0..KILLS {
        let seed = seed0 + round;
        // splitmix64: a reproducible delay from the seed.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let delay_ms = (z ^ (z >> 31)) % 450;
        println!(
            "round {round}: seed {seed}, SIGKILL after {delay_ms} ms (rerun with COERCION_CRASH_SEED={seed})"
        );
        let dir = base.join(format!("round-{round}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (db, ledger) = (dir.join("crash.db"), dir.join("ledger.txt"));

        let mut child = spawn_child(&db, &ledger, "run");
        wait_for_line(&mut child, "STARTED");
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SIGKILL: no destructor, no flush, no goodbye.
        child.kill().unwrap();
        child.wait().unwrap();

        let mut child = spawn_child(&db, &ledger, "recover");
        let done = wait_for_line(&mut child, "DONE");
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "round {round} (seed {seed}): the recovering process failed"
        );
        assert_eq!(done, "DONE Completed", "round {round} (seed {seed})");

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = SqliteStore::open_read_only(&db).unwrap();
            store
                .integrity_check()
                .await
                .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
            let plans = coercion::Store::list(&store, &coercion::ListFilter::default())
                .await
                .unwrap();
            assert_eq!(plans.len(), 1);
            let plan = coercion::Store::read(&store, plans[0].id).await.unwrap();
            assert_eq!(
                plan.status(),
                Status::Completed,
                "round {round} (seed {seed}):\n{plan}"
            );
            let tally = read_ledger(&ledger);
            let actions: Vec<_> = plan
                .walk()
                .filter_map(|(_, o)| match o {
                    coercion::workflow::ObjectRef::Action(a) => Some(a.id().to_string()),
                    _ => None,
                })
                .collect();
            assert_eq!(actions.len(), SEQUENCES * ACTIONS + 1);
            let mut twice = 0;
            for id in &actions {
                let t = tally.get(id).unwrap_or_else(|| {
                    panic!("round {round} (seed {seed}): action {id} never ran")
                });
                // The history tells the truth: every plugin call is an attempt in the tree,
                // an attempt the kill cut short is kept as interrupted, and only one ran to
                // its end (the ledger never fails). One more attempt than calls: the kill came
                // after the attempt's start was stored, before the plugin wrote its line.
                let action = plan
                    .walk()
                    .find_map(|(_, o)| match o {
                        coercion::workflow::ObjectRef::Action(a) if a.id().to_string() == *id => {
                            Some(a)
                        }
                        _ => None,
                    })
                    .unwrap();
                let attempts = action.attempts();
                let interrupted = attempts.iter().filter(|a| a.was_interrupted()).count();
                assert_eq!(
                    attempts.len() - interrupted,
                    1,
                    "round {round} (seed {seed}): action {id}: one attempt ran to its end"
                );
                assert!(
                    attempts.len() as u32 == t.starts || attempts.len() as u32 == t.starts + 1,
                    "round {round} (seed {seed}): action {id}: {} attempts in the tree, {} plugin calls",
                    attempts.len(),
                    t.starts
                );
                if t.starts == 2 {
                    assert_eq!(
                        interrupted, 1,
                        "round {round} (seed {seed}): action {id} ran twice: the first run is an interrupted attempt"
                    );
                }
                assert!(
                    t.ends >= 1,
                    "round {round} (seed {seed}): action {id} never completed: {t:?}"
                );
                assert!(
                    t.starts <= 2 && t.ends <= 2,
                    "round {round} (seed {seed}): action {id} ran more than twice: {t:?}"
                );
                if t.starts == 2 {
                    twice += 1;
                }
            }
            // Only actions in flight at the kill may run twice: at most one per concurrent sequence.
            assert!(
                twice <= 4,
                "round {round} (seed {seed}): {twice} actions ran twice; concurrency is 4"
            );
            twice_total += twice;
        });
    }
    println!("{KILLS} kills, {twice_total} interrupted attempts ran again");
    let _ = std::fs::remove_dir_all(&base);
}

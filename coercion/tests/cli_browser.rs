//! The web UI and the HTML report in a real browser: Debian's headless Chromium, driven by
//! playwright-core from `tests/browser/web.test.mjs` (Node). This test fills a store with real
//! runs, starts a plan in another process and `coercion serve`, and runs the Node tests against
//! them. Screenshots land in `tests/artifacts/`.
//!
//! Install the browser and the Node packages with `bash scripts/browser-deps.sh`. The test fails
//! when they are missing, unless `COERCION_SKIP_BROWSER=1` is set, in which case it says loudly
//! that it skipped.

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use cli_support::*;

/// Not a test: the entry point of the child process that runs a long plan (see `Runner`).
#[test]
#[ignore = "the child process of other tests, started by them"]
fn child_process_entry() {
    child_entry();
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("browser")
}

/// Whether the browser tests must be skipped (`COERCION_SKIP_BROWSER=1`); says so loudly.
fn skipped() -> bool {
    if std::env::var("COERCION_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        // Written to the process's stderr directly: libtest captures `eprintln!` of passing tests.
        let banner = "\n\
################################################################################\n\
## SKIPPED: the browser tests of the web UI and the HTML report did NOT run,   ##\n\
## because COERCION_SKIP_BROWSER=1. Run `bash scripts/browser-deps.sh` and     ##\n\
## unset it to run them.                                                      ##\n\
################################################################################\n\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr(), banner.as_bytes());
        return true;
    }
    false
}

/// Fails with instructions when Chromium, Node or playwright-core is missing.
fn require_browser() -> PathBuf {
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let hint = "install them with `bash scripts/browser-deps.sh`, or set COERCION_SKIP_BROWSER=1 to skip the browser tests";
    assert!(
        chromium.exists(),
        "Chromium is missing ({}): {hint}",
        chromium.display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "Node.js is missing: {hint}"
    );
    assert!(
        browser_dir()
            .join("node_modules")
            .join("playwright-core")
            .exists(),
        "playwright-core is missing from tests/browser/node_modules: {hint}"
    );
    chromium
}

#[test]
fn the_web_ui_and_the_report_work_in_headless_chromium() {
    if skipped() {
        return;
    }
    let chromium = require_browser();
    let started = SystemTime::now();
    let artifacts = artifacts();
    let f = fixture("browser");

    let report_hostile = artifacts.join("report-hostile.html");
    let report_failed = artifacts.join("report-failed.html");
    ok(
        &f.db,
        &[
            "report",
            &f.hostile.to_string(),
            "-o",
            report_hostile.to_str().unwrap(),
        ],
    );
    ok(
        &f.db,
        &[
            "report",
            &f.failed.to_string(),
            "-o",
            report_failed.to_str().unwrap(),
        ],
    );
    let hostile_export = f.dir.join("hostile.json");
    ok(
        &f.db,
        &[
            "export",
            &f.hostile.to_string(),
            "-o",
            hostile_export.to_str().unwrap(),
        ],
    );

    // 20 actions of 600 ms, one at a time: about 12 s of live updates to watch.
    // The child also accepts control requests, after its plan ended too: the Retry button's
    // request runs there.
    let runner = Runner::start(&f.db, 20, Duration::from_millis(600), "linger");
    // A plan waiting at its approval gate, in a store of its own (one process listens per
    // store), with a server that may decide it.
    let gate_dir = TempDir::new("browser-gate");
    let gate_db = gate_dir.join("plans.db");
    let mut gate_runner = Runner::start_plan(&gate_db, 0, Duration::ZERO, "now", "gated:");
    wait_for_gate(&gate_db, &gate_runner.plan.to_string());
    let gate_server = Server::start(&gate_db, &["--allow-control"]);
    let server = Server::start(&f.db, &[]);
    let control_server = Server::start(&f.db, &["--allow-control"]);
    let ids = [runner.plan, f.hostile, f.failed, f.completed, f.tolerated]
        .map(|id| id.to_string())
        .join(",");

    let status = Command::new("node")
        .args([
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            "web.test.mjs",
        ])
        .current_dir(browser_dir())
        .env("COERCION_URL", &server.url)
        .env("CONTROL_URL", &control_server.url)
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .env("FAILED_ID", f.failed.to_string())
        .env("HOSTILE_ID", f.hostile.to_string())
        .env("LIVE_ID", runner.plan.to_string())
        .env("GATE_URL", &gate_server.url)
        .env("GATE_ID", gate_runner.plan.to_string())
        .env("ALL_IDS", ids)
        .env("FAILED_TAG", FAILED_TAG)
        .env("TOLERATED_ID", f.tolerated.to_string())
        .env("TOLERATED_TAG", TOLERATED_TAG)
        .env("HOSTILE_PLAN", HOSTILE_PLAN)
        .env("HOSTILE_ACTION", HOSTILE_ACTION)
        .env("HOSTILE_ERROR", HOSTILE_ERROR)
        .env("HOSTILE_EXPORT", &hostile_export)
        .env("REPORT_HOSTILE", &report_hostile)
        .env("REPORT_FAILED", &report_failed)
        .status()
        .expect("run node");
    assert!(
        status.success(),
        "the browser tests failed ({status}); see their output above"
    );

    for shot in [
        "web-list.png",
        "web-plan-live-running.png",
        "web-plan-live-done.png",
        "web-plan-failed.png",
        "web-plan-tolerated.png",
        "web-plan-hostile.png",
        "web-upload-error.png",
        "web-upload-plan.png",
        "report-hostile.png",
        "report-failed.png",
        "web-plan-retried.png",
        "web-plan-gate-waiting.png",
        "web-plan-gate-approved.png",
    ] {
        let meta = std::fs::metadata(artifacts.join(shot))
            .unwrap_or_else(|e| panic!("screenshot {shot}: {e}"));
        assert!(
            meta.modified().unwrap() >= started,
            "{shot} was taken by this run"
        );
    }
    assert_eq!(
        gate_runner.wait_for("DONE"),
        "DONE Completed",
        "the approved plan went on"
    );
    drop(server);
    drop(control_server);
    drop(gate_server);
    drop(runner);
}

/// The web UI over PostgreSQL, in the browser: a plan that another process runs (this one, a
/// workstream over the database) is paused with the plan page's button, shows as paused live,
/// starts no action while paused, and is resumed the same way (`tests/browser/postgres.test.mjs`);
/// then it is stopped from here.
#[cfg(feature = "postgres")]
#[test]
fn the_web_ui_pauses_a_plan_another_process_runs_on_postgresql() {
    use coercion::storage::{PostgresOptions, PostgresStore};
    use coercion::testing::{FakeAction, FakeReq, Fakes};
    use coercion::{ActionSpec, Block, Plan, Sequence, Status, Store, Workstream};

    if skipped() {
        return;
    }
    let Some(url) = pg_url("the web UI on PostgreSQL in a browser") else {
        return;
    };
    let chromium = require_browser();
    let started = SystemTime::now();
    let artifacts = artifacts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let schema = format!("t_browser_{}", coercion::PlanId::new_v7().0.simple());
    let fakes = Fakes::new();
    // 200 actions of 300 ms, one after the other: a minute of run, longer than the browser needs
    // to start, pause and resume it, on a loaded machine too.
    let (ws, store, id) = rt.block_on(async {
        let store = PostgresStore::connect_with(&url, PostgresOptions::default().schema(&schema))
            .await
            .unwrap();
        let ws = Workstream::builder()
            .store(store.clone())
            .registry(fakes.registry())
            .build()
            .await
            .unwrap();
        let plan = Plan::builder("paused from the browser")
            .block(Block::builder("b").sequence((0..200).fold(
                Sequence::builder("host-1"),
                |s, i| {
                    s.action(ActionSpec::new::<FakeAction>(
                        format!("step {i}"),
                        FakeReq::sleep(Duration::from_millis(300)),
                    ))
                },
            )))
            .build();
        let id = ws.submit_and_start(plan).await.unwrap();
        (ws, store, id)
    });
    let db = PathBuf::from(&url);
    let server = Server::start(&db, &["--pg-schema", &schema, "--allow-control"]);

    let status = Command::new("node")
        .args([
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            "postgres.test.mjs",
        ])
        .current_dir(browser_dir())
        .env("COERCION_URL", &server.url)
        .env("PLAN_ID", id.to_string())
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .status()
        .expect("run node");
    assert!(
        status.success(),
        "the browser test on PostgreSQL failed ({status}); see its output above"
    );
    for shot in ["web-pg-paused.png", "web-pg-resumed.png"] {
        let meta = std::fs::metadata(artifacts.join(shot))
            .unwrap_or_else(|e| panic!("screenshot {shot}: {e}"));
        assert!(
            meta.modified().unwrap() >= started,
            "{shot} was taken by this run"
        );
    }
    rt.block_on(async {
        let plan = store.read(id).await.unwrap();
        assert!(!plan.is_paused(), "resumed from the browser");
        ws.stop(id).await.unwrap();
        let done = ws.wait(id).await.unwrap();
        assert_eq!(done.status(), Status::Stopped, "{done}");
    });
    drop(server);
}

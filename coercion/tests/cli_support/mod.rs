//! Shared fixtures of the CLI and browser tests: a store filled by real runs (completed,
//! failed, hostile names), a child process that runs a long plan on the same file, and helpers
//! to run the `coercion` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use coercion::testing::{FakeAction, FakeCheck, FakeReq, Fakes};
use coercion::{
    ActionSpec, Block, CheckSpec, Checks, DeferredBatch, Plan, PlanId, Sequence, Status, When,
    Workstream,
};

/// The `coercion` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_coercion");

/// What the hostile plan's names try to do; a page that ran any of it would set
/// `window.__pwned` or change the title.
pub const HOSTILE_PLAN: &str =
    r#"<script>document.title="pwned";window.__pwned=1</script> "quoted" & 'single'"#;
/// The hostile block's name.
pub const HOSTILE_BLOCK: &str = r#"<img src=x onerror="window.__pwned=2">"#;
/// The hostile sequence's name.
pub const HOSTILE_SEQUENCE: &str = r#"</summary></details><script>window.__pwned=3</script>"#;
/// The hostile action's name.
pub const HOSTILE_ACTION: &str = r#""><script>window.__pwned=4</script>"#;
/// The hostile action's error tag.
pub const HOSTILE_ERROR: &str = r#"<script>window.__pwned=5</script>"#;

/// The tag of the failed plan's failing action; its error message starts with it.
pub const FAILED_TAG: &str = "disk full on db-1";

/// The tag of the action that failed, within the tolerance, in the plan that completed with
/// failures; its error message starts with it.
pub const TOLERATED_TAG: &str = "port 8443 in use on api-2";

/// A fresh directory under the target's temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory for test `name`.
    pub fn new(name: &str) -> TempDir {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("cli")
            .join(format!("{name}-{}", PlanId::new_v7()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // COERCION_KEEP_TEST_DIRS=1 keeps the stores, to look at them with the CLI afterwards.
        if std::env::var("COERCION_KEEP_TEST_DIRS").is_ok_and(|v| v == "1") {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A store file holding four finished plans from real runs.
pub struct Fixture {
    /// The directory (removed at the end).
    pub dir: TempDir,
    /// The store file.
    pub db: PathBuf,
    /// The oldest plan: it completed with one failed sequence (of three) within its block's
    /// tolerance; its action "start" on "api-2" failed with `TOLERATED_TAG`.
    pub tolerated: PlanId,
    /// A completed plan, in group `group`.
    pub completed: PlanId,
    /// A failed plan (its action "migrate" failed after 3 attempts with `FAILED_TAG`).
    pub failed: PlanId,
    /// A failed plan whose names and error contain HTML and script.
    pub hostile: PlanId,
    /// The group of the completed plan.
    pub group: uuid::Uuid,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Fills a fresh store with a plan that completed with failures, a completed, a failed and a
/// hostile plan (oldest first), run for real on SQLite.
pub fn fixture(name: &str) -> Fixture {
    let dir = TempDir::new(name);
    let db = dir.join("coercion.db");
    let group = uuid::Uuid::now_v7();
    let (tolerated, completed, failed, hostile) = runtime().block_on(async {
        let fakes = Fakes::new();
        let ws = Workstream::open(&db, fakes.registry())
            .await
            .expect("open the store");
        let tolerated = Plan::builder("rollout api")
            .block(
                Block::builder("api")
                    .tolerated_failures(1)
                    .sequences((1..=3).map(|i| {
                        let start = if i == 2 {
                            FakeReq::fail_permanently().tag(TOLERATED_TAG)
                        } else {
                            FakeReq::ok().tag(format!("start api-{i}"))
                        };
                        Sequence::builder(format!("api-{i}"))
                            .action(ActionSpec::new::<FakeAction>(
                                "copy",
                                FakeReq::ok().tag(format!("copy api-{i}")),
                            ))
                            .action(ActionSpec::new::<FakeAction>("start", start))
                    })),
            )
            .build();
        let tolerated = ws.run(tolerated).await.expect("the tolerated plan runs");
        assert_eq!(tolerated.status(), Status::Completed);
        assert!(tolerated.is_completed_with_failures());
        let completed = Plan::builder("deploy web")
            .descr("Roll the new build out to the web tier")
            .group_id(group)
            .pre_checks(
                Checks::builder().action(CheckSpec::new::<FakeCheck>("lb healthy", FakeReq::ok())),
            )
            .block(
                Block::builder("web")
                    .concurrency(2)
                    .sequences((1..=2).map(|i| {
                        Sequence::builder(format!("web-{i}"))
                            .action(ActionSpec::new::<FakeAction>(
                                "drain",
                                FakeReq::ok().tag(format!("drain web-{i}")),
                            ))
                            .action(
                                ActionSpec::new::<FakeAction>(
                                    "restart",
                                    FakeReq::fail_times(1).tag(format!("restart web-{i}")),
                                )
                                .retries(2),
                            )
                    })),
            )
            .deferred(
                DeferredBatch::builder("notify", When::Always)
                    .action(ActionSpec::new::<FakeAction>("post to chat", FakeReq::ok())),
            )
            .build();
        let completed = ws.run(completed).await.expect("the completed plan runs");
        assert_eq!(completed.status(), Status::Completed);

        let failed = Plan::builder("migrate db")
            .block(
                Block::builder("db").sequence(
                    Sequence::builder("db-1")
                        .action(ActionSpec::new::<FakeAction>(
                            "backup",
                            FakeReq::ok().tag("backup db-1"),
                        ))
                        .action(
                            ActionSpec::new::<FakeAction>(
                                "migrate",
                                FakeReq::fail().tag(FAILED_TAG),
                            )
                            .retries(2),
                        )
                        .action(ActionSpec::new::<FakeAction>("verify", FakeReq::ok())),
                ),
            )
            .build();
        let failed = ws.run(failed).await.expect("the failed plan runs");
        assert_eq!(failed.status(), Status::Failed);

        let hostile = Plan::builder(HOSTILE_PLAN)
            .descr(r#"<b onmouseover="window.__pwned=6">descr</b>"#)
            .block(Block::builder(HOSTILE_BLOCK).sequence(
                Sequence::builder(HOSTILE_SEQUENCE).action(ActionSpec::new::<FakeAction>(
                    HOSTILE_ACTION,
                    FakeReq::fail_permanently().tag(HOSTILE_ERROR),
                )),
            ))
            .build();
        let hostile = ws.run(hostile).await.expect("the hostile plan runs");
        assert_eq!(hostile.status(), Status::Failed);
        (tolerated.id(), completed.id(), failed.id(), hostile.id())
    });
    Fixture {
        dir,
        db,
        tolerated,
        completed,
        failed,
        hostile,
        group,
    }
}

/// Runs `coercion --db <db> <args>` and returns its output.
pub fn coercion(db: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("COERCION_DB")
        .output()
        .expect("run the coercion binary")
}

/// The start of the command lines the tool suggests for the store `db` (the test directories'
/// paths need no quoting).
pub fn command_line(db: &Path) -> String {
    format!("coercion --db {}", db.display())
}

/// Standard output of a run that must succeed.
pub fn ok(db: &Path, args: &[&str]) -> String {
    let out = coercion(db, args);
    assert!(
        out.status.success(),
        "coercion {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Standard error of a run that must fail with exit code 1.
pub fn fails(db: &Path, args: &[&str]) -> String {
    let out = coercion(db, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "coercion {args:?} should fail with exit code 1:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).expect("UTF-8 output")
}

/// The environment variables that turn a test binary into the child that runs a long plan.
const CHILD_DB: &str = "COERCION_CLI_CHILD_DB";
const CHILD_ACTIONS: &str = "COERCION_CLI_CHILD_ACTIONS";
const CHILD_STEP_MS: &str = "COERCION_CLI_CHILD_STEP_MS";
const CHILD_LISTEN: &str = "COERCION_CLI_CHILD_LISTEN";
const CHILD_PLAN: &str = "COERCION_CLI_CHILD_PLAN";

// The gated plan a child runs with `CHILD_PLAN=gated:APPROVERS` (one hour to decide); the
// workspace's own gate tests use it too.
mod gated;
pub use gated::gated_plan;

/// The name (without the uid) of the user running the tests, as the control socket names it.
pub fn user_name() -> String {
    let user = coercion::cli::control::current_user();
    user.split(" (").next().unwrap().to_owned()
}

/// The long plan the child runs: `actions` actions of `step` each, one after another, in
/// sequences of two.
pub fn long_plan(actions: usize, step: Duration) -> Plan {
    Plan::builder("rolling restart (live)")
        .descr("Runs in another process while the tests watch it")
        .block(
            Block::builder("fleet")
                .concurrency(1)
                .sequences((0..actions.div_ceil(2)).map(|i| {
                    Sequence::builder(format!("host-{i}"))
                        .action(ActionSpec::new::<FakeAction>(
                            "drain",
                            FakeReq::sleep(step).tag(format!("drain host-{i}")),
                        ))
                        .action(ActionSpec::new::<FakeAction>(
                            "restart",
                            FakeReq::sleep(step).tag(format!("restart host-{i}")),
                        ))
                })),
        )
        .build()
}

/// The body of the child process (a test binary started with `CHILD_DB` set): opens the store
/// to run plans, starts the long plan, prints `PLAN <id>`, optionally accepts control requests
/// (`CHILD_LISTEN`: `now`, `linger` to listen now and go on listening after the plan ended,
/// until killed, or `stdin` to wait for a line on standard input first, then print
/// `LISTENING`), and prints `DONE <status>` when the plan ends. Does nothing without `CHILD_DB`.
pub fn child_entry() {
    let Ok(db) = std::env::var(CHILD_DB) else {
        return;
    };
    let actions: usize = std::env::var(CHILD_ACTIONS)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let step = Duration::from_millis(
        std::env::var(CHILD_STEP_MS)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500),
    );
    let listen = std::env::var(CHILD_LISTEN).unwrap_or_default();
    let which = std::env::var(CHILD_PLAN).unwrap_or_default();
    runtime().block_on(async move {
        let fakes = Fakes::new();
        let registry = fakes
            .registry()
            .with(coercion::plugins::Gate)
            .expect("child: the registry");
        let ws = Workstream::open(&db, registry)
            .await
            .expect("child: open the store to run plans");
        let id = if which == "resume" {
            // Opening the store resumed the plan a killed process left Running.
            ws.list(&coercion::ListFilter::status(Status::Running))
                .await
                .expect("child: list")
                .first()
                .expect("child: a plan to resume")
                .id
        } else {
            let plan = match which.strip_prefix("gated:") {
                Some(approvers) => {
                    let names: Vec<&str> = approvers.split(',').filter(|n| !n.is_empty()).collect();
                    gated_plan(&names, Duration::from_secs(3600))
                }
                None => long_plan(actions, step),
            };
            let id = ws.submit(plan).await.expect("child: submit");
            ws.start(id).await.expect("child: start");
            id
        };
        println!("PLAN {id}");
        let mut _control = None;
        if listen == "stdin" {
            let mut line = String::new();
            tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
        }
        if listen == "now" || listen == "stdin" || listen == "linger" {
            _control = Some(
                coercion::cli::control::listen(ws.clone(), &db)
                    .await
                    .expect("child: listen"),
            );
            println!("LISTENING");
        }
        let done = ws.wait(id).await.expect("child: wait");
        println!("DONE {}", done.status());
        if listen == "linger" {
            // Keeps running (and serving control requests, retries included) until killed.
            std::future::pending::<()>().await;
        }
    });
}

/// A child process running the long plan on a store file; killed when dropped.
pub struct Runner {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// The id of the plan it runs.
    pub plan: PlanId,
}

impl Runner {
    /// Starts the child (this test binary, running only its ignored `child_process_entry`)
    /// and waits until its plan runs.
    pub fn start(db: &Path, actions: usize, step: Duration, listen: &str) -> Runner {
        Runner::start_plan(db, actions, step, listen, "")
    }

    /// [`start`](Self::start) with `CHILD_PLAN` = `plan`: `gated:alice,bob` runs
    /// [`gated_plan`], `resume` only resumes the plan a killed child left running.
    pub fn start_plan(
        db: &Path,
        actions: usize,
        step: Duration,
        listen: &str,
        plan: &str,
    ) -> Runner {
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "child_process_entry",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_DB, db)
            .env(CHILD_ACTIONS, actions.to_string())
            .env(CHILD_STEP_MS, step.as_millis().to_string())
            .env(CHILD_LISTEN, listen)
            .env(CHILD_PLAN, plan)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the child process");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut runner = Runner {
            child,
            stdin,
            lines,
            plan: PlanId::NIL,
        };
        let line = runner.wait_for("PLAN ");
        runner.plan = line
            .trim_start_matches("PLAN ")
            .trim()
            .parse()
            .expect("a plan id");
        runner
    }

    /// Waits (at most 60 s) for a line of the child's output containing `prefix`, and returns
    /// it from `prefix` on.
    pub fn wait_for(&mut self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                // libtest prints `test child_process_entry ... ` before the child's first line.
                Ok(line) if line.contains(prefix) => {
                    return line[line.find(prefix).unwrap()..].to_owned();
                }
                Ok(_) => {}
                Err(e) => panic!("the child process did not print `{prefix}…`: {e}"),
            }
        }
    }

    /// Tells a child started with `listen = "stdin"` to start accepting control requests, and
    /// waits until it does.
    pub fn start_listening(&mut self) {
        let stdin = self.stdin.as_mut().expect("the child's stdin");
        stdin.write_all(b"listen\n").expect("write to the child");
        stdin.flush().expect("flush");
        self.wait_for("LISTENING");
    }

    /// Waits (30 s at most) until the store `db` says the child's plan is Running: `start`
    /// returns before the engine has stored that status.
    pub fn wait_running(&self, db: &Path) {
        wait_until(
            db,
            self.plan,
            Duration::from_secs(30),
            "the plan runs",
            |j| j["status"] == "Running",
        );
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `coercion show --json ID` until `done` holds for its JSON (at most `timeout`).
pub fn wait_until(
    db: &Path,
    id: PlanId,
    timeout: Duration,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let json: serde_json::Value =
            serde_json::from_str(&ok(db, &["show", "--json", &id.to_string()])).unwrap();
        if done(&json) {
            return json;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}; last: {json:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where screenshots and other artifacts of the tests go: `tests/artifacts/` at the root of
/// the workspace (ignored by git).
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("artifacts");
    std::fs::create_dir_all(&dir).expect("create tests/artifacts");
    dir.canonicalize().expect("tests/artifacts exists")
}

/// A `coercion serve` process on a free loopback port; killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub url: String,
}

impl Server {
    /// Starts `coercion --db <db> serve --addr 127.0.0.1:0 <extra>` and waits until it listens.
    pub fn start(db: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("--db")
            .arg(db)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start coercion serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in the server's first line: {line:?}"))
            .trim_end_matches('/')
            .to_owned();
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The plaintext of the secret in `secret_fixture`'s plan; it must never be shown.
pub const SECRET: &str = "hunter2-do-not-show";

/// The request of [`SecretEcho`]: a token that must not leak.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SecretReq {
    /// The secret.
    pub token: coercion::Secret<String>,
}

/// An action plugin that answers with the secret it was given (so the response holds it too).
#[coercion::plugin(name = "coercion.cli-test/secret-echo")]
#[derive(Clone, Default)]
pub struct SecretEcho;

impl coercion::Plugin for SecretEcho {
    type Request = SecretReq;
    type Response = SecretReq;
    async fn execute(
        &self,
        _ctx: &coercion::Context,
        req: SecretReq,
    ) -> Result<SecretReq, coercion::PluginError> {
        Ok(req)
    }
}

/// A store holding one completed plan whose request and response carry [`SECRET`].
pub fn secret_fixture(name: &str) -> (TempDir, PathBuf, PlanId) {
    let dir = TempDir::new(name);
    let db = dir.join("coercion.db");
    let id = runtime().block_on(async {
        let mut registry = Fakes::new().registry();
        registry
            .register(SecretEcho)
            .expect("register the secret plugin");
        let ws = Workstream::open(&db, registry)
            .await
            .expect("open the store");
        let plan = Plan::builder("rotate credentials")
            .block(
                Block::builder("vault").sequence(Sequence::builder("vault-1").action(
                    ActionSpec::new::<SecretEcho>(
                        "set token",
                        SecretReq {
                            token: coercion::Secret::new(SECRET.to_owned()),
                        },
                    ),
                )),
            )
            .build();
        let done = ws.run(plan).await.expect("the secret plan runs");
        assert_eq!(done.status(), Status::Completed);
        done.id()
    });
    (dir, db, id)
}

/// A store holding `n` small completed plans named `plan 0` … `plan n-1` (submitted in order).
pub fn many_plans(name: &str, n: usize) -> (TempDir, PathBuf) {
    let dir = TempDir::new(name);
    let db = dir.join("coercion.db");
    runtime().block_on(async {
        let fakes = Fakes::new();
        let ws = Workstream::open(&db, fakes.registry())
            .await
            .expect("open the store");
        for i in 0..n {
            let plan =
                Plan::builder(format!("plan {i}"))
                    .block(
                        Block::builder("b").sequence(
                            Sequence::builder("s")
                                .action(ActionSpec::new::<FakeAction>("a", FakeReq::ok())),
                        ),
                    )
                    .build();
            ws.run(plan).await.expect("a small plan runs");
        }
    });
    (dir, db)
}

/// Polls `show` until the plan waits at a gate; returns its output.
pub fn wait_for_gate(db: &std::path::Path, id: &str) -> String {
    for _ in 0..600 {
        let out = ok(db, &["show", id]);
        if out.contains("waiting for approval: promote canary, since ") {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("plan {id} never waited at its gate");
}

/// The throwaway PostgreSQL server's URL (`COERCION_PG_URL`, set by scripts/with-postgres.sh);
/// `None` after a loud banner naming `what` was not tested when `COERCION_SKIP_PG=1`; a panic
/// saying how to get one otherwise.
#[allow(dead_code)] // Not every test binary that includes this module tests PostgreSQL.
pub fn pg_url(what: &str) -> Option<String> {
    match std::env::var("COERCION_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("COERCION_SKIP_PG").as_deref() == Ok("1") => {
            // Written to the process's stderr directly: libtest captures `eprintln!`.
            let banner = format!(
                "\n!!!!!!!! SKIPPED: no COERCION_PG_URL — {what} was NOT tested !!!!!!!!\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), banner.as_bytes());
            None
        }
        _ => panic!(
            "COERCION_PG_URL is not set: run through scripts/with-postgres.sh (the test command \
             does), or set COERCION_SKIP_PG=1"
        ),
    }
}

//! Previews (`Workstream::preview`): what a plan would do, with nothing done — no action's
//! `execute` called, no file touched, nothing stored — checks run for real, post-checks listed
//! as running after, bypasses honoured, and `require_previews` enforced at submit for actions
//! the macro could not see.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use coercion::plugins::{Command, CommandReq, Sleep, SleepReq, WriteFile, WriteFileReq};
use coercion::prelude::*;
use coercion::preview::{Outcome, Report};
use coercion::testing::{FakeAction, FakeCheck, FakeReq};
use coercion::{Preview, Previews};

/// An action plugin that counts its calls: `execute` must never run in a preview.
#[coercion::plugin(manual, preview, name = "test/counted")]
#[derive(Clone, Default)]
struct Counted {
    executed: Arc<AtomicUsize>,
    previewed: Arc<AtomicUsize>,
}

impl Plugin for Counted {
    type Request = String;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: String) -> Result<(), PluginError> {
        self.executed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl Previews for Counted {
    async fn preview(&self, _ctx: &Context, req: &String) -> Result<Preview, PluginError> {
        self.previewed.fetch_add(1, Ordering::SeqCst);
        match req.as_str() {
            "panic" => panic!("a preview that panics"),
            "fail" => Err(PluginError::new("the API said no")),
            "same" => Ok(Preview::no_change("already so")),
            other => Ok(Preview::would_change(format!("would set {other}"))),
        }
    }
}

fn registry(counted: &Counted) -> Registry {
    coercion::testing::registry()
        .with(counted.clone())
        .expect("a fresh name")
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn diffs(report: &Report) -> Vec<&str> {
    report
        .entries
        .iter()
        .filter_map(|e| match &e.outcome {
            Outcome::Action { preview } => preview.diff(),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_preview_of_two_file_writes_shows_one_diff_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let same = dir.path().join("same.conf");
    let changed = dir.path().join("changed.conf");
    std::fs::write(&same, "port = 80\n").unwrap();
    std::fs::write(&changed, "port = 80\nworkers = 2\n").unwrap();
    // Old enough that a rewrite would show in the mtime.
    std::thread::sleep(Duration::from_millis(20));
    let before = (mtime(&same), mtime(&changed));
    let counted = Counted::default();
    let plan = coercion::plan! {
        name: "configure",
        require_previews: true,
        block {
            name: "files",
            sequence {
                name: "same",
                action { name: "write same", plugin: WriteFile, request: WriteFileReq::text(&same, "port = 80\n") }
            }
            sequence {
                name: "changed",
                action { name: "write changed", plugin: WriteFile, request: WriteFileReq::text(&changed, "port = 8080\nworkers = 2\n") }
                action { name: "flag", plugin: Counted, request: "feature=on".to_owned() }
            }
        }
    };
    let db = dir.path().join("plans.db");
    let ws = Workstream::open(&db, registry(&counted)).await.unwrap();
    let report = ws.preview(plan).await.unwrap();

    let found = diffs(&report);
    assert_eq!(found.len(), 1, "exactly one diff: {found:?}");
    let diff = found[0];
    assert!(
        diff.contains("-port = 80\n") && diff.contains("+port = 8080\n"),
        "{diff}"
    );
    assert!(diff.contains(" workers = 2"), "context lines: {diff}");
    let s = report.summary();
    assert_eq!((s.would_change, s.unchanged, s.unknown), (2, 1, 0), "{s}");
    assert_eq!(
        s.to_string(),
        "2 would change, 1 unchanged, 0 unknown; checks: 0 passed, 0 failed"
    );

    // Nothing was done: same files, same times, no execute, nothing stored.
    assert_eq!(
        std::fs::read_to_string(&changed).unwrap(),
        "port = 80\nworkers = 2\n"
    );
    assert_eq!((mtime(&same), mtime(&changed)), before);
    assert_eq!(counted.executed.load(Ordering::SeqCst), 0);
    assert_eq!(counted.previewed.load(Ordering::SeqCst), 1);
    assert!(
        ws.list(&coercion::ListFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The text report: the tree, the diff under its action, the summary last.
    let text = report.to_text(true);
    assert!(text.starts_with("preview of configure\n"), "{text}");
    assert!(
        text.contains("= write same no change (coercion/write-file): "),
        "{text}"
    );
    assert!(
        text.contains("~ write changed would change (coercion/write-file): would rewrite"),
        "{text}"
    );
    assert!(text.contains("+port = 8080"), "{text}");
    assert!(
        text.trim_end()
            .ends_with("2 would change, 1 unchanged, 0 unknown; checks: 0 passed, 0 failed"),
        "{text}"
    );
    assert!(
        !report.to_text(false).contains("+port = 8080"),
        "no diffs unless asked"
    );
    let colored = report.render(true, true);
    assert!(
        colored.contains("\u{1b}[32m+port = 8080"),
        "added lines in green: {colored:?}"
    );
}

#[tokio::test]
async fn checks_run_for_real_post_checks_wait_and_actions_that_cannot_preview_say_so() {
    let counted = Counted::default();
    let plan = Plan::builder("mixed")
        .pre_checks(
            Checks::builder().action(CheckSpec::new::<FakeCheck>("up", FakeReq::ok().tag("pre"))),
        )
        .block(
            Block::builder("b")
                .pre_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>(
                    "down",
                    FakeReq::fail_permanently().tag("block-pre"),
                )))
                .sequence(
                    Sequence::builder("s")
                        .action(ActionSpec::new::<FakeAction>(
                            "opaque",
                            FakeReq::ok().tag("act"),
                        ))
                        .action(ActionSpec::new::<Counted>("same", "same".to_owned()))
                        .action(ActionSpec::new::<Counted>("broken", "fail".to_owned()))
                        .action(ActionSpec::new::<Counted>("wild", "panic".to_owned())),
                ),
        )
        .post_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>(
            "after",
            FakeReq::ok().tag("post"),
        )))
        .deferred(
            DeferredBatch::builder("cleanup", When::Always).action(ActionSpec::new::<Sleep>(
                "settle",
                SleepReq::new(Duration::from_secs(30)),
            )),
        )
        .build();
    let registry = registry(&counted);
    let fake_action = registry.instance::<FakeAction>().unwrap().log().clone();
    let fake_check = registry.instance::<FakeCheck>().unwrap().log().clone();
    let ws = Workstream::in_memory(registry).await.unwrap();
    let report = ws.preview(plan).await.unwrap();

    let outcome = |name: &str| {
        let e = report
            .entries
            .iter()
            .find(|e| e.path.to_string().ends_with(&format!("{name:?}")))
            .unwrap_or_else(|| panic!("no entry {name}: {report:#?}"));
        e.outcome.clone()
    };
    assert_eq!(
        outcome("up"),
        Outcome::Check {
            passed: true,
            error: None
        }
    );
    assert!(
        matches!(outcome("down"), Outcome::Check { passed: false, error: Some(e) } if !e.is_empty())
    );
    assert_eq!(outcome("after"), Outcome::After);
    assert!(
        matches!(outcome("opaque"), Outcome::Action { preview: Preview::CannotTell { reason } } if reason.contains("cannot preview")),
        "{:?}",
        outcome("opaque")
    );
    assert_eq!(
        outcome("same"),
        Outcome::Action {
            preview: Preview::no_change("already so")
        }
    );
    assert!(
        matches!(outcome("broken"), Outcome::Action { preview: Preview::CannotTell { reason } } if reason.contains("the API said no"))
    );
    assert!(
        matches!(outcome("wild"), Outcome::Action { preview: Preview::CannotTell { reason } } if reason.contains("panicked")),
        "{:?}",
        outcome("wild")
    );
    assert!(
        matches!(outcome("settle"), Outcome::Action { preview: Preview::NoChange { summary } } if summary == "would wait 30s"),
        "{:?}",
        outcome("settle")
    );
    // The checks ran once each (no retries, no polling); the post-check and every action's
    // execute did not run.
    assert_eq!(
        fake_check.tags(),
        vec!["pre".to_owned(), "block-pre".to_owned()]
    );
    assert!(fake_action.is_empty());
    assert_eq!(counted.executed.load(Ordering::SeqCst), 0);
    let s = report.summary();
    assert_eq!(
        (
            s.would_change,
            s.unchanged,
            s.unknown,
            s.checks_passed,
            s.checks_failed,
            s.checks_after
        ),
        (0, 2, 3, 1, 1, 1),
        "{s}"
    );
}

#[tokio::test]
async fn a_passing_bypass_skips_what_a_run_would_skip() {
    let counted = Counted::default();
    let plan = Plan::builder("bypassed")
        .block(
            Block::builder("already done")
                .bypass_checks(
                    Checks::builder().action(CheckSpec::new::<FakeCheck>("done?", FakeReq::ok())),
                )
                .pre_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>(
                    "pre",
                    FakeReq::ok().tag("skipped-pre"),
                )))
                .sequence(
                    Sequence::builder("s").action(ActionSpec::new::<Counted>("a", "x".to_owned())),
                ),
        )
        .block(
            Block::builder("to do")
                .bypass_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>(
                    "done?",
                    FakeReq::fail_permanently(),
                )))
                .sequence(
                    Sequence::builder("s").action(ActionSpec::new::<Counted>("b", "y".to_owned())),
                ),
        )
        .build();
    let registry = registry(&counted);
    let checks = registry.instance::<FakeCheck>().unwrap().log().clone();
    let ws = Workstream::in_memory(registry).await.unwrap();
    let report = ws.preview(plan).await.unwrap();
    let s = report.summary();
    assert_eq!(
        (s.skipped, s.would_change, s.checks_passed, s.checks_failed),
        (2, 1, 1, 1),
        "{s}"
    );
    assert!(!checks.tags().contains(&"skipped-pre".to_owned()));
    assert_eq!(
        counted.previewed.load(Ordering::SeqCst),
        1,
        "only the block that would run"
    );
    assert!(
        report
            .to_text(false)
            .contains("- a skipped (test/counted): the block's bypass checks passed")
    );
}

#[tokio::test]
async fn actions_spliced_into_a_plan_that_requires_previews_are_checked_at_submit() {
    // The macro checks what it sees; a fragment built elsewhere is checked against the
    // registry when the plan is submitted or previewed.
    let fragment = vec![
        Sequence::builder("opaque").action(ActionSpec::new::<FakeAction>("run", FakeReq::ok())),
    ];
    let plan = coercion::plan! {
        name: "strict",
        block {
            name: "web",
            require_previews: true,
            sequence { name: "fine", action { name: "wait", plugin: Sleep, request: SleepReq::new(Duration::from_millis(1)) } }
            ..fragment
        }
    };
    let ws = Workstream::in_memory(coercion::testing::registry())
        .await
        .unwrap();
    for result in [
        ws.preview(plan.clone()).await.map(|_| ()),
        ws.submit(plan).await.map(|_| ()),
    ] {
        let Err(coercion::Error::Invalid(problems)) = result else {
            panic!("refused: {result:?}");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].to_string(),
            r#"block[0] "web" / sequence[1] "opaque" / action[0] "run": plugin "coercion.testing/action" cannot preview, and block[0] "web" requires previews (`require_previews`); declare it `#[plugin(preview)]` and implement `Previews`, or move the action"#
        );
    }
    // The requirement travels with the plan's definition (the store, export, import).
    let plan = coercion::plan! {
        name: "strict",
        require_previews: true,
        block { name: "b", sequence { name: "s", action { name: "wait", plugin: Sleep, request: SleepReq::new(Duration::from_millis(1)) } } }
    };
    let json = plan.to_json();
    assert!(json.contains("\"preview_required\": true"), "{json}");
    assert!(Plan::from_json(&json).unwrap().preview_required());
    let dir = tempfile::tempdir().unwrap();
    let ws = Workstream::open(
        dir.path().join("plans.db"),
        Registry::from_inventory().unwrap(),
    )
    .await
    .unwrap();
    let id = ws.submit(plan).await.unwrap();
    assert!(ws.read(id).await.unwrap().preview_required());
}

#[tokio::test]
async fn a_command_with_creates_is_predictable() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("installed");
    let install = CommandReq::shell(format!("touch {}", marker.display())).creates(&marker);
    let plan = || {
        Plan::builder("install")
            .block(
                Block::builder("b").sequence(Sequence::builder("s").action(ActionSpec::new::<
                    Command,
                >(
                    "install",
                    install.clone(),
                ))),
            )
            .build()
    };
    let ws = Workstream::in_memory(Registry::from_inventory().unwrap())
        .await
        .unwrap();
    let first = ws.preview(plan()).await.unwrap();
    let Outcome::Action { preview } = &first.entries[0].outcome else {
        panic!()
    };
    assert_eq!(
        preview,
        &Preview::would_change(format!(
            "would run [\"sh\", \"-c\", \"touch {}\"]",
            marker.display()
        ))
    );
    // It runs once, makes the path; then it would not run, and does not.
    ws.run(plan()).await.unwrap();
    assert!(marker.exists());
    let second = ws.preview(plan()).await.unwrap();
    let Outcome::Action { preview } = &second.entries[0].outcome else {
        panic!()
    };
    assert_eq!(
        preview,
        &Preview::no_change(format!(
            "would not run: {} exists (`creates`)",
            marker.display()
        ))
    );
    let done = ws.run(plan()).await.unwrap();
    let resp = done.blocks()[0].sequences()[0].actions()[0]
        .response::<Command>()
        .unwrap();
    assert_eq!(
        resp.skipped,
        Some(format!("{} exists (`creates`)", marker.display()))
    );
}

#[tokio::test]
async fn names_and_diffs_cannot_rewrite_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let plan = Plan::builder("evil\u{1b}[2J name")
        .block(
            Block::builder("b\u{202e}gnp.exe").sequence(Sequence::builder("s").action(
                ActionSpec::new::<WriteFile>(
                    "w",
                    WriteFileReq::text(&path, "\u{1b}]0;pwned\u{7}\n"),
                ),
            )),
        )
        .build();
    let ws = Workstream::in_memory(Registry::from_inventory().unwrap())
        .await
        .unwrap();
    let text = ws.preview(plan).await.unwrap().render(true, true);
    assert!(
        !text.contains("\u{1b}[2J") && !text.contains("\u{1b}]0;") && !text.contains('\u{202e}'),
        "{text:?}"
    );
    assert!(
        text.contains("\\u{1b}[2J") && text.contains("\\u{202e}"),
        "{text:?}"
    );
}

/// A previewing plugin that counts how many of its previews run at once.
#[coercion::plugin(manual, preview, name = "test/slow-preview")]
#[derive(Clone, Default)]
struct SlowPreview {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Plugin for SlowPreview {
    type Request = u32;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: u32) -> Result<(), PluginError> {
        Ok(())
    }
}

impl Previews for SlowPreview {
    async fn preview(&self, _ctx: &Context, n: &u32) -> Result<Preview, PluginError> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(Preview::would_change(format!("host {n}")))
    }
}

#[tokio::test]
async fn a_block_is_previewed_as_many_at_a_time_as_its_concurrency_in_plan_order() {
    let slow = SlowPreview::default();
    let plan = Plan::builder("fleet")
        .block(
            Block::builder("web")
                .concurrency(4)
                .sequences((0..12).map(|n| {
                    Sequence::builder(format!("host-{n}"))
                        .action(ActionSpec::new::<SlowPreview>("configure", n))
                })),
        )
        .block(Block::builder("db").sequences((12..14).map(|n| {
            Sequence::builder(format!("host-{n}"))
                .action(ActionSpec::new::<SlowPreview>("configure", n))
        })))
        .build();
    let ws = Workstream::in_memory(Registry::new().with(slow.clone()).unwrap())
        .await
        .unwrap();
    let report = ws.preview(plan).await.unwrap();
    assert_eq!(
        slow.most.load(Ordering::SeqCst),
        4,
        "the web block's concurrency, never more"
    );
    let texts: Vec<String> = report
        .entries
        .iter()
        .map(|e| match &e.outcome {
            Outcome::Action { preview } => preview.text().to_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    let expected: Vec<String> = (0..14).map(|n| format!("host {n}")).collect();
    assert_eq!(texts, expected, "the report keeps plan order");
}

//! Acceptance suite of the engine: one test per row of the outcome table (Go reference §3.13 as
//! corrected by SPEC §7), the operator controls and the Workstream API.
//!
//! Every scenario asserts the whole final tree (`outline`), the reason, the attempt counts and
//! the order in which the fake plugins were called. Tests run on tokio's paused clock, so
//! sleeps, timeouts and backoff cost no wall time and nothing depends on the machine's speed.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::time::Duration;

use coercion::plugin::codes;
use coercion::prelude::*;
use coercion::storage::Change;
use coercion::testing::*;
use coercion::workstream::Stream;
use coercion::{ChecksBuilder, Error, Event, ListFilter, StoreError};
use futures_util::StreamExt as _;
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An action named `tag` whose fake call is logged as `tag`.
fn act(tag: &str, req: FakeReq) -> ActionSpec {
    ActionSpec::new::<FakeAction>(tag, req.tag(tag))
}

/// A check named `tag` whose fake call is logged as `tag`.
fn chk(tag: &str, req: FakeReq) -> CheckSpec {
    CheckSpec::new::<FakeCheck>(tag, req.tag(tag))
}

/// A check section of one check; as continuous checks, it runs once an hour.
fn checks(tag: &str, req: FakeReq) -> ChecksBuilder {
    Checks::builder().delay(HOUR).action(chk(tag, req))
}

fn seq(name: &str, actions: impl IntoIterator<Item = ActionSpec>) -> coercion::SequenceBuilder {
    Sequence::builder(name).actions(actions)
}

/// Removes the common indentation of `text` and its first and last (blank) lines.
fn dedent(text: &str) -> String {
    let lines: Vec<&str> = text.lines().skip_while(|l| l.trim().is_empty()).collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for l in lines {
        if l.trim().is_empty() {
            continue;
        }
        out.push_str(&l[indent..]);
        out.push('\n');
    }
    out
}

#[track_caller]
fn assert_tree(plan: &Plan, expected: &str) {
    let actual = outline(plan);
    let expected = dedent(expected);
    assert!(
        actual == expected,
        "final tree differs\n--- expected\n{expected}--- actual\n{actual}"
    );
}

/// Asserts the calls of `log`, group by group: the groups come in this order; the calls inside a
/// group ran concurrently, so their order is not asserted.
#[track_caller]
fn assert_calls(log: &CallLog, groups: &[&[&str]]) {
    let tags = log.tags();
    let expected: usize = groups.iter().map(|g| g.len()).sum();
    assert_eq!(
        tags.len(),
        expected,
        "calls: {tags:?}, expected groups {groups:?}"
    );
    let mut rest = &tags[..];
    for g in groups {
        let (head, tail) = rest.split_at(g.len());
        let mut got: Vec<&str> = head.iter().map(String::as_str).collect();
        let mut want = g.to_vec();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "calls: {tags:?}, expected groups {groups:?}");
        rest = tail;
    }
}

/// The action (in a sequence, batch or check section) named `name`.
fn action<'a>(plan: &'a Plan, name: &str) -> ActionView<'a> {
    plan.walk()
        .find_map(|(_, o)| match o {
            ObjectRef::Action(a) if a.name() == name => Some(a),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no action named {name:?}"))
}

fn last_error(plan: &Plan, name: &str) -> PluginError {
    action(plan, name)
        .last_error()
        .cloned()
        .unwrap_or_else(|| panic!("action {name:?} has no error"))
}

async fn run(fakes: &Fakes, plan: Plan) -> Plan {
    run_in_memory(fakes.registry(), plan)
        .await
        .expect("the plan runs to its end")
}

/// The next item of a stream.
async fn next<S: Stream>(s: &mut Pin<Box<S>>) -> Option<S::Item> {
    std::future::poll_fn(|cx| s.as_mut().poll_next(cx)).await
}

/// Every item of a stream, until it ends.
async fn collect<S: Stream>(mut s: Pin<Box<S>>) -> Vec<S::Item> {
    let mut items = Vec::new();
    while let Some(item) = next(&mut s).await {
        items.push(item);
    }
    items
}

/// A plan with every phase: the plan's five check slots but bypass, two blocks (the first with
/// its own checks, two sequences, concurrency 1, no tolerated failure), and three deferred
/// batches (`always` is `fail_plan`). `script` gives each action's behaviour by its tag.
fn full_plan(script: impl Fn(&str) -> FakeReq) -> Plan {
    let a = |t: &str| act(t, script(t));
    let c = |t: &str| checks(t, script(t));
    Plan::builder("full")
        .pre_checks(c("plan-pre"))
        .cont_checks(c("plan-cont"))
        .block(
            Block::builder("b0")
                .pre_checks(c("b0-pre"))
                .cont_checks(c("b0-cont"))
                .sequence(seq("b0-s0", [a("b0-s0-a0"), a("b0-s0-a1")]))
                .sequence(seq("b0-s1", [a("b0-s1-a0")]))
                .post_checks(c("b0-post"))
                .deferred_checks(c("b0-deferred")),
        )
        .block(Block::builder("b1").sequence(seq("b1-s0", [a("b1-s0-a0")])))
        .post_checks(c("plan-post"))
        .deferred(DeferredBatch::builder("on-success", When::OnSuccess).action(a("on-success")))
        .deferred(DeferredBatch::builder("on-failure", When::OnFailure).action(a("on-failure")))
        .deferred(
            DeferredBatch::builder("always", When::Always)
                .fail_plan(true)
                .action(a("always")),
        )
        .deferred_checks(c("plan-deferred"))
        .build()
}

/// Every action succeeds but those tagged in `failing`, which fail on every attempt.
fn failing(failing: &'static [&'static str]) -> impl Fn(&str) -> FakeReq {
    move |t| {
        if failing.contains(&t) {
            FakeReq::fail()
        } else {
            FakeReq::ok()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The outcome table
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn everything_passes() {
    let fakes = Fakes::new();
    let done = run(&fakes, full_plan(failing(&[]))).await;
    assert_tree(
        &done,
        r#"
        plan "full": Completed (None)
          pre_checks: Completed
            action[0] "plan-pre": Completed (attempts: 1)
          cont_checks: Completed
            action[0] "plan-cont": Completed (attempts: 1)
          block[0] "b0": Completed
            pre_checks: Completed
              action[0] "b0-pre": Completed (attempts: 1)
            cont_checks: Completed
              action[0] "b0-cont": Completed (attempts: 1)
            sequence[0] "b0-s0": Completed
              action[0] "b0-s0-a0": Completed (attempts: 1)
              action[1] "b0-s0-a1": Completed (attempts: 1)
            sequence[1] "b0-s1": Completed
              action[0] "b0-s1-a0": Completed (attempts: 1)
            post_checks: Completed
              action[0] "b0-post": Completed (attempts: 1)
            deferred_checks: Completed
              action[0] "b0-deferred": Completed (attempts: 1)
          block[1] "b1": Completed
            sequence[0] "b1-s0": Completed
              action[0] "b1-s0-a0": Completed (attempts: 1)
          post_checks: Completed
            action[0] "plan-post": Completed (attempts: 1)
          deferred batch[0] "on-success": Completed
            action[0] "on-success": Completed (attempts: 1)
          deferred batch[1] "on-failure": NotStarted
            action[0] "on-failure": NotStarted (attempts: 0)
          deferred batch[2] "always": Completed
            action[0] "always": Completed (attempts: 1)
          deferred_checks: Completed
            action[0] "plan-deferred": Completed (attempts: 1)
        "#,
    );
    assert_eq!(done.reason(), Reason::None);
    assert!(done.failures().is_empty());
    assert_calls(
        fakes.action.log(),
        &[
            &["b0-s0-a0"],
            &["b0-s0-a1"],
            &["b0-s1-a0"],
            &["b1-s0-a0"],
            &["on-success"],
            &["always"],
        ],
    );
    assert_calls(
        fakes.check.log(),
        &[
            &["plan-pre", "plan-cont"],
            &["b0-pre", "b0-cont"],
            &["b0-post"],
            &["b0-deferred"],
            &["plan-post"],
            &["plan-deferred"],
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn plan_bypass_passes_and_nothing_else_runs() {
    let fakes = Fakes::new();
    let plan = Plan::builder("bypassed")
        .bypass_checks(checks("bypass", FakeReq::ok()))
        .pre_checks(checks("pre", FakeReq::ok()))
        .block(Block::builder("b0").sequence(seq("s0", [act("s0-a0", FakeReq::ok())])))
        .deferred(
            DeferredBatch::builder("always", When::Always).action(act("always", FakeReq::ok())),
        )
        .deferred_checks(checks("deferred", FakeReq::ok()))
        .build();
    let done = run(&fakes, plan).await;
    assert_tree(
        &done,
        r#"
        plan "bypassed": Completed (None)
          bypass_checks: Completed
            action[0] "bypass": Completed (attempts: 1)
          pre_checks: NotStarted
            action[0] "pre": NotStarted (attempts: 0)
          block[0] "b0": NotStarted
            sequence[0] "s0": NotStarted
              action[0] "s0-a0": NotStarted (attempts: 0)
          deferred batch[0] "always": NotStarted
            action[0] "always": NotStarted (attempts: 0)
          deferred_checks: NotStarted
            action[0] "deferred": NotStarted (attempts: 0)
        "#,
    );
    assert_calls(fakes.action.log(), &[]);
    assert_calls(fakes.check.log(), &[&["bypass"]]);
}

#[tokio::test(start_paused = true)]
async fn plan_bypass_fails_and_the_plan_runs_normally() {
    let fakes = Fakes::new();
    let plan = Plan::builder("not bypassed")
        .bypass_checks(
            Checks::builder()
                .action(chk("bypass-ok", FakeReq::ok()))
                .action(chk("bypass-no", FakeReq::fail())),
        )
        .pre_checks(checks("pre", FakeReq::ok()))
        .block(Block::builder("b0").sequence(seq("s0", [act("s0-a0", FakeReq::ok())])))
        .deferred(
            DeferredBatch::builder("on-success", When::OnSuccess)
                .action(act("on-success", FakeReq::ok())),
        )
        .deferred(
            DeferredBatch::builder("on-failure", When::OnFailure)
                .action(act("on-failure", FakeReq::ok())),
        )
        .deferred_checks(checks("deferred", FakeReq::ok()))
        .build();
    let done = run(&fakes, plan).await;
    assert_tree(
        &done,
        r#"
        plan "not bypassed": Completed (None)
          bypass_checks: Failed
            action[0] "bypass-ok": Completed (attempts: 1)
            action[1] "bypass-no": Failed (attempts: 1)
          pre_checks: Completed
            action[0] "pre": Completed (attempts: 1)
          block[0] "b0": Completed
            sequence[0] "s0": Completed
              action[0] "s0-a0": Completed (attempts: 1)
          deferred batch[0] "on-success": Completed
            action[0] "on-success": Completed (attempts: 1)
          deferred batch[1] "on-failure": NotStarted
            action[0] "on-failure": NotStarted (attempts: 0)
          deferred_checks: Completed
            action[0] "deferred": Completed (attempts: 1)
        "#,
    );
    assert_calls(fakes.action.log(), &[&["s0-a0"], &["on-success"]]);
    assert_calls(
        fakes.check.log(),
        &[&["bypass-ok", "bypass-no"], &["pre"], &["deferred"]],
    );
}

#[tokio::test(start_paused = true)]
async fn block_bypass_passes_and_completes_the_block_without_exit_delay() {
    let fakes = Fakes::new();
    let plan = Plan::builder("block bypass")
        .block(
            Block::builder("b0")
                .exit_delay(HOUR)
                .bypass_checks(checks("b0-bypass", FakeReq::ok()))
                .pre_checks(checks("b0-pre", FakeReq::ok()))
                .sequence(seq("b0-s0", [act("b0-s0-a0", FakeReq::ok())]))
                .post_checks(checks("b0-post", FakeReq::ok()))
                .deferred_checks(checks("b0-deferred", FakeReq::ok())),
        )
        .block(Block::builder("b1").sequence(seq("b1-s0", [act("b1-s0-a0", FakeReq::ok())])))
        .build();
    let started = Instant::now();
    let done = run(&fakes, plan).await;
    assert!(
        started.elapsed() < HOUR,
        "the exit delay of a bypassed block must not apply"
    );
    assert_tree(
        &done,
        r#"
        plan "block bypass": Completed (None)
          block[0] "b0": Completed
            bypass_checks: Completed
              action[0] "b0-bypass": Completed (attempts: 1)
            pre_checks: NotStarted
              action[0] "b0-pre": NotStarted (attempts: 0)
            sequence[0] "b0-s0": NotStarted
              action[0] "b0-s0-a0": NotStarted (attempts: 0)
            post_checks: NotStarted
              action[0] "b0-post": NotStarted (attempts: 0)
            deferred_checks: NotStarted
              action[0] "b0-deferred": NotStarted (attempts: 0)
          block[1] "b1": Completed
            sequence[0] "b1-s0": Completed
              action[0] "b1-s0-a0": Completed (attempts: 1)
        "#,
    );
    assert_calls(fakes.action.log(), &[&["b1-s0-a0"]]);
    assert_calls(fakes.check.log(), &[&["b0-bypass"]]);
}

#[tokio::test(start_paused = true)]
async fn block_bypass_fails_and_the_block_runs() {
    let fakes = Fakes::new();
    let plan = Plan::builder("block bypass fails")
        .block(
            Block::builder("b0")
                .bypass_checks(checks("b0-bypass", FakeReq::fail_permanently()))
                .pre_checks(checks("b0-pre", FakeReq::ok()))
                .sequence(seq("b0-s0", [act("b0-s0-a0", FakeReq::ok())]))
                .post_checks(checks("b0-post", FakeReq::ok())),
        )
        .build();
    let done = run(&fakes, plan).await;
    assert_tree(
        &done,
        r#"
        plan "block bypass fails": Completed (None)
          block[0] "b0": Completed
            bypass_checks: Failed
              action[0] "b0-bypass": Failed (attempts: 1)
            pre_checks: Completed
              action[0] "b0-pre": Completed (attempts: 1)
            sequence[0] "b0-s0": Completed
              action[0] "b0-s0-a0": Completed (attempts: 1)
            post_checks: Completed
              action[0] "b0-post": Completed (attempts: 1)
        "#,
    );
    assert_calls(fakes.action.log(), &[&["b0-s0-a0"]]);
    assert_calls(
        fakes.check.log(),
        &[&["b0-bypass"], &["b0-pre"], &["b0-post"]],
    );
}

#[tokio::test(start_paused = true)]
async fn plan_pre_checks_fail() {
    let fakes = Fakes::new();
    let done = run(&fakes, full_plan(failing(&["plan-pre"]))).await;
    assert_tree(
        &done,
        r#"
        plan "full": Failed (PreCheck)
          pre_checks: Failed
            action[0] "plan-pre": Failed (attempts: 1)
          cont_checks: Completed
            action[0] "plan-cont": Completed (attempts: 1)
          block[0] "b0": NotStarted
            pre_checks: NotStarted
              action[0] "b0-pre": NotStarted (attempts: 0)
            cont_checks: NotStarted
              action[0] "b0-cont": NotStarted (attempts: 0)
            sequence[0] "b0-s0": NotStarted
              action[0] "b0-s0-a0": NotStarted (attempts: 0)
              action[1] "b0-s0-a1": NotStarted (attempts: 0)
            sequence[1] "b0-s1": NotStarted
              action[0] "b0-s1-a0": NotStarted (attempts: 0)
            post_checks: NotStarted
              action[0] "b0-post": NotStarted (attempts: 0)
            deferred_checks: NotStarted
              action[0] "b0-deferred": NotStarted (attempts: 0)
          block[1] "b1": NotStarted
            sequence[0] "b1-s0": NotStarted
              action[0] "b1-s0-a0": NotStarted (attempts: 0)
          post_checks: NotStarted
            action[0] "plan-post": NotStarted (attempts: 0)
          deferred batch[0] "on-success": NotStarted
            action[0] "on-success": NotStarted (attempts: 0)
          deferred batch[1] "on-failure": Completed
            action[0] "on-failure": Completed (attempts: 1)
          deferred batch[2] "always": Completed
            action[0] "always": Completed (attempts: 1)
          deferred_checks: Completed
            action[0] "plan-deferred": Completed (attempts: 1)
        "#,
    );
    assert_eq!(
        last_error(&done, "plan-pre").message,
        "plan-pre: scripted failure on attempt 1"
    );
    assert_calls(fakes.action.log(), &[&["on-failure"], &["always"]]);
    assert_calls(
        fakes.check.log(),
        &[&["plan-pre", "plan-cont"], &["plan-deferred"]],
    );
}

#[tokio::test(start_paused = true)]
async fn first_cont_run_fails_beside_the_pre_checks() {
    let fakes = Fakes::new();
    let done = run(&fakes, full_plan(failing(&["plan-cont"]))).await;
    assert_tree(
        &done,
        r#"
        plan "full": Failed (ContCheck)
          pre_checks: Completed
            action[0] "plan-pre": Completed (attempts: 1)
          cont_checks: Failed
            action[0] "plan-cont": Failed (attempts: 1)
          block[0] "b0": NotStarted
            pre_checks: NotStarted
              action[0] "b0-pre": NotStarted (attempts: 0)
            cont_checks: NotStarted
              action[0] "b0-cont": NotStarted (attempts: 0)
            sequence[0] "b0-s0": NotStarted
              action[0] "b0-s0-a0": NotStarted (attempts: 0)
              action[1] "b0-s0-a1": NotStarted (attempts: 0)
            sequence[1] "b0-s1": NotStarted
              action[0] "b0-s1-a0": NotStarted (attempts: 0)
            post_checks: NotStarted
              action[0] "b0-post": NotStarted (attempts: 0)
            deferred_checks: NotStarted
              action[0] "b0-deferred": NotStarted (attempts: 0)
          block[1] "b1": NotStarted
            sequence[0] "b1-s0": NotStarted
              action[0] "b1-s0-a0": NotStarted (attempts: 0)
          post_checks: NotStarted
            action[0] "plan-post": NotStarted (attempts: 0)
          deferred batch[0] "on-success": NotStarted
            action[0] "on-success": NotStarted (attempts: 0)
          deferred batch[1] "on-failure": Completed
            action[0] "on-failure": Completed (attempts: 1)
          deferred batch[2] "always": Completed
            action[0] "always": Completed (attempts: 1)
          deferred_checks: Completed
            action[0] "plan-deferred": Completed (attempts: 1)
        "#,
    );
    assert_calls(fakes.action.log(), &[&["on-failure"], &["always"]]);
    assert_calls(
        fakes.check.log(),
        &[&["plan-pre", "plan-cont"], &["plan-deferred"]],
    );
}

/// Without pre-checks the continuous loop runs at once, then every `delay`.
#[tokio::test(start_paused = true)]
async fn cont_checks_run_at_once_then_every_delay() {
    let fakes = Fakes::new();
    let plan = Plan::builder("cadence")
        .cont_checks(
            Checks::builder()
                .delay(10 * SEC)
                .action(chk("cont", FakeReq::ok())),
        )
        .block(Block::builder("b0").sequence(seq(
            "s0",
            [act("long", FakeReq::sleep(35 * SEC)).timeout(HOUR)],
        )))
        .build();
    let done = run(&fakes, plan).await;
    assert_tree(
        &done,
        r#"
        plan "cadence": Completed (None)
          cont_checks: Completed
            action[0] "cont": Completed (attempts: 1)
          block[0] "b0": Completed
            sequence[0] "s0": Completed
              action[0] "long": Completed (attempts: 1)
        "#,
    );
    // Runs at 0 s, 10 s, 20 s and 30 s; the block ends at 35 s, before the next one.
    assert_calls(
        fakes.check.log(),
        &[&["cont"], &["cont"], &["cont"], &["cont"]],
    );
    assert_calls(fakes.action.log(), &[&["long"]]);
}

/// The plan's continuous checks fail while a long sequence runs: the block fails at once (no new
/// sequence starts), the running action finishes, its sequence stops, the block's deferred
/// checks run, later blocks and the plan's post-checks are skipped, the reason is `ContCheck`.
#[tokio::test(start_paused = true)]
async fn plan_cont_checks_fail_during_a_block() {
    let fakes = Fakes::new();
    let plan = Plan::builder("cont fails")
        .cont_checks(checks("plan-cont", FakeReq::fail().after(5 * SEC)))
        .block(
            Block::builder("b0")
                .sequence(seq(
                    "s0",
                    [
                        act("s0-a0", FakeReq::sleep(60 * SEC)).timeout(HOUR),
                        act("s0-a1", FakeReq::ok()),
                    ],
                ))
                .sequence(seq("s1", [act("s1-a0", FakeReq::ok())]))
                .deferred_checks(checks("b0-deferred", FakeReq::ok())),
        )
        .block(Block::builder("b1").sequence(seq("b1-s0", [act("b1-s0-a0", FakeReq::ok())])))
        .post_checks(checks("plan-post", FakeReq::ok()))
        .deferred(
            DeferredBatch::builder("on-success", When::OnSuccess)
                .action(act("on-success", FakeReq::ok())),
        )
        .deferred(
            DeferredBatch::builder("on-failure", When::OnFailure)
                .action(act("on-failure", FakeReq::ok())),
        )
        .deferred_checks(checks("plan-deferred", FakeReq::ok()))
        .build();
    let done = run(&fakes, plan).await;
    assert_tree(
        &done,
        r#"
        plan "cont fails": Failed (ContCheck)
          cont_checks: Failed
            action[0] "plan-cont": Failed (attempts: 1)
          block[0] "b0": Failed
            sequence[0] "s0": Stopped
              action[0] "s0-a0": Completed (attempts: 1)
              action[1] "s0-a1": NotStarted (attempts: 0)
            sequence[1] "s1": NotStarted
              action[0] "s1-a0": NotStarted (attempts: 0)
            deferred_checks: Completed
              action[0] "b0-deferred": Completed (attempts: 1)
          block[1] "b1": NotStarted
            sequence[0] "b1-s0": NotStarted
              action[0] "b1-s0-a0": NotStarted (attempts: 0)
          post_checks: NotStarted
            action[0] "plan-post": NotStarted (attempts: 0)
          deferred batch[0] "on-success": NotStarted
            action[0] "on-success": NotStarted (attempts: 0)
          deferred batch[1] "on-failure": Completed
            action[0] "on-failure": Completed (attempts: 1)
          deferred_checks: Completed
            action[0] "plan-deferred": Completed (attempts: 1)
        "#,
    );
    // The running action was not interrupted by the failure.
    assert!(action(&done, "s0-a0").attempts()[0].succeeded());
    assert_calls(fakes.action.log(), &[&["s0-a0"], &["on-failure"]]);
    assert_calls(
        fakes.check.log(),
        &[&["plan-cont"], &["b0-deferred"], &["plan-deferred"]],
    );
}

#[tokio::test(start_paused = true)]
async fn block_fails_when_a_sequence_exceeds_the_tolerance() {
    let fakes = Fakes::new();
    let done = run(&fakes, full_plan(failing(&["b0-s0-a0"]))).await;
    assert_tree(
        &done,
        r#"
        plan "full": Failed (Block)
          pre_checks: Completed
            action[0] "plan-pre": Completed (attempts: 1)
          cont_checks: Completed
            action[0] "plan-cont": Completed (attempts: 1)
          block[0] "b0": Failed
            pre_checks: Completed
              action[0] "b0-pre": Completed (attempts: 1)
            cont_checks: Completed
              action[0] "b0-cont": Completed (attempts: 1)
            sequence[0] "b0-s0": Failed
              action[0] "b0-s0-a0": Failed (attempts: 1)
              action[1] "b0-s0-a1": NotStarted (attempts: 0)
            sequence[1] "b0-s1": NotStarted
              action[0] "b0-s1-a0": NotStarted (attempts: 0)
            post_checks: NotStarted
              action[0] "b0-post": NotStarted (attempts: 0)
            deferred_checks: Completed
              action[0] "b0-deferred": Completed (attempts: 1)
          block[1] "b1": NotStarted
            sequence[0] "b1-s0": NotStarted
              action[0] "b1-s0-a0": NotStarted (attempts: 0)
          post_checks: NotStarted
            action[0] "plan-post": NotStarted (attempts: 0)
          deferred batch[0] "on-success": NotStarted
            action[0] "on-success": NotStarted (attempts: 0)
          deferred batch[1] "on-failure": Completed
            action[0] "on-failure": Completed (attempts: 1)
          deferred batch[2] "always": Completed
            action[0] "always": Completed (attempts: 1)
          deferred_checks: Completed
            action[0] "plan-deferred": Completed (attempts: 1)
        "#,
    );
    let failures: Vec<String> = done.failures().iter().map(|f| f.path.to_string()).collect();
    assert_eq!(
        failures,
        [
            r#"block[0] "b0""#,
            r#"block[0] "b0" / sequence[0] "b0-s0""#,
            r#"block[0] "b0" / sequence[0] "b0-s0" / action[0] "b0-s0-a0""#
        ]
    );
    assert_calls(
        fakes.action.log(),
        &[&["b0-s0-a0"], &["on-failure"], &["always"]],
    );
    assert_calls(
        fakes.check.log(),
        &[
            &["plan-pre", "plan-cont"],
            &["b0-pre", "b0-cont"],
            &["b0-deferred"],
            &["plan-deferred"],
        ],
    );
}

/// Block pre-checks fail in a block that also has continuous checks (Go hangs here, §3.7).
#[tokio::test(start_paused = true)]
async fn block_pre_checks_fail() {
    let fakes = Fakes::new();
    let done = run(&fakes, full_plan(failing(&["b0-pre"]))).await;
    assert_tree(
        &done,
        r#"
        plan "full": Failed (Block)
          pre_checks: Completed
            action[0] "plan-pre": Completed (attempts: 1)
          cont_checks: Completed
            action[0] "plan-cont": Completed (attempts: 1)
          block[0] "b0": Failed
            pre_checks: Failed
              action[0] "b0-pre": Failed (attempts: 1)
            cont_checks: Completed
              action[0] "b0-cont": Completed (attempts: 1)
            sequence[0] "b0-s0": NotStarted
              action[0] "b0-s0-a0": NotStarted (attempts: 0)
              action[1] "b0-s0-a1": NotStarted (attempts: 0)
            sequence[1] "b0-s1": NotStarted
              action[0] "b0-s1-a0": NotStarted (attempts: 0)
            post_checks: NotStarted
              action[0] "b0-post": NotStarted (attempts: 0)
            deferred_checks: Completed
              action[0] "b0-deferred": Completed (attempts: 1)
          block[1] "b1": NotStarted
            sequence[0] "b1-s0": NotStarted
              action[0] "b1-s0-a0": NotStarted (attempts: 0)
          post_checks: NotStarted
            action[0] "plan-post": NotStarted (attempts: 0)
          deferred batch[0] "on-success": NotStarted
            action[0] "on-success": NotStarted (attempts: 0)
          deferred batch[1] "on-failure": Completed
            action[0] "on-failure": Completed (attempts: 1)
          deferred batch[2] "always": Completed
            action[0] "always": Completed (attempts: 1)
          deferred_checks: Completed
            action[0] "plan-deferred": Completed (attempts: 1)
        "#,
    );
    assert_calls(fakes.action.log(), &[&["on-failure"], &["always"]]);
    assert_calls(
        fakes.check.log(),
        &[
            &["plan-pre", "plan-cont"],
            &["b0-pre", "b0-cont"],
            &["b0-deferred"],
            &["plan-deferred"],
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn block_first_cont_run_fails() {
    let fakes = Fakes::new();
    let done = run(&fakes, full_plan(failing(&["b0-cont"]))).await;
    assert_tree(
        &done,
        r#"
        plan "full": Failed (Block)
          pre_checks: Completed
            action[0] "plan-pre": Completed (attempts: 1)
          cont_checks: Completed
            action[0] "plan-cont": Completed (attempts: 1)
          block[0] "b0": Failed
            pre_checks: Completed
              action[0] "b0-pre": Completed (attempts: 1)
            cont_checks: Failed
              action[0] "b0-cont": Failed (attempts: 1)
            sequence[0] "b0-s0": NotStarted
              action[0] "b0-s0-a0": NotStarted (attempts: 0)
              action[1] "b0-s0-a1": NotStarted (attempts: 0)
            sequence[1] "b0-s1": NotStarted
              action[0] "b0-s1-a0": NotStarted (attempts: 0)
            post_checks: NotStarted
              action[0] "b0-post": NotStarted (attempts: 0)
            deferred_checks: Completed
              action[0] "b0-deferred": Completed (attempts: 1)
          block[1] "b1": NotStarted
            sequence[0] "b1-s0": NotStarted
              action[0] "b1-s0-a0": NotStarted (attempts: 0)
          post_checks: NotStarted
            action[0] "plan-post": NotStarted (attempts: 0)
          deferred batch[0] "on-success": NotStarted
            action[0] "on-success": NotStarted (attempts: 0)
          deferred batch[1] "on-failure": Completed
            action[0] "on-failure": Completed (attempts: 1)
          deferred batch[2] "always": Completed
            action[0] "always": Completed (attempts: 1)
          deferred_checks: Completed
            action[0] "plan-deferred": Completed (attempts: 1)
        "#,
    );
    assert_calls(fakes.action.log(), &[&["on-failure"], &["always"]]);
    assert_calls(
        fakes.check.log(),
        &[
            &["plan-pre", "plan-cont"],
            &["b0-pre", "b0-cont"],
            &["b0-deferred"],
            &["plan-deferred"],
        ],
    );
}

/// The block's continuous checks fail while its sequences run: in-flight sequences finish
/// their current action and stop, no new one starts, the block waits for them; reason `Block`.
#[tokio::test(start_paused = true)]
async fn block_cont_checks_fail_during_the_sequences() {
    let fakes = Fakes::new();
    let plan = Plan::builder("block cont fails")
        .block(
            Block::builder("b0")
                .concurrency(2)
                .cont_checks(checks("b0-cont", FakeReq::fail().after(5 * SEC)))
                .sequence(seq(
                    "s0",
                    [
                        act("s0-a0", FakeReq::sleep(60 * SEC)).timeout(HOUR),
                        act("s0-a1", FakeReq::ok()),
                    ],
                ))
                .sequence(seq(
                    "s1",
                    [
                        act("s1-a0", FakeReq::sleep(2 * SEC)),
                        act("s1-a1", FakeReq::sleep(20 * SEC)),
                    ],
                ))
                .sequence(seq("s2", [act("s2-a0", FakeReq::ok())]))
                .post_checks(checks("b0-post", FakeReq::ok()))
                .deferred_checks(checks("b0-deferred", FakeReq::ok())),
        )
        .block(Block::builder("b1").sequence(seq("b1-s0", [act("b1-s0-a0", FakeReq::ok())])))
        .deferred(
            DeferredBatch::builder("on-failure", When::OnFailure)
                .action(act("on-failure", FakeReq::ok())),
        )
        .build();
    let done = run(&fakes, plan).await;
    // s1-a0 ends at 2 s and s1-a1 starts; the checks fail at 5 s; s1-a1 ends at 22 s and
    // s0-a0 at 60 s, both completed; nothing starts after 5 s.
    assert_tree(
        &done,
        r#"
        plan "block cont fails": Failed (Block)
          block[0] "b0": Failed
            cont_checks: Failed
              action[0] "b0-cont": Failed (attempts: 1)
            sequence[0] "s0": Stopped
              action[0] "s0-a0": Completed (attempts: 1)
              action[1] "s0-a1": NotStarted (attempts: 0)
            sequence[1] "s1": Completed
              action[0] "s1-a0": Completed (attempts: 1)
              action[1] "s1-a1": Completed (attempts: 1)
            sequence[2] "s2": NotStarted
              action[0] "s2-a0": NotStarted (attempts: 0)
            post_checks: NotStarted
              action[0] "b0-post": NotStarted (attempts: 0)
            deferred_checks: Completed
              action[0] "b0-deferred": Completed (attempts: 1)
          block[1] "b1": NotStarted
            sequence[0] "b1-s0": NotStarted
              action[0] "b1-s0-a0": NotStarted (attempts: 0)
          deferred batch[0] "on-failure": Completed
            action[0] "on-failure": Completed (attempts: 1)
        "#,
    );
    assert_calls(
        fakes.action.log(),
        &[&["s0-a0", "s1-a0"], &["s1-a1"], &["on-failure"]],
    );
    assert_calls(fakes.check.log(), &[&["b0-cont"], &["b0-deferred"]]);
}

#[tokio::test(start_paused = true)]
async fn block_post_checks_fail() {
    let fakes = Fakes::new();
    let done = run(&fakes, full_plan(failing(&["b0-post"]))).await;
    assert_tree(
        &done,
        r#"
        plan "full": Failed (Block)
          pre_checks: Completed
            action[0] "plan-pre": Completed (attempts: 1)
          cont_checks: Completed
            action[0] "plan-cont": Completed (attempts: 1)
          block[0] "b0": Failed
            pre_checks: Completed
              action[0] "b0-pre": Completed (attempts: 1)
            cont_checks: Completed
              action[0] "b0-cont": Completed (attempts: 1)
            sequence[0] "b0-s0": Completed
              action[0] "b0-s0-a0": Completed (attempts: 1)
              action[1] "b0-s0-a1": Completed (attempts: 1)
            sequence[1] "b0-s1": Completed
              action[0] "b0-s1-a0": Completed (attempts: 1)
            post_checks: Failed
              action[0] "b0-post": Failed (attempts: 1)
            deferred_checks: Completed
              action[0] "b0-deferred": Completed (attempts: 1)
          block[1] "b1": NotStarted
            sequence[0] "b1-s0": NotStarted
              action[0] "b1-s0-a0": NotStarted (attempts: 0)
          post_checks: NotStarted
            action[0] "plan-post": NotStarted (attempts: 0)
          deferred batch[0] "on-success": NotStarted
            action[0] "on-success": NotStarted (attempts: 0)
          deferred batch[1] "on-failure": Completed
            action[0] "on-failure": Completed (attempts: 1)
          deferred batch[2] "always": Completed
            action[0] "always": Completed (attempts: 1)
          deferred_checks: Completed
            action[0] "plan-deferred": Completed (attempts: 1)
        "#,
    );
    assert_calls(
        fakes.action.log(),
        &[
            &["b0-s0-a0"],
            &["b0-s0-a1"],
            &["b0-s1-a0"],
            &["on-failure"],
            &["always"],
        ],
    );
    assert_calls(
        fakes.check.log(),
        &[
            &["plan-pre", "plan-cont"],
            &["b0-pre", "b0-cont"],
            &["b0-post"],
            &["b0-deferred"],
            &["plan-deferred"],
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn block_deferred_checks_fail() {
    let fakes = Fakes::new();
    let done = run(&fakes, full_plan(failing(&["b0-deferred"]))).await;
    assert_tree(
        &done,
        r#"
        plan "full": Failed (Block)
          pre_checks: Completed
            action[0] "plan-pre": Completed (attempts: 1)
          cont_checks: Completed
            action[0] "plan-cont": Completed (attempts: 1)
          block[0] "b0": Failed
            pre_checks: Completed
              action[0] "b0-pre": Completed (attempts: 1)
            cont_checks: Completed
              action[0] "b0-cont": Completed (attempts: 1)
            sequence[0] "b0-s0": Completed
              action[0] "b0-s0-a0": Completed (attempts: 1)
              action[1] "b0-s0-a1": Completed (attempts: 1)
            sequence[1] "b0-s1": Completed
              action[0] "b0-s1-a0": Completed (attempts: 1)
            post_checks: Completed
              action[0] "b0-post": Completed (attempts: 1)
            deferred_checks: Failed
              action[0] "b0-deferred": Failed (attempts: 1)
          block[1] "b1": NotStarted
            sequence[0] "b1-s0": NotStarted
              action[0] "b1-s0-a0": NotStarted (attempts: 0)
          post_checks: NotStarted
            action[0] "plan-post": NotStarted (attempts: 0)
          deferred batch[0] "on-success": NotStarted
            action[0] "on-success": NotStarted (attempts: 0)
          deferred batch[1] "on-failure": Completed
            action[0] "on-failure": Completed (attempts: 1)
          deferred batch[2] "always": Completed
            action[0] "always": Completed (attempts: 1)
          deferred_checks: Completed
            action[0] "plan-deferred": Completed (attempts: 1)
        "#,
    );
    assert_calls(
        fakes.action.log(),
        &[
            &["b0-s0-a0"],
            &["b0-s0-a1"],
            &["b0-s1-a0"],
            &["on-failure"],
            &["always"],
        ],
    );
    assert_calls(
        fakes.check.log(),
        &[
            &["plan-pre", "plan-cont"],
            &["b0-pre", "b0-cont"],
            &["b0-post"],
            &["b0-deferred"],
            &["plan-deferred"],
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn plan_post_checks_fail() {
    let fakes = Fakes::new();
    let done = run(&fakes, full_plan(failing(&["plan-post"]))).await;
    assert_tree(
        &done,
        r#"
        plan "full": Failed (PostCheck)
          pre_checks: Completed
            action[0] "plan-pre": Completed (attempts: 1)
          cont_checks: Completed
            action[0] "plan-cont": Completed (attempts: 1)
          block[0] "b0": Completed
            pre_checks: Completed
              action[0] "b0-pre": Completed (attempts: 1)
            cont_checks: Completed
              action[0] "b0-cont": Completed (attempts: 1)
            sequence[0] "b0-s0": Completed
              action[0] "b0-s0-a0": Completed (attempts: 1)
              action[1] "b0-s0-a1": Completed (attempts: 1)
            sequence[1] "b0-s1": Completed
              action[0] "b0-s1-a0": Completed (attempts: 1)
            post_checks: Completed
              action[0] "b0-post": Completed (attempts: 1)
            deferred_checks: Completed
              action[0] "b0-deferred": Completed (attempts: 1)
          block[1] "b1": Completed
            sequence[0] "b1-s0": Completed
              action[0] "b1-s0-a0": Completed (attempts: 1)
          post_checks: Failed
            action[0] "plan-post": Failed (attempts: 1)
          deferred batch[0] "on-success": NotStarted
            action[0] "on-success": NotStarted (attempts: 0)
          deferred batch[1] "on-failure": Completed
            action[0] "on-failure": Completed (attempts: 1)
          deferred batch[2] "always": Completed
            action[0] "always": Completed (attempts: 1)
          deferred_checks: Completed
            action[0] "plan-deferred": Completed (attempts: 1)
        "#,
    );
    assert_calls(
        fakes.action.log(),
        &[
            &["b0-s0-a0"],
            &["b0-s0-a1"],
            &["b0-s1-a0"],
            &["b1-s0-a0"],
            &["on-failure"],
            &["always"],
        ],
    );
    assert_calls(
        fakes.check.log(),
        &[
            &["plan-pre", "plan-cont"],
            &["b0-pre", "b0-cont"],
            &["b0-post"],
            &["b0-deferred"],
            &["plan-post"],
            &["plan-deferred"],
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn plan_deferred_checks_fail() {
    let fakes = Fakes::new();
    let done = run(&fakes, full_plan(failing(&["plan-deferred"]))).await;
    assert_tree(
        &done,
        r#"
        plan "full": Failed (DeferredCheck)
          pre_checks: Completed
            action[0] "plan-pre": Completed (attempts: 1)
          cont_checks: Completed
            action[0] "plan-cont": Completed (attempts: 1)
          block[0] "b0": Completed
            pre_checks: Completed
              action[0] "b0-pre": Completed (attempts: 1)
            cont_checks: Completed
              action[0] "b0-cont": Completed (attempts: 1)
            sequence[0] "b0-s0": Completed
              action[0] "b0-s0-a0": Completed (attempts: 1)
              action[1] "b0-s0-a1": Completed (attempts: 1)
            sequence[1] "b0-s1": Completed
              action[0] "b0-s1-a0": Completed (attempts: 1)
            post_checks: Completed
              action[0] "b0-post": Completed (attempts: 1)
            deferred_checks: Completed
              action[0] "b0-deferred": Completed (attempts: 1)
          block[1] "b1": Completed
            sequence[0] "b1-s0": Completed
              action[0] "b1-s0-a0": Completed (attempts: 1)
          post_checks: Completed
            action[0] "plan-post": Completed (attempts: 1)
          deferred batch[0] "on-success": Completed
            action[0] "on-success": Completed (attempts: 1)
          deferred batch[1] "on-failure": NotStarted
            action[0] "on-failure": NotStarted (attempts: 0)
          deferred batch[2] "always": Completed
            action[0] "always": Completed (attempts: 1)
          deferred_checks: Failed
            action[0] "plan-deferred": Failed (attempts: 1)
        "#,
    );
    assert_calls(
        fakes.action.log(),
        &[
            &["b0-s0-a0"],
            &["b0-s0-a1"],
            &["b0-s1-a0"],
            &["b1-s0-a0"],
            &["on-success"],
            &["always"],
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn fail_plan_batch_fails() {
    let fakes = Fakes::new();
    let done = run(&fakes, full_plan(failing(&["always"]))).await;
    assert_tree(
        &done,
        r#"
        plan "full": Failed (DeferredAction)
          pre_checks: Completed
            action[0] "plan-pre": Completed (attempts: 1)
          cont_checks: Completed
            action[0] "plan-cont": Completed (attempts: 1)
          block[0] "b0": Completed
            pre_checks: Completed
              action[0] "b0-pre": Completed (attempts: 1)
            cont_checks: Completed
              action[0] "b0-cont": Completed (attempts: 1)
            sequence[0] "b0-s0": Completed
              action[0] "b0-s0-a0": Completed (attempts: 1)
              action[1] "b0-s0-a1": Completed (attempts: 1)
            sequence[1] "b0-s1": Completed
              action[0] "b0-s1-a0": Completed (attempts: 1)
            post_checks: Completed
              action[0] "b0-post": Completed (attempts: 1)
            deferred_checks: Completed
              action[0] "b0-deferred": Completed (attempts: 1)
          block[1] "b1": Completed
            sequence[0] "b1-s0": Completed
              action[0] "b1-s0-a0": Completed (attempts: 1)
          post_checks: Completed
            action[0] "plan-post": Completed (attempts: 1)
          deferred batch[0] "on-success": Completed
            action[0] "on-success": Completed (attempts: 1)
          deferred batch[1] "on-failure": NotStarted
            action[0] "on-failure": NotStarted (attempts: 0)
          deferred batch[2] "always": Failed
            action[0] "always": Failed (attempts: 1)
          deferred_checks: Completed
            action[0] "plan-deferred": Completed (attempts: 1)
        "#,
    );
    assert_calls(
        fakes.action.log(),
        &[
            &["b0-s0-a0"],
            &["b0-s0-a1"],
            &["b0-s1-a0"],
            &["b1-s0-a0"],
            &["on-success"],
            &["always"],
        ],
    );
    assert_eq!(
        fakes.check.log().tags().last().map(String::as_str),
        Some("plan-deferred")
    );
}

/// A batch without `fail_plan` fails: it is recorded, the later batches still run, the plan
/// completes.
#[tokio::test(start_paused = true)]
async fn batch_without_fail_plan_fails() {
    let fakes = Fakes::new();
    let done = run(&fakes, full_plan(failing(&["on-success"]))).await;
    assert_tree(
        &done,
        r#"
        plan "full": Completed (None)
          pre_checks: Completed
            action[0] "plan-pre": Completed (attempts: 1)
          cont_checks: Completed
            action[0] "plan-cont": Completed (attempts: 1)
          block[0] "b0": Completed
            pre_checks: Completed
              action[0] "b0-pre": Completed (attempts: 1)
            cont_checks: Completed
              action[0] "b0-cont": Completed (attempts: 1)
            sequence[0] "b0-s0": Completed
              action[0] "b0-s0-a0": Completed (attempts: 1)
              action[1] "b0-s0-a1": Completed (attempts: 1)
            sequence[1] "b0-s1": Completed
              action[0] "b0-s1-a0": Completed (attempts: 1)
            post_checks: Completed
              action[0] "b0-post": Completed (attempts: 1)
            deferred_checks: Completed
              action[0] "b0-deferred": Completed (attempts: 1)
          block[1] "b1": Completed
            sequence[0] "b1-s0": Completed
              action[0] "b1-s0-a0": Completed (attempts: 1)
          post_checks: Completed
            action[0] "plan-post": Completed (attempts: 1)
          deferred batch[0] "on-success": Failed
            action[0] "on-success": Failed (attempts: 1)
          deferred batch[1] "on-failure": NotStarted
            action[0] "on-failure": NotStarted (attempts: 0)
          deferred batch[2] "always": Completed
            action[0] "always": Completed (attempts: 1)
          deferred_checks: Completed
            action[0] "plan-deferred": Completed (attempts: 1)
        "#,
    );
    assert_calls(
        fakes.action.log(),
        &[
            &["b0-s0-a0"],
            &["b0-s0-a1"],
            &["b0-s1-a0"],
            &["b1-s0-a0"],
            &["on-success"],
            &["always"],
        ],
    );
}

/// The reason is the first phase that failed, in time order: a failed block beats a later
/// failed `fail_plan` batch and failed deferred checks (Go let `DeferredAction` override).
#[tokio::test(start_paused = true)]
async fn the_reason_is_the_first_failing_phase() {
    let fakes = Fakes::new();
    let done = run(
        &fakes,
        full_plan(failing(&["b0-s1-a0", "always", "plan-deferred"])),
    )
    .await;
    assert_tree(
        &done,
        r#"
        plan "full": Failed (Block)
          pre_checks: Completed
            action[0] "plan-pre": Completed (attempts: 1)
          cont_checks: Completed
            action[0] "plan-cont": Completed (attempts: 1)
          block[0] "b0": Failed
            pre_checks: Completed
              action[0] "b0-pre": Completed (attempts: 1)
            cont_checks: Completed
              action[0] "b0-cont": Completed (attempts: 1)
            sequence[0] "b0-s0": Completed
              action[0] "b0-s0-a0": Completed (attempts: 1)
              action[1] "b0-s0-a1": Completed (attempts: 1)
            sequence[1] "b0-s1": Failed
              action[0] "b0-s1-a0": Failed (attempts: 1)
            post_checks: NotStarted
              action[0] "b0-post": NotStarted (attempts: 0)
            deferred_checks: Completed
              action[0] "b0-deferred": Completed (attempts: 1)
          block[1] "b1": NotStarted
            sequence[0] "b1-s0": NotStarted
              action[0] "b1-s0-a0": NotStarted (attempts: 0)
          post_checks: NotStarted
            action[0] "plan-post": NotStarted (attempts: 0)
          deferred batch[0] "on-success": NotStarted
            action[0] "on-success": NotStarted (attempts: 0)
          deferred batch[1] "on-failure": Completed
            action[0] "on-failure": Completed (attempts: 1)
          deferred batch[2] "always": Failed
            action[0] "always": Failed (attempts: 1)
          deferred_checks: Failed
            action[0] "plan-deferred": Failed (attempts: 1)
        "#,
    );
    assert_calls(
        fakes.action.log(),
        &[
            &["b0-s0-a0"],
            &["b0-s0-a1"],
            &["b0-s1-a0"],
            &["on-failure"],
            &["always"],
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Tolerance and concurrency
// ---------------------------------------------------------------------------------------------

/// A block of sequences `s<i>` (one action `s<i>-a0` each) at concurrency 1; `fails` lists the
/// sequences that fail.
fn tolerance_plan(tolerance: Tolerance, n: usize, fails: &[usize]) -> Plan {
    Plan::builder("tolerance")
        .block(
            Block::builder("b0")
                .tolerated_failures(tolerance)
                .sequences((0..n).map(|i| {
                    let req = if fails.contains(&i) {
                        FakeReq::fail_permanently()
                    } else {
                        FakeReq::ok()
                    };
                    seq(&format!("s{i}"), [act(&format!("s{i}-a0"), req)])
                })),
        )
        .build()
}

#[tokio::test(start_paused = true)]
async fn tolerated_count_within() {
    let fakes = Fakes::new();
    let done = run(&fakes, tolerance_plan(Tolerance::Count(1), 3, &[1])).await;
    assert_tree(
        &done,
        r#"
        plan "tolerance": Completed (None)
          block[0] "b0": Completed
            sequence[0] "s0": Completed
              action[0] "s0-a0": Completed (attempts: 1)
            sequence[1] "s1": Failed
              action[0] "s1-a0": Failed (attempts: 1)
            sequence[2] "s2": Completed
              action[0] "s2-a0": Completed (attempts: 1)
        "#,
    );
    // Tolerated failures stay visible.
    let failures: Vec<String> = done.failures().iter().map(|f| f.path.to_string()).collect();
    assert_eq!(
        failures,
        [
            r#"block[0] "b0" / sequence[1] "s1""#,
            r#"block[0] "b0" / sequence[1] "s1" / action[0] "s1-a0""#
        ]
    );
    assert_calls(fakes.action.log(), &[&["s0-a0"], &["s1-a0"], &["s2-a0"]]);
}

#[tokio::test(start_paused = true)]
async fn tolerated_count_exceeded() {
    let fakes = Fakes::new();
    let done = run(&fakes, tolerance_plan(Tolerance::Count(1), 4, &[0, 2])).await;
    assert_tree(
        &done,
        r#"
        plan "tolerance": Failed (Block)
          block[0] "b0": Failed
            sequence[0] "s0": Failed
              action[0] "s0-a0": Failed (attempts: 1)
            sequence[1] "s1": Completed
              action[0] "s1-a0": Completed (attempts: 1)
            sequence[2] "s2": Failed
              action[0] "s2-a0": Failed (attempts: 1)
            sequence[3] "s3": NotStarted
              action[0] "s3-a0": NotStarted (attempts: 0)
        "#,
    );
    assert_calls(fakes.action.log(), &[&["s0-a0"], &["s1-a0"], &["s2-a0"]]);
}

/// 25 % of 4 sequences: one failure is tolerated (1·100 > 4·25 is false), two are not.
#[tokio::test(start_paused = true)]
async fn tolerated_percent() {
    let fakes = Fakes::new();
    let done = run(&fakes, tolerance_plan(Tolerance::Percent(25), 4, &[0])).await;
    assert_tree(
        &done,
        r#"
        plan "tolerance": Completed (None)
          block[0] "b0": Completed
            sequence[0] "s0": Failed
              action[0] "s0-a0": Failed (attempts: 1)
            sequence[1] "s1": Completed
              action[0] "s1-a0": Completed (attempts: 1)
            sequence[2] "s2": Completed
              action[0] "s2-a0": Completed (attempts: 1)
            sequence[3] "s3": Completed
              action[0] "s3-a0": Completed (attempts: 1)
        "#,
    );
    assert_calls(
        fakes.action.log(),
        &[&["s0-a0"], &["s1-a0"], &["s2-a0"], &["s3-a0"]],
    );

    let fakes = Fakes::new();
    let done = run(&fakes, tolerance_plan(Tolerance::Percent(25), 4, &[0, 1])).await;
    assert_tree(
        &done,
        r#"
        plan "tolerance": Failed (Block)
          block[0] "b0": Failed
            sequence[0] "s0": Failed
              action[0] "s0-a0": Failed (attempts: 1)
            sequence[1] "s1": Failed
              action[0] "s1-a0": Failed (attempts: 1)
            sequence[2] "s2": NotStarted
              action[0] "s2-a0": NotStarted (attempts: 0)
            sequence[3] "s3": NotStarted
              action[0] "s3-a0": NotStarted (attempts: 0)
        "#,
    );
    assert_calls(fakes.action.log(), &[&["s0-a0"], &["s1-a0"]]);
}

#[tokio::test(start_paused = true)]
async fn tolerated_unlimited_everything_fails() {
    let fakes = Fakes::new();
    let done = run(&fakes, tolerance_plan(Tolerance::Unlimited, 3, &[0, 1, 2])).await;
    assert_tree(
        &done,
        r#"
        plan "tolerance": Completed (None)
          block[0] "b0": Completed
            sequence[0] "s0": Failed
              action[0] "s0-a0": Failed (attempts: 1)
            sequence[1] "s1": Failed
              action[0] "s1-a0": Failed (attempts: 1)
            sequence[2] "s2": Failed
              action[0] "s2-a0": Failed (attempts: 1)
        "#,
    );
    assert_eq!(done.failures().len(), 6);
    assert_calls(fakes.action.log(), &[&["s0-a0"], &["s1-a0"], &["s2-a0"]]);
}

/// Concurrency 3, no tolerated failure, several failing sequences: the three in flight finish
/// the action they are in (so more than one sequence fails), none starts after the failure.
#[tokio::test(start_paused = true)]
async fn concurrency_overshoot() {
    let fakes = Fakes::new();
    let plan = Plan::builder("overshoot")
        .block(
            Block::builder("b0")
                .concurrency(3)
                .sequence(seq(
                    "s0",
                    [act("s0-a0", FakeReq::fail_permanently().after(SEC))],
                ))
                .sequence(seq(
                    "s1",
                    [
                        act("s1-a0", FakeReq::fail_permanently().after(2 * SEC)),
                        act("s1-a1", FakeReq::ok()),
                    ],
                ))
                .sequence(seq(
                    "s2",
                    [
                        act("s2-a0", FakeReq::sleep(3 * SEC)),
                        act("s2-a1", FakeReq::ok()),
                    ],
                ))
                .sequences((3..6).map(|i| {
                    seq(
                        &format!("s{i}"),
                        [act(&format!("s{i}-a0"), FakeReq::fail_permanently())],
                    )
                })),
        )
        .build();
    let done = run(&fakes, plan).await;
    assert_tree(
        &done,
        r#"
        plan "overshoot": Failed (Block)
          block[0] "b0": Failed
            sequence[0] "s0": Failed
              action[0] "s0-a0": Failed (attempts: 1)
            sequence[1] "s1": Failed
              action[0] "s1-a0": Failed (attempts: 1)
              action[1] "s1-a1": NotStarted (attempts: 0)
            sequence[2] "s2": Stopped
              action[0] "s2-a0": Completed (attempts: 1)
              action[1] "s2-a1": NotStarted (attempts: 0)
            sequence[3] "s3": NotStarted
              action[0] "s3-a0": NotStarted (attempts: 0)
            sequence[4] "s4": NotStarted
              action[0] "s4-a0": NotStarted (attempts: 0)
            sequence[5] "s5": NotStarted
              action[0] "s5-a0": NotStarted (attempts: 0)
        "#,
    );
    assert_eq!(fakes.action.log().max_concurrency(), 3);
    assert_calls(fakes.action.log(), &[&["s0-a0", "s1-a0", "s2-a0"]]);
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_is_respected() {
    let fakes = Fakes::new();
    let plan = Plan::builder("limit")
        .block(
            Block::builder("b0")
                .concurrency(2)
                .sequences((0..5).map(|i| {
                    seq(
                        &format!("s{i}"),
                        [act(&format!("s{i}-a0"), FakeReq::sleep(SEC))],
                    )
                })),
        )
        .build();
    let done = run(&fakes, plan).await;
    assert_eq!(done.status(), Status::Completed);
    assert_eq!(fakes.action.log().max_concurrency(), 2);
    assert_calls(
        fakes.action.log(),
        &[&["s0-a0", "s1-a0"], &["s2-a0", "s3-a0"], &["s4-a0"]],
    );
}

// ---------------------------------------------------------------------------------------------
// Actions: retries, permanent errors, timeouts, panics
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn retries_and_permanent_errors() {
    let fakes = Fakes::new();
    let plan = Plan::builder("retries")
        .block(
            Block::builder("b0")
                .tolerated_failures(Tolerance::Unlimited)
                .sequence(seq(
                    "recovers",
                    [act("recovers", FakeReq::fail_times(2)).retries(2)],
                ))
                .sequence(seq(
                    "exhausted",
                    [
                        act("exhausted", FakeReq::fail_times(3)).retries(2),
                        act("after", FakeReq::ok()),
                    ],
                ))
                .sequence(seq(
                    "permanent",
                    [act("permanent", FakeReq::fail_permanently()).retries(5)],
                ))
                .sequence(seq("once", [act("once", FakeReq::fail())])),
        )
        .build();
    let started = Instant::now();
    let done = run(&fakes, plan).await;
    assert_tree(
        &done,
        r#"
        plan "retries": Completed (None)
          block[0] "b0": Completed
            sequence[0] "recovers": Completed
              action[0] "recovers": Completed (attempts: 3)
            sequence[1] "exhausted": Failed
              action[0] "exhausted": Failed (attempts: 3)
              action[1] "after": NotStarted (attempts: 0)
            sequence[2] "permanent": Failed
              action[0] "permanent": Failed (attempts: 1)
            sequence[3] "once": Failed
              action[0] "once": Failed (attempts: 1)
        "#,
    );
    // The action's error is the last plugin error, not a sentinel.
    assert_eq!(
        last_error(&done, "exhausted").message,
        "exhausted: scripted failure on attempt 3"
    );
    assert!(!last_error(&done, "exhausted").permanent);
    assert!(last_error(&done, "permanent").permanent);
    let attempts: Vec<(String, u32)> = fakes
        .action
        .log()
        .calls()
        .into_iter()
        .map(|c| (c.tag, c.attempt))
        .collect();
    let expected: Vec<(String, u32)> = [
        ("recovers", 1),
        ("recovers", 2),
        ("recovers", 3),
        ("exhausted", 1),
        ("exhausted", 2),
        ("exhausted", 3),
        ("permanent", 1),
        ("once", 1),
    ]
    .into_iter()
    .map(|(t, a)| (t.to_owned(), a))
    .collect();
    assert_eq!(attempts, expected);
    // Backoff follows the plugin's policy (fast: ~100 ms then ~200 ms, ±50 %), two pauses per
    // retried action and none after the last attempt: at most 2 × 450 ms of virtual time.
    assert!(
        started.elapsed() <= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

/// No pause after the last allowed attempt (Go slept once more).
#[tokio::test(start_paused = true)]
async fn no_backoff_after_the_last_attempt() {
    let fakes = Fakes::new();
    let plan = Plan::builder("no trailing sleep")
        .block(Block::builder("b0").sequence(seq("s0", [act("once", FakeReq::fail())])))
        .build();
    let started = Instant::now();
    let done = run(&fakes, plan).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_tree(
        &done,
        r#"
        plan "no trailing sleep": Failed (Block)
          block[0] "b0": Failed
            sequence[0] "s0": Failed
              action[0] "once": Failed (attempts: 1)
        "#,
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_drop_the_attempt_and_are_retried() {
    let fakes = Fakes::new();
    let plan = Plan::builder("timeouts")
        .block(
            Block::builder("b0").sequence(seq(
                "s0",
                [
                    act("slow", FakeReq::sleep(HOUR))
                        .timeout(10 * SEC)
                        .retries(2),
                    act("next", FakeReq::ok()),
                ],
            )),
        )
        .build();
    let started = Instant::now();
    let done = run(&fakes, plan).await;
    assert!(started.elapsed() < HOUR);
    assert_tree(
        &done,
        r#"
        plan "timeouts": Failed (Block)
          block[0] "b0": Failed
            sequence[0] "s0": Failed
              action[0] "slow": Failed (attempts: 3)
              action[1] "next": NotStarted (attempts: 0)
        "#,
    );
    for attempt in action(&done, "slow").attempts() {
        let err = attempt.error().expect("every attempt timed out");
        assert_eq!(err.code, codes::TIMEOUT);
        assert!(!err.permanent, "a timeout is retryable");
    }
    assert_calls(fakes.action.log(), &[&["slow"], &["slow"], &["slow"]]);
    // Each timed-out future was dropped before the next attempt started.
    assert_eq!(fakes.action.log().max_concurrency(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_a_failed_permanent_attempt() {
    let fakes = Fakes::new();
    let plan = Plan::builder("panics")
        .block(Block::builder("b0").sequence(seq(
            "s0",
            [
                act("boom", FakeReq::panic()).retries(3),
                act("next", FakeReq::ok()),
            ],
        )))
        .deferred(
            DeferredBatch::builder("always", When::Always).action(act("cleanup", FakeReq::ok())),
        )
        .build();
    let done = run(&fakes, plan).await;
    assert_tree(
        &done,
        r#"
        plan "panics": Failed (Block)
          block[0] "b0": Failed
            sequence[0] "s0": Failed
              action[0] "boom": Failed (attempts: 1)
              action[1] "next": NotStarted (attempts: 0)
          deferred batch[0] "always": Completed
            action[0] "cleanup": Completed (attempts: 1)
        "#,
    );
    let err = last_error(&done, "boom");
    assert_eq!(err.code, codes::PANIC);
    assert!(err.permanent);
    assert!(
        err.message.contains("fake plugin panicked as scripted"),
        "{}",
        err.message
    );
    assert_calls(fakes.action.log(), &[&["boom"], &["cleanup"]]);
}

// ---------------------------------------------------------------------------------------------
// Deferred batches
// ---------------------------------------------------------------------------------------------

fn batches_plan(block_req: FakeReq) -> Plan {
    Plan::builder("batches")
        .block(Block::builder("b0").sequence(seq("s0", [act("work", block_req)])))
        .deferred(
            DeferredBatch::builder("first", When::Always)
                .action(act("first-a", FakeReq::ok()))
                .action(act("first-b", FakeReq::ok())),
        )
        .deferred(
            DeferredBatch::builder("on-success", When::OnSuccess)
                .action(act("on-success", FakeReq::ok())),
        )
        .deferred(
            DeferredBatch::builder("on-failure", When::OnFailure)
                .action(act("on-failure", FakeReq::ok())),
        )
        .deferred(DeferredBatch::builder("last", When::Always).action(act("last", FakeReq::ok())))
        .build()
}

#[tokio::test(start_paused = true)]
async fn deferred_batches_on_success_run_in_declaration_order() {
    let fakes = Fakes::new();
    let done = run(&fakes, batches_plan(FakeReq::ok())).await;
    assert_tree(
        &done,
        r#"
        plan "batches": Completed (None)
          block[0] "b0": Completed
            sequence[0] "s0": Completed
              action[0] "work": Completed (attempts: 1)
          deferred batch[0] "first": Completed
            action[0] "first-a": Completed (attempts: 1)
            action[1] "first-b": Completed (attempts: 1)
          deferred batch[1] "on-success": Completed
            action[0] "on-success": Completed (attempts: 1)
          deferred batch[2] "on-failure": NotStarted
            action[0] "on-failure": NotStarted (attempts: 0)
          deferred batch[3] "last": Completed
            action[0] "last": Completed (attempts: 1)
        "#,
    );
    assert_calls(
        fakes.action.log(),
        &[
            &["work"],
            &["first-a"],
            &["first-b"],
            &["on-success"],
            &["last"],
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn deferred_batches_on_failure() {
    let fakes = Fakes::new();
    let done = run(&fakes, batches_plan(FakeReq::fail())).await;
    assert_tree(
        &done,
        r#"
        plan "batches": Failed (Block)
          block[0] "b0": Failed
            sequence[0] "s0": Failed
              action[0] "work": Failed (attempts: 1)
          deferred batch[0] "first": Completed
            action[0] "first-a": Completed (attempts: 1)
            action[1] "first-b": Completed (attempts: 1)
          deferred batch[1] "on-success": NotStarted
            action[0] "on-success": NotStarted (attempts: 0)
          deferred batch[2] "on-failure": Completed
            action[0] "on-failure": Completed (attempts: 1)
          deferred batch[3] "last": Completed
            action[0] "last": Completed (attempts: 1)
        "#,
    );
    assert_calls(
        fakes.action.log(),
        &[
            &["work"],
            &["first-a"],
            &["first-b"],
            &["on-failure"],
            &["last"],
        ],
    );
}

/// A failed action in a batch stops that batch (its later actions stay `NotStarted`).
#[tokio::test(start_paused = true)]
async fn a_failed_batch_action_stops_its_batch() {
    let fakes = Fakes::new();
    let plan = Plan::builder("batch stops")
        .block(Block::builder("b0").sequence(seq("s0", [act("work", FakeReq::ok())])))
        .deferred(
            DeferredBatch::builder("cleanup", When::Always)
                .action(act("c0", FakeReq::ok()))
                .action(act("c1", FakeReq::fail_times(1)).retries(1))
                .action(act("c2", FakeReq::fail_permanently()))
                .action(act("c3", FakeReq::ok())),
        )
        .build();
    let done = run(&fakes, plan).await;
    assert_tree(
        &done,
        r#"
        plan "batch stops": Completed (None)
          block[0] "b0": Completed
            sequence[0] "s0": Completed
              action[0] "work": Completed (attempts: 1)
          deferred batch[0] "cleanup": Failed
            action[0] "c0": Completed (attempts: 1)
            action[1] "c1": Completed (attempts: 2)
            action[2] "c2": Failed (attempts: 1)
            action[3] "c3": NotStarted (attempts: 0)
        "#,
    );
    assert_calls(
        fakes.action.log(),
        &[&["work"], &["c0"], &["c1"], &["c1"], &["c2"]],
    );
}

// ---------------------------------------------------------------------------------------------
// Operator controls
// ---------------------------------------------------------------------------------------------

/// Every phase after the first block, to see what a stop leaves out.
fn stoppable_plan(first: [ActionSpec; 2], second: ActionSpec) -> Plan {
    let [a0, a1] = first;
    Plan::builder("stoppable")
        .block(
            Block::builder("b0")
                .concurrency(2)
                .sequence(seq("s0", [a0, act("s0-a1", FakeReq::ok())]))
                .sequence(seq("s1", [a1]))
                .sequence(seq("s2", [second]))
                .post_checks(checks("b0-post", FakeReq::ok()))
                .deferred_checks(checks("b0-deferred", FakeReq::ok())),
        )
        .block(Block::builder("b1").sequence(seq("b1-s0", [act("b1-s0-a0", FakeReq::ok())])))
        .post_checks(checks("plan-post", FakeReq::ok()))
        .deferred(
            DeferredBatch::builder("on-success", When::OnSuccess)
                .action(act("on-success", FakeReq::ok())),
        )
        .deferred(
            DeferredBatch::builder("on-failure", When::OnFailure)
                .action(act("on-failure", FakeReq::ok())),
        )
        .deferred(
            DeferredBatch::builder("always", When::Always).action(act("always", FakeReq::ok())),
        )
        .deferred_checks(checks("plan-deferred", FakeReq::ok()))
        .build()
}

const STOPPED_TREE: &str = r#"
    plan "stoppable": Stopped (Stopped)
      block[0] "b0": Stopped
        sequence[0] "s0": Stopped
          action[0] "a0": Stopped (attempts: 1)
          action[1] "s0-a1": NotStarted (attempts: 0)
        sequence[1] "s1": Stopped
          action[0] "a1": Stopped (attempts: 1)
        sequence[2] "s2": NotStarted
          action[0] "s2-a0": NotStarted (attempts: 0)
        post_checks: NotStarted
          action[0] "b0-post": NotStarted (attempts: 0)
        deferred_checks: Completed
          action[0] "b0-deferred": Completed (attempts: 1)
      block[1] "b1": NotStarted
        sequence[0] "b1-s0": NotStarted
          action[0] "b1-s0-a0": NotStarted (attempts: 0)
      post_checks: NotStarted
        action[0] "plan-post": NotStarted (attempts: 0)
      deferred batch[0] "on-success": NotStarted
        action[0] "on-success": NotStarted (attempts: 0)
      deferred batch[1] "on-failure": Completed
        action[0] "on-failure": Completed (attempts: 1)
      deferred batch[2] "always": Completed
        action[0] "always": Completed (attempts: 1)
      deferred_checks: Completed
        action[0] "plan-deferred": Completed (attempts: 1)
    "#;

/// Stop: in-flight actions see the cancellation and end; nothing new starts; `OnFailure` and
/// `Always` batches and the deferred checks still run; `Stopped` / `Stopped`.
#[tokio::test(start_paused = true)]
async fn stop_with_actions_that_honour_cancellation() {
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let plan = stoppable_plan(
        [
            act("a0", FakeReq::wait_for_cancel()),
            act("a1", FakeReq::wait_for_cancel()),
        ],
        act("s2-a0", FakeReq::ok()),
    );
    let id = ws.submit(plan).await.unwrap();
    ws.start(id).await.unwrap();
    tokio::time::sleep(SEC).await;
    assert_calls(fakes.action.log(), &[&["a0", "a1"]]);
    let before = Instant::now();
    ws.stop(id).await.unwrap();
    let done = ws.wait(id).await.unwrap();
    assert_eq!(
        before.elapsed(),
        Duration::ZERO,
        "cooperative actions end without using the grace period"
    );
    assert_tree(&done, STOPPED_TREE);
    assert_eq!(last_error(&done, "a0").message, "a0: cancelled");
    assert_calls(
        fakes.action.log(),
        &[&["a0", "a1"], &["on-failure"], &["always"]],
    );
    assert_calls(fakes.check.log(), &[&["b0-deferred"], &["plan-deferred"]]);
    assert!(matches!(ws.stop(id).await, Err(Error::NotRunning(i)) if i == id));
}

/// Stop: an action that ignores the cancellation is dropped after the grace period and its
/// attempt is recorded as cancelled.
#[tokio::test(start_paused = true)]
async fn stop_drops_actions_that_ignore_cancellation_after_the_grace_period() {
    let fakes = Fakes::new();
    let ws = Workstream::builder()
        .in_memory()
        .registry(fakes.registry())
        .stop_grace(5 * SEC)
        .build()
        .await
        .unwrap();
    let plan = stoppable_plan(
        [
            act("a0", FakeReq::sleep(HOUR)).retries(3),
            act("a1", FakeReq::wait_for_cancel()),
        ],
        act("s2-a0", FakeReq::ok()),
    );
    let id = ws.submit(plan).await.unwrap();
    ws.start(id).await.unwrap();
    tokio::time::sleep(SEC).await;
    let before = Instant::now();
    ws.stop(id).await.unwrap();
    let done = ws.wait(id).await.unwrap();
    assert_eq!(
        before.elapsed(),
        5 * SEC,
        "the grace period, then the future is dropped"
    );
    assert_tree(&done, STOPPED_TREE);
    let err = last_error(&done, "a0");
    assert_eq!(err.code, codes::CANCELLED);
    assert_calls(
        fakes.action.log(),
        &[&["a0", "a1"], &["on-failure"], &["always"]],
    );
}

#[tokio::test(start_paused = true)]
async fn pause_then_resume() {
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let plan = Plan::builder("pausable")
        .block(
            Block::builder("b0")
                .sequence(seq(
                    "s0",
                    [
                        act("s0-a0", FakeReq::sleep(10 * SEC)),
                        act("s0-a1", FakeReq::ok()),
                    ],
                ))
                .sequence(seq("s1", [act("s1-a0", FakeReq::ok())])),
        )
        .block(Block::builder("b1").sequence(seq("b1-s0", [act("b1-s0-a0", FakeReq::ok())])))
        .build();
    let id = ws.submit(plan).await.unwrap();
    ws.start(id).await.unwrap();
    tokio::time::sleep(SEC).await;
    ws.pause(id).await.unwrap();
    assert!(
        ws.store().read(id).await.unwrap().is_paused(),
        "pausing is persisted"
    );
    // A long (virtual) while: the action in flight finishes, nothing new starts.
    tokio::time::sleep(HOUR).await;
    assert_calls(fakes.action.log(), &[&["s0-a0"]]);
    let paused = ws.read(id).await.unwrap();
    assert_tree(
        &paused,
        r#"
        plan "pausable": Running (None)
          block[0] "b0": Running
            sequence[0] "s0": Running
              action[0] "s0-a0": Completed (attempts: 1)
              action[1] "s0-a1": NotStarted (attempts: 0)
            sequence[1] "s1": NotStarted
              action[0] "s1-a0": NotStarted (attempts: 0)
          block[1] "b1": NotStarted
            sequence[0] "b1-s0": NotStarted
              action[0] "b1-s0-a0": NotStarted (attempts: 0)
        "#,
    );
    ws.resume(id).await.unwrap();
    let done = ws.wait(id).await.unwrap();
    assert!(!done.is_paused());
    assert_tree(
        &done,
        r#"
        plan "pausable": Completed (None)
          block[0] "b0": Completed
            sequence[0] "s0": Completed
              action[0] "s0-a0": Completed (attempts: 1)
              action[1] "s0-a1": Completed (attempts: 1)
            sequence[1] "s1": Completed
              action[0] "s1-a0": Completed (attempts: 1)
          block[1] "b1": Completed
            sequence[0] "b1-s0": Completed
              action[0] "b1-s0-a0": Completed (attempts: 1)
        "#,
    );
    assert_calls(
        fakes.action.log(),
        &[&["s0-a0"], &["s0-a1"], &["s1-a0"], &["b1-s0-a0"]],
    );
}

/// An emergency stop stops every running plan of the workstream and skips deferred work.
#[tokio::test(start_paused = true)]
async fn emergency_stop_of_two_running_plans() {
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let plan = |p: &str| {
        Plan::builder(p)
            .block(
                Block::builder("b0")
                    .sequence(seq(
                        "s0",
                        [
                            act(&format!("{p}-wait"), FakeReq::wait_for_cancel()),
                            act(&format!("{p}-next"), FakeReq::ok()),
                        ],
                    ))
                    .deferred_checks(checks(&format!("{p}-b0-deferred"), FakeReq::ok())),
            )
            .deferred(
                DeferredBatch::builder("always", When::Always)
                    .action(act(&format!("{p}-always"), FakeReq::ok())),
            )
            .deferred_checks(checks(&format!("{p}-deferred"), FakeReq::ok()))
            .build()
    };
    let p1 = ws.submit(plan("p1")).await.unwrap();
    let p2 = ws.submit(plan("p2")).await.unwrap();
    ws.start(p1).await.unwrap();
    ws.start(p2).await.unwrap();
    tokio::time::sleep(SEC).await;
    let stopped: BTreeSet<PlanId> = ws.emergency_stop().into_iter().collect();
    assert_eq!(stopped, BTreeSet::from([p1, p2]));
    for (id, p) in [(p1, "p1"), (p2, "p2")] {
        let done = ws.wait(id).await.unwrap();
        assert_tree(
            &done,
            &format!(
                r#"
                plan "{p}": Stopped (Stopped)
                  block[0] "b0": Stopped
                    sequence[0] "s0": Stopped
                      action[0] "{p}-wait": Stopped (attempts: 1)
                      action[1] "{p}-next": NotStarted (attempts: 0)
                    deferred_checks: NotStarted
                      action[0] "{p}-b0-deferred": NotStarted (attempts: 0)
                  deferred batch[0] "always": NotStarted
                    action[0] "{p}-always": NotStarted (attempts: 0)
                  deferred_checks: NotStarted
                    action[0] "{p}-deferred": NotStarted (attempts: 0)
                "#
            ),
        );
    }
    assert_calls(fakes.action.log(), &[&["p1-wait", "p2-wait"]]);
    assert_calls(fakes.check.log(), &[]);
    assert!(ws.emergency_stop().is_empty());
}

// ---------------------------------------------------------------------------------------------
// The Workstream API
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn submit_returns_every_problem_and_stores_nothing() {
    let fakes = Fakes::new();
    // A registry without the check plugin.
    let registry = Registry::new().with(fakes.action.clone()).unwrap();
    let ws = Workstream::in_memory(registry).await.unwrap();
    let plan = Plan::builder("invalid")
        .pre_checks(checks("unregistered", FakeReq::ok()))
        .block(Block::builder("empty"))
        .block(Block::builder(" ").sequence(seq(
            "s0",
            [act("zero timeout", FakeReq::ok()).timeout(Duration::ZERO)],
        )))
        .build();
    let err = ws.submit(plan).await.unwrap_err();
    let Error::Invalid(problems) = err else {
        panic!("expected Invalid, got {err:?}")
    };
    let paths: Vec<String> = problems.iter().map(|p| p.path.to_string()).collect();
    assert!(problems.len() >= 4, "{problems:#?}");
    assert!(
        paths.contains(&r#"pre_checks / action[0] "unregistered""#.to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&r#"block[0] "empty""#.to_owned()),
        "{paths:?}"
    );
    assert!(paths.contains(&r#"block[1] " ""#.to_owned()), "{paths:?}");
    assert!(
        paths.contains(&r#"block[1] " " / sequence[0] "s0" / action[0] "zero timeout""#.to_owned()),
        "{paths:?}"
    );
    assert!(
        ws.list(&ListFilter::default()).await.unwrap().is_empty(),
        "nothing is stored"
    );
    assert!(fakes.action.log().is_empty());
}

#[tokio::test(start_paused = true)]
async fn start_twice_is_refused() {
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let plan = Plan::builder("once")
        .block(Block::builder("b0").sequence(seq("s0", [act("a", FakeReq::sleep(SEC))])))
        .build();
    let id = ws.submit(plan).await.unwrap();
    ws.start(id).await.unwrap();
    assert!(matches!(ws.start(id).await, Err(Error::AlreadyStarted(i)) if i == id));
    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Completed);
    assert!(matches!(ws.start(id).await, Err(Error::AlreadyStarted(i)) if i == id));
    assert_calls(fakes.action.log(), &[&["a"]]);
}

#[tokio::test(start_paused = true)]
async fn unknown_plans_are_not_found() {
    let ws = Workstream::in_memory(Fakes::new().registry())
        .await
        .unwrap();
    let unknown = PlanId::new_v7();
    assert!(matches!(ws.wait(unknown).await, Err(Error::NotFound(i)) if i == unknown));
    assert!(matches!(ws.read(unknown).await, Err(Error::NotFound(i)) if i == unknown));
    assert!(matches!(ws.start(unknown).await, Err(Error::NotFound(i)) if i == unknown));
    assert!(matches!(ws.delete(unknown).await, Err(Error::NotFound(i)) if i == unknown));
    assert!(matches!(ws.events(unknown).await, Err(Error::NotFound(i)) if i == unknown));
}

#[tokio::test(start_paused = true)]
async fn wait_on_a_plan_never_started() {
    let ws = Workstream::in_memory(Fakes::new().registry())
        .await
        .unwrap();
    let plan = Plan::builder("idle")
        .block(Block::builder("b0").sequence(seq("s0", [act("a", FakeReq::ok())])))
        .build();
    let id = ws.submit(plan).await.unwrap();
    assert!(matches!(ws.wait(id).await, Err(Error::NotStarted(i)) if i == id));
}

#[tokio::test(start_paused = true)]
async fn delete_is_refused_while_running() {
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let plan = Plan::builder("busy")
        .block(Block::builder("b0").sequence(seq("s0", [act("a", FakeReq::sleep(SEC))])))
        .build();
    let id = ws.submit(plan).await.unwrap();
    ws.start(id).await.unwrap();
    assert!(matches!(ws.delete(id).await, Err(Error::Storage(StoreError::Running(i))) if i == id));
    ws.wait(id).await.unwrap();
    ws.delete(id).await.unwrap();
    assert!(matches!(ws.read(id).await, Err(Error::NotFound(_))));
}

#[tokio::test(start_paused = true)]
async fn status_stream_starts_at_once_and_ends_with_the_final_tree() {
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let plan = Plan::builder("watched")
        .block(Block::builder("b0").sequence(seq("s0", [act("a", FakeReq::wait_for_cancel())])))
        .build();
    let id = ws.submit(plan).await.unwrap();
    ws.start(id).await.unwrap();
    tokio::time::sleep(SEC).await;
    let mut stream = Box::pin(ws.status(id, 10 * SEC));
    let before = Instant::now();
    let first = next(&mut stream).await.expect("a first snapshot").unwrap();
    assert_eq!(
        before.elapsed(),
        Duration::ZERO,
        "the first snapshot comes at once"
    );
    assert_eq!(first.status(), Status::Running);
    // Two intervals of snapshots while it runs, then the stop.
    for _ in 0..2 {
        let snap = next(&mut stream)
            .await
            .expect("a snapshot per interval")
            .unwrap();
        assert_eq!(snap.status(), Status::Running);
    }
    assert_eq!(before.elapsed(), 20 * SEC);
    ws.stop(id).await.unwrap();
    let rest: Vec<Plan> = collect(stream)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let last = rest.last().expect("the final tree");
    let done = ws.wait(id).await.unwrap();
    assert_eq!(last, &done);
    assert_eq!(last.status(), Status::Stopped);

    // A plan not started yet: its snapshot at once, then the stream waits for the start and
    // follows the run to its end.
    let idle = ws
        .submit(
            Plan::builder("idle")
                .block(Block::builder("b0").sequence(seq("s0", [act("b", FakeReq::sleep(SEC))])))
                .build(),
        )
        .await
        .unwrap();
    let mut stream = ws.status(idle, SEC);
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.status(), Status::NotStarted);
    tokio::time::sleep(10 * SEC).await;
    ws.start(idle).await.unwrap();
    let snaps: Vec<Plan> = collect(Box::pin(stream))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(snaps.last().unwrap().status(), Status::Completed);
    assert!(
        snaps.iter().any(|p| p.status() == Status::Running),
        "{snaps:?}"
    );
}

/// Subscribed before `start`, the stream sees the whole run: every action Running before
/// Completed, and the typed updates name each object by path.
#[tokio::test(start_paused = true)]
async fn events_watched_before_start_deliver_the_whole_run_typed_by_path() {
    use coercion::UpdateKind;
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let id = ws
        .submit(
            Plan::builder("watched")
                .block(
                    Block::builder("web")
                        .concurrency(2)
                        .sequences((0..3).map(|h| {
                            seq(
                                &format!("host-{h}"),
                                [
                                    act("drain", FakeReq::ok()),
                                    act("restart", FakeReq::fail_times(1)).retries(1),
                                ],
                            )
                        })),
                )
                .build(),
        )
        .await
        .unwrap();
    let mut events = ws.events(id).await.unwrap();
    // The stream is Unpin: `next` needs no pin.
    let Some(Event::Snapshot(first)) = events.next().await else {
        panic!("a snapshot first")
    };
    assert_eq!(first.status(), Status::NotStarted);
    ws.start(id).await.unwrap();
    let rest = collect(Box::pin(events)).await;
    let Some(Event::Finished(done)) = rest.last() else {
        panic!("Finished last: {:?}", rest.last())
    };
    assert_eq!(done.status(), Status::Completed);

    let updates: Vec<coercion::Update> = rest
        .iter()
        .filter_map(|e| match e {
            Event::Updated(u) => Some(u.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect();
    for h in 0..3 {
        for name in ["drain", "restart"] {
            let path = format!(
                "block[0] \"web\" / sequence[{h}] \"host-{h}\" / action[{}] \"{name}\"",
                if name == "drain" { 0 } else { 1 }
            );
            let statuses: Vec<Status> = updates
                .iter()
                .filter(|u| u.path.to_string() == path)
                .filter_map(|u| match &u.what {
                    UpdateKind::Status(s) => Some(s.status),
                    _ => None,
                })
                .collect();
            assert_eq!(statuses, [Status::Running, Status::Completed], "{path}");
        }
        // The retried action: attempt 1 failed with its error, attempt 2 succeeded.
        let path = format!("block[0] \"web\" / sequence[{h}] \"host-{h}\" / action[1] \"restart\"");
        let attempts: Vec<&UpdateKind> = updates
            .iter()
            .filter(|u| u.path.to_string() == path)
            .map(|u| &u.what)
            .filter(|w| !matches!(w, UpdateKind::Status(_)))
            .collect();
        assert!(
            matches!(
                attempts[..],
                [
                    UpdateKind::AttemptStarted { attempt: 1 },
                    UpdateKind::AttemptFinished {
                        attempt: 1,
                        error: Some(_)
                    },
                    UpdateKind::AttemptStarted { attempt: 2 },
                    UpdateKind::AttemptFinished {
                        attempt: 2,
                        error: None
                    },
                ]
            ),
            "{path}: {attempts:?}"
        );
    }
    let plan_updates: Vec<&UpdateKind> = updates
        .iter()
        .filter(|u| u.loc == coercion::workflow::Loc::Plan)
        .map(|u| &u.what)
        .collect();
    assert!(
        matches!(plan_updates.first(), Some(UpdateKind::Status(s)) if s.status == Status::Running),
        "{plan_updates:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn events_end_with_finished_holding_the_final_tree() {
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    // The plan's pre-check takes a second, so the run is still going when we subscribe
    // (`start` returns once the plan is durably Running).
    let script = |t: &str| {
        if t == "plan-pre" {
            FakeReq::sleep(SEC).tag(t)
        } else {
            failing(&["b0-s1-a0"])(t)
        }
    };
    let id = ws.submit(full_plan(script)).await.unwrap();
    ws.start(id).await.unwrap();
    let events = collect(Box::pin(ws.events(id).await.unwrap())).await;
    let done = ws.wait(id).await.unwrap();
    let Some(Event::Snapshot(first)) = events.first() else {
        panic!("the first event is a snapshot: {:?}", events.first())
    };
    let Some(Event::Finished(last)) = events.last() else {
        panic!("the last event is Finished: {:?}", events.last())
    };
    assert_eq!(**last, done);
    assert_eq!(done.reason(), Reason::Block);
    // The changes, applied to the first snapshot, give the final tree: no change was missed.
    let mut replay = (**first).clone();
    for e in &events[1..events.len() - 1] {
        match e {
            Event::Snapshot(p) => replay = (**p).clone(),
            Event::Changed(changes) => {
                for c in changes.iter() {
                    c.apply_to(&mut replay).unwrap();
                }
            }
            Event::Finished(_) => panic!("Finished is the last event only"),
            // The same changes, typed: tested in `events_watched_before_start_…`.
            Event::Updated(_) => {}
            other => panic!("an event this test does not know: {other:?}"),
        }
    }
    assert_eq!(replay, done);
    assert!(events.iter().any(
        |e| matches!(e, Event::Changed(c) if c.iter().any(|c| matches!(c, Change::Attempt { .. })))
    ));

    // After the end: the final tree, as a snapshot and as the end.
    let after = collect(Box::pin(ws.events(id).await.unwrap())).await;
    assert!(
        matches!(&after[..], [Event::Snapshot(s), Event::Finished(p)] if **s == done && **p == done),
        "{after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn list_filters() {
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let group = PlanId::new_v7().0;
    let mk = |name: &str, req: FakeReq| {
        let b =
            Plan::builder(name).block(Block::builder("b0").sequence(seq("s0", [act(name, req)])));
        if name.starts_with("deploy") {
            b.group_id(group).build()
        } else {
            b.build()
        }
    };
    let a = ws.submit(mk("deploy-a", FakeReq::ok())).await.unwrap();
    tokio::time::sleep(SEC).await;
    let b = ws.submit(mk("deploy-b", FakeReq::fail())).await.unwrap();
    tokio::time::sleep(SEC).await;
    let c = ws.submit(mk("rollback-c", FakeReq::ok())).await.unwrap();
    ws.start(a).await.unwrap();
    ws.wait(a).await.unwrap();
    ws.start(b).await.unwrap();
    ws.wait(b).await.unwrap();

    let ids = |filter: ListFilter| {
        let ws = ws.clone();
        async move {
            ws.list(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    // Newest submitted first.
    assert_eq!(ids(ListFilter::default()).await, [c, b, a]);
    assert_eq!(ids(ListFilter::status(Status::Completed)).await, [a]);
    assert_eq!(ids(ListFilter::status(Status::Failed)).await, [b]);
    assert_eq!(ids(ListFilter::status(Status::NotStarted)).await, [c]);
    assert_eq!(
        ids(ListFilter {
            statuses: vec![Status::Completed, Status::Failed],
            ..Default::default()
        })
        .await,
        [b, a]
    );
    assert_eq!(
        ids(ListFilter {
            name_contains: Some("deploy".into()),
            ..Default::default()
        })
        .await,
        [b, a]
    );
    assert_eq!(
        ids(ListFilter {
            group_id: Some(group),
            ..Default::default()
        })
        .await,
        [b, a]
    );
    assert_eq!(
        ids(ListFilter {
            offset: 1,
            limit: Some(1),
            ..Default::default()
        })
        .await,
        [b]
    );
    let summaries = ws.list(&ListFilter::status(Status::Failed)).await.unwrap();
    assert_eq!(summaries[0].reason, Reason::Block);
    assert_eq!(summaries[0].name, "deploy-b");
}

// ---------------------------------------------------------------------------------------------
// Edge cases found by reading the engine
// ---------------------------------------------------------------------------------------------

/// A sequence the scheduler launched but that had not started an action when its block failed
/// never ran: it stays `NotStarted` (SPEC §3), it is not `Stopped`.
#[tokio::test(start_paused = true)]
async fn sequences_halted_before_their_first_action_stay_not_started() {
    let fakes = Fakes::new();
    let plan = Plan::builder("instant failure")
        .block(
            Block::builder("b0")
                .concurrency(3)
                .sequence(seq("s0", [act("s0-a0", FakeReq::fail_permanently())]))
                .sequences(
                    (1..4)
                        .map(|i| seq(&format!("s{i}"), [act(&format!("s{i}-a0"), FakeReq::ok())])),
                ),
        )
        .build();
    let done = run(&fakes, plan).await;
    assert_tree(
        &done,
        r#"
        plan "instant failure": Failed (Block)
          block[0] "b0": Failed
            sequence[0] "s0": Failed
              action[0] "s0-a0": Failed (attempts: 1)
            sequence[1] "s1": NotStarted
              action[0] "s1-a0": NotStarted (attempts: 0)
            sequence[2] "s2": NotStarted
              action[0] "s2-a0": NotStarted (attempts: 0)
            sequence[3] "s3": NotStarted
              action[0] "s3-a0": NotStarted (attempts: 0)
        "#,
    );
    assert_calls(fakes.action.log(), &[&["s0-a0"]]);
}

/// The block failed on its tolerance before the plan's continuous checks failed: the reason is
/// the first failing phase, `Block`, not `ContCheck`.
#[tokio::test(start_paused = true)]
async fn tolerance_exceeded_before_the_plan_cont_checks_fail_gives_block() {
    let fakes = Fakes::new();
    let plan = Plan::builder("block first")
        .cont_checks(checks("plan-cont", FakeReq::fail().after(5 * SEC)))
        .block(
            Block::builder("b0")
                .concurrency(2)
                .sequence(seq(
                    "s0",
                    [act("s0-a0", FakeReq::fail_permanently().after(SEC))],
                ))
                .sequence(seq(
                    "s1",
                    [
                        act("s1-a0", FakeReq::sleep(20 * SEC)),
                        act("s1-a1", FakeReq::ok()),
                    ],
                ))
                .sequence(seq("s2", [act("s2-a0", FakeReq::ok())])),
        )
        .build();
    let done = run(&fakes, plan).await;
    assert_tree(
        &done,
        r#"
        plan "block first": Failed (Block)
          cont_checks: Failed
            action[0] "plan-cont": Failed (attempts: 1)
          block[0] "b0": Failed
            sequence[0] "s0": Failed
              action[0] "s0-a0": Failed (attempts: 1)
            sequence[1] "s1": Stopped
              action[0] "s1-a0": Completed (attempts: 1)
              action[1] "s1-a1": NotStarted (attempts: 0)
            sequence[2] "s2": NotStarted
              action[0] "s2-a0": NotStarted (attempts: 0)
        "#,
    );
    assert_calls(fakes.action.log(), &[&["s0-a0", "s1-a0"]]);
}

/// The plan's continuous checks fail while a block runs its post-checks: that block fails (the
/// failure is seen at once, not when some later block launches a sequence) and no later block
/// starts — its pre-checks do not run.
#[tokio::test(start_paused = true)]
async fn plan_cont_failure_during_block_post_checks_fails_that_block() {
    let fakes = Fakes::new();
    let plan = Plan::builder("cont during post")
        .cont_checks(checks("plan-cont", FakeReq::fail().after(5 * SEC)))
        .block(
            Block::builder("b0")
                .sequence(seq("s0", [act("a0", FakeReq::ok())]))
                .post_checks(checks("b0-post", FakeReq::sleep(10 * SEC)))
                .deferred_checks(checks("b0-deferred", FakeReq::ok())),
        )
        .block(
            Block::builder("b1")
                .pre_checks(checks("b1-pre", FakeReq::ok()))
                .sequence(seq("b1-s0", [act("b1-a0", FakeReq::ok())])),
        )
        .deferred(
            DeferredBatch::builder("on-failure", When::OnFailure)
                .action(act("on-failure", FakeReq::ok())),
        )
        .build();
    let done = run(&fakes, plan).await;
    assert_tree(
        &done,
        r#"
        plan "cont during post": Failed (ContCheck)
          cont_checks: Failed
            action[0] "plan-cont": Failed (attempts: 1)
          block[0] "b0": Failed
            sequence[0] "s0": Completed
              action[0] "a0": Completed (attempts: 1)
            post_checks: Completed
              action[0] "b0-post": Completed (attempts: 1)
            deferred_checks: Completed
              action[0] "b0-deferred": Completed (attempts: 1)
          block[1] "b1": NotStarted
            pre_checks: NotStarted
              action[0] "b1-pre": NotStarted (attempts: 0)
            sequence[0] "b1-s0": NotStarted
              action[0] "b1-a0": NotStarted (attempts: 0)
          deferred batch[0] "on-failure": Completed
            action[0] "on-failure": Completed (attempts: 1)
        "#,
    );
    assert_calls(fakes.action.log(), &[&["a0"], &["on-failure"]]);
    assert_calls(
        fakes.check.log(),
        &[&["plan-cont", "b0-post"], &["b0-deferred"]],
    );
}

/// While paused, no action starts — check actions included: the block's post-checks and the
/// next block wait for the resume.
#[tokio::test(start_paused = true)]
async fn pause_holds_back_checks_and_the_next_block() {
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let plan = Plan::builder("paused between blocks")
        .block(
            Block::builder("b0")
                .sequence(seq("s0", [act("a0", FakeReq::sleep(10 * SEC))]))
                .post_checks(checks("b0-post", FakeReq::ok())),
        )
        .block(
            Block::builder("b1")
                .pre_checks(checks("b1-pre", FakeReq::ok()))
                .sequence(seq("b1-s0", [act("b1-a0", FakeReq::ok())])),
        )
        .post_checks(checks("plan-post", FakeReq::ok()))
        .build();
    let id = ws.submit(plan).await.unwrap();
    ws.start(id).await.unwrap();
    tokio::time::sleep(SEC).await;
    ws.pause(id).await.unwrap();
    tokio::time::sleep(HOUR).await;
    assert_calls(fakes.action.log(), &[&["a0"]]);
    assert_calls(fakes.check.log(), &[]);
    assert_tree(
        &ws.read(id).await.unwrap(),
        r#"
        plan "paused between blocks": Running (None)
          block[0] "b0": Running
            sequence[0] "s0": Completed
              action[0] "a0": Completed (attempts: 1)
            post_checks: NotStarted
              action[0] "b0-post": NotStarted (attempts: 0)
          block[1] "b1": NotStarted
            pre_checks: NotStarted
              action[0] "b1-pre": NotStarted (attempts: 0)
            sequence[0] "b1-s0": NotStarted
              action[0] "b1-a0": NotStarted (attempts: 0)
          post_checks: NotStarted
            action[0] "plan-post": NotStarted (attempts: 0)
        "#,
    );
    ws.resume(id).await.unwrap();
    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Completed);
    assert_calls(fakes.action.log(), &[&["a0"], &["b1-a0"]]);
    assert_calls(
        fakes.check.log(),
        &[&["b0-post"], &["b1-pre"], &["plan-post"]],
    );
}

/// Stopping a paused plan ends it: the stop wins over the pause, the `OnFailure`/`Always`
/// batches and the deferred checks run, the plan ends `Stopped` and is no longer paused.
#[tokio::test(start_paused = true)]
async fn stopping_a_paused_plan_ends_it() {
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let plan = Plan::builder("paused then stopped")
        .block(Block::builder("b0").sequence(seq(
            "s0",
            [
                act("a0", FakeReq::sleep(10 * SEC)),
                act("a1", FakeReq::ok()),
            ],
        )))
        .deferred(
            DeferredBatch::builder("always", When::Always).action(act("always", FakeReq::ok())),
        )
        .deferred_checks(checks("deferred", FakeReq::ok()))
        .build();
    let id = ws.submit(plan).await.unwrap();
    ws.start(id).await.unwrap();
    tokio::time::sleep(SEC).await;
    ws.pause(id).await.unwrap();
    tokio::time::sleep(HOUR).await;
    ws.stop(id).await.unwrap();
    let done = tokio::time::timeout(24 * HOUR, ws.wait(id))
        .await
        .expect("a stopped plan ends")
        .unwrap();
    assert_tree(
        &done,
        r#"
        plan "paused then stopped": Stopped (Stopped)
          block[0] "b0": Stopped
            sequence[0] "s0": Stopped
              action[0] "a0": Completed (attempts: 1)
              action[1] "a1": NotStarted (attempts: 0)
          deferred batch[0] "always": Completed
            action[0] "always": Completed (attempts: 1)
          deferred_checks: Completed
            action[0] "deferred": Completed (attempts: 1)
        "#,
    );
    assert!(!done.is_paused(), "a finished plan is not paused");
    assert_calls(fakes.action.log(), &[&["a0"], &["always"]]);
    assert_calls(fakes.check.log(), &[&["deferred"]]);
}

/// The stop comes first in time: deferred work that fails after it (here the deferred checks)
/// does not replace the reason `Stopped`.
#[tokio::test(start_paused = true)]
async fn deferred_checks_failing_after_a_stop_keep_reason_stopped() {
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let plan = Plan::builder("stopped then cleanup fails")
        .block(Block::builder("b0").sequence(seq("s0", [act("wait", FakeReq::wait_for_cancel())])))
        .deferred(
            DeferredBatch::builder("always", When::Always)
                .fail_plan(true)
                .action(act("always", FakeReq::ok())),
        )
        .deferred_checks(checks("deferred", FakeReq::fail()))
        .build();
    let id = ws.submit(plan).await.unwrap();
    ws.start(id).await.unwrap();
    tokio::time::sleep(SEC).await;
    ws.stop(id).await.unwrap();
    let done = ws.wait(id).await.unwrap();
    assert_tree(
        &done,
        r#"
        plan "stopped then cleanup fails": Stopped (Stopped)
          block[0] "b0": Stopped
            sequence[0] "s0": Stopped
              action[0] "wait": Stopped (attempts: 1)
          deferred batch[0] "always": Completed
            action[0] "always": Completed (attempts: 1)
          deferred_checks: Failed
            action[0] "deferred": Failed (attempts: 1)
        "#,
    );
    assert_calls(fakes.action.log(), &[&["wait"], &["always"]]);
    assert_calls(fakes.check.log(), &[&["deferred"]]);
}

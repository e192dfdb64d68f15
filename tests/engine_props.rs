//! Property tests of the engine: random plan shapes (1–3 blocks, 1–8 sequences, 1–4 actions,
//! concurrency 1–4, every tolerance kind, optional checks and deferred batches) with random
//! fake outcomes (success, failing n times with retries, permanent failure, short sleeps), run
//! on tokio's paused clock. Each final tree is checked against the scripts that produced it:
//! concurrency limits, nothing starting after a failure or a stop, statuses and the reason
//! recomputed from the tree, and every event stream ending with the final snapshot.

use std::pin::Pin;
use std::time::Duration;

use coercion::prelude::*;
use coercion::testing::*;
use coercion::workflow::{CheckSetView, CheckSlot};
use coercion::workstream::Stream;
use coercion::{ChecksBuilder, Event};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

type Check = Result<(), TestCaseError>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Script {
    Ok,
    FailTimes(u32),
    Permanent,
    AlwaysFail,
}

/// One action's script: what the fake does on each attempt, the retries it gets, and how long
/// each attempt takes.
#[derive(Clone, Copy, Debug)]
struct Act {
    script: Script,
    retries: u32,
    sleep_ms: u64,
}

impl Act {
    fn spec(&self, tag: &str) -> ActionSpec {
        let req = match self.script {
            Script::Ok => FakeReq::ok(),
            Script::FailTimes(n) => FakeReq::fail_times(n),
            Script::Permanent => FakeReq::fail_permanently(),
            Script::AlwaysFail => FakeReq::fail(),
        };
        let req = if self.sleep_ms > 0 {
            req.after(ms(self.sleep_ms))
        } else {
            req
        };
        ActionSpec::new::<FakeAction>(tag, req.tag(tag)).retries(self.retries)
    }

    /// How the action ends when it runs to its end, and after how many attempts.
    fn outcome(&self) -> (Status, usize) {
        let r = self.retries as usize;
        match self.script {
            Script::Ok => (Status::Completed, 1),
            Script::FailTimes(n) if n as usize <= r => (Status::Completed, n as usize + 1),
            Script::FailTimes(_) | Script::AlwaysFail => (Status::Failed, r + 1),
            Script::Permanent => (Status::Failed, 1),
        }
    }
}

/// A check section: absent, passing or failing.
type CheckShape = Option<bool>;

fn check_section(tag: &str, pass: bool) -> ChecksBuilder {
    let req = if pass { FakeReq::ok() } else { FakeReq::fail() };
    Checks::builder()
        .delay(ms(100))
        .action(CheckSpec::new::<FakeCheck>(tag, req.tag(tag)))
}

#[derive(Clone, Debug)]
struct BlockShape {
    concurrency: usize,
    tolerance: Tolerance,
    sequences: Vec<Vec<Act>>,
    bypass: CheckShape,
    pre: CheckShape,
    /// Passing continuous checks, every 100 ms.
    cont: bool,
    post: CheckShape,
    deferred: CheckShape,
}

#[derive(Clone, Debug)]
struct BatchShape {
    when: When,
    fail_plan: bool,
    actions: Vec<Act>,
}

#[derive(Clone, Debug)]
struct PlanShape {
    bypass: CheckShape,
    pre: CheckShape,
    cont: bool,
    blocks: Vec<BlockShape>,
    post: CheckShape,
    batches: Vec<BatchShape>,
    deferred: CheckShape,
}

impl PlanShape {
    fn build(&self) -> Plan {
        let mut p = Plan::builder("props");
        let slots = [
            (CheckSlot::Bypass, self.bypass, "bypass"),
            (CheckSlot::Pre, self.pre, "pre"),
            (CheckSlot::Cont, self.cont.then_some(true), "cont"),
            (CheckSlot::Post, self.post, "post"),
            (CheckSlot::Deferred, self.deferred, "deferred"),
        ];
        for (slot, shape, tag) in slots {
            if let Some(pass) = shape {
                p.set_checks(slot, check_section(tag, pass));
            }
        }
        for (i, b) in self.blocks.iter().enumerate() {
            let mut block = Block::builder(format!("b{i}"))
                .concurrency(b.concurrency)
                .tolerated_failures(b.tolerance);
            let slots = [
                (CheckSlot::Bypass, b.bypass, "bypass"),
                (CheckSlot::Pre, b.pre, "pre"),
                (CheckSlot::Cont, b.cont.then_some(true), "cont"),
                (CheckSlot::Post, b.post, "post"),
                (CheckSlot::Deferred, b.deferred, "deferred"),
            ];
            for (slot, shape, tag) in slots {
                if let Some(pass) = shape {
                    block.set_checks(slot, check_section(&format!("b{i}-{tag}"), pass));
                }
            }
            for (j, acts) in b.sequences.iter().enumerate() {
                block = block.sequence(
                    Sequence::builder(format!("b{i}s{j}")).actions(
                        acts.iter()
                            .enumerate()
                            .map(|(k, a)| a.spec(&format!("b{i}s{j}a{k}"))),
                    ),
                );
            }
            p = p.block(block);
        }
        for (i, d) in self.batches.iter().enumerate() {
            p = p.deferred(
                DeferredBatch::builder(format!("d{i}"), d.when)
                    .fail_plan(d.fail_plan)
                    .actions(
                        d.actions
                            .iter()
                            .enumerate()
                            .map(|(k, a)| a.spec(&format!("d{i}a{k}"))),
                    ),
            );
        }
        p.build()
    }

    /// The same shape with every check passing and every deferred batch succeeding.
    fn only_sequences_fail(mut self) -> PlanShape {
        let pass = |c: &mut CheckShape| *c = c.map(|_| true);
        for c in [
            &mut self.bypass,
            &mut self.pre,
            &mut self.post,
            &mut self.deferred,
        ] {
            pass(c);
        }
        // A passing plan bypass would skip everything.
        self.bypass = None;
        for b in &mut self.blocks {
            for c in [&mut b.bypass, &mut b.pre, &mut b.post, &mut b.deferred] {
                pass(c);
            }
            b.bypass = None;
        }
        for d in &mut self.batches {
            for a in &mut d.actions {
                a.script = Script::Ok;
            }
        }
        self
    }
}

fn act() -> impl Strategy<Value = Act> {
    let script = prop_oneof![
        4 => Just(Script::Ok),
        2 => (1u32..=3).prop_map(Script::FailTimes),
        1 => Just(Script::Permanent),
        1 => Just(Script::AlwaysFail),
    ];
    (
        script,
        0u32..=2,
        prop::sample::select(vec![0u64, 0, 10, 50, 200]),
    )
        .prop_map(|(script, retries, sleep_ms)| Act {
            script,
            retries,
            sleep_ms,
        })
}

fn check_shape() -> impl Strategy<Value = CheckShape> {
    prop_oneof![3 => Just(None), 4 => Just(Some(true)), 1 => Just(Some(false))]
}

fn bypass_shape() -> impl Strategy<Value = CheckShape> {
    prop_oneof![6 => Just(None), 1 => Just(Some(true)), 1 => Just(Some(false))]
}

fn tolerance() -> impl Strategy<Value = Tolerance> {
    prop_oneof![
        (0u32..=3).prop_map(Tolerance::Count),
        prop::sample::select(vec![0u8, 10, 25, 34, 50, 100]).prop_map(Tolerance::Percent),
        Just(Tolerance::Unlimited),
    ]
}

fn block_shape() -> impl Strategy<Value = BlockShape> {
    (
        1usize..=4,
        tolerance(),
        prop::collection::vec(prop::collection::vec(act(), 1..=4), 1..=8),
        bypass_shape(),
        check_shape(),
        any::<bool>(),
        check_shape(),
        check_shape(),
    )
        .prop_map(
            |(concurrency, tolerance, sequences, bypass, pre, cont, post, deferred)| BlockShape {
                concurrency,
                tolerance,
                sequences,
                bypass,
                pre,
                cont,
                post,
                deferred,
            },
        )
}

fn batch_shape() -> impl Strategy<Value = BatchShape> {
    let when = prop_oneof![
        Just(When::OnSuccess),
        Just(When::OnFailure),
        Just(When::Always)
    ];
    (when, any::<bool>(), prop::collection::vec(act(), 1..=2)).prop_map(
        |(when, fail_plan, actions)| BatchShape {
            when,
            fail_plan,
            actions,
        },
    )
}

fn plan_shape(blocks: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = PlanShape> {
    (
        bypass_shape(),
        check_shape(),
        any::<bool>(),
        prop::collection::vec(block_shape(), blocks),
        check_shape(),
        prop::collection::vec(batch_shape(), 0..=3),
        check_shape(),
    )
        .prop_map(
            |(bypass, pre, cont, blocks, post, batches, deferred)| PlanShape {
                bypass,
                pre,
                cont,
                blocks,
                post,
                batches,
                deferred,
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Running a shape
// ---------------------------------------------------------------------------------------------

/// What a run left behind.
struct Ran {
    done: Plan,
    /// The plan as the store has it after the end.
    stored: Plan,
    events: Vec<Event>,
    fakes: Fakes,
    /// With a stop: the number of action calls when the stop was requested, if the plan was
    /// still running then.
    calls_at_stop: Option<usize>,
}

async fn next<S: Stream>(s: &mut Pin<Box<S>>) -> Option<S::Item> {
    std::future::poll_fn(|cx| s.as_mut().poll_next(cx)).await
}

/// Runs `plan` in memory on a current-thread runtime with the clock paused, subscribed to its
/// events from the start; stops it after `stop_after` if given.
fn execute(plan: Plan, stop_after: Option<Duration>) -> Ran {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    rt.block_on(async {
        let fakes = Fakes::new();
        let ws = Workstream::in_memory(fakes.registry())
            .await
            .expect("workstream");
        let id = ws.submit(plan).await.expect("a generated plan is valid");
        ws.start(id).await.expect("start");
        let mut stream = Box::pin(ws.events(id).await.expect("events of a running plan"));
        let collector = tokio::spawn(async move {
            let mut events = Vec::new();
            while let Some(e) = next(&mut stream).await {
                events.push(e);
            }
            events
        });
        let mut calls_at_stop = None;
        if let Some(d) = stop_after {
            tokio::time::sleep(d).await;
            if ws.stop(id).await.is_ok() {
                calls_at_stop = Some(fakes.action.log().len());
            }
        }
        let done = ws.wait(id).await.expect("the plan runs to its end");
        let events = collector.await.expect("the event collector");
        let stored = ws.store().read(id).await.expect("stored plan");
        Ran {
            done,
            stored,
            events,
            fakes,
            calls_at_stop,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Properties of a final tree
// ---------------------------------------------------------------------------------------------

fn section(set: &CheckSetView<'_>, slot: CheckSlot) -> Option<Status> {
    set.get(slot).map(|c| c.status())
}

fn failed(set: &CheckSetView<'_>, slot: CheckSlot) -> bool {
    section(set, slot) == Some(Status::Failed)
}

fn untouched_actions(actions: &[ActionView<'_>]) -> bool {
    actions
        .iter()
        .all(|a| a.status() == Status::NotStarted && a.attempts().is_empty())
}

fn untouched_checks(set: &CheckSetView<'_>) -> bool {
    set.iter()
        .all(|(_, c)| c.status() == Status::NotStarted && untouched_actions(&c.actions()))
}

/// Nothing in the block ran.
fn untouched_block(b: &BlockView<'_>) -> bool {
    b.status() == Status::NotStarted
        && untouched_checks(&b.checks())
        && b.sequences()
            .iter()
            .all(|s| s.status() == Status::NotStarted && untouched_actions(&s.actions()))
}

/// Actions run in order and stop at the first that does not complete; each finished action
/// ended as its script says, after as many attempts. Returns the status the container of
/// `actions` (a sequence or a batch) must have, `None` for "never started".
fn check_ordered_actions(
    what: &str,
    actions: &[ActionView<'_>],
    scripts: &[Act],
) -> Result<Option<Status>, TestCaseError> {
    let first_open = actions.iter().position(|a| a.status() != Status::Completed);
    for (k, (a, s)) in actions.iter().zip(scripts).enumerate() {
        let attempts = a.attempts().len();
        prop_assert!(
            attempts <= s.retries as usize + 1,
            "{what} action {k}: {attempts} attempts, retries {}",
            s.retries
        );
        match a.status() {
            Status::Completed | Status::Failed => {
                prop_assert_eq!(
                    (a.status(), attempts),
                    s.outcome(),
                    "{} action {}: not what its script {:?} gives",
                    what,
                    k,
                    s
                );
            }
            Status::Stopped => prop_assert!(
                attempts >= 1,
                "{what} action {k} Stopped without an attempt"
            ),
            Status::NotStarted => prop_assert_eq!(
                attempts,
                0,
                "{} action {} NotStarted with attempts",
                what,
                k
            ),
            Status::Running => {
                prop_assert!(false, "{what} action {k} still Running in a final tree")
            }
        }
        if let Some(f) = first_open
            && k > f
        {
            prop_assert!(
                a.status() == Status::NotStarted && attempts == 0,
                "{what} action {k} ran after action {f} ended {}",
                actions[f].status()
            );
        }
    }
    Ok(match first_open {
        None => Some(Status::Completed),
        Some(f) => match actions[f].status() {
            Status::Failed => Some(Status::Failed),
            Status::Stopped => Some(Status::Stopped),
            // Halted before its next action.
            _ if f > 0 => Some(Status::Stopped),
            _ => None,
        },
    })
}

/// Checks one block; returns whether it failed.
fn check_block(
    i: usize,
    b: &BlockView<'_>,
    shape: &BlockShape,
    stopped: bool,
) -> Result<bool, TestCaseError> {
    let checks = &b.checks();
    for (slot, c) in checks.iter() {
        prop_assert!(
            c.status() != Status::Running,
            "block {i} {slot} still Running"
        );
    }
    if b.status() == Status::NotStarted {
        prop_assert!(
            untouched_block(b),
            "block {i} NotStarted but something in it ran"
        );
        return Ok(false);
    }
    prop_assert!(b.status() != Status::Running, "block {i} still Running");
    if section(checks, CheckSlot::Bypass) == Some(Status::Completed) {
        prop_assert_eq!(b.status(), Status::Completed, "bypassed block {}", i);
        for slot in [
            CheckSlot::Pre,
            CheckSlot::Cont,
            CheckSlot::Post,
            CheckSlot::Deferred,
        ] {
            prop_assert!(
                checks
                    .get(slot)
                    .is_none_or(|c| c.status() == Status::NotStarted),
                "bypassed block {i}: {slot} ran"
            );
        }
        prop_assert!(
            b.sequences()
                .iter()
                .all(|s| s.status() == Status::NotStarted),
            "bypassed block {i}: a sequence ran"
        );
        return Ok(false);
    }

    let mut started_seen_gap = false;
    let mut any_started = false;
    for (j, (s, scripts)) in b.sequences().iter().zip(&shape.sequences).enumerate() {
        let expected = check_ordered_actions(&format!("b{i}s{j}"), &s.actions(), scripts)?;
        match expected {
            None => prop_assert_eq!(
                s.status(),
                Status::NotStarted,
                "sequence b{}s{} never started an action",
                i,
                j
            ),
            Some(st) => prop_assert_eq!(s.status(), st, "sequence b{}s{} vs its actions", i, j),
        }
        // Sequences start in order.
        if s.status() == Status::NotStarted {
            started_seen_gap = true;
        } else {
            prop_assert!(
                !started_seen_gap,
                "sequence b{i}s{j} started after an earlier one never did"
            );
            any_started = true;
        }
    }

    let total = b.sequences().len();
    let failed_seqs = b
        .sequences()
        .iter()
        .filter(|s| s.status() == Status::Failed)
        .count();
    let exceeded = shape.tolerance.is_exceeded(failed_seqs, total);
    let allowed = (0..=total)
        .take_while(|n| !shape.tolerance.is_exceeded(*n, total))
        .last()
        .unwrap_or(0);
    // The overshoot: when the tolerance is exceeded, only the sequences then in flight (at most
    // `concurrency`, the failing one included) may still fail.
    prop_assert!(
        failed_seqs <= allowed + shape.concurrency,
        "block {i}: {failed_seqs} failed sequences with tolerance {} and concurrency {}",
        shape.tolerance,
        shape.concurrency
    );
    // No new action starts after the failure that exceeded the tolerance (the action in flight
    // may still retry). The run is single-threaded, so the recorded times order the steps: the
    // sequence that exceeded the tolerance is the one whose failure ended (allowed + 1)-th.
    if exceeded {
        let mut failures: Vec<_> = b
            .sequences()
            .iter()
            .filter(|s| s.status() == Status::Failed)
            .filter_map(|s| s.state().end)
            .collect();
        failures.sort();
        let failed_at = failures[allowed];
        for (j, s) in b.sequences().iter().enumerate() {
            for (k, a) in s.actions().iter().enumerate() {
                if let Some(first) = a.attempts().first() {
                    prop_assert!(
                        first.start <= failed_at,
                        "block {i}: action b{i}s{j}a{k} started after the block failed on its tolerance"
                    );
                }
            }
        }
    }
    // One sequence at a time: the failure that exceeds the tolerance is the last sequence that
    // starts, and no other fails after it.
    if shape.concurrency == 1 && exceeded {
        let last_started = b
            .sequences()
            .iter()
            .rposition(|s| s.status() != Status::NotStarted);
        prop_assert_eq!(
            failed_seqs,
            allowed + 1,
            "block {}: failures after the tolerance was exceeded",
            i
        );
        prop_assert!(
            last_started.is_some_and(|j| b.sequences()[j].status() == Status::Failed),
            "block {i}: a sequence started after the failure that exceeded the tolerance"
        );
    }
    if failed(checks, CheckSlot::Pre) || failed(checks, CheckSlot::Cont) {
        prop_assert!(
            !any_started,
            "block {i}: a sequence started after its pre-checks failed"
        );
    }
    let own_failure = exceeded
        || [
            CheckSlot::Pre,
            CheckSlot::Cont,
            CheckSlot::Post,
            CheckSlot::Deferred,
        ]
        .iter()
        .any(|s| failed(checks, *s));
    if own_failure {
        prop_assert_eq!(
            b.status(),
            Status::Failed,
            "block {} failed on its own account",
            i
        );
        if exceeded {
            prop_assert!(
                section(checks, CheckSlot::Post).is_none_or(|s| s == Status::NotStarted),
                "block {i}: post-checks ran after the tolerance was exceeded"
            );
        }
    }
    match b.status() {
        Status::Completed => {
            prop_assert!(!own_failure);
            prop_assert!(
                b.sequences()
                    .iter()
                    .all(|s| matches!(s.status(), Status::Completed | Status::Failed)),
                "block {i} Completed with a sequence that did not run to its end"
            );
        }
        Status::Failed => {
            prop_assert!(
                own_failure,
                "block {i} Failed without a cause (no continuous check fails here)"
            )
        }
        Status::Stopped => prop_assert!(stopped && !own_failure, "block {i} Stopped"),
        other => prop_assert!(false, "block {i} ended {other}"),
    }
    // Deferred checks run at the end of every block that started (not bypassed) — unless stopped
    // in an emergency, which these properties do not do.
    prop_assert!(
        section(checks, CheckSlot::Deferred).is_none_or(|s| s.is_terminal()),
        "block {i}: deferred checks did not run"
    );
    Ok(b.status() == Status::Failed)
}

/// Checks the whole tree against the shape; `stopped`: the plan was stopped while it ran.
fn check_tree(shape: &PlanShape, done: &Plan, stopped: bool) -> Check {
    let checks = &done.checks();
    if section(checks, CheckSlot::Bypass) == Some(Status::Completed) {
        prop_assert!(!stopped || done.status() == Status::Stopped);
        if !stopped {
            prop_assert_eq!(
                (done.status(), done.reason()),
                (Status::Completed, Reason::None)
            );
        }
        for slot in [
            CheckSlot::Pre,
            CheckSlot::Cont,
            CheckSlot::Post,
            CheckSlot::Deferred,
        ] {
            prop_assert!(
                checks
                    .get(slot)
                    .is_none_or(|c| c.status() == Status::NotStarted),
                "bypassed plan: {slot} ran"
            );
        }
        prop_assert!(
            done.blocks().iter().all(untouched_block),
            "bypassed plan: a block ran"
        );
        prop_assert!(
            done.deferred()
                .iter()
                .all(|d| d.status() == Status::NotStarted),
            "bypassed plan: a batch ran"
        );
        return Ok(());
    }

    let pre_failed = failed(checks, CheckSlot::Pre);
    let mut block_failed = false;
    for (i, (b, bs)) in done.blocks().iter().zip(&shape.blocks).enumerate() {
        if pre_failed || block_failed {
            prop_assert!(
                untouched_block(b),
                "block {i} ran after the plan's pre-checks or an earlier block failed"
            );
            continue;
        }
        block_failed = check_block(i, b, bs, stopped)?;
        if !block_failed && b.status() != Status::Completed {
            // Stopped (or never started after a stop): nothing later starts.
            prop_assert!(stopped);
            block_failed = true;
        }
    }
    let stopped_early = done.blocks().iter().any(|b| b.status() == Status::Stopped);
    if pre_failed || block_failed {
        prop_assert!(
            checks
                .get(CheckSlot::Post)
                .is_none_or(|c| c.status() == Status::NotStarted),
            "post-checks ran after a failure"
        );
    }
    let post_failed = failed(checks, CheckSlot::Post);
    let failed_before_batches = pre_failed || block_failed || post_failed || stopped_early;

    // Deferred batches: selected by `when`, in order, each stopping at its first failure.
    let mut batch_failed = false;
    for (i, (d, ds)) in done.deferred().iter().zip(&shape.batches).enumerate() {
        let scripts = &ds.actions;
        if !stopped {
            let selected = d.when().selects(failed_before_batches);
            prop_assert_eq!(
                d.status() != Status::NotStarted,
                selected,
                "batch {} ({}) selection",
                i,
                d.when()
            );
        }
        let expected = check_ordered_actions(&format!("d{i}"), &d.actions(), scripts)?;
        if d.status() != Status::NotStarted {
            prop_assert_eq!(Some(d.status()), expected, "batch {} vs its actions", i);
        } else {
            prop_assert!(
                untouched_actions(&d.actions()),
                "batch {i} NotStarted but ran"
            );
        }
        batch_failed |= d.fail_plan() && d.status() == Status::Failed;
    }
    prop_assert!(
        checks
            .get(CheckSlot::Deferred)
            .is_none_or(|c| c.status().is_terminal()),
        "deferred checks did not run"
    );
    let deferred_failed = failed(checks, CheckSlot::Deferred);

    // The reason: the first phase that failed. (The continuous checks generated here pass.)
    prop_assert!(!failed(checks, CheckSlot::Cont));
    let first = if pre_failed {
        Reason::PreCheck
    } else if done.blocks().iter().any(|b| b.status() == Status::Failed) {
        Reason::Block
    } else if post_failed {
        Reason::PostCheck
    } else if stopped {
        Reason::Stopped
    } else if batch_failed {
        Reason::DeferredAction
    } else if deferred_failed {
        Reason::DeferredCheck
    } else {
        Reason::None
    };
    let status = if stopped {
        Status::Stopped
    } else if first == Reason::None {
        Status::Completed
    } else {
        Status::Failed
    };
    prop_assert_eq!(
        (done.status(), done.reason()),
        (status, first),
        "final status and reason"
    );
    Ok(())
}

/// Properties every run has, whatever its shape.
fn check_run(shape: &PlanShape, ran: &Ran) -> Check {
    let done = &ran.done;
    check_tree(shape, done, ran.calls_at_stop.is_some())?;

    // Every fake call is an attempt in the tree (checks that ran again keep only their last run).
    let action_attempts: usize = done
        .blocks()
        .iter()
        .flat_map(|b| b.sequences())
        .flat_map(|s| s.actions())
        .chain(done.deferred().iter().flat_map(|d| d.actions()))
        .map(|a| a.attempts().len())
        .sum();
    prop_assert_eq!(
        ran.fakes.action.log().len(),
        action_attempts,
        "action calls vs attempts in the tree"
    );

    // At most `concurrency` sequences run at once. Blocks run one after another and batches one
    // action at a time, so no instant sees more actions than the largest block limit.
    let limit = shape
        .blocks
        .iter()
        .map(|b| b.concurrency)
        .max()
        .unwrap_or(1);
    prop_assert!(
        ran.fakes.action.log().max_concurrency() <= limit,
        "{} actions at once, limit {limit}",
        ran.fakes.action.log().max_concurrency()
    );

    // The store holds exactly the final tree: nothing was written after the end.
    prop_assert!(
        ran.stored == *done,
        "the stored plan differs from the final tree"
    );

    // The event stream: a snapshot first, `Finished` with the final tree last, and the changes
    // in between rebuild the final tree from the snapshot.
    let Some(Event::Snapshot(first)) = ran.events.first() else {
        return Err(TestCaseError::fail(format!(
            "first event: {:?}",
            ran.events.first().map(std::mem::discriminant)
        )));
    };
    let Some(Event::Finished(last)) = ran.events.last() else {
        return Err(TestCaseError::fail(
            "the event stream does not end with Finished",
        ));
    };
    prop_assert!(**last == *done, "Finished does not hold the final tree");
    let mut replay = (**first).clone();
    for e in &ran.events[1..ran.events.len() - 1] {
        match e {
            Event::Snapshot(p) => replay = (**p).clone(),
            Event::Changed(changes) => {
                for c in changes.iter() {
                    c.apply_to(&mut replay)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
            }
            Event::Finished(_) => {
                return Err(TestCaseError::fail("Finished before the end of the stream"));
            }
            // The typed form of the changes just applied: each names its object's own path.
            Event::Updated(updates) => {
                for u in updates.iter() {
                    prop_assert_eq!(&replay.path(u.loc), &u.path);
                }
            }
            other => {
                return Err(TestCaseError::fail(format!(
                    "an event this test does not know: {other:?}"
                )));
            }
        }
    }
    prop_assert!(replay == *done, "the changes do not rebuild the final tree");
    Ok(())
}

/// 64 cases per property (keeps the suite fast on a small machine); `PROPTEST_CASES` overrides.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// One block: the observed concurrency never exceeds the block's limit, and the tree agrees
    /// with the scripts.
    #[test]
    fn one_block_respects_its_concurrency_and_tolerance(shape in plan_shape(1..=1)) {
        let ran = execute(shape.build(), None);
        let limit = shape.blocks[0].concurrency;
        prop_assert!(ran.fakes.action.log().max_concurrency() <= limit);
        check_run(&shape, &ran)?;
    }

    /// Up to three blocks with checks and deferred batches: statuses, reason, batch selection,
    /// nothing started after a failure, events and store agree with the final tree.
    #[test]
    fn random_plans_end_as_their_scripts_say(shape in plan_shape(1..=3)) {
        let ran = execute(shape.build(), None);
        check_run(&shape, &ran)?;
    }

    /// Stopped at a random moment: no sequence action is called after the stop, the plan ends
    /// `Stopped` (reason: the failure before the stop, else `Stopped`) and the tree is consistent.
    #[test]
    fn nothing_starts_after_a_stop(shape in plan_shape(1..=3), stop_ms in 0u64..1500) {
        let shape = shape.only_sequences_fail();
        let ran = execute(shape.build(), Some(ms(stop_ms)));
        check_run(&shape, &ran)?;
        if let Some(at_stop) = ran.calls_at_stop {
            let late: Vec<String> = ran.fakes.action.log().tags()[at_stop..]
                .iter()
                .filter(|t| !t.starts_with('d'))
                .cloned()
                .collect();
            prop_assert!(late.is_empty(), "sequence actions called after the stop: {late:?}");
        }
    }
}

//! Prefix replay (Go's TestRecovery, made stricter): record every write of a full successful run,
//! then for every prefix length k start a fresh workstream on a store holding only the first k
//! writes. Each must recover to a completed plan whose tree matches the uninterrupted run, and no
//! completed sequence or batch action may run again. The expected differences: an attempt open
//! in the prefix is kept as an interrupted attempt, at its own index, and the re-run comes after
//! it (so that action's attempt count may differ).
//!
//! Then the interrupted attempt itself: kept, not counted against the retries, and never run
//! again for a plugin marked `not_idempotent`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coercion::prelude::*;
use coercion::storage::{MemoryStore, RecordedWrite, RecordingStore, Store};
use coercion::testing::{FakeAction, FakeCheck, FakeReq, Fakes, outline};
use coercion::workflow::{Loc, ObjectRef, Parent};

fn check(name: &str) -> CheckSpec {
    CheckSpec::new::<FakeCheck>(name, FakeReq::ok().tag(name))
}

fn action(name: &str, req: FakeReq) -> ActionSpec {
    ActionSpec::new::<FakeAction>(name, req.tag(name))
}

/// Every kind of check at both levels, several blocks, concurrency, retries, deferred batches.
fn plan() -> Plan {
    let block = |b: usize| {
        Block::builder(format!("block-{b}"))
            .concurrency(2)
            .tolerated_failures(Tolerance::Count(0))
            .bypass_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>(
                format!("b{b}-bypass"),
                FakeReq::fail_permanently().tag(format!("b{b}-bypass")),
            )))
            .pre_checks(Checks::builder().action(check(&format!("b{b}-pre"))))
            .cont_checks(
                Checks::builder()
                    .delay(Duration::from_secs(5))
                    .action(check(&format!("b{b}-cont"))),
            )
            .post_checks(Checks::builder().action(check(&format!("b{b}-post"))))
            .deferred_checks(Checks::builder().action(check(&format!("b{b}-deferred"))))
            .sequences((0..3).map(move |s| {
                Sequence::builder(format!("b{b}-s{s}"))
                    .action(action(&format!("b{b}-s{s}-a0"), FakeReq::fail_times(1)).retries(2))
                    .action(action(
                        &format!("b{b}-s{s}-a1"),
                        FakeReq::sleep(Duration::from_millis(200)),
                    ))
            }))
    };
    Plan::builder("replay")
        .bypass_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>(
            "bypass",
            FakeReq::fail_permanently().tag("bypass"),
        )))
        .pre_checks(Checks::builder().action(check("pre")))
        .cont_checks(
            Checks::builder()
                .delay(Duration::from_secs(5))
                .action(check("cont")),
        )
        .post_checks(Checks::builder().action(check("post")))
        .deferred_checks(Checks::builder().action(check("deferred")))
        .block(block(0))
        .block(block(1))
        .deferred(
            DeferredBatch::builder("on-success", When::OnSuccess)
                .action(action("notify", FakeReq::ok())),
        )
        .deferred(
            DeferredBatch::builder("on-failure", When::OnFailure)
                .action(action("rollback", FakeReq::ok())),
        )
        .deferred(
            DeferredBatch::builder("always", When::Always)
                .action(action("cleanup", FakeReq::fail_times(1)).retries(1)),
        )
        .build()
}

/// Ids of sequence and batch actions that are `Completed` in `plan`.
fn completed_work(plan: &Plan) -> HashSet<coercion::Uuid> {
    plan.walk()
        .filter_map(|(loc, obj)| match (loc, obj) {
            (
                Loc::Action {
                    parent: Parent::Sequence { .. } | Parent::Batch(_),
                    ..
                },
                ObjectRef::Action(a),
            ) if a.status() == Status::Completed => Some(a.id()),
            _ => None,
        })
        .collect()
}

/// This machine's name, as `hostname` prints it.
fn hostname() -> String {
    let out = std::process::Command::new("hostname").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Actions of `plan` with an attempt started and not ended, by id, with that attempt's index.
fn open_attempts(plan: &Plan) -> HashMap<coercion::Uuid, usize> {
    plan.walk()
        .filter_map(|(_, obj)| match obj {
            ObjectRef::Action(a) if a.attempts().last().is_some_and(|t| t.end.is_none()) => {
                Some((a.id(), a.attempts().len() - 1))
            }
            _ => None,
        })
        .collect()
}

/// Every object's path and status, and each action's attempt count except for the actions in
/// `uncounted` (those interrupted in the prefix, whose re-runs may take more or fewer attempts).
fn normalized(plan: &Plan, uncounted: &HashMap<coercion::Uuid, usize>) -> String {
    plan.walk()
        .map(|(loc, obj)| {
            let count = match obj {
                ObjectRef::Action(a) if !uncounted.contains_key(&a.id()) => {
                    format!(" attempts: {}", a.attempts().len())
                }
                _ => String::new(),
            };
            format!("{} {}{count}\n", plan.path(loc), obj.state().status)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn every_prefix_of_a_run_recovers_to_the_same_completed_plan() {
    let fakes = Fakes::new();
    let recorder = Arc::new(RecordingStore::new(MemoryStore::new()));
    let ws = Workstream::builder()
        .shared_store(recorder.clone())
        .registry(fakes.registry())
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let expected = ws.run(plan()).await.unwrap();
    assert_eq!(
        expected.status(),
        Status::Completed,
        "{}",
        outline(&expected)
    );
    let expected_outline = outline(&expected);
    let writes = recorder.writes();
    assert!(
        writes.len() > 60,
        "a full run writes a lot: {}",
        writes.len()
    );
    assert!(matches!(writes[0], RecordedWrite::Create { .. }));
    let id = expected.id();

    let (mut resumed, mut with_completed_work, mut interrupted_prefixes) = (0, 0, 0);
    for k in 1..=writes.len() {
        let store = MemoryStore::new();
        RecordedWrite::replay_all(&writes[..k], &store)
            .await
            .unwrap();
        let before = store.read(id).await.unwrap();
        let done_before = completed_work(&before);

        if before.status() == Status::Running {
            resumed += 1;
            if !done_before.is_empty() {
                with_completed_work += 1;
            }
        }
        let fakes = Fakes::new();
        let ws = Workstream::builder()
            .store(store)
            .registry(fakes.registry())
            .build()
            .await
            .unwrap();
        if before.status() == Status::NotStarted {
            ws.start(id).await.unwrap();
        }
        let recovered = ws
            .wait(id)
            .await
            .unwrap_or_else(|e| panic!("prefix {k}/{}: {e}", writes.len()));
        let open = open_attempts(&before);
        if open.is_empty() {
            assert_eq!(
                outline(&recovered),
                expected_outline,
                "prefix {k}/{}: the recovered tree differs from the uninterrupted run",
                writes.len()
            );
        } else {
            interrupted_prefixes += 1;
            assert_eq!(
                normalized(&recovered, &open),
                normalized(&expected, &open),
                "prefix {k}/{}: the recovered tree differs from the uninterrupted run",
                writes.len()
            );
        }
        // The other expected difference: a plan taken over Running records its resumption.
        let resumptions = recovered.resumptions();
        if before.status() == Status::Running {
            assert_eq!(resumptions.len(), 1, "prefix {k}: one resumption");
            assert_eq!(
                resumptions[0].by,
                format!("pid {} on {}", std::process::id(), hostname()),
                "prefix {k}: the resuming process"
            );
            assert!(
                resumptions[0].at >= before.heartbeat().unwrap(),
                "prefix {k}: resumed after the last heartbeat"
            );
        } else {
            assert!(resumptions.is_empty(), "prefix {k}: {resumptions:?}");
        }
        // Exactly the attempts open in the prefix are kept as interrupted, at their index.
        for (_, obj) in recovered.walk() {
            if let ObjectRef::Action(a) = obj {
                let interrupted: Vec<usize> = a
                    .attempts()
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.was_interrupted())
                    .map(|(i, _)| i)
                    .collect();
                let want: Vec<usize> = open.get(&a.id()).copied().into_iter().collect();
                assert_eq!(
                    interrupted,
                    want,
                    "prefix {k}: interrupted attempts of {:?}",
                    a.name()
                );
                assert!(a.attempts().iter().all(|t| t.end.is_some()));
            }
        }
        let rerun: Vec<_> = fakes
            .action
            .log()
            .calls()
            .into_iter()
            .filter(|c| done_before.contains(&c.action_id))
            .collect();
        assert!(
            rerun.is_empty(),
            "prefix {k}: completed actions ran again: {rerun:?}"
        );
    }
    // The replay really exercised recovery: most prefixes stopped mid-run, many after some work.
    println!(
        "{} writes, {resumed} prefixes resumed mid-run, {with_completed_work} with completed work, \
         {interrupted_prefixes} with an attempt interrupted",
        writes.len()
    );
    assert!(interrupted_prefixes > writes.len() / 4);
    assert!(
        resumed >= writes.len() - 2,
        "{resumed} of {} prefixes were mid-run",
        writes.len()
    );
    assert!(with_completed_work > writes.len() / 2);
}

// ---------------------------------------------------------------------------------------------
// The interrupted attempt
// ---------------------------------------------------------------------------------------------

/// A plugin that must never run twice for one attempt, counting its calls.
#[coercion::plugin(name = "replay-test/charge", not_idempotent)]
#[derive(Clone, Default)]
struct Charge {
    calls: Arc<AtomicUsize>,
}

impl Plugin for Charge {
    type Request = ();
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn one_action(action: ActionSpec) -> Plan {
    Plan::builder("one action")
        .block(Block::builder("b").sequence(Sequence::builder("s").action(action)))
        .build()
}

fn only_action(plan: &Plan) -> coercion::ActionView<'_> {
    plan.walk()
        .find_map(|(_, o)| match o {
            ObjectRef::Action(a) => Some(a),
            _ => None,
        })
        .expect("one action")
}

/// Runs `plan` on a recording store with `registry`, then returns a store holding the writes
/// up to the first moment attempt `index` (0-based) of its action was open: the store a process
/// killed during that attempt leaves behind.
async fn killed_during_attempt(
    plan: Plan,
    registry: Registry,
    index: usize,
) -> (PlanId, MemoryStore) {
    let recorder = Arc::new(RecordingStore::new(MemoryStore::new()));
    let ws = Workstream::builder()
        .shared_store(recorder.clone())
        .registry(registry)
        .build()
        .await
        .unwrap();
    let done = ws.run(plan).await.unwrap();
    let writes = recorder.writes();
    for k in 1..=writes.len() {
        let store = MemoryStore::new();
        RecordedWrite::replay_all(&writes[..k], &store)
            .await
            .unwrap();
        let p = store.read(done.id()).await.unwrap();
        let attempts = only_action(&p).attempts();
        if attempts.len() == index + 1 && attempts[index].end.is_none() {
            return (done.id(), store);
        }
    }
    panic!("attempt {index} was never open: {}", outline(&done));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_interrupted_by_a_kill_is_kept_and_does_not_count_against_the_retries() {
    // Always fails, retries 3: four attempts when nothing interrupts it.
    let plan = || one_action(action("flaky", FakeReq::fail()).retries(3));
    let (id, store) = killed_during_attempt(plan(), Fakes::new().registry(), 1).await;

    let fakes = Fakes::new();
    let ws = Workstream::builder()
        .store(store)
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Failed, "{}", outline(&done));
    let attempts = only_action(&done).attempts();
    // 1 failed, 2 interrupted, then 3, 4 and 5: four real attempts, as without the kill.
    assert_eq!(attempts.len(), 5, "{}", outline(&done));
    let interrupted: Vec<bool> = attempts.iter().map(|t| t.was_interrupted()).collect();
    assert_eq!(interrupted, [false, true, false, false, false]);
    let cut = &attempts[1];
    assert!(cut.end.is_some_and(|end| end >= cut.start));
    let error = cut.error().unwrap();
    assert!(!error.permanent);
    assert!(
        error.message.contains("attempt 2 was interrupted"),
        "{}",
        error.message
    );
    // The plugin was called for attempts 3, 4 and 5 in this process: numbered after the kept
    // attempts, so its calls match the history.
    let numbers: Vec<u32> = fakes
        .action
        .log()
        .calls()
        .iter()
        .map(|c| c.attempt)
        .collect();
    assert_eq!(numbers, [3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn an_action_without_retries_interrupted_by_a_kill_still_gets_its_attempt() {
    let (id, store) = killed_during_attempt(
        one_action(action("once", FakeReq::ok())),
        Fakes::new().registry(),
        0,
    )
    .await;
    let fakes = Fakes::new();
    let ws = Workstream::builder()
        .store(store)
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{}", outline(&done));
    let attempts = only_action(&done).attempts();
    assert_eq!(attempts.len(), 2);
    assert!(attempts[0].was_interrupted() && attempts[1].succeeded());
    assert_eq!(fakes.action.log().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_not_idempotent_plugin_interrupted_by_a_kill_is_not_run_again() {
    let charge = Charge::default();
    let registry = || Registry::new().with(charge.clone()).unwrap();
    let (id, store) = killed_during_attempt(
        one_action(ActionSpec::new::<Charge>("charge", ()).retries(5)),
        registry(),
        0,
    )
    .await;
    charge.calls.store(0, Ordering::SeqCst);
    let ws = Workstream::builder()
        .store(store)
        .registry(registry())
        .build()
        .await
        .unwrap();
    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Failed, "{}", outline(&done));
    let attempts = only_action(&done).attempts();
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0].was_interrupted());
    let error = attempts[0].error().unwrap();
    assert!(error.permanent);
    assert!(
        error
            .message
            .contains("marked not_idempotent, so it is not run again"),
        "{}",
        error.message
    );
    assert_eq!(charge.calls.load(Ordering::SeqCst), 0, "never run again");
}

#[tokio::test(start_paused = true)]
async fn a_plan_resumed_twice_records_both_resumptions_oldest_first() {
    // Killed during attempt 1 of 3 sequential actions; the first resuming process is killed in
    // turn after it recorded its resumption and finished the first action.
    let plan = Plan::builder("twice")
        .block(
            Block::builder("b").sequence(
                Sequence::builder("s")
                    .action(action("one", FakeReq::ok()))
                    .action(action("two", FakeReq::ok()))
                    .action(action("three", FakeReq::ok())),
            ),
        )
        .build();
    let recorder = Arc::new(RecordingStore::new(MemoryStore::new()));
    let ws = Workstream::builder()
        .shared_store(recorder.clone())
        .registry(Fakes::new().registry())
        .build()
        .await
        .unwrap();
    let id = ws.run(plan).await.unwrap().id();
    let writes = recorder.writes();
    let mut first_kill = None;
    for k in 1..=writes.len() {
        let store = MemoryStore::new();
        RecordedWrite::replay_all(&writes[..k], &store)
            .await
            .unwrap();
        if open_attempts(&store.read(id).await.unwrap()).len() == 1 {
            first_kill = Some(k);
            break;
        }
    }
    let first_kill = first_kill.expect("an attempt was open at some write");

    // The first resumption, recorded; its own writes cut after the first action completed.
    let store = MemoryStore::new();
    RecordedWrite::replay_all(&writes[..first_kill], &store)
        .await
        .unwrap();
    let recorder = Arc::new(RecordingStore::new(store));
    let ws = Workstream::builder()
        .shared_store(recorder.clone())
        .registry(Fakes::new().registry())
        .build()
        .await
        .unwrap();
    let once = ws.wait(id).await.unwrap();
    assert_eq!(once.resumed_label().as_deref(), Some("resumed once"));
    let second_writes = recorder.writes();
    let mut second_kill = None;
    for k in 1..=second_writes.len() {
        let store = MemoryStore::new();
        RecordedWrite::replay_all(&writes[..first_kill], &store)
            .await
            .unwrap();
        RecordedWrite::replay_all(&second_writes[..k], &store)
            .await
            .unwrap();
        let p = store.read(id).await.unwrap();
        if !p.resumptions().is_empty() && open_attempts(&p).len() == 1 {
            second_kill = Some(store);
            break;
        }
    }
    let store = second_kill.expect("the first resuming process ran an attempt");
    let ws = Workstream::builder()
        .store(store)
        .registry(Fakes::new().registry())
        .build()
        .await
        .unwrap();
    let twice = ws.wait(id).await.unwrap();
    assert_eq!(twice.status(), Status::Completed, "{}", outline(&twice));
    let r = twice.resumptions();
    assert_eq!(r.len(), 2);
    assert!(r[0].at <= r[1].at, "oldest first");
    assert_eq!(twice.resumed_label().as_deref(), Some("resumed twice"));
    assert_eq!(
        coercion::progress::outcome(&twice),
        format!("plan {id} Completed, resumed twice")
    );
}

//! Prefix replay (Go's TestRecovery, made stricter): record every write of a full successful run,
//! then for every prefix length k start a fresh workstream on a store holding only the first k
//! writes. Each must recover to a completed plan whose tree matches the uninterrupted run, and no
//! completed sequence or batch action may run again.

use std::collections::HashSet;
use std::sync::Arc;
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

    let (mut resumed, mut with_completed_work) = (0, 0);
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
        assert_eq!(
            outline(&recovered),
            expected_outline,
            "prefix {k}/{}: the recovered tree differs from the uninterrupted run",
            writes.len()
        );
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
        "{} writes, {resumed} prefixes resumed mid-run, {with_completed_work} with completed work",
        writes.len()
    );
    assert!(
        resumed >= writes.len() - 2,
        "{resumed} of {} prefixes were mid-run",
        writes.len()
    );
    assert!(with_completed_work > writes.len() / 2);
}

//! Storage faults never kill the process: transient write errors are retried with backoff; a
//! permanent one stops the run cleanly with a clear error and leaves the plan recoverable.

use std::sync::Arc;

use coercion::prelude::*;
use coercion::storage::{FaultKind, FaultRule, FaultTiming, FaultyStore, MemoryStore, Store};
use coercion::testing::{FakeAction, FakeReq, Fakes, outline};

fn plan() -> Plan {
    Plan::builder("faults")
        .block(
            Block::builder("b")
                .concurrency(3)
                .sequences((0..6).map(|s| {
                    Sequence::builder(format!("s{s}")).actions((0..3).map(move |a| {
                        ActionSpec::new::<FakeAction>(
                            format!("a{a}"),
                            FakeReq::ok().tag(format!("s{s}a{a}")),
                        )
                    }))
                })),
        )
        .build()
}

#[tokio::test(start_paused = true)]
async fn transient_write_errors_are_retried_and_the_plan_completes() {
    let fakes = Fakes::new();
    let store = Arc::new(FaultyStore::failing(
        MemoryStore::new(),
        FaultRule::Random {
            probability: 0.3,
            seed: 7,
        },
        FaultKind::Transient,
    ));
    let ws = Workstream::builder()
        .shared_store(store.clone())
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    let id = ws.submit(plan()).await;
    // `create` itself may draw a fault: the caller sees it and may submit again.
    let id = match id {
        Ok(id) => id,
        Err(_) => ws.submit(plan()).await.unwrap(),
    };
    ws.start(id).await.unwrap();
    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{}", outline(&done));
    assert!(
        store.injected() > 5,
        "faults were injected: {}",
        store.injected()
    );
    // Every action ran exactly once: retried writes did not re-run work.
    assert_eq!(fakes.action.log().len(), 18);
    // What the store holds is what the engine saw.
    assert_eq!(
        outline(&store.inner().read(id).await.unwrap()),
        outline(&done)
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_commit_acknowledgement_is_retried_without_harm() {
    let fakes = Fakes::new();
    let store = Arc::new(
        FaultyStore::failing(
            MemoryStore::new(),
            FaultRule::Random {
                probability: 0.3,
                seed: 3,
            },
            FaultKind::Transient,
        )
        .with_timing(FaultTiming::AfterWrite),
    );
    let ws = Workstream::builder()
        .shared_store(store.clone())
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    store.set_faults(FaultRule::Never, FaultKind::Transient);
    let id = ws.submit(plan()).await.unwrap();
    store.set_faults(
        FaultRule::Random {
            probability: 0.3,
            seed: 3,
        },
        FaultKind::Transient,
    );
    ws.start(id).await.unwrap();
    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{}", outline(&done));
    assert!(
        store.injected() >= 3,
        "faults were injected: {}",
        store.injected()
    );
    assert_eq!(
        outline(&store.inner().read(id).await.unwrap()),
        outline(&done)
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_write_error_stops_the_run_cleanly_and_leaves_it_recoverable() {
    let memory = MemoryStore::new();
    let store = Arc::new(FaultyStore::new(memory.clone()));
    let fakes = Fakes::new();
    let ws = Workstream::builder()
        .shared_store(store.clone())
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    let id = ws.submit(plan()).await.unwrap();
    // The disk fills up after 15 more writes.
    store.set_faults(FaultRule::After(store.writes() + 15), FaultKind::Permanent);
    ws.start(id).await.unwrap();
    let err = ws.wait(id).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, coercion::Error::Interrupted(..)), "{err:?}");
    assert!(
        msg.contains("disk is full"),
        "the error says what failed: {msg}"
    );
    // Nothing more was written after the failure, and the plan is still Running in storage.
    let stored = memory.read(id).await.unwrap();
    assert_eq!(stored.status(), Status::Running);
    let ran_before = fakes.action.log().len();
    assert!(
        ran_before < 18,
        "the run stopped early ({ran_before} actions ran)"
    );

    // The disk is fixed; a new workstream on the same store resumes and finishes the plan.
    let fakes2 = Fakes::new();
    let ws2 = Workstream::builder()
        .store(memory.clone())
        .registry(fakes2.registry())
        .build()
        .await
        .unwrap();
    let done = ws2.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{}", outline(&done));
    // Only work that was not durably completed ran again.
    let completed_before = stored
        .walk()
        .filter(|(_, o)| matches!(o, coercion::workflow::ObjectRef::Action(a) if a.status() == Status::Completed))
        .count();
    assert_eq!(fakes2.action.log().len(), 18 - completed_before);
}

/// `submit_and_start` stores the plan already Running in the write that creates it: a process
/// that can write nothing more after that (it dies, its disk fills) leaves a plan that recovery
/// resumes, not a NotStarted orphan.
#[tokio::test(start_paused = true)]
async fn submit_and_start_leaves_no_not_started_orphan() {
    let fakes = Fakes::new();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let ws = Workstream::builder()
        .shared_store(store.clone())
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    // Every write after the plan's creation fails for good.
    store.set_faults(FaultRule::After(store.writes() + 1), FaultKind::Permanent);
    let id = ws.submit_and_start(plan()).await.unwrap();
    assert!(matches!(
        ws.wait(id).await,
        Err(coercion::Error::Interrupted(..))
    ));
    let stored = store.inner().read(id).await.unwrap();
    assert_eq!(stored.status(), Status::Running, "{}", outline(&stored));
    assert!(stored.heartbeat().is_some());

    // The next workstream on the store resumes it.
    store.heal();
    let again = Workstream::builder()
        .shared_store(store.clone())
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    let done = again.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{}", outline(&done));
}

/// A prune that fails part way says which plans it deleted before (they stay deleted) and
/// leaves the others.
#[tokio::test]
async fn a_prune_stopped_by_a_failing_delete_names_what_it_deleted() {
    use coercion::storage::contract::{at, sample_plan};
    use coercion::storage::{Change, ListFilter, prune};
    use coercion::workflow::{Loc, State};

    let inner = MemoryStore::new();
    let mut ids = Vec::new();
    for (i, name) in ["first", "second", "third"].into_iter().enumerate() {
        let plan = sample_plan(name);
        inner.create(&plan).await.unwrap();
        let ended = [Change::State {
            loc: Loc::Plan,
            id: plan.id().0,
            state: State {
                status: Status::Completed,
                start: Some(at(i as i64, 1)),
                end: Some(at(i as i64 + 1, 0)),
            },
        }];
        inner.apply(plan.id(), &ended).await.unwrap();
        ids.push(plan.id());
    }
    // The second delete fails.
    let faulty = FaultyStore::failing(inner.clone(), FaultRule::Nth(2), FaultKind::Permanent);
    let err = prune(&faulty, &ListFilter::default(), at(100, 0), false)
        .await
        .unwrap_err();
    assert!(
        matches!(err.error, coercion::StoreError::Permanent { .. }),
        "{err:?}"
    );
    // One deleted, the next failed, the last not reached: two left, the deleted one not among
    // them.
    assert_eq!(err.deleted.len(), 1, "{err:?}");
    assert!(
        err.to_string().contains("after deleting 1 plan(s)"),
        "{err}"
    );
    let left: Vec<PlanId> = inner
        .list(&ListFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&err.deleted[0].id));
    assert!(ids.contains(&err.deleted[0].id));
}

//! A plan whose plugins are not all registered is refused, never failed: `start` says which
//! plugins are missing and how to fix it; recovery leaves such a plan exactly as it is and
//! reports it; a workstream that has the plugins resumes it.

use std::sync::Arc;
use std::time::Duration;

use coercion::prelude::*;
use coercion::storage::{FaultKind, FaultRule, FaultyStore, MemoryStore, Store};
use coercion::testing::{FakeAction, FakeCheck, FakeReq, Fakes, outline};
use coercion::{Error, Registry};

fn plan() -> Plan {
    Plan::builder("needs both")
        .pre_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>("ready?", FakeReq::ok())))
        .block(Block::builder("b").sequences((0..3).map(|s| {
            Sequence::builder(format!("s{s}")).actions((0..2).map(|a| {
                ActionSpec::new::<FakeAction>(
                    format!("a{a}"),
                    FakeReq::sleep(Duration::from_secs(1)),
                )
            }))
        })))
        .deferred(
            DeferredBatch::builder("roll back", When::OnFailure).action(ActionSpec::new::<
                FakeAction,
            >(
                "undo",
                FakeReq::ok().tag("undo"),
            )),
        )
        .build()
}

/// Only the check plugin: the action plugin's crate "was not linked".
fn without_the_action_plugin(fakes: &Fakes) -> Registry {
    Registry::new().with(fakes.check.clone()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn start_refuses_a_plan_whose_plugins_are_missing_and_says_how_to_fix_it() {
    let fakes = Fakes::new();
    let store = Arc::new(MemoryStore::new());
    let full = Workstream::builder()
        .shared_store(store.clone())
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    let id = full.submit(plan()).await.unwrap();

    let partial = Workstream::builder()
        .shared_store(store.clone())
        .registry(without_the_action_plugin(&fakes))
        .build()
        .await
        .unwrap();
    let err = partial.start(id).await.unwrap_err();
    let Error::MissingPlugins(plan_id, names) = &err else {
        panic!("{err}");
    };
    assert_eq!(*plan_id, id);
    assert_eq!(names, &["coercion.testing/action".to_owned()]);
    let text = err.to_string();
    assert!(
        text.contains("\"coercion.testing/action\"")
            && text.contains("use my_plugins as _;")
            && text.contains("left as it is"),
        "{text}"
    );
    // Nothing ran, nothing changed.
    assert_eq!(store.read(id).await.unwrap().status(), Status::NotStarted);
    assert!(fakes.check.log().is_empty() && fakes.action.log().is_empty());

    // The workstream that has them runs it.
    full.start(id).await.unwrap();
    assert_eq!(full.wait(id).await.unwrap().status(), Status::Completed);
}

#[tokio::test(start_paused = true)]
async fn recovery_leaves_a_plan_with_missing_plugins_untouched_until_a_workstream_has_them() {
    let fakes = Fakes::new();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let first = Workstream::builder()
        .shared_store(store.clone())
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    let id = first.submit(plan()).await.unwrap();
    first.start(id).await.unwrap();
    // The process "dies" mid-run: from now on nothing it writes lands.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    store.set_faults(FaultRule::After(store.writes()), FaultKind::Permanent);
    assert!(matches!(first.wait(id).await, Err(Error::Interrupted(..))));
    store.heal();
    let before = store.inner().read(id).await.unwrap();
    assert_eq!(before.status(), Status::Running);
    let writes = store.writes();

    // A binary that forgot to link the action plugins' crate opens the store.
    let partial = Workstream::builder()
        .shared_store(store.clone())
        .registry(without_the_action_plugin(&fakes))
        .build()
        .await
        .unwrap();
    assert_eq!(
        partial.plans_missing_plugins(),
        [(id, vec!["coercion.testing/action".to_owned()])]
    );
    assert_eq!(store.writes(), writes, "nothing was written");
    let after = store.inner().read(id).await.unwrap();
    assert_eq!(outline(&after), outline(&before));
    assert_eq!(
        after.to_json(),
        before.to_json(),
        "the plan is exactly as it was"
    );
    assert_eq!(fakes.action.log().count("undo"), 0, "no rollback ran");
    assert!(matches!(
        partial.wait(id).await,
        Err(Error::OwnedElsewhere(_))
    ));

    // Much later, a workstream with the plugins resumes it (the recovery age counts from the
    // last heartbeat, as always: keep it within the limit here).
    let full = Workstream::builder()
        .shared_store(store.clone())
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    assert!(full.plans_missing_plugins().is_empty());
    let done = full.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Completed, "{}", outline(&done));
    assert_eq!(fakes.action.log().count("undo"), 0);
}

//! `coercion::progress`: the bars follow a real run — each block's bar ends at its number of
//! sequences, sequences that do not complete are reported, and the outcome line says how the
//! plan ended.

use std::time::Duration;

use coercion::prelude::*;
use coercion::progress::{Progress, ProgressDrawTarget, outcome};
use coercion::testing::{FakeAction, FakeReq, Fakes};
use futures_util::StreamExt as _;

#[tokio::test(start_paused = true)]
async fn the_bars_follow_the_run_and_the_outcome_counts_failures() {
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let plan = Plan::builder("progress")
        .block(
            Block::builder("canary").sequence(
                Sequence::builder("host-0")
                    .action(ActionSpec::new::<FakeAction>("deploy", FakeReq::ok())),
            ),
        )
        .block(
            Block::builder("rest")
                .concurrency(2)
                .tolerated_failures(Tolerance::Unlimited)
                .sequences((1..6).map(|h| {
                    let req = if h == 3 {
                        FakeReq::fail_permanently()
                    } else {
                        FakeReq::sleep(Duration::from_secs(h))
                    };
                    Sequence::builder(format!("host-{h}"))
                        .action(ActionSpec::new::<FakeAction>("deploy", req))
                })),
        )
        .build();
    let id = ws.submit(plan).await.unwrap();
    // Subscribed before the start: the whole run goes through the bars.
    let mut events = ws.events(id).await.unwrap();
    let Some(coercion::Event::Snapshot(first)) = events.next().await else {
        panic!("a snapshot first")
    };
    let progress = Progress::with_target(&first, ProgressDrawTarget::hidden());
    assert_eq!((progress.ended(0), progress.ended(1)), (Some(0), Some(0)));
    ws.start(id).await.unwrap();
    let mut ended = Vec::new();
    while let Some(event) = events.next().await {
        ended.extend(progress.update(&event));
    }
    progress.finish();
    assert_eq!((progress.ended(0), progress.ended(1)), (Some(1), Some(5)));
    assert_eq!(ended.len(), 6);
    let failed: Vec<_> = ended
        .iter()
        .filter(|e| e.status != Status::Completed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].block, failed[0].name.as_str()), (1, "host-3"));

    let done = ws.wait(id).await.unwrap();
    assert_eq!(outcome(&done), format!("plan {id} Completed with 1 failed"));

    // The one-call form follows a plan to its end and returns it.
    let again = ws
        .submit_and_start(done.clone_for_resubmit())
        .await
        .unwrap();
    let watched = coercion::progress::watch(&ws, again).await.unwrap();
    assert!(watched.is_completed_with_failures());
}

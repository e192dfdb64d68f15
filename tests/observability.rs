//! What an attempt does is told through `tracing` events a subscriber sees: failures, retries
//! with their delay, timeouts — each with the plan, the action and the attempt number.

use std::time::Duration;

use coercion::prelude::*;
use coercion::testing::{FakeAction, FakeReq, Fakes, run_in_memory};

#[path = "support/captured.rs"]
mod captured;
use captured::Captured;

#[test]
fn attempt_failures_retries_and_timeouts_are_traced() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let plan = Plan::builder("traced")
        .block(
            Block::builder("b")
                .sequence(Sequence::builder("flaky").action(
                    ActionSpec::new::<FakeAction>("retry me", FakeReq::fail_times(1)).retries(1),
                ))
                .sequence(
                    Sequence::builder("slow").action(
                        ActionSpec::new::<FakeAction>(
                            "too slow",
                            FakeReq::sleep(Duration::from_secs(60)),
                        )
                        .timeout(Duration::from_secs(1)),
                    ),
                )
                .tolerated_failures(Tolerance::Unlimited),
        )
        .build();
    let fakes = Fakes::new();
    {
        use tracing_subscriber::util::SubscriberInitExt as _;
        let _default = subscriber.set_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let done = rt.block_on(run_in_memory(fakes.registry(), plan)).unwrap();
        assert_eq!(done.status(), Status::Completed);
    }
    let logs = captured.text();
    let line = |needle: &str| {
        logs.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} event in:\n{logs}"))
            .to_owned()
    };
    let failed = line("attempt failed");
    assert!(
        failed.contains("attempt=1")
            && failed.contains("permanent=false")
            && failed.contains("error="),
        "{failed}"
    );
    let retry = line("retry scheduled");
    assert!(
        retry.contains("next_attempt=2") && retry.contains("next_delay="),
        "{retry}"
    );
    let timeout = line("attempt timed out");
    assert!(
        timeout.contains("the attempt timed out after 1s"),
        "{timeout}"
    );
    assert!(line("attempt started").contains("attempt=1"));
    // Every event sits in its plan's tree of spans, though each sequence runs on a task of its
    // own: plan, block, sequence, action (an OpenTelemetry exporter draws one trace a plan).
    let started = line("attempt started");
    let spans = ["plan{", ":block{", ":sequence{", ":action{"];
    let at: Vec<Option<usize>> = spans.iter().map(|s| started.find(s)).collect();
    assert!(
        at.iter().all(Option::is_some) && at.is_sorted(),
        "plan > block > sequence > action: {started}"
    );
}

//! No accepted input strands a plan: out-of-range limits are refused at submit with their path,
//! extreme values that are accepted run without overflowing, and a panic inside the engine (or
//! its store) still ends the run — heartbeat stopped, waiters told, deferred work run, the plan
//! `Failed` with reason `Internal` instead of `Running` for ever.

use std::sync::Arc;
use std::time::Duration;

use coercion::prelude::*;
use coercion::storage::{FaultKind, FaultRule, FaultyStore, MemoryStore, Store};
use coercion::testing::{FakeAction, FakeCheck, FakeReq, Fakes, outline};
use coercion::workflow::{MAX_DURATION, ObjectRef};
use coercion::{Error, Reason, Tolerance};
use proptest::prelude::*;

/// Every object that is still `Running`, as paths.
fn running(plan: &Plan) -> Vec<String> {
    plan.walk()
        .filter(|(_, o)| o.state().status == Status::Running)
        .map(|(loc, _)| plan.path(loc).to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn durations_past_the_limit_are_refused_at_submit_with_their_path_and_range() {
    let fakes = Fakes::new();
    let ws = Workstream::in_memory(fakes.registry()).await.unwrap();
    let plan = Plan::builder("extreme")
        .cont_checks(
            Checks::builder()
                .delay(Duration::MAX)
                .action(CheckSpec::new::<FakeCheck>("slo", FakeReq::ok())),
        )
        .block(
            Block::builder("b")
                .entrance_delay(MAX_DURATION + Duration::from_secs(1))
                .sequence(Sequence::builder("s").action(
                    ActionSpec::new::<FakeAction>("forever", FakeReq::ok()).timeout(Duration::MAX),
                )),
        )
        .build();
    let Err(Error::Invalid(problems)) = ws.submit(plan).await else {
        panic!("a timeout of Duration::MAX must be refused");
    };
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 3, "{text:#?}");
    assert!(
        text.iter().any(|t| t.contains("action[0] \"forever\"")
            && t.contains("timeout is Duration::MAX")
            && t.contains("allowed: more than 0, at most 365 days")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("block[0] \"b\"") && t.contains("entrance_delay is 31536001s")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("delay is Duration::MAX") && t.contains("allowed: 0 to 365 days")),
        "{text:#?}"
    );
    assert!(ws.list(&Default::default()).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_concurrency_of_usize_max_runs_every_sequence_at_once() {
    let fakes = Fakes::new();
    let plan = Plan::builder("all at once")
        .block(
            Block::builder("b")
                .concurrency(usize::MAX)
                .sequences((0..5).map(|s| {
                    Sequence::builder(format!("s{s}")).action(ActionSpec::new::<FakeAction>(
                        "a",
                        FakeReq::sleep(Duration::from_secs(1)),
                    ))
                })),
        )
        .build();
    let done = coercion::testing::run_in_memory(fakes.registry(), plan)
        .await
        .unwrap();
    assert_eq!(done.status(), Status::Completed, "{}", outline(&done));
    assert_eq!(fakes.action.log().max_concurrency(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_stop_grace_of_duration_max_stops_the_plan() {
    let fakes = Fakes::new();
    let ws = Workstream::builder()
        .in_memory()
        .registry(fakes.registry())
        .stop_grace(Duration::MAX)
        .build()
        .await
        .unwrap();
    let plan = Plan::builder("graceful")
        .block(
            Block::builder("b").sequence(
                // Ignores the cancellation: the grace period (then the timeout) ends it.
                Sequence::builder("s").action(
                    ActionSpec::new::<FakeAction>(
                        "sleep",
                        FakeReq::sleep(Duration::from_secs(3600)),
                    )
                    .timeout(Duration::from_secs(60)),
                ),
            ),
        )
        .build();
    let id = ws.submit(plan).await.unwrap();
    ws.start(id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    ws.stop(id).await.unwrap();
    let done = ws.wait(id).await.unwrap();
    assert_eq!(done.status(), Status::Stopped, "{}", outline(&done));
    let action = &done.blocks()[0].sequences()[0].actions()[0];
    assert_eq!(action.attempts().len(), 1);
    assert!(action.last_error().is_some(), "{}", outline(&done));
}

#[tokio::test]
async fn a_heartbeat_interval_out_of_range_is_refused_when_the_workstream_is_built() {
    for interval in [Duration::ZERO, Duration::MAX] {
        let err = Workstream::builder()
            .in_memory()
            .registry(Fakes::new().registry())
            .heartbeat_interval(interval)
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("heartbeat_interval") && m.contains("allowed: 1 ms to 365 days")),
            "{err}"
        );
    }
}

/// A plan with a phase of every kind: pre-checks, a block with post-checks, plan post-checks, an
/// `OnFailure` and an `Always` deferred batch, deferred checks.
fn every_phase() -> Plan {
    Plan::builder("every phase")
        .pre_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>("pre", FakeReq::ok())))
        .block(
            Block::builder("b")
                .concurrency(2)
                .sequences((0..3).map(|s| {
                    Sequence::builder(format!("s{s}")).actions((0..2).map(move |a| {
                        ActionSpec::new::<FakeAction>(
                            format!("a{a}"),
                            FakeReq::sleep(Duration::from_millis(10 * (s + a + 1))),
                        )
                    }))
                }))
                .post_checks(
                    Checks::builder()
                        .action(CheckSpec::new::<FakeCheck>("block post", FakeReq::ok())),
                ),
        )
        .post_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>("post", FakeReq::ok())))
        .deferred(
            DeferredBatch::builder("on failure", When::OnFailure).action(ActionSpec::new::<
                FakeAction,
            >(
                "roll back",
                FakeReq::ok().tag("rollback"),
            )),
        )
        .deferred(
            DeferredBatch::builder("always", When::Always).action(ActionSpec::new::<FakeAction>(
                "clean up",
                FakeReq::ok().tag("cleanup"),
            )),
        )
        .deferred_checks(
            Checks::builder().action(CheckSpec::new::<FakeCheck>("deferred", FakeReq::ok())),
        )
        .build()
}

/// For every write of a run, a store that panics on that write: the run still ends, waiters are
/// told, nothing stays Running, the `Always` batch runs, and a new workstream on the same store
/// resumes nothing.
#[tokio::test(start_paused = true)]
async fn a_panic_at_any_write_ends_the_run_cleanly() {
    // A clean run first, to count its writes.
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let fakes = Fakes::new();
    let ws = Workstream::builder()
        .shared_store(store.clone())
        .registry(fakes.registry())
        .build()
        .await
        .unwrap();
    let id = ws.submit(every_phase()).await.unwrap();
    let before = store.writes();
    ws.start(id).await.unwrap();
    assert_eq!(ws.wait(id).await.unwrap().status(), Status::Completed);
    let writes = store.writes() - before;
    assert!(writes > 10, "{writes}");

    let (mut internal, mut on_an_attempt) = (0, 0);
    for k in 1..=writes {
        let store = Arc::new(FaultyStore::new(MemoryStore::new()));
        let fakes = Fakes::new();
        let ws = Workstream::builder()
            .shared_store(store.clone())
            .registry(fakes.registry())
            .build()
            .await
            .unwrap();
        let id = ws.submit(every_phase()).await.unwrap();
        store.set_faults(FaultRule::Nth(store.writes() + k), FaultKind::Panic);
        ws.start(id).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_secs(3600), ws.wait(id))
            .await
            .unwrap_or_else(|_| panic!("write {k}: wait() hung"));
        assert_eq!(store.injected(), 1, "write {k}");
        let stored = store.inner().read(id).await.unwrap();
        match waited {
            Err(Error::Internal(_, message)) => {
                internal += 1;
                assert!(message.contains("a bug in the store"), "{message}");
                assert_eq!(stored.reason(), Reason::Internal, "write {k}");
                assert_eq!(stored.status(), Status::Failed, "write {k}");
                // An attempt that was running carries the error, for the failure report.
                if stored.failures().iter().any(|f| {
                    f.to_string()
                        .contains("an internal error of the engine ended the run")
                }) {
                    on_an_attempt += 1;
                }
            }
            Ok(done) => {
                // Only a panicking heartbeat spares the run; none happens here.
                panic!("write {k}: the run ended normally: {}", outline(&done));
            }
            Err(e) => panic!("write {k}: {e}"),
        }
        assert!(
            running(&stored).is_empty(),
            "write {k}: still running: {:?}\n{}",
            running(&stored),
            outline(&stored)
        );
        // Cleanup ran, once, unless its own attempt was what panicked (then it ran again).
        let cleanup = fakes.action.log().count("cleanup");
        assert!(
            (1..=2).contains(&cleanup),
            "write {k}: cleanup ran {cleanup} times"
        );
        let always = stored.deferred()[1].status();
        assert_eq!(always, Status::Completed, "write {k}: {}", outline(&stored));
        // The heartbeat stopped: nothing more is written.
        let writes_at_end = store.writes();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            store.writes(),
            writes_at_end,
            "write {k}: writes after the end"
        );
        // A new workstream on the store resumes nothing.
        let again = Workstream::builder()
            .shared_store(store.clone())
            .registry(Fakes::new().registry())
            .build()
            .await
            .unwrap();
        assert_eq!(again.read(id).await.unwrap().status(), Status::Failed);
        assert!(matches!(again.stop(id).await, Err(Error::NotRunning(_))));
    }
    assert_eq!(internal, writes);
    assert!(on_an_attempt > 0);
}

/// A plan whose numbers are all drawn from the edges of their ranges.
#[derive(Clone, Debug)]
struct Extremes {
    timeout: Duration,
    retries: u32,
    concurrency: usize,
    tolerance: Tolerance,
    entrance_delay: Duration,
    exit_delay: Duration,
    cont_delay: Duration,
    stop_grace: Duration,
    fake: FakeReq,
    stop_after: Option<Duration>,
}

/// Mostly durations a plan may hold (zero is refused for timeouts and continuous delays),
/// sometimes ones past the limit.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        6 => prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::from_nanos(1)),
            Just(Duration::from_millis(1)),
            Just(Duration::from_secs(1)),
            Just(Duration::from_secs(3600)),
            Just(MAX_DURATION),
        ],
        1 => prop_oneof![
            Just(MAX_DURATION + Duration::from_nanos(1)),
            Just(Duration::MAX),
        ],
    ]
}

fn extremes() -> impl Strategy<Value = Extremes> {
    let numbers = (
        duration(),
        prop_oneof![Just(0u32), Just(1), Just(3), Just(u32::MAX)],
        prop_oneof![1 => Just(0usize), 3 => Just(1), 3 => Just(2), 3 => Just(usize::MAX)],
        prop_oneof![
            2 => Just(Tolerance::Count(0)),
            2 => Just(Tolerance::Count(u32::MAX)),
            2 => Just(Tolerance::Percent(0)),
            2 => Just(Tolerance::Percent(100)),
            1 => Just(Tolerance::Percent(101)),
            1 => Just(Tolerance::Percent(u8::MAX)),
            2 => Just(Tolerance::Unlimited),
        ],
    );
    // Continuous checks run every `delay` for as long as the plan runs, up to years of virtual
    // time here: short delays would only make the test slow.
    let cont_delay = prop_oneof![
        1 => Just(Duration::ZERO),
        4 => Just(Duration::from_secs(86_400)),
        4 => Just(MAX_DURATION),
        1 => Just(Duration::MAX),
    ];
    let delays = (duration(), duration(), cont_delay, duration());
    let fake = prop_oneof![
        Just(FakeReq::ok()),
        (0u32..4).prop_map(FakeReq::fail_times),
        Just(FakeReq::fail_permanently()),
        duration().prop_map(FakeReq::sleep),
        Just(FakeReq::wait_for_cancel()),
    ];
    let stop_after = prop_oneof![
        Just(None),
        Just(Some(Duration::ZERO)),
        Just(Some(Duration::from_millis(1))),
        Just(Some(Duration::from_secs(3600))),
    ];
    (numbers, delays, fake, stop_after).prop_map(
        |(
            (timeout, retries, concurrency, tolerance),
            (entrance_delay, exit_delay, cont_delay, stop_grace),
            fake,
            stop_after,
        )| Extremes {
            timeout,
            retries,
            concurrency,
            tolerance,
            entrance_delay,
            exit_delay,
            cont_delay,
            stop_grace,
            fake,
            stop_after,
        },
    )
}

fn extreme_plan(x: &Extremes) -> Plan {
    Plan::builder("extremes")
        .cont_checks(
            Checks::builder()
                .delay(x.cont_delay)
                .action(CheckSpec::new::<FakeCheck>("slo", FakeReq::ok())),
        )
        .block(
            Block::builder("b")
                .concurrency(x.concurrency)
                .tolerated_failures(x.tolerance)
                .entrance_delay(x.entrance_delay)
                .exit_delay(x.exit_delay)
                .sequences((0..3).map(|s| {
                    Sequence::builder(format!("s{s}")).action(
                        ActionSpec::new::<FakeAction>("a", x.fake.clone())
                            .timeout(x.timeout)
                            .retries(x.retries),
                    )
                })),
        )
        .deferred(
            DeferredBatch::builder("always", When::Always)
                .action(ActionSpec::new::<FakeAction>("clean up", FakeReq::ok())),
        )
        .build()
}

/// Whether the values describe a run that ends by itself: retrying for ever an attempt that
/// always times out is what `u32::MAX` retries ask for, not a hang of the engine.
fn ends(x: &Extremes) -> bool {
    let always_times_out = x.fake.wait_for_cancel || x.fake.sleep.is_some_and(|d| d >= x.timeout);
    x.retries != u32::MAX || !always_times_out || x.stop_after.is_some()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever the numbers, submit either refuses the plan naming where, or the plan runs to
    /// an end: never a hang, never a plan left Running.
    #[test]
    fn extreme_values_never_hang_or_strand_a_plan(x in extremes()) {
        prop_assume!(ends(&x));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let store = Arc::new(MemoryStore::new());
            let fakes = Fakes::new();
            let ws = Workstream::builder()
                .shared_store(store.clone())
                .registry(fakes.registry())
                .stop_grace(x.stop_grace)
                // Runs last years of virtual time here: a heartbeat every 5 s would be millions
                // of writes.
                .heartbeat_interval(Duration::from_secs(86_400))
                .build()
                .await
                .unwrap();
            let id = match ws.submit(extreme_plan(&x)).await {
                Ok(id) => id,
                Err(Error::Invalid(problems)) => {
                    assert!(!problems.is_empty());
                    for p in &problems {
                        assert!(!p.path.to_string().is_empty() && !p.message.is_empty(), "{p}");
                    }
                    return;
                }
                Err(e) => panic!("{e}"),
            };
            ws.start(id).await.unwrap();
            if let Some(after) = x.stop_after {
                tokio::time::sleep(after).await;
                let _ = ws.stop(id).await;
            }
            // Virtual time: a century passes in an instant unless the engine is stuck. The
            // longest run that ends is far shorter: three sequences one after another, each
            // four attempts of a year (plus backoff), a year of entrance and one of exit delay,
            // a year of stop grace: about 15 years.
            let done = tokio::time::timeout(MAX_DURATION * 100, ws.wait(id))
                .await
                .unwrap_or_else(|_| panic!("the run did not end: {x:?}"))
                .unwrap_or_else(|e| panic!("{e}: {x:?}"));
            assert!(done.status().is_terminal(), "{x:?}\n{}", outline(&done));
            let stored = store.read(id).await.unwrap();
            assert!(running(&stored).is_empty(), "{x:?}\n{}", outline(&stored));
            assert_eq!(stored.deferred()[0].status(), Status::Completed, "{}", outline(&stored));
            assert!(
                stored.walk().all(|(_, o)| match o {
                    ObjectRef::Action(a) => a.attempts().iter().all(|t| t.end.is_some()),
                    _ => true,
                }),
                "{}",
                outline(&stored)
            );
        });
    }
}

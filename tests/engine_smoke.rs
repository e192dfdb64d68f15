use coercion::prelude::*;
use coercion::testing::*;

#[tokio::test(start_paused = true)]
async fn smoke() {
    let fakes = Fakes::new();
    let plan = Plan::builder("p")
        .pre_checks(
            Checks::builder().action(CheckSpec::new::<FakeCheck>("pre", FakeReq::ok().tag("pre"))),
        )
        .block(
            Block::builder("b")
                .concurrency(2)
                .sequences((0..3).map(|i| {
                    Sequence::builder(format!("s{i}"))
                        .action(
                            ActionSpec::new::<FakeAction>(
                                "a",
                                FakeReq::fail_times(1).tag(format!("s{i}a")),
                            )
                            .retries(1),
                        )
                        .action(ActionSpec::new::<FakeAction>(
                            "b",
                            FakeReq::ok().tag(format!("s{i}b")),
                        ))
                })),
        )
        .deferred(
            DeferredBatch::builder("cleanup", When::Always).action(ActionSpec::new::<FakeAction>(
                "c",
                FakeReq::ok().tag("cleanup"),
            )),
        )
        .build();
    let done = run_in_memory(fakes.registry(), plan).await.unwrap();
    println!("{}", outline(&done));
    assert_eq!(done.status(), Status::Completed);
    assert_eq!(fakes.action.log().len(), 3 * 3 + 1);
}

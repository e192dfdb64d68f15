use std::time::Duration;

use coercion::prelude::*;
use coercion::testing::{FakeAction, FakeCheck, FakeReq};

fn main() {
    let plan = Plan::builder("deploy")
        .pre_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>("lb up", FakeReq::ok())))
        .cont_checks(
            Checks::builder()
                .delay(Duration::from_secs(10))
                .action(CheckSpec::new::<FakeCheck>("slo", FakeReq::ok())),
        )
        .block(
            Block::builder("web")
                .concurrency(2)
                .tolerated_failures(Tolerance::Percent(50))
                .sequences(["web-1", "web-2"].map(|host| {
                    Sequence::builder(host)
                        .action(
                            ActionSpec::new::<FakeAction>("copy", FakeReq::ok().tag(host))
                                .retries(2),
                        )
                        .action(
                            ActionSpec::new::<FakeAction>("restart", FakeReq::ok())
                                .timeout(Duration::from_secs(5)),
                        )
                }))
                .post_checks(
                    Checks::builder().action(CheckSpec::new::<FakeCheck>("healthy", FakeReq::ok())),
                ),
        )
        .deferred(
            DeferredBatch::builder("roll back", When::OnFailure)
                .fail_plan(true)
                .action(ActionSpec::new::<FakeAction>("undo", FakeReq::ok())),
        )
        .build();
    let registry = coercion::testing::registry();
    coercion::workflow::validate_plan(&plan, &registry).unwrap();
    assert_eq!(plan.action_count(), 8);
}

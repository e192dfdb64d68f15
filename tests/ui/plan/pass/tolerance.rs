#[path = "../support/mod.rs"]
mod support;
use support::*;

use coercion::Tolerance;

fn block_with(t: Tolerance) -> coercion::BlockBuilder {
    coercion::block! {
        name: "computed",
        tolerated_failures: t,
        sequence { name: "s", action { name: "a", plugin: FakeAction, request: FakeReq::ok() } }
    }
}

fn main() {
    let plan = coercion::plan! {
        name: "deploy",
        block { name: "count", tolerated_failures: 2, sequence { name: "s", action { name: "a", plugin: FakeAction, request: FakeReq::ok() } } }
        block { name: "percent", tolerated_failures: 10%, sequence { name: "s", action { name: "a", plugin: FakeAction, request: FakeReq::ok() } } }
        block { name: "unlimited", tolerated_failures: unlimited, sequence { name: "s", action { name: "a", plugin: FakeAction, request: FakeReq::ok() } } }
        ..[block_with(Tolerance::Percent(100))],
    };
    let t: Vec<Tolerance> = plan.blocks().iter().map(|b| b.tolerated_failures()).collect();
    assert_eq!(t, [Tolerance::Count(2), Tolerance::Percent(10), Tolerance::Unlimited, Tolerance::Percent(100)]);
}

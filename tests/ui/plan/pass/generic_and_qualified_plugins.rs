#[path = "../support/mod.rs"]
mod support;
use support::*;

use coercion::{ActionPlugin, CheckPlugin, Plugin};

/// A fragment generic over its plugins.
fn step<A, C>(name: &str) -> coercion::BlockBuilder
where
    A: ActionPlugin + Plugin<Request = FakeReq>,
    C: CheckPlugin + Plugin<Request = FakeReq>,
{
    coercion::block! {
        name: name,
        pre_checks { action { name: "check", plugin: C, request: FakeReq::ok() } }
        sequence { name: "s", action { name: "act", plugin: A, request: FakeReq::ok() } }
    }
}

fn main() {
    let plan = coercion::plan! {
        name: "deploy",
        ..[step::<FakeAction, FakeCheck>("generic")],
        block {
            name: "qualified",
            sequence {
                name: "s",
                action { name: "a", plugin: coercion::testing::FakeAction, request: coercion::testing::FakeReq::ok() }
                action { name: "b", plugin: support::Notify, request: support::NotifyReq::default() }
            }
        }
    };
    assert_eq!(plan.blocks().len(), 2);
}

#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let plan = coercion::plan! {
        name: "deploy",
        block {
            name: "web",
            sequence {
                name: "web-1",
                action { name: "copy", plugin: FakeAction, request: FakeReq::ok() }
            }
        }
    };
    assert_eq!(plan.name(), "deploy");
    assert_eq!(plan.blocks()[0].sequences()[0].actions()[0].name(), "copy");
}

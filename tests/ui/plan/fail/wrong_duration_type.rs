#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let _plan = coercion::plan! {
        name: "deploy",
        block {
            name: "web",
            sequence {
                name: "web-1",
                action { name: "copy", plugin: FakeAction, request: FakeReq::ok(), timeout: "30s" }
            }
        }
    };
}

#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let _plan = coercion::plan! {
        name: "deploy",
        pre_checks {
            action { name: "copy", plugin: support::FakeAction, request: FakeReq::ok() }
        }
        block { name: "web", sequence { name: "web-1", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } } }
    };
}

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
                action { name: "a", plugin: FakeActon, request: FakeReq::ok() }
                action { name: "b", plugin: suport::FakeAction, request: FakeReq::ok() }
                action { name: "c", plugin: support::Notfy, request: FakeReq::ok() }
            }
        }
    };
}

#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let _plan = coercion::plan! {
        name: "deploy",
        block {
            name: "web",
            cont_checks {
                delay: 10s,
                action { name: "notify", plugin: Notify, request: NotifyReq::default() }
            }
            sequence { name: "web-1", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } }
        }
    };
}

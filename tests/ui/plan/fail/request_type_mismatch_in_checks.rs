#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let _plan = coercion::plan! {
        name: "deploy",
        post_checks {
            action { name: "probe", plugin: Probe, request: NotifyReq { channel: "ops".into() } }
        }
        block { name: "web", sequence { name: "web-1", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } } }
    };
}

#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let plan = coercion::plan! {
        name: "deploy",
        descr: "every check section, at plan and block level",
        bypass_checks { action { name: "already deployed?", plugin: FakeCheck, request: FakeReq::ok() } }
        pre_checks {
            key: "plan-pre",
            action { name: "lb up", plugin: Probe, request: ProbeReq { url: "http://lb".into() }, timeout: 5s, retries: 2 }
        }
        cont_checks {
            delay: 10s,
            action { name: "error budget", plugin: FakeCheck, request: FakeReq::ok() }
        }
        post_checks { action { name: "lb healthy", plugin: FakeCheck, request: FakeReq::ok() } }
        deferred_checks { action { name: "audit", plugin: FakeCheck, request: FakeReq::ok() } }
        block {
            name: "web",
            bypass_checks { action { name: "b", plugin: FakeCheck, request: FakeReq::ok() } }
            pre_checks { action { name: "p", plugin: FakeCheck, request: FakeReq::ok() } }
            cont_checks { delay: 500ms, action { name: "c", plugin: FakeCheck, request: FakeReq::ok() } }
            post_checks { action { name: "q", plugin: FakeCheck, request: FakeReq::ok() } }
            deferred_checks { action { name: "d", plugin: FakeCheck, request: FakeReq::ok() } }
            sequence { name: "web-1", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } }
        }
    };
    assert_eq!(plan.blocks().len(), 1);
}

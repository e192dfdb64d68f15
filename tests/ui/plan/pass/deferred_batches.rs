#[path = "../support/mod.rs"]
mod support;
use support::*;

use coercion::When;

fn main() {
    let when = When::OnSuccess;
    let plan = coercion::plan! {
        name: "deploy",
        block { name: "web", sequence { name: "web-1", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } } }
        deferred_actions {
            batch {
                name: "roll back",
                descr: "undo the copy",
                key: "rollback",
                when: OnFailure,
                fail_plan: true,
                action { name: "restore", plugin: FakeAction, request: FakeReq::ok(), retries: 2 }
                action { name: "tell", plugin: Notify, request: NotifyReq { channel: "#ops".into() } }
            }
            batch { name: "always", when: Always, action { name: "cleanup", plugin: FakeAction, request: FakeReq::ok() } }
            batch { name: "success", when: OnSuccess, action { name: "celebrate", plugin: Notify, request: NotifyReq::default() } }
            batch { name: "by value", when: when, action { name: "x", plugin: FakeAction, request: FakeReq::ok() } }
            batch { name: "by path", when: When::Always, action { name: "y", plugin: FakeAction, request: FakeReq::ok() } }
        }
        deferred_checks { action { name: "final check", plugin: FakeCheck, request: FakeReq::ok() } }
    };
    assert_eq!(plan.deferred().len(), 5);
    assert_eq!(plan.deferred()[0].when(), When::OnFailure);
    assert!(plan.deferred()[0].fail_plan());
}

#[path = "../support/mod.rs"]
mod support;
use support::*;

use std::time::Duration;

fn main() {
    let slow = Duration::from_secs(90);
    let plan = coercion::plan! {
        name: "deploy",
        cont_checks { delay: 2h, action { name: "c", plugin: FakeCheck, request: FakeReq::ok(), timeout: 500ms } }
        block {
            name: "web",
            entrance_delay: 5min,
            exit_delay: Duration::from_millis(1500),
            cont_checks { delay: slow, action { name: "c", plugin: FakeCheck, request: FakeReq::ok() } }
            sequence {
                name: "web-1",
                action { name: "ms", plugin: FakeAction, request: FakeReq::ok(), timeout: 500ms }
                action { name: "s", plugin: FakeAction, request: FakeReq::ok(), timeout: 30s }
                action { name: "min", plugin: FakeAction, request: FakeReq::ok(), timeout: 5min }
                action { name: "h", plugin: FakeAction, request: FakeReq::ok(), timeout: 2h }
                action { name: "expr", plugin: FakeAction, request: FakeReq::ok(), timeout: slow * 2 }
            }
        }
    };
    let timeouts: Vec<Duration> = plan.blocks()[0].sequences()[0].actions().iter().map(|a| a.timeout()).collect();
    assert_eq!(
        timeouts,
        [
            Duration::from_millis(500),
            Duration::from_secs(30),
            Duration::from_secs(300),
            Duration::from_secs(7200),
            Duration::from_secs(180),
        ]
    );
    assert_eq!(plan.blocks()[0].entrance_delay(), Duration::from_secs(300));
}

#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let canary = true;
    let extra: Option<&str> = Some("warm cache");
    let region = "eu";
    let plan = coercion::plan! {
        name: "deploy",
        if region == "us" {
            block { name: "us", sequence { name: "us-1", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } } }
        } else if region == "eu" {
            block {
                name: "eu",
                sequence {
                    name: "eu-1",
                    if canary {
                        action { name: "canary", key: "start", plugin: FakeAction, request: FakeReq::ok() }
                    } else {
                        action { name: "start", key: "start", plugin: FakeAction, request: FakeReq::ok() }
                    }
                    if let Some(step) = extra {
                        action { name: step, plugin: FakeAction, request: FakeReq::ok() }
                    }
                }
            }
        } else {
            block { name: "other", sequence { name: "x", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } } }
        }
    };
    assert_eq!(plan.blocks()[0].name(), "eu");
    let names: Vec<&str> = plan.blocks()[0].sequences()[0].actions().iter().map(|a| a.name()).collect();
    assert_eq!(names, ["canary", "warm cache"]);
}

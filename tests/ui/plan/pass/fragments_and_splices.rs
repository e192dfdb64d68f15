#[path = "../support/mod.rs"]
mod support;
use support::*;

use coercion::{ActionSpec, BlockBuilder, CheckSpec, DeferredBatch, SequenceBuilder, When};

fn host_sequence(host: &str) -> SequenceBuilder {
    coercion::sequence! {
        name: format!("deploy {host}"),
        action { name: "copy", plugin: FakeAction, request: FakeReq::ok().tag(host) }
    }
}

fn tier(name: &str, hosts: &[&str]) -> BlockBuilder {
    coercion::block! {
        name: name,
        concurrency: 2,
        pre_checks { action { name: "lb", plugin: FakeCheck, request: FakeReq::ok() } }
        ..hosts.iter().map(|h| host_sequence(h)),
    }
}

fn main() {
    let extra_actions = vec![ActionSpec::new::<FakeAction>("spliced", FakeReq::ok())];
    let extra_checks = [CheckSpec::new::<Probe>("spliced check", ProbeReq::default())];
    let batches = vec![DeferredBatch::builder("spliced batch", When::Always)
        .action(ActionSpec::new::<Notify>("n", NotifyReq::default()))];
    let plan = coercion::plan! {
        name: "deploy",
        post_checks {
            action { name: "done", plugin: FakeCheck, request: FakeReq::ok() }
            ..extra_checks,
        }
        ..[tier("web", &["w1", "w2"]), tier("api", &["a1"])],
        block {
            name: "db",
            ..Some(host_sequence("db1")),
            sequence {
                name: "db2",
                action { name: "first", plugin: FakeAction, request: FakeReq::ok() }
                ..extra_actions,
            }
        }
        deferred_actions {
            ..batches,
            batch { name: "last", when: OnSuccess, ..vec![ActionSpec::new::<FakeAction>("a", FakeReq::ok())] }
        }
    };
    let names: Vec<&str> = plan.blocks().iter().map(|b| b.name()).collect();
    assert_eq!(names, ["web", "api", "db"]);
    assert_eq!(plan.blocks()[2].sequences()[1].actions().len(), 2);
    assert_eq!(plan.deferred().len(), 2);
}

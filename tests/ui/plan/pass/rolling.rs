//! Rolling batches: literal and run-time sizes, a lone size, a size list from elsewhere, check
//! sections, `if` around a rollout and a rollout spliced in as blocks.

#[path = "../support/mod.rs"]
mod support;
use support::*;

use coercion::rolling::{BatchSize, Rolling};

fn main() {
    let hosts: Vec<String> = (1..=20).map(|i| format!("web-{i}")).collect();
    let canary = 1usize;
    let step = BatchSize::Percent(25);
    let sizes = vec![BatchSize::Count(2), BatchSize::Rest];
    let plan = coercion::plan! {
        name: "deploy",
        rolling {
            name: "canary then 25%",
            descr: "web tier",
            serial: [canary, 10%, step, rest],
            concurrency: 5,
            tolerated_failures: 10%,
            entrance_delay: 1s,
            pre_checks { action { name: "lb up", plugin: FakeCheck, request: FakeReq::ok() } }
            for host in &hosts {
                sequence {
                    name: format!("deploy {host}"),
                    action { name: "copy", plugin: FakeAction, request: FakeReq::ok().tag(host) }
                }
            }
        }
        rolling {
            name: "five at a time",
            serial: 5,
            for host in &hosts {
                sequence { name: host.clone(), action { name: "restart", plugin: FakeAction, request: FakeReq::ok() } }
            }
        }
        if hosts.len() > 10 {
            rolling {
                name: "sizes from elsewhere",
                serial: sizes,
                ..hosts.iter().map(|h| coercion::sequence! { name: h.clone(), action { name: "check", plugin: FakeAction, request: FakeReq::ok() } })
            }
        }
        ..Rolling::new("spliced", [BatchSize::Percent(50)])
            .sequences(hosts.iter().map(|h| coercion::sequence! { name: h.clone(), action { name: "clean", plugin: FakeAction, request: FakeReq::ok() } })),
    };
    let sizes: Vec<usize> = plan.blocks().iter().map(|b| b.sequences().len()).collect();
    assert_eq!(sizes, [1, 2, 5, 12, 5, 5, 5, 5, 2, 18, 10, 10]);
}

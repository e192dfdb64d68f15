#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let tiers = ["web", "api"];
    let hosts = vec!["h1".to_string(), "h2".to_string(), "h3".to_string()];
    let steps = ["stop", "copy", "start"];
    let plan = coercion::plan! {
        name: "rollout",
        pre_checks {
            for host in &hosts {
                action { name: format!("ping {host}"), plugin: FakeCheck, request: FakeReq::ok().tag(host.as_str()) }
            }
        }
        for tier in tiers {
            block {
                name: tier,
                concurrency: 2,
                for (i, host) in hosts.iter().enumerate() {
                    sequence {
                        name: format!("{tier} {i} {host}"),
                        key: format!("{tier}-{host}"),
                        for step in steps {
                            action { name: step, plugin: FakeAction, request: FakeReq::ok().tag(format!("{host}:{step}")) }
                        }
                    }
                }
            }
        }
        deferred_actions {
            for when in [coercion::When::OnFailure, coercion::When::Always] {
                batch { name: format!("{when:?}"), when: when, action { name: "notify", plugin: Notify, request: NotifyReq::default() } }
            }
        }
    };
    assert_eq!(plan.blocks().len(), 2);
    assert_eq!(plan.blocks()[1].sequences().len(), 3);
    assert_eq!(plan.blocks()[1].sequences()[2].actions().len(), 3);
    assert_eq!(plan.deferred().len(), 2);
}

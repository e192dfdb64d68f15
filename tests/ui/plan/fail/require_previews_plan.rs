#[path = "../support/mod.rs"]
mod support;
use support::*;

// The plan requires previews: an action plugin that cannot preview is an error wherever it is
// written in the plan, deferred batches included.
fn main() {
    let _plan = coercion::plan! {
        name: "deploy",
        require_previews: true,
        block {
            name: "web",
            sequence {
                name: "web-1",
                action { name: "grow", plugin: Resize, request: 2 }
                action { name: "notify", plugin: Notify, request: NotifyReq::default() }
            }
        }
        deferred_actions {
            batch { name: "tell", when: Always, action { name: "notify", plugin: Notify, request: NotifyReq::default() } }
        }
    };
}

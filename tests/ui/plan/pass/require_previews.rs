#[path = "../support/mod.rs"]
mod support;
use support::*;

// Previews required by the plan: every action plugin previews (checks are run for real and need
// nothing), in sequences, loops, branches and deferred batches.
fn main() {
    let sizes = [1, 2, 3];
    let plan = coercion::plan! {
        name: "resize",
        require_previews: true,
        pre_checks {
            action { name: "probe", plugin: Probe, request: ProbeReq::default() }
        }
        block {
            name: "pools",
            for size in sizes {
                sequence {
                    name: format!("pool {size}"),
                    if size > 1 {
                        action { name: "grow", plugin: Resize, request: size }
                    } else {
                        action { name: "keep", plugin: Resize, request: 1 }
                    }
                }
            }
        }
        deferred_actions {
            batch { name: "shrink", when: OnFailure, action { name: "shrink", plugin: Resize, request: 0 } }
        }
    };
    assert!(plan.preview_required());

    // Only one block requires them: the other may hold any action plugin.
    let plan = coercion::plan! {
        name: "mixed",
        block {
            name: "previewed",
            require_previews: true,
            sequence { name: "s", action { name: "grow", plugin: Resize, request: 2 } }
        }
        block {
            name: "free",
            require_previews: false,
            sequence { name: "s", action { name: "notify", plugin: Notify, request: NotifyReq::default() } }
        }
        rolling {
            name: "rolled",
            serial: [1, rest],
            require_previews: true,
            for size in sizes {
                sequence { name: format!("{size}"), action { name: "grow", plugin: Resize, request: size } }
            }
        }
    };
    assert!(!plan.preview_required());
    assert!(plan.blocks()[0].preview_required());
    assert!(!plan.blocks()[1].preview_required());
    assert!(plan.blocks()[2].preview_required() && plan.blocks()[3].preview_required());
}

//! The link-time guarantee: a plugin crate named only inside a `plan!` (no `use … as _;`, see
//! `tests/linking.rs` and `tests/linking_missing.rs`) is linked, so its plugins are in the
//! inventory — naming a plugin's type is enough. The missing-link case is left only for plans
//! that come from storage or JSON in a binary that never names the type (refused at `start`
//! and left untouched by recovery: `tests/missing_plugins.rs`).

use coercion::prelude::*;

#[tokio::test]
async fn a_plugin_crate_named_only_inside_a_plan_is_registered_and_runs() {
    let plan = coercion::plan! {
        name: "notify",
        block {
            name: "b",
            sequence {
                name: "s",
                action { name: "tell", plugin: extra_plugins::Notify, request: "ops".to_owned() }
            }
        }
    };
    let registry = Registry::from_inventory().unwrap();
    assert!(registry.contains("extra/notify"), "{registry:?}");
    let ws = Workstream::in_memory(registry).await.unwrap();
    let done = ws.run(plan).await.unwrap();
    assert_eq!(done.status(), Status::Completed);
}

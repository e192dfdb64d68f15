#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let plan = coercion::plan! {
        name: "deploy",
        block {
            name: "web",
            concurrency: 0,
            sequence { name: "web-1", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } }
        }
    };
    // The plan is still a `Plan` to the compiler: using it reports nothing more. (The import
    // that only the broken `plan!` used is reported unused, as for any code that fails to expand.)
    assert_eq!(plan.blocks().len(), 1);
}

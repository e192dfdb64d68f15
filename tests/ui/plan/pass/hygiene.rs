#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    // Names the expansion uses internally do not clash with the user's.
    let __coercion_plan = "user";
    let __coercion_block = 1;
    let __coercion_sequence = FakeReq::ok().tag("mine");
    let __coercion_request = "request";
    let plan = coercion::plan! {
        name: __coercion_plan,
        for i in 0..__coercion_block {
            block {
                name: format!("b{i}"),
                sequence {
                    name: __coercion_request,
                    action { name: "a", plugin: FakeAction, request: __coercion_sequence.clone() }
                }
            }
        }
    };
    assert_eq!(plan.name(), "user");
    assert_eq!(plan.blocks()[0].sequences()[0].name(), "request");
}

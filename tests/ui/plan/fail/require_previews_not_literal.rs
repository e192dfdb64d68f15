#[path = "../support/mod.rs"]
mod support;
use support::*;

// The requirement is checked at compile time, so it must be written as a literal.
fn main() {
    let strict = true;
    let _plan = coercion::plan! {
        name: "deploy",
        require_previews: strict,
        block {
            name: "web",
            sequence { name: "web-1", action { name: "grow", plugin: Resize, request: 2 } }
        }
    };
}

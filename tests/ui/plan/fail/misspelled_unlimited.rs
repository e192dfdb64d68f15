// Imports that only a broken `plan!` uses are reported unused; this case is about the error.
#![allow(unused_imports)]

#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let _plan = coercion::plan! {
        name: "deploy",
        block {
            name: "web",
            tolerated_failures: unlimted,
            sequence { name: "web-1", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } }
        }
    };
}

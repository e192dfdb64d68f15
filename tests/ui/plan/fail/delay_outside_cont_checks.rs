// Imports that only a broken `plan!` uses are reported unused; this case is about the error.
#![allow(unused_imports)]

#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let _plan = coercion::plan! {
        name: "deploy",
        pre_checks {
            delay: 30s,
            action { name: "ping", plugin: FakeCheck, request: FakeReq::ok() }
        }
        block { name: "web", sequence { name: "web-1", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } } }
    };
}

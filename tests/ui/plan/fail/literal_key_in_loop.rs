// Imports that only a broken `plan!` uses are reported unused; this case is about the error.
#![allow(unused_imports)]

#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let hosts = vec!["web-1", "web-2"];
    let _plan = coercion::plan! {
        name: "deploy",
        block {
            name: "web",
            for host in &hosts {
                sequence { name: *host, key: "deploy", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } }
            }
        }
    };
}

// Imports that only a broken `plan!` uses are reported unused; this case is about the error.
#![allow(unused_imports)]

#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let hosts = ["web-1", "web-2", "web-3"];
    let _plan = coercion::plan! {
        name: "deploy",
        rolling {
            name: "web",
            serial: [1, rest, 25%],
            for host in hosts {
                sequence { name: host, action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } }
            }
        }
    };
}

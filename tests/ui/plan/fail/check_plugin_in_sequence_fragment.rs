#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let _seq = coercion::sequence! {
        name: "web-1",
        action { name: "ping", plugin: FakeCheck, request: FakeReq::ok() }
    };
}

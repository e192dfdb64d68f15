#[path = "../support/mod.rs"]
mod support;
use support::*;

fn main() {
    let web = coercion::block! { name: "web", sequence { name: "web-1", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } } };
    let _plan = coercion::plan! {
        name: "deploy",
        ..web,
    };
}

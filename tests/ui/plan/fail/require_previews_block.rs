#[path = "../support/mod.rs"]
mod support;
use support::*;

// A block requires previews: inside loops and branches too.
fn main() {
    let hosts = ["a", "b"];
    let _plan = coercion::plan! {
        name: "deploy",
        block {
            name: "web",
            require_previews: true,
            for host in hosts {
                sequence {
                    name: host,
                    if host == "a" {
                        action { name: "notify", plugin: Notify, request: NotifyReq::default() }
                    }
                }
            }
        }
    };
}

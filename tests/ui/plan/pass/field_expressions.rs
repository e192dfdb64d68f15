#[path = "../support/mod.rs"]
mod support;
use support::*;

use std::num::ParseIntError;

fn build(retries: &str, hosts: &[&str]) -> Result<coercion::Plan, ParseIntError> {
    let group = coercion::PlanId::new_v7().0;
    Ok(coercion::plan! {
        name: format!("deploy to {} hosts", hosts.len()),
        descr: String::from("computed fields"),
        group_id: group,
        meta: b"opaque".to_vec(),
        block {
            name: "web",
            descr: "all of them",
            key: "web",
            concurrency: hosts.len().max(1),
            for host in hosts {
                sequence {
                    name: *host,
                    key: format!("seq-{host}"),
                    action {
                        name: "copy",
                        descr: format!("copy to {host}"),
                        plugin: FakeAction,
                        request: FakeReq::ok().tag(*host),
                        retries: retries.parse()?,
                    }
                }
            }
        }
    })
}

fn main() {
    let plan = build("3", &["a", "b"]).unwrap();
    assert_eq!(plan.blocks()[0].sequences()[1].actions()[0].retries(), 3);
    assert!(build("x", &["a"]).is_err());
}

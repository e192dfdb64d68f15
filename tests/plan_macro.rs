use coercion::testing::{FakeAction, FakeCheck, FakeReq};
use coercion::*;

#[test]
fn smoke() {
    let hosts = ["a", "b"];
    let p = plan! {
        name: "p",
        pre_checks { action { name: "c", plugin: FakeCheck, request: FakeReq::ok() } }
        block {
            name: "b",
            tolerated_failures: 10%,
            for h in hosts {
                sequence { name: h, action { name: "x", plugin: FakeAction, request: FakeReq::ok(), timeout: 5min } }
            }
        }
    };
    assert_eq!(p.blocks().len(), 1);
}

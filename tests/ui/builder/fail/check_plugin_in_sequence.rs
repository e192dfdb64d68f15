use coercion::prelude::*;
use coercion::testing::{FakeCheck, FakeReq};

fn main() {
    let _ = Sequence::builder("web-1").action(ActionSpec::new::<FakeCheck>("ping", FakeReq::ok()));
}

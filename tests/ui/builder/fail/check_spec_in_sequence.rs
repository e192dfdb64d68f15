use coercion::prelude::*;
use coercion::testing::{FakeCheck, FakeReq};

fn main() {
    let ping = CheckSpec::new::<FakeCheck>("ping", FakeReq::ok());
    let _ = Sequence::builder("web-1").action(ping);
}

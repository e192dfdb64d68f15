use coercion::prelude::*;
use coercion::testing::{FakeAction, FakeReq};

fn main() {
    let _ = Checks::builder().action(CheckSpec::new::<FakeAction>("restart", FakeReq::ok()));
}

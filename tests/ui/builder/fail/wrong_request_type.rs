use coercion::prelude::*;
use coercion::testing::FakeAction;

fn main() {
    let _ = ActionSpec::new::<FakeAction>("copy", "web-1:/srv");
}

use coercion::prelude::*;

pub struct Restart;

fn main() {
    let _ = ActionSpec::new::<Restart>("restart", ());
}

#[coercion::plugin(name = "example.com/ping")]
#[derive(Default)]
pub struct Ping;

fn main() {}

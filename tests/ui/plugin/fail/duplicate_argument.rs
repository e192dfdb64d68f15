use coercion::prelude::*;

#[coercion::plugin(check, name = "example.com/ping", check)]
#[derive(Default)]
pub struct Ping;

impl Plugin for Ping {
    type Request = ();
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
        Ok(())
    }
}

fn main() {}

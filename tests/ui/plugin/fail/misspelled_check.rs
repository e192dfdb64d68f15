use coercion::prelude::*;

#[coercion::plugin(chek)]
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

use coercion::prelude::*;

// A check runs for real in a preview: it has nothing to preview.
#[coercion::plugin(check, preview, name = "example.com/probe")]
#[derive(Default)]
pub struct Probe;

impl Plugin for Probe {
    type Request = u32;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _port: u32) -> Result<(), PluginError> {
        Ok(())
    }
}

fn main() {}

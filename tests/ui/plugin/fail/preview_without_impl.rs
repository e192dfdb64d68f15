use coercion::prelude::*;

// `preview` promises an `impl Previews`.
#[coercion::plugin(preview, name = "example.com/resize")]
#[derive(Default)]
pub struct Resize;

impl Plugin for Resize {
    type Request = u32;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _size: u32) -> Result<(), PluginError> {
        Ok(())
    }
}

fn main() {}

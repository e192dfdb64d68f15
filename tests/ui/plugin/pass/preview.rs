use coercion::plugin::PluginMeta;
use coercion::prelude::*;
use coercion::{Preview, Previews};

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

impl Previews for Resize {
    async fn preview(&self, _ctx: &Context, size: &u32) -> Result<Preview, PluginError> {
        Ok(Preview::would_change(format!("would resize to {size}")))
    }
}

fn main() {
    assert!(Resize::PREVIEWS);
    let registry = Registry::from_inventory().unwrap();
    assert!(registry.get("example.com/resize").unwrap().previews());
}

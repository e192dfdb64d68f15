// A struct that implements `Plugin` but was never marked `#[coercion::plugin]`: the error says
// to add the attribute.
use coercion::prelude::*;

#[derive(Default)]
struct Restart;

impl Plugin for Restart {
    type Request = String;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _host: String) -> Result<(), PluginError> {
        Ok(())
    }
}

fn main() {
    let _plan = coercion::plan! {
        name: "deploy",
        block {
            name: "web",
            sequence {
                name: "web-1",
                action { name: "restart", plugin: Restart, request: "web-1".to_owned() }
            }
        }
    };
}

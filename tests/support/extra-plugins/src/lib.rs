//! Plugins in a crate of their own, for the linking test.
use coercion::prelude::*;

/// An action plugin that lives in another crate.
#[coercion::plugin(name = "extra/notify")]
#[derive(Default)]
pub struct Notify;

impl Plugin for Notify {
    type Request = String;
    type Response = String;
    async fn execute(&self, _ctx: &Context, req: String) -> Result<String, PluginError> {
        Ok(format!("notified {req}"))
    }
}

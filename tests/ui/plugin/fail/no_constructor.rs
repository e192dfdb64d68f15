use coercion::prelude::*;

#[coercion::plugin(name = "example.com/ssh")]
pub struct Ssh {
    user: String,
}

impl Plugin for Ssh {
    type Request = String;
    type Response = String;
    async fn execute(&self, _ctx: &Context, cmd: String) -> Result<String, PluginError> {
        Ok(format!("{}: {cmd}", self.user))
    }
}

fn main() {}

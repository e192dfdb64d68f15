use coercion::prelude::*;

#[coercion::plugin(manual, new = Ssh::from_env)]
pub struct Ssh {
    user: String,
}

impl Ssh {
    fn from_env() -> Ssh {
        Ssh {
            user: "deploy".into(),
        }
    }
}

impl Plugin for Ssh {
    type Request = String;
    type Response = String;
    async fn execute(&self, _ctx: &Context, cmd: String) -> Result<String, PluginError> {
        Ok(format!("{}: {cmd}", self.user))
    }
}

fn main() {
    let _ = Ssh::from_env();
}

use coercion::prelude::*;

mod config {
    pub fn ssh() -> super::Ssh {
        super::Ssh {
            user: "deploy".into(),
        }
    }
}

#[coercion::plugin(name = "example.com/ssh", new = config::ssh)]
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

fn main() {
    let registry = Registry::from_inventory().unwrap();
    assert_eq!(registry.instance::<Ssh>().unwrap().user, "deploy");
}

use coercion::prelude::*;

#[coercion::plugin(name = "example.com/ssh", manual)]
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
    // No `Default` and no `new = ...`: a manual plugin is registered by hand, configured.
    assert!(
        !Registry::from_inventory()
            .unwrap()
            .contains("example.com/ssh")
    );
    let registry = Registry::new().with(Ssh { user: "ops".into() }).unwrap();
    assert_eq!(registry.instance::<Ssh>().unwrap().user, "ops");
}

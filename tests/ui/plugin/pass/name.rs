use coercion::plugin::{PluginKind, PluginMeta};
use coercion::prelude::*;

#[coercion::plugin(name = "example.com/restart")]
#[derive(Default)]
pub struct Restart;

impl Plugin for Restart {
    type Request = String;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _host: String) -> Result<(), PluginError> {
        Ok(())
    }
}

fn main() {
    assert_eq!(Restart::NAME, "example.com/restart");
    assert_eq!(Restart::KIND, PluginKind::Action);
    assert!(Restart::IDEMPOTENT);
    let registry = Registry::from_inventory().unwrap();
    assert!(registry.instance::<Restart>().is_some());
    let _ = Sequence::builder("web-1")
        .action(ActionSpec::new::<Restart>("restart", "web-1".to_owned()));
}

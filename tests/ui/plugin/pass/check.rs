use coercion::plugin::{PluginKind, PluginMeta};
use coercion::prelude::*;

#[coercion::plugin(check)]
#[derive(Default)]
pub struct Ping;

impl Plugin for Ping {
    type Request = String;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _addr: String) -> Result<(), PluginError> {
        Ok(())
    }
}

fn main() {
    assert_eq!(Ping::KIND, PluginKind::Check);
    // The default name is the module path (here trybuild's crate name) and the type name.
    assert!(Ping::NAME.ends_with("::Ping"), "{}", Ping::NAME);
    let registry = Registry::from_inventory().unwrap();
    assert_eq!(registry.kind_of(Ping::NAME), Some(PluginKind::Check));
    let _ = Checks::builder().action(CheckSpec::new::<Ping>("ping", "lb".to_owned()));
}

//! The documented linking idiom: a plugin crate that is only a dependency is not linked, so its
//! `#[plugin]`s are not in the inventory — naming it once with `use ... as _;` links it.
//! `tests/linking_missing.rs` is the same test without the `use`.

use extra_plugins as _;

use coercion::Registry;
use coercion::plugin::PluginKind;

#[test]
fn a_plugin_crate_named_with_use_as_underscore_is_registered() {
    let registry = Registry::from_inventory().unwrap();
    assert_eq!(registry.kind_of("extra/notify"), Some(PluginKind::Action));
    assert_eq!(
        registry.get("extra/notify").unwrap().type_name(),
        "extra_plugins::Notify"
    );
}

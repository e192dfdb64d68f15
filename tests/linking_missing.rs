//! Without `use extra_plugins as _;` (see `tests/linking.rs`), the plugin crate is a dependency
//! of this test but is never linked, and its plugins are missing from the inventory: the reason
//! the idiom is documented on `Registry::from_inventory`.

use coercion::Registry;

#[test]
fn a_plugin_crate_never_named_is_not_registered() {
    let registry = Registry::from_inventory().unwrap();
    // The inventory itself works in this binary…
    assert!(registry.contains("coercion.testing/action"));
    // …but the unnamed crate's plugin is not in it.
    assert!(!registry.contains("extra/notify"), "{registry:?}");
}

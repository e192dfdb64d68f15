//! Without `use extra_plugins as _;` (see `tests/linking.rs`), the plugin crate is a dependency
//! of this test but is never linked, and its plugins are missing from the inventory: the reason
//! the idiom is documented on `Registry::from_inventory`. The test kit's fakes are never in the
//! inventory either, though this binary links them (the `testing` feature is on): a test asks
//! for them explicitly.

use coercion::Registry;

#[test]
fn a_plugin_crate_never_named_is_not_registered() {
    let registry = Registry::from_inventory().unwrap();
    // The inventory itself works in this binary…
    assert!(registry.contains("coercion/command"));
    // …but the unnamed crate's plugin is not in it.
    assert!(!registry.contains("extra/notify"), "{registry:?}");
}

#[test]
fn the_test_fakes_are_only_in_a_registry_that_asks_for_them() {
    let plain = Registry::from_inventory().unwrap();
    let fakes: Vec<&str> = plain
        .iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("coercion.testing/"))
        .collect();
    assert!(fakes.is_empty(), "{fakes:?}");

    let with_fakes = coercion::testing::registry();
    assert!(with_fakes.contains("coercion.testing/action"));
    assert!(with_fakes.contains("coercion.testing/check"));
    assert_eq!(with_fakes.len(), plain.len() + 2);
}

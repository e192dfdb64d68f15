//! Two auto-registered plugins claiming one name: `Registry::from_inventory` fails and names
//! both types and both source locations. A binary of its own, so the duplicate does not break
//! `from_inventory` in the other tests.

use coercion::registry::RegistryError;
use coercion::{Context, Plugin, PluginError, Registry};

// The location recorded is that of the struct itself.
const FIRST_LINE: u32 = line!() + 3;
#[coercion::plugin(name = "dup/inventory")]
#[derive(Default)]
pub struct First;

const SECOND_LINE: u32 = line!() + 3;
#[coercion::plugin(name = "dup/inventory", check)]
#[derive(Default)]
pub struct Second;

impl Plugin for First {
    type Request = ();
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
        Ok(())
    }
}

impl Plugin for Second {
    type Request = ();
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
        Ok(())
    }
}

#[test]
fn from_inventory_refuses_a_duplicate_name_naming_both_plugins() {
    let err = Registry::from_inventory().unwrap_err();
    let RegistryError::Duplicate {
        name,
        first_type,
        first_origin,
        second_type,
        second_origin,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(name, "dup/inventory");
    let mut found = [
        (*first_type, first_origin.as_str()),
        (*second_type, second_origin.as_str()),
    ];
    // The inventory's order is unspecified.
    found.sort();
    let first = format!("tests/registry_duplicate.rs:{FIRST_LINE}");
    let second = format!("tests/registry_duplicate.rs:{SECOND_LINE}");
    assert_eq!(
        found,
        [
            ("registry_duplicate::First", first.as_str()),
            ("registry_duplicate::Second", second.as_str())
        ]
    );
    let text = err.to_string();
    assert!(
        text.starts_with(
            "plugin name \"dup/inventory\" registered twice: by `registry_duplicate::"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!("({first})")) && text.contains(&format!("({second})")),
        "{text}"
    );
}

use coercion::plugin::PluginMeta;
use coercion::prelude::*;

#[coercion::plugin(name = "example.com/charge-card", not_idempotent)]
#[derive(Default)]
pub struct ChargeCard;

impl Plugin for ChargeCard {
    type Request = u64;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _cents: u64) -> Result<(), PluginError> {
        Ok(())
    }
}

fn main() {
    assert!(!ChargeCard::IDEMPOTENT);
    let registry = Registry::from_inventory().unwrap();
    assert!(
        !registry
            .get("example.com/charge-card")
            .unwrap()
            .idempotent()
    );
}

use coercion::prelude::*;

#[coercion::plugin]
#[derive(Default)]
pub enum Transport {
    #[default]
    Ssh,
    Local,
}

impl Plugin for Transport {
    type Request = ();
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
        Ok(())
    }
}

fn main() {}

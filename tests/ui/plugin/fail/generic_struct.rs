use coercion::prelude::*;

#[coercion::plugin]
#[derive(Default)]
pub struct Fetch<T> {
    marker: std::marker::PhantomData<T>,
}

impl<T: Send + Sync + 'static> Plugin for Fetch<T> {
    type Request = ();
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
        Ok(())
    }
}

fn main() {}

//! Fixtures shared by the `plan!` UI cases: the crate's fake plugins plus one action and one
//! check plugin whose request types differ from `FakeReq`.
#![allow(dead_code, unused_imports)]

pub use coercion::testing::{FakeAction, FakeCheck, FakeReq};
use coercion::prelude::*;
use serde::{Deserialize, Serialize};

/// What [`Notify`] sends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NotifyReq {
    pub channel: String,
}

/// An action plugin with its own request type.
#[coercion::plugin(name = "ui.test/notify")]
#[derive(Default)]
pub struct Notify;

impl Plugin for Notify {
    type Request = NotifyReq;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: NotifyReq) -> Result<(), PluginError> {
        Ok(())
    }
}

/// What [`Probe`] asks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeReq {
    pub url: String,
}

/// A check plugin with its own request type.
#[coercion::plugin(check, name = "ui.test/probe")]
#[derive(Default)]
pub struct Probe;

impl Plugin for Probe {
    type Request = ProbeReq;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ProbeReq) -> Result<(), PluginError> {
        Ok(())
    }
}

/// A type that is not a plugin at all.
pub struct NotAPlugin;

/// An action plugin that previews.
#[coercion::plugin(preview, name = "ui.test/resize")]
#[derive(Default)]
pub struct Resize;

impl Plugin for Resize {
    type Request = u32;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _size: u32) -> Result<(), PluginError> {
        Ok(())
    }
}

impl coercion::Previews for Resize {
    async fn preview(&self, _ctx: &Context, size: &u32) -> Result<coercion::Preview, PluginError> {
        Ok(coercion::Preview::would_change(format!("would resize to {size}")))
    }
}

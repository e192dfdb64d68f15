//! # coercion
//!
//! Operational workflows — deploys, rollouts, migrations — written as compile-checked Rust.
//!
//! A [`Plan`] runs [`Block`]s one after another; each block runs [`Sequence`]s concurrently up
//! to a limit, with a failure budget; each sequence runs [`Action`]s in order; each action calls
//! a typed [`Plugin`] with a per-attempt timeout and the plugin's [`RetryPolicy`]. Plans and
//! blocks carry checks (bypass, pre, continuous, post, deferred) that only side-effect-free
//! *check plugins* may fill — a rule the compiler enforces.
//!
//! ```
//! use coercion::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct PingReq { pub addr: String }
//!
//! /// A side-effect-free check plugin.
//! #[coercion::plugin(check, name = "example.com/ping")]
//! #[derive(Default)]
//! pub struct Ping;
//!
//! impl Plugin for Ping {
//!     type Request = PingReq;
//!     type Response = ();
//!     async fn execute(&self, _ctx: &Context, req: PingReq) -> Result<(), PluginError> {
//!         if req.addr.is_empty() { Err(PluginError::permanent("no address")) } else { Ok(()) }
//!     }
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct RestartReq { pub host: String }
//!
//! /// An action plugin: it may change the world, so it may only run in sequences.
//! #[coercion::plugin(name = "example.com/restart")]
//! #[derive(Default)]
//! pub struct Restart;
//!
//! impl Plugin for Restart {
//!     type Request = RestartReq;
//!     type Response = String;
//!     async fn execute(&self, _ctx: &Context, req: RestartReq) -> Result<String, PluginError> {
//!         Ok(format!("restarted {}", req.host))
//!     }
//! }
//!
//! let hosts = ["web-1", "web-2"];
//! let plan = Plan::builder("Restart web")
//!     .pre_checks(Checks::builder().action(CheckSpec::new::<Ping>("lb up", PingReq { addr: "lb:80".into() })))
//!     .block(Block::builder("web").concurrency(2).sequences(hosts.map(|h| {
//!         Sequence::builder(h).action(ActionSpec::new::<Restart>("restart", RestartReq { host: h.into() }))
//!     })))
//!     .build();
//!
//! let registry = Registry::from_inventory().unwrap();
//! coercion::workflow::validate_plan(&plan, &registry).unwrap();
//! ```
//!
//! Putting the check plugin in a sequence does not compile:
//!
//! ```compile_fail,E0277
//! # use coercion::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)] pub struct PingReq { pub addr: String }
//! # #[coercion::plugin(check)] #[derive(Default)] pub struct Ping;
//! # impl Plugin for Ping {
//! #     type Request = PingReq; type Response = ();
//! #     async fn execute(&self, _: &Context, _: PingReq) -> Result<(), PluginError> { Ok(()) }
//! # }
//! let seq = Sequence::builder("web-1")
//!     .action(ActionSpec::new::<Ping>("ping", PingReq { addr: "web-1".into() }));
//! ```
//!
//! ## Features
//!
//! Default: `sqlite` ([`SqliteStore`](storage::SqliteStore), [`Workstream::open`], the default
//! store `coercion.db`), `http` (the `coercion/http-check` plugin and `wait-for`'s `http`
//! condition) and `secrets` ([`Secret`], [`SecretKey`]). Optional: `tls` (https for the HTTP
//! plugins), `postgres` (`PostgresStore`), `cli` (the `coercion` binary and its web UI) and
//! `testing` (the test kit, for `[dev-dependencies]`). With `default-features = false` the
//! engine, the macros, [`MemoryStore`] and the command, file, TCP, sleep and wait plugins remain;
//! choose a store with [`WorkstreamBuilder::store`] or [`in_memory`](WorkstreamBuilder::in_memory).
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate self as coercion;

pub mod builder;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
#[cfg(all(unix, feature = "control"))]
#[cfg_attr(docsrs, doc(cfg(all(unix, feature = "control"))))]
pub mod control;
mod engine;
#[cfg(feature = "inventory")]
#[cfg_attr(docsrs, doc(cfg(feature = "inventory")))]
pub mod inventory;
mod macros_doc;
pub mod metrics;
pub mod plugin;
pub mod plugins;
pub mod preview;
#[cfg(feature = "progress")]
#[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
pub mod progress;
pub mod registry;
pub mod report;
pub mod rolling;
pub mod secret;
pub mod storage;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod worker;
pub mod workflow;
pub mod workstream;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use builder::{
    ActionSpec, BatchBuilder, BlockBuilder, CheckSpec, ChecksBuilder, PlanBuilder, SequenceBuilder,
};
#[doc = include_str!("../docs/plan-macro.md")]
///
/// ## Example
///
/// ```
/// use coercion::plugins::{Command, CommandReq, TcpCheck, TcpCheckReq};
/// use coercion::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let port = listener.local_addr()?.port();
/// let hosts = ["web-1", "web-2", "web-3"];
/// let plan = coercion::plan! {
///     name: "restart web",
///     pre_checks {
///         action { name: "lb up", plugin: TcpCheck, request: TcpCheckReq::new("127.0.0.1", port) }
///     }
///     block {
///         name: "web",
///         concurrency: 2,
///         tolerated_failures: 1,
///         for host in hosts {
///             sequence {
///                 name: host,
///                 action {
///                     name: "restart",
///                     plugin: Command,
///                     request: CommandReq::new("echo").arg(format!("restarting {host}")),
///                     timeout: 30s,
///                     retries: 2,
///                 }
///             }
///         }
///     }
/// };
/// let ws = Workstream::in_memory(Registry::from_inventory()?).await?;
/// let done = ws.run(plan).await?;
/// assert_eq!(done.status(), Status::Completed);
/// assert_eq!(done.blocks()[0].sequences().len(), 3);
/// # Ok(()) }
/// ```
///
/// ## The macro's own summary
pub use coercion_macros::plan;
/// # Example
///
/// ```
/// use coercion::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct PortReq { pub port: u16 }
///
/// /// A check plugin: side-effect free, so `plan!` accepts it in check sections only.
/// #[coercion::plugin(check, name = "example.com/port-free")]
/// #[derive(Default)]
/// pub struct PortFree;
///
/// impl Plugin for PortFree {
///     type Request = PortReq;
///     type Response = bool;
///     async fn execute(&self, _ctx: &Context, req: PortReq) -> Result<bool, PluginError> {
///         Ok(std::net::TcpListener::bind(("127.0.0.1", req.port)).is_ok())
///     }
/// }
///
/// /// Configured at start-up instead of built with `Default`: registered by hand.
/// #[coercion::plugin(manual, name = "example.com/notify")]
/// pub struct Notify { pub channel: String }
///
/// impl Plugin for Notify {
///     type Request = String;
///     type Response = ();
///     async fn execute(&self, _ctx: &Context, text: String) -> Result<(), PluginError> {
///         println!("#{}: {text}", self.channel);
///         Ok(())
///     }
/// }
///
/// let registry = Registry::from_inventory()
///     .unwrap()
///     .with(Notify { channel: "ops".into() })
///     .unwrap();
/// assert!(registry.get("example.com/port-free").is_some());
/// assert!(registry.get("example.com/notify").is_some());
/// ```
pub use coercion_macros::plugin;
pub use coercion_macros::{block, sequence};
pub use engine::watchdog::BlockedAction;
pub use engine::{Event, Update, UpdateKind};
pub use plugin::{
    ActionPlugin, CheckPlugin, Context, ErrorContext, InitError, Plugin, PluginError, PluginKind,
    PluginMeta, RetryPolicy, ValidationError,
};
pub use preview::{Preview, Previews};
pub use registry::Registry;
#[cfg(feature = "secrets")]
pub use secret::{Secret, SecretKey};
pub use storage::{ListFilter, MemoryStore, PlanSummary, SharedStore, Store, StoreError};
/// Object ids and group ids are UUIDs (v7 for ids coercion assigns).
pub use uuid::Uuid;
pub use workflow::{
    Action, ActionView, Attempt, BatchView, Block, BlockView, CheckSetView, Checks, ChecksView,
    DeferredBatch, ObjectRef, Owner, Plan, PlanId, Reason, RetryOf, Sequence, SequenceView, State,
    Status, Tolerance, When,
};
pub use workstream::{Error, EventStream, StatusStream, Workstream, WorkstreamBuilder};

/// The names most programs need: `use coercion::prelude::*;`.
pub mod prelude {
    pub use crate::builder::{ActionSpec, CheckSpec};
    pub use crate::plugin::{Context, Plugin, PluginError, RetryPolicy, ValidationError};
    pub use crate::registry::Registry;
    #[cfg(feature = "secrets")]
    pub use crate::secret::{Secret, SecretKey};
    pub use crate::workflow::{
        Action, ActionView, Block, BlockView, Checks, DeferredBatch, ObjectRef, Plan, PlanId,
        Reason, Sequence, Status, Tolerance, When,
    };
    pub use crate::workstream::Workstream;
}

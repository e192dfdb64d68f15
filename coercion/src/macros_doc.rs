//! `plan!` misuse next to use, as doctests (not a public module: mount it with
//! `mod macros_doc;` so `cargo test --doc` runs these).
//!
//! A check plugin in a check section and an action plugin in a sequence compile:
//!
//! ```
//! use coercion::testing::{FakeAction, FakeCheck, FakeReq};
//!
//! let plan = coercion::plan! {
//!     name: "deploy",
//!     pre_checks { action { name: "lb up", plugin: FakeCheck, request: FakeReq::ok() } }
//!     block {
//!         name: "web",
//!         sequence {
//!             name: "web-1",
//!             action { name: "copy", plugin: FakeAction, request: FakeReq::ok(), timeout: 5min }
//!         }
//!     }
//! };
//! assert_eq!(plan.blocks()[0].sequences()[0].actions()[0].name(), "copy");
//! ```
//!
//! A check plugin in a sequence does not: "`FakeCheck` is not an action plugin, so it cannot
//! be used in a sequence or a deferred batch", under `FakeCheck`.
//!
//! ```compile_fail,E0277
//! use coercion::testing::{FakeCheck, FakeReq};
//!
//! let plan = coercion::plan! {
//!     name: "deploy",
//!     block {
//!         name: "web",
//!         sequence {
//!             name: "web-1",
//!             action { name: "ping", plugin: FakeCheck, request: FakeReq::ok() }
//!         }
//!     }
//! };
//! ```
//!
//! Nor does an action plugin in a check section:
//!
//! ```compile_fail,E0277
//! use coercion::testing::{FakeAction, FakeReq};
//!
//! let plan = coercion::plan! {
//!     name: "deploy",
//!     post_checks { action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } }
//!     block { name: "web", sequence { name: "web-1", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } } }
//! };
//! ```
//!
//! A structural mistake is an error of the macro itself: "`action` cannot sit directly in a
//! `block`; it belongs in a `sequence { ... }` …".
//!
//! ```compile_fail
//! use coercion::testing::{FakeAction, FakeReq};
//!
//! let plan = coercion::plan! {
//!     name: "deploy",
//!     block { name: "web", action { name: "copy", plugin: FakeAction, request: FakeReq::ok() } }
//! };
//! ```

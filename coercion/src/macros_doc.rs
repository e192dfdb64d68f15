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
//!
//! A `rolling` node splits one sequence per host into batches, one block each, as Ansible's
//! `serial` does:
//!
//! ```
//! use coercion::testing::{FakeAction, FakeCheck, FakeReq};
//!
//! let hosts: Vec<String> = (1..=40).map(|i| format!("web-{i}")).collect();
//! let plan = coercion::plan! {
//!     name: "deploy",
//!     rolling {
//!         name: "web",
//!         serial: [1, 5%, 25%],
//!         concurrency: 5,
//!         tolerated_failures: 10%,
//!         post_checks { action { name: "healthy", plugin: FakeCheck, request: FakeReq::ok() } }
//!         for host in &hosts {
//!             sequence {
//!                 name: host.clone(),
//!                 action { name: "restart", plugin: FakeAction, request: FakeReq::ok().tag(host) }
//!             }
//!         }
//!     }
//! };
//! let sizes: Vec<usize> = plan.blocks().iter().map(|b| b.sequences().len()).collect();
//! assert_eq!(sizes, [1, 2, 10, 10, 10, 7]);
//! assert_eq!(plan.blocks()[0].name(), "web 1/6");
//! ```
//!
//! A literal batch size of zero, over 100 % or after `rest` does not compile: "a batch size
//! must be at least 1: a batch of 0 hosts would roll out nothing", under the `0`.
//!
//! ```compile_fail
//! use coercion::testing::{FakeAction, FakeReq};
//!
//! let hosts = ["web-1", "web-2"];
//! let plan = coercion::plan! {
//!     name: "deploy",
//!     rolling {
//!         name: "web",
//!         serial: [1, 0],
//!         for host in hosts { sequence { name: host, action { name: "restart", plugin: FakeAction, request: FakeReq::ok() } } }
//!     }
//! };
//! ```

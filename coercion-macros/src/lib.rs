//! Procedural macros of [coercion](https://docs.rs/coercion). Use them through the `coercion`
//! crate (`coercion::plugin`, `coercion::plan!`), never directly: the generated code refers to
//! `::coercion::__private`, which moves in lockstep with this crate.
//!
//! Each macro is split into parse → validate → expand modules; this file holds only the entry
//! points.

mod plugin_attr;
mod suggest;

use proc_macro::TokenStream;

/// Marks a struct as a coercion plugin and registers it.
///
/// `#[plugin]` makes an action plugin (for sequences and deferred batches), `#[plugin(check)]`
/// a check plugin (for check sections). Arguments, comma-separated:
///
/// * `check` — a side-effect-free check plugin;
/// * `name = "example.com/ping"` — the registered name (default: module path and type name);
/// * `new = path::to::ctor` — build the registered instance with `ctor()` instead of `Default`;
/// * `manual` — do not register automatically (register configured instances with
///   `Registry::with`);
/// * `not_idempotent` — after a crash, fail an interrupted attempt instead of running it again.
#[proc_macro_attribute]
pub fn plugin(args: TokenStream, item: TokenStream) -> TokenStream {
    plugin_attr::expand(args.into(), item.into()).into()
}

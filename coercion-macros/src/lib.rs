//! Procedural macros of [coercion](https://docs.rs/coercion). Use them through the `coercion`
//! crate (`coercion::plugin`, `coercion::plan!`), never directly: the generated code refers to
//! `::coercion::__private`, which moves in lockstep with this crate.
//!
//! Each macro is split into parse → validate → expand modules; this file holds only the entry
//! points.

mod plan;
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
/// * `not_idempotent` — after a crash, fail an interrupted attempt instead of running it again;
/// * `preview` — the action plugin implements `coercion::Previews`: it can tell what an attempt
///   would do, so plans that say `require_previews: true` accept it.
#[proc_macro_attribute]
pub fn plugin(args: TokenStream, item: TokenStream) -> TokenStream {
    plugin_attr::expand(args.into(), item.into()).into()
}

/// Builds a `coercion::Plan`, checked at compile time.
///
/// Every node reads `keyword { field: value, ... children ... }`, fields first:
///
/// ```text
/// let plan = coercion::plan! {
///     name: "Deploy",
///     descr: "Deploys the web tier",
///     pre_checks {
///         action { name: "lb up", plugin: Ping, request: PingReq { addr: lb.clone() } }
///     }
///     block {
///         name: "web",
///         concurrency: 5,
///         tolerated_failures: 10%,
///         for host in &hosts {
///             sequence {
///                 name: format!("deploy {host}"),
///                 action { name: "copy", plugin: Scp, request: CopyReq::new(host), timeout: 5min, retries: 3 }
///             }
///         }
///     }
///     rolling {                              // one block per batch, as Ansible's `serial`
///         name: "app",                       // blocks "app 1/4", "app 2/4", ...
///         serial: [1, 5%, 25%],              // counts, percentages of all hosts, `rest`
///         concurrency: 5,                    // and the other fields and check sections of a
///         tolerated_failures: 10%,           // block, copied into every batch
///         for host in &hosts {
///             sequence { name: host.clone(), action { name: "restart", plugin: Ssh, request: ExecReq::new(host, "restart") } }
///         }
///     }
///     ..more_blocks,
///     deferred_actions {
///         batch { name: "roll back", when: OnFailure, fail_plan: true, action { ... } }
///     }
/// };
/// ```
///
/// Check sections (`bypass_checks`, `pre_checks`, `cont_checks` with `delay`, `post_checks`,
/// `deferred_checks`) accept check plugins only; sequences and deferred batches accept action
/// plugins only; each `request` must be of its plugin's request type. `for`, `if`/`else` and
/// `..expr` splices work around blocks, sequences, actions and batches. Durations are written
/// `500ms`, `30s`, `5min`, `2h` or as any `Duration` expression.
///
/// A `rolling` node splits its sequences, one per host, into batches by `serial` (see
/// `coercion::rolling`): sizes apply in order and the last one repeats; a percentage is of all
/// the hosts, rounded down, at least 1; `rest` takes every remaining host. The batches run one
/// after another, each with its own failure budget, so a failed canary stops the rest.
/// `serial` also takes a lone size (`serial: 5`) or any expression iterating over
/// `BatchSize`s; literal sizes of zero, over 100 %, after `rest` or an empty list are compile
/// errors. Every structural mistake is
/// a compile error pointing at the offending tokens; see the `coercion` crate docs.
#[proc_macro]
pub fn plan(input: TokenStream) -> TokenStream {
    plan::expand(plan::Kind::Plan, input.into()).into()
}

/// Builds a `coercion::BlockBuilder` with the `block { ... }` grammar of [`plan!`], for
/// splicing into a plan with `..[block_a, block_b]`. Checked exactly like a block in `plan!`.
#[proc_macro]
pub fn block(input: TokenStream) -> TokenStream {
    plan::expand(plan::Kind::Block, input.into()).into()
}

/// Builds a `coercion::SequenceBuilder` with the `sequence { ... }` grammar of [`plan!`], for
/// splicing into a block with `..sequences`. Checked exactly like a sequence in `plan!`.
#[proc_macro]
pub fn sequence(input: TokenStream) -> TokenStream {
    plan::expand(plan::Kind::Sequence, input.into()).into()
}

//! Submit-time validation: every problem of a plan, each with its path.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::path::Loc;
use super::walk::ObjectRef;
use super::{CheckSlot, ObjectPath, Plan, Status, Tolerance};
use crate::plugin::PluginKind;
use crate::registry::Registry;

/// One thing wrong with a plan, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Where the problem is.
    pub path: ObjectPath,
    /// What is wrong, for people.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

struct Problems<'p> {
    plan: &'p Plan,
    out: Vec<Problem>,
}

impl Problems<'_> {
    fn add(&mut self, loc: Loc, message: impl Into<String>) {
        self.out.push(Problem {
            path: self.plan.path(loc),
            message: message.into(),
        });
    }
}

fn with_article(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Check => "a check",
        PluginKind::Action => "an action",
    }
}

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// The longest duration a plan may hold: an action's timeout, a block's entrance and exit
/// delays, the pause between continuous check runs (365 days). Longer values are refused at
/// submit — they are mistakes (`Duration::MAX` meant as "forever"), and deadlines computed from
/// them would not fit in a clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The problem with `what` being `d`, if it is longer than [`MAX_DURATION`].
fn too_long(what: &str, d: Duration) -> Option<String> {
    let allowed = if what == "timeout" {
        "more than 0, at most 365 days"
    } else {
        "0 to 365 days"
    };
    (d > MAX_DURATION).then(|| {
        let d = if d == Duration::MAX {
            "Duration::MAX".to_owned()
        } else {
            format!("{d:?}")
        };
        format!("{what} is {d}, longer than 365 days (allowed: {allowed})")
    })
}

/// What requires the action at `loc` to preview: "the plan" or "block[1] \"web\"", if anything.
fn preview_required_by(plan: &Plan, loc: Loc) -> Option<String> {
    if plan.preview_required {
        return Some("the plan".to_owned());
    }
    match loc {
        Loc::Action {
            parent: super::Parent::Sequence { block, .. },
            ..
        } if plan.blocks.get(block)?.preview_required => {
            Some(plan.path(Loc::Block(block)).to_string())
        }
        _ => None,
    }
}

/// Checks the whole plan against `registry` and returns **every** problem: names, non-empty
/// lists, key uniqueness, plugins registered and of the right kind, each request accepted by its
/// plugin's `validate`, sane durations and tolerances, and that nothing has run yet.
pub fn validate_plan(plan: &Plan, registry: &Registry) -> Result<(), Vec<Problem>> {
    let mut p = Problems {
        plan,
        out: Vec::new(),
    };
    let mut keys: HashMap<&str, Loc> = HashMap::new();

    if !plan.id.is_nil() || plan.submit_time.is_some() {
        p.add(
            Loc::Plan,
            "the plan was already submitted (it has an id); submit a clone made with `Plan::clone_for_resubmit`",
        );
    }
    if blank(&plan.name) {
        p.add(Loc::Plan, "name is blank");
    }
    if plan.blocks.is_empty() {
        p.add(Loc::Plan, "the plan has no blocks");
    }
    if plan.run.paused {
        p.add(
            Loc::Plan,
            "the plan is marked paused; a plan is paused by an operator while it runs, not before (remove `paused` from the imported plan)",
        );
    }
    if plan.run.reason != super::Reason::None {
        p.add(
            Loc::Plan,
            format!(
                "reason must be None before the plan runs, found {}",
                plan.run.reason
            ),
        );
    }

    for (loc, obj) in plan.walk() {
        let state = obj.state();
        if state.status != Status::NotStarted || state.start.is_some() || state.end.is_some() {
            let times = if state.start.is_some() || state.end.is_some() {
                " with times set"
            } else {
                ""
            };
            p.add(
                loc,
                format!(
                    "state must be NotStarted with no times before the plan runs, found {}{times}",
                    state.status
                ),
            );
        }
        if !matches!(obj, ObjectRef::Plan(_)) && !obj.id().is_nil() {
            p.add(
                loc,
                "the object already has an id; ids are assigned at submit",
            );
        }
        if let Some(key) = obj.key() {
            if blank(key) {
                p.add(loc, "key is blank");
            } else if let Some(first) = keys.get(key) {
                let first = plan.path(*first);
                p.add(loc, format!("key {key:?} is already used by {first}; keys must be unique across the plan"));
            } else {
                keys.insert(key, loc);
            }
        }
        match obj {
            ObjectRef::Plan(_) => {}
            ObjectRef::Checks(c) => {
                if c.actions.is_empty() {
                    p.add(loc, "the check section has no actions");
                }
                if let Loc::Checks {
                    slot: CheckSlot::Cont,
                    ..
                } = loc
                    && c.delay.is_zero()
                {
                    p.add(
                        loc,
                        "delay between continuous check runs must be greater than zero",
                    );
                }
                if let Some(problem) = too_long("delay", c.delay) {
                    p.add(loc, problem);
                }
            }
            ObjectRef::Block(b) => {
                if blank(&b.name) {
                    p.add(loc, "name is blank");
                }
                if b.sequences.is_empty() {
                    p.add(loc, "the block has no sequences");
                }
                if let Tolerance::Percent(pct) = b.tolerated_failures
                    && pct > 100
                {
                    p.add(loc, format!("tolerated_failures is {pct}%, more than 100%"));
                }
                for (what, d) in [
                    ("entrance_delay", b.entrance_delay),
                    ("exit_delay", b.exit_delay),
                ] {
                    if let Some(problem) = too_long(what, d) {
                        p.add(loc, problem);
                    }
                }
                for d in &b.defects {
                    p.add(loc, d.clone());
                }
            }
            ObjectRef::Sequence(s) => {
                if blank(&s.name) {
                    p.add(loc, "name is blank");
                }
                if s.actions.is_empty() {
                    p.add(loc, "the sequence has no actions");
                }
            }
            ObjectRef::Batch(b) => {
                if blank(&b.name) {
                    p.add(loc, "name is blank");
                }
                if b.actions.is_empty() {
                    p.add(loc, "the deferred batch has no actions");
                }
            }
            ObjectRef::Action(a) => {
                if blank(&a.name) {
                    p.add(loc, "name is blank");
                }
                if a.timeout.is_zero() {
                    p.add(loc, "timeout must be greater than zero");
                }
                if let Some(problem) = too_long("timeout", a.timeout) {
                    p.add(loc, problem);
                }
                if !a.attempts().is_empty() {
                    p.add(loc, "the action already has attempts");
                }
                for d in &a.defects {
                    p.add(loc, d.clone());
                }
                let in_checks = matches!(
                    loc,
                    Loc::Action {
                        parent: super::Parent::Checks { .. },
                        ..
                    }
                );
                let wanted = if in_checks {
                    PluginKind::Check
                } else {
                    PluginKind::Action
                };
                // The registry knows a plugin's kind; the kind recorded in the plan is only
                // reported when the registry does not already say so: one mistake, one problem.
                let registered = if blank(&a.plugin) {
                    None
                } else {
                    registry.get(&a.plugin)
                };
                match registered {
                    Some(plugin) if plugin.kind() != wanted => {
                        let place = if in_checks { "a check section" } else { "a sequence or deferred batch" };
                        p.add(
                            loc,
                            format!(
                                "plugin {:?} is {} plugin and cannot be used in {place}",
                                a.plugin,
                                with_article(plugin.kind())
                            ),
                        );
                    }
                    _ if a.kind != wanted => p.add(
                        loc,
                        format!(
                            "plugin {:?} is recorded as {} plugin, but only {} plugins may be used here",
                            a.plugin,
                            with_article(a.kind),
                            wanted
                        ),
                    ),
                    _ => {}
                }
                if blank(&a.plugin) {
                    p.add(loc, "plugin name is blank");
                    continue;
                }
                if &*a.plugin == crate::plugins::GATE
                    && let Loc::Action {
                        parent: super::Parent::Checks { slot, .. },
                        ..
                    } = loc
                    && !matches!(slot, CheckSlot::Pre | CheckSlot::Post)
                {
                    p.add(
                        loc,
                        format!(
                            "an approval gate cannot sit in {slot}: it belongs in pre_checks (wait before the work) or post_checks (wait after it); in bypass checks an approval would skip the work, in continuous or deferred checks nothing waits for it"
                        ),
                    );
                }
                match registered {
                    None => p.add(loc, format!("plugin {:?} is not registered", a.plugin)),
                    // A request that did not serialize is already reported as a defect; its
                    // stored placeholder would only add a confusing second problem.
                    Some(plugin) if plugin.kind() == wanted && a.defects.is_empty() => {
                        if let Err(e) = plugin.validate_json(&a.request) {
                            p.add(
                                loc,
                                format!("plugin {:?} rejected the request: {e}", a.plugin),
                            );
                        }
                        if !in_checks
                            && !plugin.previews()
                            && let Some(by) = preview_required_by(plan, loc)
                        {
                            p.add(
                                loc,
                                format!(
                                    "plugin {:?} cannot preview, and {by} requires previews (`require_previews`); \
                                     declare it `#[plugin(preview)]` and implement `Previews`, or move the action",
                                    a.plugin
                                ),
                            );
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }
    if p.out.is_empty() { Ok(()) } else { Err(p.out) }
}

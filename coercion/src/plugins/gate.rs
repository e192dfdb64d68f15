//! `coercion/gate`: an approval gate, a check that waits until a person approves or rejects it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::codes;
use crate::plugin::{Context, Plugin, PluginError, ValidationError};
use crate::report::human_duration;
use crate::workflow::Timestamp;

/// The longest comment a decision keeps, in characters.
pub const MAX_COMMENT: usize = 2000;

/// The registered name of [`Gate`].
pub const GATE: &str = "coercion/gate";

/// The request of [`Gate`]: what the person is asked, and who may answer. In JSON:
///
/// ```json
/// { "message": "The canary is healthy: promote the release to the fleet?",
///   "approvers": ["alice", "bob"] }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateReq {
    /// The question, shown wherever the plan is shown while it waits.
    pub message: String,
    /// Who may decide: names of the identity the control path proves (the Unix user on the
    /// control socket, `alice`). Empty: anyone who may reach the plan's process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
}

impl GateReq {
    /// A gate asking `message`, which anyone who reaches the process may decide.
    pub fn new(message: impl Into<String>) -> GateReq {
        GateReq {
            message: message.into(),
            approvers: Vec::new(),
        }
    }

    /// Only these people may decide.
    pub fn approvers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> GateReq {
        self.approvers = names.into_iter().map(Into::into).collect();
        self
    }

    /// Whether `identity` (`alice (uid 1000)`, or a program's own `deployer`) may decide: its
    /// name — what comes before ` (` — is one of the approvers, or there is no list.
    pub fn allows(&self, identity: &str) -> bool {
        let name = identity.split(" (").next().unwrap_or(identity).trim();
        self.approvers.is_empty() || self.approvers.iter().any(|a| a == name)
    }
}

/// The approval that let the plan through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateResp {
    /// Who approved, as the control path proved it.
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// What they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// An approval gate (a check plugin, registered as `coercion/gate`): it passes when a person
/// approves it and fails when one rejects it or when nobody decides within the check's
/// **timeout** — set it to how long a person may take (`timeout: 4h`), not the 30 s default.
///
/// Put it where a check fits: in the pre-checks of the block after the canary, it holds the
/// rollout until someone promotes the canary; a rejection or a timeout fails that block, so
/// the plan fails and its `OnFailure` batches run. Decisions come through
/// [`Workstream::decide`](crate::Workstream::decide), the control socket (`coercion approve ID
/// GATE`, `coercion reject …`) or, when no process runs the plan, the CLI writing into the store
/// itself; each is kept in the plan ([`Plan::decisions`](crate::Plan::decisions)) with who took
/// it, when and why, so a gate survives a crash: a restarted process waits again, and a decision
/// taken meanwhile is found at once. A decision is final: a rejected gate stays rejected.
///
/// While a plan waits at a gate, [`Plan::waiting_gates`](crate::Plan::waiting_gates) says so,
/// and every face shows "waiting for approval: NAME, since …". A preview does not wait: it
/// lists the gate as one a run would wait at.
///
/// ```
/// # use coercion::plugins::{Gate, GateReq};
/// # use coercion::prelude::*;
/// let promote = Checks::builder().action(
///     CheckSpec::new::<Gate>("promote canary", GateReq::new("Promote to the fleet?").approvers(["alice"]))
///         .timeout(std::time::Duration::from_secs(4 * 3600)),
/// );
/// ```
#[crate::plugin(check, name = "coercion/gate")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Gate;

/// What a decision makes of the gate's attempt.
fn outcome(d: crate::workflow::Decision) -> Result<GateResp, PluginError> {
    if d.approved {
        Ok(GateResp {
            by: d.by,
            at: d.at,
            comment: d.comment,
        })
    } else {
        Err(PluginError::permanent(format!("rejected: {d}")).with_code(codes::REJECTED))
    }
}

/// Time kept before the attempt's deadline so the gate reports its own timeout.
const MARGIN: Duration = Duration::from_millis(200);

impl Plugin for Gate {
    type Request = GateReq;
    type Response = GateResp;

    async fn execute(&self, ctx: &Context, req: GateReq) -> Result<GateResp, PluginError> {
        let Some(gates) = ctx.gates.clone() else {
            return Err(PluginError::permanent(
                "a gate is decided through the workstream that runs its plan; called outside one, nobody can decide it",
            ));
        };
        let started = Instant::now();
        let margin = (ctx.remaining() / 10).min(MARGIN);
        let end = ctx
            .deadline()
            .checked_sub(margin)
            .unwrap_or(started)
            .max(started);
        let mut decided = gates.decided();
        let mut told = false;
        loop {
            decided.borrow_and_update();
            if let Some(d) = gates.decision(ctx.loc()) {
                return outcome(d);
            }
            if !told {
                told = true;
                tracing::info!(gate = %ctx.path(), message = %req.message, "waiting for approval");
                gates.waiting(ctx.loc());
            }
            tokio::select! {
                biased;
                () = ctx.cancelled() => {
                    // A decision taken just before the stop still counts.
                    if let Some(d) = gates.close(ctx.loc()).await {
                        return outcome(d);
                    }
                    return Err(PluginError::permanent("stopped with the plan while waiting for approval")
                        .with_code(codes::CANCELLED));
                }
                changed = decided.changed() => {
                    if changed.is_err() {
                        // The run ended; the engine abandons the attempt.
                        std::future::pending::<()>().await;
                    }
                }
                () = tokio::time::sleep_until(end) => {
                    if let Some(d) = gates.close(ctx.loc()).await {
                        return outcome(d);
                    }
                    return Err(PluginError::permanent(format!(
                        "nobody approved or rejected it within {} ({})",
                        human_duration(started.elapsed()),
                        req.message
                    ))
                    .with_code(codes::NOT_DECIDED));
                }
            }
        }
    }

    fn validate(&self, req: &GateReq) -> Result<(), ValidationError> {
        if req.message.trim().is_empty() {
            return Err(ValidationError::new(
                "`message` must say what the person decides",
            ));
        }
        if let Some(i) = req.approvers.iter().position(|a| a.trim().is_empty()) {
            return Err(ValidationError::new(format!("`approvers[{i}]` is blank")));
        }
        Ok(())
    }
}

/// The gate of `plan` that a decision named `gate` (a gate check's name or key) is for, with its
/// request: the one waiting now, among the gates of that name. The error says why none is.
pub(crate) fn waiting_gate(
    plan: &crate::Plan,
    gate: &str,
) -> Result<(crate::workflow::Loc, GateReq), String> {
    use crate::workflow::{ObjectRef, Status};
    let gates: Vec<_> = plan
        .walk()
        .filter_map(|(loc, obj)| match obj {
            ObjectRef::Action(a) if a.plugin() == GATE => Some((loc, a)),
            _ => None,
        })
        .collect();
    let named: Vec<_> = gates
        .iter()
        .filter(|(_, a)| a.name() == gate || a.key() == Some(gate))
        .collect();
    if named.is_empty() {
        let names: Vec<String> = gates
            .iter()
            .map(|(_, a)| format!("{:?}", a.name()))
            .collect();
        return Err(if names.is_empty() {
            format!("plan {} has no gate", plan.id())
        } else {
            format!(
                "plan {} has no gate named {gate:?} (its gates: {})",
                plan.id(),
                names.join(", ")
            )
        });
    }
    if let Some((loc, a)) = named.iter().find(|(_, a)| a.status() == Status::Running) {
        if let Some(d) = plan.decision_at(*loc) {
            return Err(format!("gate {gate:?} was already {d}"));
        }
        let req = a
            .request_json()
            .decode::<GateReq>()
            .map_err(|e| format!("gate {gate:?} has a request that does not decode: {e}"))?;
        return Ok((*loc, req));
    }
    let (loc, a) = named[0];
    Err(match plan.decision_at(*loc) {
        Some(d) => format!("gate {gate:?} was already {d}"),
        None if a.status() == Status::NotStarted => {
            format!("gate {gate:?} is not waiting: the plan has not reached it yet")
        }
        None => format!("gate {gate:?} is not waiting: it ended {}", a.status()),
    })
}

/// A decision at the gate named `gate` of `plan`, by `by`, if `by` may take it.
pub(crate) fn decision_for(
    plan: &crate::Plan,
    gate: &str,
    approved: bool,
    by: &str,
    comment: Option<String>,
) -> Result<crate::workflow::Decision, String> {
    let (loc, req) = waiting_gate(plan, gate)?;
    if !req.allows(by) {
        return Err(format!(
            "{by} may not decide gate {gate:?} (approvers: {})",
            req.approvers.join(", ")
        ));
    }
    let comment = comment
        .map(|c| {
            // Terminal escapes and direction overrides out: a comment is shown in every face.
            c.chars()
                .filter(|c| (!c.is_control() || *c == '\n') && !crate::report::is_bidi_control(*c))
                .take(MAX_COMMENT)
                .collect::<String>()
        })
        .filter(|c| !c.trim().is_empty());
    Ok(crate::workflow::Decision::new(loc, approved, by, comment))
}

/// Records a decision at the gate named `gate` of plan `id` straight into `store`, for a plan
/// that **no process runs now** (its process crashed, or was stopped, while the plan waited at
/// the gate): the process that resumes the plan finds the decision and passes (or fails) the
/// gate at once. `by` is who decides, as the caller proved it (the CLI passes the Unix user it
/// runs as), checked against the gate's approvers.
///
/// Only for a store with one writer: the caller must hold it for writing (an open
/// [`SqliteStore`](crate::storage::SqliteStore) holds the file's writer lock, so no other
/// process runs its plans meanwhile) and must not run the plan itself — a workstream running the
/// plan in this process would not see the decision: use [`Workstream::decide`] there. A store
/// shared by several processes (PostgreSQL) is refused: there, only the process holding the
/// plan's lease writes to it.
///
/// [`Workstream::decide`]: crate::Workstream::decide
pub async fn record_decision(
    store: &dyn crate::Store,
    id: crate::PlanId,
    gate: &str,
    approved: bool,
    by: &str,
    comment: Option<String>,
) -> Result<crate::workflow::Decision, crate::Error> {
    use crate::workflow::Status;
    if store.shared().is_some() {
        return Err(crate::Error::Gate(format!(
            "{} is shared by several processes: a decision there goes to the process that runs the plan",
            store.describe()
        )));
    }
    let plan = store.read(id).await.map_err(|e| match e {
        crate::StoreError::NotFound(_) => crate::Error::NotFound(id),
        e => crate::Error::Storage(e),
    })?;
    if plan.status() != Status::Running {
        return Err(crate::Error::Gate(format!(
            "plan {id} is {}: only a running plan waits at a gate",
            plan.status()
        )));
    }
    let decision = decision_for(&plan, gate, approved, by, comment).map_err(crate::Error::Gate)?;
    store
        .apply(id, &[crate::storage::Change::Decided(decision.clone())])
        .await?;
    tracing::info!(plan = %id, gate, by, approved, "gate decided in the store (no process runs the plan)");
    Ok(decision)
}

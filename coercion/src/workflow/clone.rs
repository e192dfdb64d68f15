//! Clones of a plan: for resubmission, for display, and of only the work that did not succeed.

use super::{Attempt, Block, Outcome, Plan, State, Status};

impl Plan {
    /// The group a clone of this plan belongs to: this plan's group, or this plan itself.
    pub(crate) fn clone_group(&self) -> Option<uuid::Uuid> {
        self.group_id.or((!self.id.is_nil()).then_some(self.id.0))
    }

    /// This plan, taken as the definition of a new one: its run state reset
    /// ([`reset_run_state`](Self::reset_run_state)), no ids, no submit time, no retry link, in
    /// this plan's group.
    fn into_fresh(mut self) -> Plan {
        self.group_id = self.clone_group();
        self.reset_run_state();
        self.walk_mut(|_, object| *object.id = uuid::Uuid::nil());
        self.submit_time = None;
        self.retry_of = None;
        self
    }

    /// A copy of the definitions only, ready to submit again: no ids, states, attempts or
    /// reason; keys and secrets kept; in the same group as this plan (its group, or this plan's
    /// id when it has none), so the two stay tied together.
    pub fn clone_for_resubmit(&self) -> Plan {
        self.clone().into_fresh()
    }

    /// A copy for people to look at: everything kept (ids, states, attempts, responses) except
    /// secrets, which are replaced with `{"$secret": "redacted"}` in requests and responses.
    /// Exports, reports and the web UI show this copy.
    pub fn clone_for_display(&self) -> Plan {
        self.clone().into_display()
    }

    /// A copy of the plan without its blocks' sequences (each block's list is empty): what a
    /// store keeps apart from the sequences. Nothing else is left out.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn without_sequences(&self) -> Plan {
        let Plan {
            schema_version,
            id,
            name,
            descr,
            group_id,
            meta,
            checks,
            blocks,
            deferred,
            preview_required,
            submit_time,
            state,
            reason,
            heartbeat,
            paused,
            retry_of,
            owners,
            decisions,
        } = self;
        Plan {
            schema_version: *schema_version,
            id: *id,
            name: name.clone(),
            descr: descr.clone(),
            group_id: *group_id,
            meta: meta.clone(),
            checks: checks.clone(),
            blocks: blocks.iter().map(Block::without_sequences).collect(),
            deferred: deferred.clone(),
            preview_required: *preview_required,
            submit_time: *submit_time,
            state: *state,
            reason: *reason,
            heartbeat: *heartbeat,
            paused: *paused,
            retry_of: retry_of.clone(),
            owners: owners.clone(),
            decisions: decisions.clone(),
        }
    }

    /// [`Plan::clone_for_display`] without the copy: the plan itself, redacted.
    pub fn into_display(self) -> Plan {
        let mut plan = self;
        plan.for_each_action_mut(|_, a| {
            a.request = crate::secret::redact(&a.request);
            for t in &mut a.attempts {
                redact_attempt(t);
            }
        });
        plan
    }

    /// A new plan holding only the work that did not succeed, or `None` if everything did (or
    /// the plan was bypassed): blocks whose sequences all completed (or that were bypassed) are
    /// dropped; kept blocks hold only their failed, stopped or never-run sequences, each without
    /// the actions that already completed; checks and deferred batches are kept; the plan is in
    /// the same group. Submitting it runs exactly the work that had not succeeded.
    ///
    /// A plan that failed only in checks or deferred work (a failed post-check after every
    /// sequence completed, a failed `fail_plan` batch) has no sequence left to retry, so this
    /// returns `None` for it too; run it again with [`clone_for_resubmit`](Self::clone_for_resubmit).
    pub fn clone_retry_failed(&self) -> Option<Plan> {
        // A plan whose bypass checks passed completed without running its blocks: it succeeded.
        let bypassed = self
            .checks
            .bypass
            .as_ref()
            .is_some_and(|c| c.state.status == Status::Completed)
            && self.state.status == Status::Completed;
        if bypassed {
            return None;
        }
        let bypassed = |b: &Block| {
            b.checks
                .bypass
                .as_ref()
                .is_some_and(|c| c.state.status == Status::Completed)
                && b.state.status == Status::Completed
        };
        let not_completed = |state: &State| state.status != Status::Completed;
        let mut retry = self.clone();
        retry.blocks.retain(|b| !bypassed(b));
        for block in &mut retry.blocks {
            block.sequences.retain(|s| not_completed(&s.state));
            for seq in &mut block.sequences {
                seq.actions.retain(|a| not_completed(&a.state));
            }
            block.sequences.retain(|s| !s.actions.is_empty());
        }
        retry.blocks.retain(|b| !b.sequences.is_empty());
        if retry.blocks.is_empty() {
            return None;
        }
        Some(retry.into_fresh())
    }
}

fn redact_attempt(t: &mut Attempt) {
    if let Some(Outcome::Response(json)) = &mut t.outcome {
        *json = crate::secret::redact(json);
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl Block {
    /// A copy of the block with no sequences.
    fn without_sequences(&self) -> Block {
        let Block {
            id,
            key,
            name,
            descr,
            entrance_delay,
            exit_delay,
            checks,
            sequences: _,
            concurrency,
            tolerated_failures,
            preview_required,
            state,
            defects,
        } = self;
        Block {
            id: *id,
            key: key.clone(),
            name: name.clone(),
            descr: descr.clone(),
            entrance_delay: *entrance_delay,
            exit_delay: *exit_delay,
            checks: checks.clone(),
            sequences: Vec::new(),
            concurrency: *concurrency,
            tolerated_failures: *tolerated_failures,
            preview_required: *preview_required,
            state: *state,
            defects: defects.clone(),
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl super::Sequence {
    /// A copy of the sequence with no actions.
    pub(crate) fn without_actions(&self) -> super::Sequence {
        let super::Sequence {
            id,
            key,
            name,
            descr,
            actions: _,
            state,
        } = self;
        super::Sequence {
            id: *id,
            key: key.clone(),
            name: name.clone(),
            descr: descr.clone(),
            actions: Vec::new(),
            state: *state,
        }
    }
}

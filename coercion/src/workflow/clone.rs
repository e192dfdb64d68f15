//! Clones of a plan: for resubmission, for display, and of only the work that did not succeed.

use super::{Attempt, Block, CheckSlot, Outcome, Plan, Status};

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
        self.for_each_id_mut(|id| *id = uuid::Uuid::nil());
        self.submit_time = None;
        self.retry_of = None;
        self
    }

    /// A copy of the definitions only, ready to submit again: no ids, states, attempts or
    /// reason; keys and secrets kept; in the same group as this plan (its group, or this plan's
    /// id when it has none), so the two stay tied together.
    pub fn clone_for_resubmit(&self) -> Plan {
        self.definition().into_fresh()
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
        let mut plan = self.without_blocks();
        plan.blocks = self.blocks.iter().map(Block::without_sequences).collect();
        plan.run = self.run.without_sequences();
        plan
    }

    /// Leaves out the actions of sequence `seq` of block `block` — their definitions and their
    /// run state; the sequence keeps its own (a page's cut).
    pub(crate) fn leave_out_actions(&mut self, block: usize, seq: usize) {
        if let Some(s) = self
            .blocks
            .get_mut(block)
            .and_then(|b| b.sequences.get_mut(seq))
        {
            s.actions = Vec::new();
        }
        if let Some(s) = self
            .run
            .blocks
            .get_mut(block)
            .and_then(|b| b.sequences.get_mut(seq))
        {
            s.actions = Vec::new();
        }
    }

    /// A copy of the plan with no blocks and no run state.
    pub(super) fn without_blocks(&self) -> Plan {
        let Plan {
            schema_version,
            id,
            name,
            descr,
            group_id,
            meta,
            checks,
            blocks: _,
            deferred,
            preview_required,
            submit_time,
            retry_of,
            run: _,
        } = self;
        Plan {
            schema_version: *schema_version,
            id: *id,
            name: name.clone(),
            descr: descr.clone(),
            group_id: *group_id,
            meta: meta.clone(),
            checks: checks.clone(),
            blocks: Vec::new(),
            deferred: deferred.clone(),
            preview_required: *preview_required,
            submit_time: *submit_time,
            retry_of: retry_of.clone(),
            run: super::run::PlanRun::default(),
        }
    }

    /// [`Plan::clone_for_display`] without the copy: the plan itself, redacted.
    pub fn into_display(self) -> Plan {
        let mut plan = self;
        plan.for_each_action_mut(|_, a| a.request = crate::secret::redact(&a.request));
        plan.walk_mut(|_, object| {
            for t in object.attempts.into_iter().flatten() {
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
        let done = |status: Status| status == Status::Completed;
        let bypassed = |checks: super::CheckSetView<'_>, status: Status| {
            checks
                .get(CheckSlot::Bypass)
                .is_some_and(|c| done(c.status()))
                && done(status)
        };
        if bypassed(self.checks(), self.status()) {
            return None;
        }
        let mut blocks = Vec::new();
        for block in self.blocks() {
            if bypassed(block.checks(), block.status()) {
                continue;
            }
            let sequences: Vec<super::Sequence> = block
                .sequences()
                .into_iter()
                .filter(|s| !done(s.status()))
                .filter_map(|s| {
                    let mut seq = s.without_actions();
                    seq.actions = s
                        .actions()
                        .into_iter()
                        .filter(|a| !done(a.status()))
                        .map(|a| a.definition().clone())
                        .collect();
                    (!seq.actions.is_empty()).then_some(seq)
                })
                .collect();
            if !sequences.is_empty() {
                let mut kept = block.without_sequences();
                kept.sequences = sequences;
                blocks.push(kept);
            }
        }
        if blocks.is_empty() {
            return None;
        }
        let mut retry = self.without_blocks();
        retry.blocks = blocks;
        Some(retry.into_fresh())
    }
}

fn redact_attempt(t: &mut Attempt) {
    if let Some(Outcome::Response(json)) = &mut t.outcome {
        *json = crate::secret::redact(json);
    }
}

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
            defects: defects.clone(),
        }
    }
}

impl super::Sequence {
    /// A copy of the sequence with no actions.
    pub(crate) fn without_actions(&self) -> super::Sequence {
        let super::Sequence {
            id,
            key,
            name,
            descr,
            actions: _,
        } = self;
        super::Sequence {
            id: *id,
            key: key.clone(),
            name: name.clone(),
            descr: descr.clone(),
            actions: Vec::new(),
        }
    }
}

//! A page of a plan: what a face shows of a plan that may be too large to hold whole.
//!
//! A plan of a million actions is a hundred thousand sequences; a person looks at a few hundred
//! of them (those of the page, and those that run, failed or were stopped) and at the counts of
//! the whole. [`Store::read_page`](super::Store::read_page) reads that: every object of the
//! plan but the *actions* of the sequences off the page, and the counts of every action. A
//! store may read it without reading the whole plan; the default reads the plan and leaves the
//! other actions out ([`PlanPage::of`]).

use crate::report::{ActionCounts, FailureCounts};
use crate::workflow::{Plan, Status};

/// Which sequences of each block a page holds whole (with their actions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageSpec {
    /// The first sequence of the page, in every block.
    pub from: usize,
    /// How many sequences from `from` (fewer at the end of a block).
    pub len: usize,
    /// At most this many more sequences per block, beyond the page, that run, failed or were
    /// stopped (what an operator looks for), the first ones in the block's order.
    pub attention: usize,
}

impl PageSpec {
    /// How many sequences of a block a page shows by default.
    pub const LEN: usize = 200;
    /// How many running, failed or stopped sequences beyond the page it shows by default.
    pub const ATTENTION: usize = 1000;

    /// The page starting at sequence `from` of each block, with the default sizes.
    pub fn from(from: usize) -> PageSpec {
        PageSpec {
            from,
            len: PageSpec::LEN,
            attention: PageSpec::ATTENTION,
        }
    }

    /// The page that holds sequence `index`: pages start at multiples of [`PageSpec::LEN`]
    /// (the pages the faces' links name), so any sequence number a client gives maps to one.
    pub fn holding(index: usize) -> PageSpec {
        PageSpec::from(index - index % PageSpec::LEN)
    }

    /// Whether sequence `index` belongs to the page itself (not only for attention).
    pub fn in_range(&self, index: usize) -> bool {
        (self.from..self.from.saturating_add(self.len)).contains(&index)
    }
}

/// Whether a sequence in `status` is one the page shows wherever it is.
pub(crate) fn wants_attention(status: Status) -> bool {
    matches!(status, Status::Running | Status::Failed | Status::Stopped)
}

/// A plan as a page shows it: the plan with every check section, block, sequence (its id,
/// name, description and state) and deferred batch, but with the actions of only the sequences
/// the page shows ([`PlanPage::shows`]); and the counts of the whole plan.
///
/// **The plan held here is not the whole plan** when a sequence is off the page: its
/// [`Sequence::actions`](crate::workflow::Sequence::actions) is empty. Ask the page, not the
/// plan, for what concerns every action ([`PlanPage::actions`],
/// [`PlanPage::failure_counts`], [`PlanPage::status_label`], [`PlanPage::failure_report`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PlanPage {
    plan: Plan,
    /// `None`: every sequence is whole.
    spec: Option<PageSpec>,
    /// Per block, the sequences held whole, ascending.
    shown: Vec<Vec<usize>>,
    /// Per block, the running, failed or stopped sequences beyond the page left out (past
    /// [`PageSpec::attention`]).
    left_out: Vec<usize>,
    actions: ActionCounts,
    failures: FailureCounts,
}

impl PlanPage {
    /// The whole plan, every sequence with its actions.
    pub fn whole(plan: Plan) -> PlanPage {
        let shown = plan
            .blocks()
            .iter()
            .map(|b| (0..b.sequences().len()).collect())
            .collect();
        PlanPage {
            left_out: vec![0; plan.blocks().len()],
            actions: plan.action_counts(),
            failures: plan.failure_counts(),
            spec: None,
            shown,
            plan,
        }
    }

    /// The page `spec` of `plan`: the actions of the sequences off the page are left out.
    pub fn of(mut plan: Plan, spec: PageSpec) -> PlanPage {
        let actions = plan.action_counts();
        let failures = plan.failure_counts();
        let mut shown = Vec::with_capacity(plan.blocks.len());
        let mut left_out = Vec::with_capacity(plan.blocks.len());
        let statuses: Vec<Vec<Status>> = plan
            .blocks()
            .iter()
            .map(|b| b.sequences().iter().map(|s| s.status()).collect())
            .collect();
        for (block, statuses) in statuses.into_iter().enumerate() {
            let count = statuses.len();
            let (keep, left) = PlanPage::choose(spec, statuses.into_iter().enumerate());
            let mut next = keep.iter().peekable();
            for seq in 0..count {
                if next.next_if(|k| **k == seq).is_none() {
                    plan.leave_out_actions(block, seq);
                }
            }
            shown.push(keep);
            left_out.push(left);
        }
        PlanPage::from_parts(plan, spec, shown, left_out, actions, failures)
    }

    /// The sequences of one block that `spec` holds whole, ascending, and how many that want
    /// attention were left out, from `(index, status)` of each of the block's sequences in
    /// order. The one rule of what a page shows, for [`PlanPage::of`] and for stores that
    /// read pages themselves.
    pub(crate) fn choose(
        spec: PageSpec,
        statuses: impl Iterator<Item = (usize, Status)>,
    ) -> (Vec<usize>, usize) {
        let mut keep = Vec::new();
        let mut attention = 0;
        let mut left = 0;
        for (i, status) in statuses {
            if spec.in_range(i) {
                keep.push(i);
            } else if wants_attention(status) {
                if attention < spec.attention {
                    attention += 1;
                    keep.push(i);
                } else {
                    left += 1;
                }
            }
        }
        (keep, left)
    }

    /// A page from its parts, as a store that reads pages itself assembles it: `plan` holds
    /// the actions of exactly the sequences of `shown`.
    pub(crate) fn from_parts(
        plan: Plan,
        spec: PageSpec,
        shown: Vec<Vec<usize>>,
        left_out: Vec<usize>,
        actions: ActionCounts,
        failures: FailureCounts,
    ) -> PlanPage {
        PlanPage {
            plan,
            spec: Some(spec),
            shown,
            left_out,
            actions,
            failures,
        }
    }

    /// The plan, with the actions of only the sequences the page shows (see the type's docs).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The page's spec; `None` for a whole plan.
    pub fn spec(&self) -> Option<PageSpec> {
        self.spec
    }

    /// Whether the page holds sequence `seq` of block `block` whole.
    pub fn shows(&self, block: usize, seq: usize) -> bool {
        self.shown
            .get(block)
            .is_some_and(|s| s.binary_search(&seq).is_ok())
    }

    /// The sequences of block `block` held whole, ascending.
    pub fn shown(&self, block: usize) -> &[usize] {
        self.shown.get(block).map_or(&[], Vec::as_slice)
    }

    /// How many sequences of block `block` that run, failed or were stopped are off the page
    /// and beyond [`PageSpec::attention`].
    pub fn left_out(&self, block: usize) -> usize {
        self.left_out.get(block).copied().unwrap_or(0)
    }

    /// Whether the page holds every sequence whole.
    pub fn is_whole(&self) -> bool {
        self.plan
            .blocks
            .iter()
            .zip(&self.shown)
            .all(|(b, s)| b.sequences.len() == s.len())
    }

    /// Every action of the plan counted by status ([`Plan::action_counts`]).
    pub fn actions(&self) -> ActionCounts {
        self.actions
    }

    /// The failed and stopped sequences and actions of the whole plan
    /// ([`Plan::failure_counts`]).
    pub fn failure_counts(&self) -> FailureCounts {
        self.failures
    }

    /// [`Plan::is_completed_with_failures`] of the whole plan.
    pub fn is_completed_with_failures(&self) -> bool {
        self.plan.status() == Status::Completed && self.failures.has_failures()
    }

    /// [`Plan::status_label`] of the whole plan.
    pub fn status_label(&self) -> String {
        crate::report::status_label(&self.plan, &self.failures)
    }

    /// [`Plan::failure_report`] under the whole plan's counts: every failed or stopped
    /// sequence is listed, but the failed actions (and their errors) only of the sequences the
    /// page holds; a last line says how many sequences are listed without them.
    pub fn failure_report(&self) -> String {
        let mut report = crate::report::failure_report(&self.plan, &self.failures);
        let hollow_failures: usize = self
            .plan
            .blocks()
            .iter()
            .enumerate()
            .map(|(b, block)| {
                block
                    .sequences()
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| {
                        matches!(s.status(), Status::Failed | Status::Stopped) && !self.shows(b, *i)
                    })
                    .count()
            })
            .sum();
        if hollow_failures > 0 {
            use std::fmt::Write as _;
            let _ = writeln!(
                report,
                "  (the actions of {hollow_failures} failed or stopped sequence(s) off this page are not listed)"
            );
        }
        report
    }

    /// The page with its secrets redacted ([`Plan::clone_for_display`]), without copying the
    /// plan.
    pub fn into_display(mut self) -> PlanPage {
        self.plan = self.plan.into_display();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crate::testing::*;

    fn plan(sequences: usize, failing: &[usize]) -> Plan {
        let fakes = Fakes::new();
        let plan = Plan::builder("page")
            .block(
                Block::builder("web")
                    .concurrency(4)
                    .tolerated_failures(u32::try_from(sequences).unwrap())
                    .sequences((0..sequences).map(|i| {
                        let req = if failing.contains(&i) {
                            FakeReq::fail_permanently()
                        } else {
                            FakeReq::ok()
                        };
                        Sequence::builder(format!("web-{i}"))
                            .action(ActionSpec::new::<FakeAction>("copy", req))
                            .action(ActionSpec::new::<FakeAction>("restart", FakeReq::ok()))
                    })),
            )
            .build();
        run_paused(fakes.registry(), plan).unwrap()
    }

    #[test]
    fn a_page_holds_its_range_and_the_failed_sequences_and_counts_the_whole_plan() {
        let done = plan(30, &[3, 25, 27]);
        let spec = PageSpec {
            from: 10,
            len: 5,
            attention: 2,
        };
        let page = PlanPage::of(done.clone(), spec);
        assert_eq!(page.shown(0), [3, 10, 11, 12, 13, 14, 25]);
        assert_eq!(
            page.left_out(0),
            1,
            "sequence 27 is past the attention limit"
        );
        for (i, seq) in page.plan().blocks()[0].sequences().iter().enumerate() {
            assert_eq!(seq.actions().is_empty(), !page.shows(0, i), "sequence {i}");
            assert_eq!(seq.status(), done.blocks()[0].sequences()[i].status());
        }
        assert_eq!(page.actions(), done.action_counts());
        assert_eq!(page.actions().total, 60);
        assert_eq!(page.failure_counts(), done.failure_counts());
        assert_eq!(page.status_label(), done.status_label());
        assert_eq!(page.status_label(), "Completed with 3 failed");
        let report = page.failure_report();
        assert!(report.starts_with(done.failure_report().lines().next().unwrap()));
        assert!(
            report.contains("web-3") && report.contains("web-25"),
            "{report}"
        );
        assert!(
            report.contains("sequence[27] \"web-27\": Failed"),
            "{report}"
        );
        assert_eq!(report.matches("scripted failure").count(), 2, "{report}");
        assert!(
            report.contains(
                "the actions of 1 failed or stopped sequence(s) off this page are not listed"
            ),
            "{report}"
        );
        assert!(!page.is_whole());
    }

    #[test]
    fn a_whole_page_is_the_plan() {
        let done = plan(5, &[1]);
        let page = PlanPage::whole(done.clone());
        assert!(page.is_whole());
        assert_eq!(page.plan(), &done);
        assert_eq!(page.failure_report(), done.failure_report());
        let all = PlanPage::of(done.clone(), PageSpec::from(0));
        assert!(all.is_whole());
        assert_eq!(all.plan(), &done);
    }
}

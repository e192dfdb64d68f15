//! Rolling batches: Ansible's `serial: [1, 5%, 25%]` as blocks.
//!
//! A [`Rolling`] holds one sequence per host (any item: the sequences are what is split) and a
//! list of [`BatchSize`] sizes. It becomes one block per batch, in order, each with the same
//! concurrency, tolerance, delays and checks. Blocks run one after another and a block over its
//! failure budget fails the plan, so a failed canary batch stops every batch after it; the
//! tolerance applies to each batch on its own, as Ansible's `max_fail_percentage` does.
//!
//! Batch sizes follow Ansible's `serial` (see [`batch_sizes`]): sizes apply in order, the last
//! one repeats until every host is placed, a percentage is of the total host count (rounded
//! down, at least 1), [`BatchSize::Rest`] takes every remaining host.
//!
//! ```
//! use coercion::prelude::*;
//! use coercion::rolling::{BatchSize, Rolling};
//! # use coercion::testing::{FakeAction, FakeCheck, FakeReq};
//!
//! let hosts: Vec<String> = (1..=40).map(|i| format!("web-{i}")).collect();
//! let plan = Plan::builder("deploy")
//!     .rolling(
//!         Rolling::new("web", [BatchSize::Count(1), BatchSize::Percent(5), BatchSize::Percent(25)])
//!             .concurrency(5)
//!             .tolerated_failures(Tolerance::Percent(10))
//!             .post_checks(Checks::builder().action(CheckSpec::new::<FakeCheck>("healthy", FakeReq::ok())))
//!             .sequences(hosts.iter().map(|host| {
//!                 Sequence::builder(host.as_str())
//!                     .action(ActionSpec::new::<FakeAction>("restart", FakeReq::ok().tag(host)))
//!             })),
//!     )
//!     .build();
//! let sizes: Vec<usize> = plan.blocks().iter().map(|b| b.sequences().len()).collect();
//! assert_eq!(sizes, [1, 2, 10, 10, 10, 7]);
//! assert_eq!(plan.blocks()[1].name(), "web 2/6");
//! assert_eq!(plan.blocks()[1].descr(), "batch 2 of 6: 2 of 40 hosts (serial 5%)");
//! ```
//!
//! Invalid sizes (zero, over 100 %, an empty list, anything after `Rest`) and a rollout without
//! hosts are reported at submit, never a panic: the rollout then becomes a single block named
//! after it, holding every sequence and the problem.

use std::fmt;
use std::time::Duration;

use crate::builder::{BlockBuilder, ChecksBuilder, SequenceBuilder};
#[cfg(test)]
use crate::workflow::Sequence;
use crate::workflow::{Block, CheckSlot, Tolerance};

/// The size of one batch of a rolling rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchSize {
    /// This many hosts (at least 1).
    Count(usize),
    /// This percentage of **all** the rollout's hosts, rounded down, at least 1 host
    /// (1 to 100).
    Percent(u8),
    /// Every host not placed in an earlier batch; nothing may follow it.
    Rest,
}

impl From<usize> for BatchSize {
    fn from(n: usize) -> Self {
        BatchSize::Count(n)
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Count(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
            BatchSize::Rest => f.write_str("rest"),
        }
    }
}

impl std::str::FromStr for BatchSize {
    type Err = ParseBatchSizeError;

    /// Reads a size as written on a command line or in a config: `5`, `25%` or `rest`. The
    /// value itself is checked by [`check_serial`] (zero and over 100 % parse).
    ///
    /// ```
    /// use coercion::rolling::BatchSize;
    /// assert_eq!("25%".parse::<BatchSize>().unwrap(), BatchSize::Percent(25));
    /// assert_eq!("1".parse::<BatchSize>().unwrap(), BatchSize::Count(1));
    /// assert_eq!("rest".parse::<BatchSize>().unwrap(), BatchSize::Rest);
    /// assert!("half".parse::<BatchSize>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseBatchSizeError(text.to_owned());
        let text = text.trim();
        if text == "rest" {
            Ok(BatchSize::Rest)
        } else if let Some(percent) = text.strip_suffix('%') {
            percent
                .trim()
                .parse()
                .map(BatchSize::Percent)
                .map_err(|_| error())
        } else {
            text.parse().map(BatchSize::Count).map_err(|_| error())
        }
    }
}

/// A batch size that is not a count, a percentage or `rest`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a batch size: write a count (5), a percentage of the hosts (25%) or `rest`")]
pub struct ParseBatchSizeError(String);

/// Why a list of batch sizes is not valid. Positions count from 1, as people do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SerialError {
    /// No size at all.
    #[error("serial is empty: give at least one batch size, such as [1, 25%, rest]")]
    Empty,
    /// A count or a percentage of zero.
    #[error("batch {position}'s size is {size}: a batch needs at least one host")]
    Zero {
        /// The position of the size in the list, from 1.
        position: usize,
        /// The size as written.
        size: BatchSize,
    },
    /// A percentage over 100.
    #[error(
        "batch {position}'s size is {percent}%: a batch cannot hold more than 100% of the hosts"
    )]
    OverHundred {
        /// The position of the size in the list, from 1.
        position: usize,
        /// The percentage.
        percent: u8,
    },
    /// A size after `Rest`, which would never apply.
    #[error("batch {position} follows `rest`, which already takes every remaining host: remove it")]
    AfterRest {
        /// The position of the size in the list, from 1.
        position: usize,
    },
}

/// Checks `serial` without splitting anything.
pub fn check_serial(serial: &[BatchSize]) -> Result<(), SerialError> {
    if serial.is_empty() {
        return Err(SerialError::Empty);
    }
    for (i, size) in serial.iter().enumerate() {
        let position = i + 1;
        match *size {
            BatchSize::Count(0) | BatchSize::Percent(0) => {
                return Err(SerialError::Zero {
                    position,
                    size: *size,
                });
            }
            BatchSize::Percent(percent) if percent > 100 => {
                return Err(SerialError::OverHundred { position, percent });
            }
            _ => {}
        }
        if i > 0 && serial[i - 1] == BatchSize::Rest {
            return Err(SerialError::AfterRest { position });
        }
    }
    Ok(())
}

/// The sizes of the batches that split `total` hosts by `serial`, as Ansible's `serial` does:
/// sizes apply in order and the last one repeats until every host is placed; a percentage is
/// of `total`, rounded down, at least 1; [`BatchSize::Rest`] takes every remaining host; a batch
/// never holds more than the hosts left. The sizes sum to `total` and none is zero, so
/// `total == 0` gives no batch.
///
/// Percentages are computed exactly (`total * percent / 100` in integers). Ansible computes
/// `int(percent / 100.0 * total)` in floating point, which is one lower for a few values
/// (29 % of 100 hosts is 28 there, 29 here).
///
/// ```
/// use coercion::rolling::{BatchSize, batch_sizes};
/// let serial = [BatchSize::Count(1), BatchSize::Percent(5), BatchSize::Percent(25)];
/// assert_eq!(batch_sizes(40, &serial).unwrap(), [1, 2, 10, 10, 10, 7]);
/// assert_eq!(batch_sizes(3, &[BatchSize::Count(1), BatchSize::Rest]).unwrap(), [1, 2]);
/// assert!(batch_sizes(3, &[BatchSize::Percent(0)]).is_err());
/// ```
pub fn batch_sizes(total: usize, serial: &[BatchSize]) -> Result<Vec<usize>, SerialError> {
    check_serial(serial)?;
    let last = serial[serial.len() - 1];
    let mut left = total;
    let mut sizes = Vec::new();
    for size in serial.iter().copied().chain(std::iter::repeat(last)) {
        if left == 0 {
            break;
        }
        let wanted = match size {
            BatchSize::Count(n) => n,
            // At most 100 % of `total`, so the result fits in a usize.
            BatchSize::Percent(p) => ((total as u128 * u128::from(p) / 100) as usize).max(1),
            BatchSize::Rest => left,
        };
        let n = wanted.min(left);
        sizes.push(n);
        left -= n;
    }
    Ok(sizes)
}

/// Builds the blocks of a rolling rollout: one per batch. See the [module docs](self).
#[derive(Clone, Debug, PartialEq)]
pub struct Rolling {
    name: String,
    descr: String,
    serial: Vec<BatchSize>,
    /// Everything each batch's block shares: concurrency, tolerance, delays, checks.
    template: BlockBuilder,
    sequences: Vec<SequenceBuilder>,
}

impl Rolling {
    /// A rollout named `name` in batches of `serial`: concurrency 1, no tolerated failure, no
    /// sequences yet.
    pub fn new(
        name: impl Into<String>,
        serial: impl IntoIterator<Item: Into<BatchSize>>,
    ) -> Rolling {
        let name = name.into();
        Rolling {
            template: Block::builder(name.clone()),
            name,
            descr: String::new(),
            serial: serial.into_iter().map(Into::into).collect(),
            sequences: Vec::new(),
        }
    }

    /// Requires (with `true`) that every action of every batch previews (see
    /// [`BlockBuilder::require_previews`]).
    pub fn require_previews(mut self, required: bool) -> Self {
        self.template = self.template.require_previews(required);
        self
    }

    /// Sets the description, which each batch's block begins with.
    pub fn descr(mut self, descr: impl Into<String>) -> Self {
        self.descr = descr.into();
        self
    }
    /// Sets how many sequences of a batch may run at the same time (at least 1; 0 is reported
    /// at submit).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.template = self.template.concurrency(concurrency);
        self
    }
    /// Sets how many failed sequences **each batch** tolerates before it fails, stopping the
    /// rollout (see [`BlockBuilder::tolerated_failures`]).
    pub fn tolerated_failures(mut self, tolerance: impl Into<Tolerance>) -> Self {
        self.template = self.template.tolerated_failures(tolerance);
        self
    }
    /// Sets the pause before each batch.
    pub fn entrance_delay(mut self, delay: Duration) -> Self {
        self.template = self.template.entrance_delay(delay);
        self
    }
    /// Sets the pause after each batch that succeeded.
    pub fn exit_delay(mut self, delay: Duration) -> Self {
        self.template = self.template.exit_delay(delay);
        self
    }
    /// Sets the checks of `slot` of every batch, replacing any already set.
    pub fn set_checks(&mut self, slot: CheckSlot, checks: ChecksBuilder) {
        self.template.set_checks(slot, checks);
    }
    /// Sets the bypass checks of every batch: a batch whose bypass checks pass is skipped.
    pub fn bypass_checks(mut self, checks: ChecksBuilder) -> Self {
        self.set_checks(CheckSlot::Bypass, checks);
        self
    }
    /// Sets the pre-checks of every batch: they must pass before the batch starts.
    pub fn pre_checks(mut self, checks: ChecksBuilder) -> Self {
        self.set_checks(CheckSlot::Pre, checks);
        self
    }
    /// Sets the continuous checks of every batch, run every `delay` while it runs.
    pub fn cont_checks(mut self, checks: ChecksBuilder) -> Self {
        self.set_checks(CheckSlot::Cont, checks);
        self
    }
    /// Sets the post-checks of every batch: they must pass after its sequences.
    pub fn post_checks(mut self, checks: ChecksBuilder) -> Self {
        self.set_checks(CheckSlot::Post, checks);
        self
    }
    /// Sets the deferred checks of every batch: they run at its end, on success and on failure.
    pub fn deferred_checks(mut self, checks: ChecksBuilder) -> Self {
        self.set_checks(CheckSlot::Deferred, checks);
        self
    }
    /// Appends the sequence of one host.
    pub fn sequence(mut self, sequence: SequenceBuilder) -> Self {
        self.sequences.push(sequence);
        self
    }
    /// Appends the sequences of several hosts, e.g.
    /// `.sequences(hosts.iter().map(|host| Sequence::builder(host).action(…)))`.
    pub fn sequences(mut self, sequences: impl IntoIterator<Item = SequenceBuilder>) -> Self {
        self.sequences.extend(sequences);
        self
    }

    /// The blocks, one per batch, named `"{name} {i}/{n}"` and described
    /// `"batch {i} of {n}: {size} of {total} hosts (serial {size})"`.
    ///
    /// Invalid sizes, a build-time problem of the shared block settings (`concurrency(0)`) or
    /// no sequence at all give one block named `name`, holding every sequence and the problem,
    /// which `submit` then reports.
    pub fn into_blocks(self) -> Vec<BlockBuilder> {
        let total = self.sequences.len();
        let sizes = match batch_sizes(total, &self.serial) {
            Ok(sizes) if total > 0 && self.template.0.defects.is_empty() => sizes,
            result => {
                let mut block = self.template.sequences(self.sequences);
                block.0.descr = self.descr;
                if let Err(e) = result {
                    let serial: Vec<String> =
                        self.serial.iter().map(BatchSize::to_string).collect();
                    block
                        .0
                        .defects
                        .push(format!("serial [{}]: {e}", serial.join(", ")));
                }
                if total == 0 {
                    block.0.defects.push(
                        "the rolling rollout has no hosts: give it one sequence per host"
                            .to_owned(),
                    );
                }
                return vec![block];
            }
        };
        let count = sizes.len();
        let last = self.serial[self.serial.len() - 1];
        let mut sequences = self.sequences.into_iter();
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let spec = self.serial.get(i).copied().unwrap_or(last);
                let mut block = self.template.clone();
                block.0.name = format!("{} {}/{count}", self.name, i + 1);
                let batch = format!(
                    "batch {} of {count}: {size} of {total} hosts (serial {spec})",
                    i + 1
                );
                block.0.descr = if self.descr.is_empty() {
                    batch
                } else {
                    format!("{}; {batch}", self.descr)
                };
                block.0.sequences = sequences.by_ref().take(size).map(|s| s.0).collect();
                block
            })
            .collect()
    }
}

impl IntoIterator for Rolling {
    type Item = BlockBuilder;
    type IntoIter = std::vec::IntoIter<BlockBuilder>;
    /// The blocks of [`Rolling::into_blocks`], so a rollout splices into `plan!` as `..rolling`.
    fn into_iter(self) -> Self::IntoIter {
        self.into_blocks().into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::BatchSize::{Count, Percent, Rest};
    use super::*;

    #[test]
    fn sizes_follow_ansible_serial() {
        // The last size repeats; 5 % of 40 is 2; 25 % of 40 is 10; the last batch is what is left.
        assert_eq!(
            batch_sizes(40, &[Count(1), Percent(5), Percent(25)]).unwrap(),
            [1, 2, 10, 10, 10, 7]
        );
        // Percentages round down, but never below one host.
        assert_eq!(batch_sizes(7, &[Percent(10)]).unwrap(), [1; 7]);
        assert_eq!(batch_sizes(19, &[Percent(50)]).unwrap(), [9, 9, 1]);
        assert_eq!(batch_sizes(5, &[Percent(100)]).unwrap(), [5]);
        assert_eq!(batch_sizes(10, &[Count(1), Rest]).unwrap(), [1, 9]);
        assert_eq!(batch_sizes(10, &[Rest]).unwrap(), [10]);
        assert_eq!(batch_sizes(10, &[Count(3)]).unwrap(), [3, 3, 3, 1]);
        // Batches never exceed the hosts left, and sizes past the last host are unused.
        assert_eq!(batch_sizes(2, &[Count(5), Count(1)]).unwrap(), [2]);
        assert_eq!(batch_sizes(1, &[Count(1), Percent(50), Rest]).unwrap(), [1]);
        assert_eq!(
            batch_sizes(0, &[Count(1), Rest]).unwrap(),
            Vec::<usize>::new()
        );
        assert_eq!(
            batch_sizes(usize::MAX, &[Percent(100)]).unwrap(),
            [usize::MAX]
        );
    }

    #[test]
    fn invalid_sizes_are_errors_even_without_hosts() {
        assert_eq!(batch_sizes(0, &[]), Err(SerialError::Empty));
        assert_eq!(
            batch_sizes(4, &[Count(1), Count(0)]),
            Err(SerialError::Zero {
                position: 2,
                size: Count(0)
            })
        );
        assert_eq!(
            batch_sizes(4, &[Percent(0)]).unwrap_err().to_string(),
            "batch 1's size is 0%: a batch needs at least one host"
        );
        assert_eq!(
            batch_sizes(4, &[Percent(101)]),
            Err(SerialError::OverHundred {
                position: 1,
                percent: 101
            })
        );
        assert_eq!(
            batch_sizes(4, &[Rest, Count(1)]),
            Err(SerialError::AfterRest { position: 2 })
        );
    }

    fn seq(i: usize) -> SequenceBuilder {
        Sequence::builder(format!("host-{i}"))
    }

    #[test]
    fn blocks_share_the_settings_and_split_the_sequences_in_order() {
        let blocks: Vec<Block> = Rolling::new("deploy", [Count(1), Rest])
            .descr("web tier")
            .concurrency(3)
            .tolerated_failures(Tolerance::Percent(10))
            .sequences((0..4).map(seq))
            .into_blocks()
            .into_iter()
            .map(|b| b.0)
            .collect();
        let names: Vec<&str> = blocks.iter().map(|b| b.name()).collect();
        assert_eq!(names, ["deploy 1/2", "deploy 2/2"]);
        assert_eq!(
            blocks[1].descr(),
            "web tier; batch 2 of 2: 3 of 4 hosts (serial rest)"
        );
        let hosts: Vec<Vec<&str>> = blocks
            .iter()
            .map(|b| b.sequences().iter().map(|s| s.name()).collect())
            .collect();
        assert_eq!(hosts, [vec!["host-0"], vec!["host-1", "host-2", "host-3"]]);
        for b in &blocks {
            assert_eq!(b.concurrency().get(), 3);
            assert_eq!(b.tolerated_failures(), Tolerance::Percent(10));
            assert!(b.defects.is_empty());
        }
    }

    #[test]
    fn problems_become_one_block_with_defects() {
        let blocks = Rolling::new("deploy", [Count(0)])
            .sequences((0..3).map(seq))
            .into_blocks();
        assert_eq!(blocks.len(), 1);
        let block = &blocks[0].0;
        assert_eq!(block.name(), "deploy");
        assert_eq!(block.sequences().len(), 3);
        assert_eq!(
            block.defects,
            ["serial [0]: batch 1's size is 0: a batch needs at least one host"]
        );

        let blocks = Rolling::new("deploy", [Rest]).into_blocks();
        assert_eq!(blocks.len(), 1);
        assert_eq!(
            blocks[0].0.defects,
            ["the rolling rollout has no hosts: give it one sequence per host"]
        );

        let blocks = Rolling::new("deploy", [Count(1)])
            .concurrency(0)
            .sequences((0..3).map(seq))
            .into_blocks();
        assert_eq!(blocks.len(), 1);
        assert_eq!(
            blocks[0].0.defects,
            ["concurrency must be at least 1, got 0"]
        );
    }
}

//! [`RecordingStore`]: a store wrapper that records every write, so a test can replay any
//! prefix of a run into a fresh store (the crash-recovery acceptance test).

use parking_lot::Mutex;

use super::{Change, ListFilter, PlanSummary, Store, StoreError};
use crate::plugin::BoxFuture;
use crate::workflow::{ImportError, Plan, PlanId};

/// One recorded write.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordedWrite {
    /// A plan was created; its JSON form ([`Plan::to_json`]) as it was then.
    Create {
        /// The plan, as JSON.
        plan_json: String,
    },
    /// A batch of changes was applied to a plan.
    Apply {
        /// The plan.
        id: PlanId,
        /// The batch.
        changes: Vec<Change>,
    },
}

impl RecordedWrite {
    /// The plan a `Create` stored (`None` for an `Apply`).
    pub fn plan(&self) -> Option<Result<Plan, ImportError>> {
        match self {
            RecordedWrite::Create { plan_json } => Some(Plan::from_json(plan_json)),
            RecordedWrite::Apply { .. } => None,
        }
    }

    /// Performs the write on `store`.
    pub async fn replay(&self, store: &dyn Store) -> Result<(), StoreError> {
        match self {
            RecordedWrite::Create { plan_json } => {
                let plan = Plan::from_json(plan_json).map_err(|e| {
                    StoreError::permanent("a recorded plan does not read back").caused_by(e)
                })?;
                store.create(&plan).await
            }
            RecordedWrite::Apply { id, changes } => store.apply(*id, changes).await,
        }
    }

    /// Performs `writes`, in order, on `store` — typically a fresh one, with a prefix of a
    /// recording. Stops at the first failure.
    pub async fn replay_all(writes: &[RecordedWrite], store: &dyn Store) -> Result<(), StoreError> {
        for write in writes {
            write.replay(store).await?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Stored,
    Failed,
}

struct Entry {
    write: RecordedWrite,
    outcome: Outcome,
}

/// Wraps a store and records every `create` and `apply` that succeeds, in the order they were
/// called — the order in which a store commits them (see [`Store`]). Deletes and the ownership
/// hooks (`acquire`, `release`, …) are passed on but not recorded; reads pass through,
/// counted ([`reads`](Self::reads)).
pub struct RecordingStore<S> {
    inner: S,
    log: Mutex<Vec<Entry>>,
    reads: std::sync::atomic::AtomicUsize,
}

impl<S: Store> RecordingStore<S> {
    /// A recorder around `inner`, with an empty recording.
    pub fn new(inner: S) -> RecordingStore<S> {
        RecordingStore {
            inner,
            log: Mutex::new(Vec::new()),
            reads: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// How many whole plans were read so far.
    pub fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The writes that succeeded so far, in commit order. Writes still in flight, failed ones,
    /// and ones whose future was dropped before it completed are left out.
    pub fn writes(&self) -> Vec<RecordedWrite> {
        self.log
            .lock()
            .iter()
            .filter(|e| e.outcome == Outcome::Stored)
            .map(|e| e.write.clone())
            .collect()
    }

    /// How many writes failed (and are not in [`writes`](Self::writes)).
    pub fn failed(&self) -> usize {
        self.log
            .lock()
            .iter()
            .filter(|e| e.outcome == Outcome::Failed)
            .count()
    }

    /// Records `entry` and starts `write` under the same lock, so the recording's order is the
    /// order in which the writes reached the inner store.
    fn record<'a>(
        &'a self,
        entry: RecordedWrite,
        write: impl FnOnce() -> BoxFuture<'a, Result<(), StoreError>>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (index, written) = {
            let mut log = self.log.lock();
            log.push(Entry {
                write: entry,
                outcome: Outcome::Pending,
            });
            (log.len() - 1, write())
        };
        Box::pin(async move {
            let result = written.await;
            if let Some(entry) = self.log.lock().get_mut(index) {
                entry.outcome = if result.is_ok() {
                    Outcome::Stored
                } else {
                    Outcome::Failed
                };
            }
            result
        })
    }
}

impl<S: Store> Store for RecordingStore<S> {
    fn create<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Result<(), StoreError>> {
        self.record(
            RecordedWrite::Create {
                plan_json: plan.to_json(),
            },
            || self.inner.create(plan),
        )
    }

    fn apply<'a>(
        &'a self,
        id: PlanId,
        changes: &'a [Change],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.record(
            RecordedWrite::Apply {
                id,
                changes: changes.to_vec(),
            },
            || self.inner.apply(id, changes),
        )
    }

    fn read(&self, id: PlanId) -> BoxFuture<'_, Result<Plan, StoreError>> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.read(id)
    }

    fn read_page(
        &self,
        id: PlanId,
        spec: super::PageSpec,
    ) -> BoxFuture<'_, Result<super::PlanPage, StoreError>> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.read_page(id, spec)
    }

    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> BoxFuture<'a, Result<Vec<PlanSummary>, StoreError>> {
        self.inner.list(filter)
    }

    fn delete(&self, id: PlanId) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.delete(id)
    }

    fn describe(&self) -> String {
        format!("recording({})", self.inner.describe())
    }

    fn shared(&self) -> Option<&dyn crate::storage::SharedStore> {
        self.inner.shared()
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<crate::storage::Changed>> {
        self.inner.changes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;
    use crate::storage::contract::{at, sample_plan, sample_run};
    use crate::workflow::{Attempt, Loc, ObjectRef, Reason, State, Status};

    #[tokio::test]
    async fn records_successful_writes_in_call_order_and_replays_every_prefix() {
        let store = RecordingStore::new(MemoryStore::new());
        let plan = sample_run("recorded");
        store.create(&plan).await.unwrap();
        let (loc, id) = plan
            .walk()
            .find_map(|(loc, o)| {
                matches!(o, ObjectRef::Action(a) if a.attempts().is_empty())
                    .then_some((loc, o.id()))
            })
            .unwrap();
        let batches: Vec<Vec<Change>> = (0..50u32)
            .map(|i| {
                vec![
                    Change::Attempt {
                        loc,
                        id,
                        index: i,
                        attempt: Attempt {
                            start: at(i.into(), i),
                            end: None,
                            outcome: None,
                        },
                    },
                    Change::State {
                        loc,
                        id,
                        state: State {
                            status: Status::Running,
                            start: Some(at(0, 0)),
                            end: None,
                        },
                    },
                ]
            })
            .collect();
        // Created together, awaited in reverse: the recording still follows the calls.
        let writes: Vec<_> = batches.iter().map(|b| store.apply(plan.id, b)).collect();
        for w in writes.into_iter().rev() {
            w.await.unwrap();
        }
        let bad = [
            Change::Reason(Reason::Block),
            Change::State {
                loc: Loc::Block(99),
                id,
                state: State::default(),
            },
        ];
        assert!(store.apply(plan.id, &bad).await.is_err());
        store
            .apply(plan.id, &[Change::Paused(false)])
            .await
            .unwrap();
        assert!(
            store
                .apply(PlanId::new_v7(), &[Change::Paused(true)])
                .await
                .is_err()
        );
        assert_eq!(store.failed(), 2);

        let writes = store.writes();
        assert_eq!(
            writes.len(),
            1 + 50 + 1,
            "the create, 50 batches, the pause; not the failed writes"
        );
        assert_eq!(writes[0].plan().unwrap().unwrap(), plan);
        for (i, w) in writes[1..51].iter().enumerate() {
            assert_eq!(
                w,
                &RecordedWrite::Apply {
                    id: plan.id,
                    changes: batches[i].clone()
                },
                "batch {i}"
            );
        }
        let expected = store.read(plan.id).await.unwrap();
        for k in 1..=writes.len() {
            let fresh = MemoryStore::new();
            RecordedWrite::replay_all(&writes[..k], &fresh)
                .await
                .unwrap_or_else(|e| panic!("prefix {k}: {e}"));
            let attempts = fresh
                .read(plan.id)
                .await
                .unwrap()
                .action(loc)
                .unwrap()
                .attempts()
                .len();
            assert_eq!(attempts, (k - 1).min(50), "prefix {k}");
            if k == writes.len() {
                assert_eq!(
                    fresh.read(plan.id).await.unwrap(),
                    expected,
                    "the whole recording rebuilds the plan"
                );
            }
        }
        assert_eq!(
            RecordedWrite::replay_all(&writes[1..2], &MemoryStore::new()).await,
            Err(StoreError::NotFound(plan.id))
        );
    }

    #[tokio::test]
    async fn deletes_and_reads_pass_through_unrecorded() {
        let store = RecordingStore::new(MemoryStore::new());
        let plan = sample_plan("deleted");
        store.create(&plan).await.unwrap();
        assert_eq!(store.read(plan.id).await.unwrap(), plan);
        assert_eq!(store.list(&ListFilter::default()).await.unwrap().len(), 1);
        store.delete(plan.id).await.unwrap();
        assert_eq!(
            store.inner().read(plan.id).await.err(),
            Some(StoreError::NotFound(plan.id))
        );
        assert_eq!(store.writes().len(), 1);
        assert_eq!(store.describe(), "recording(memory)");
    }
}

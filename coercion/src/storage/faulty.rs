//! [`FaultyStore`]: a store wrapper that makes chosen writes fail, to test how the engine
//! survives storage faults (disk full, I/O errors, a busy database).

use parking_lot::Mutex;

use super::{Change, ListFilter, PlanSummary, Store, StoreError};
use crate::plugin::BoxFuture;
use crate::workflow::{Plan, PlanId};

/// Which writes (`create`, `apply`, `delete` calls, numbered from 1 in call order) fail.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultRule {
    /// None.
    Never,
    /// Only write number `n`.
    Nth(u64),
    /// Each write, independently, with this probability; the same seed fails the same writes.
    Random {
        /// Between 0 (never) and 1 (always).
        probability: f64,
        /// Seed of the random sequence.
        seed: u64,
    },
    /// Every write after the first `n`.
    After(u64),
}

/// The error an injected fault gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// [`StoreError::Transient`], like a busy database: the engine retries.
    Transient,
    /// [`StoreError::Permanent`], like a full disk: the engine stops the plan.
    Permanent,
    /// The write panics, like a bug in a store: the engine ends the run as an internal error.
    Panic,
}

/// Whether a failing write happens anyway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FaultTiming {
    /// The write is not passed on: nothing is stored (the default).
    #[default]
    Instead,
    /// The write is passed on and stored, then the caller gets the error anyway, as when the
    /// acknowledgement of a commit is lost.
    AfterWrite,
}

struct Faults {
    rule: FaultRule,
    kind: FaultKind,
    timing: FaultTiming,
    rng: fastrand::Rng,
    writes: u64,
    injected: u64,
}

impl Faults {
    /// Counts a write and tells whether it fails, and with which error.
    fn next(&mut self, what: &str) -> Option<StoreError> {
        self.writes += 1;
        let n = self.writes;
        let fail = match self.rule {
            FaultRule::Never => false,
            FaultRule::Nth(k) => n == k,
            FaultRule::Random { probability, .. } => self.rng.f64() < probability,
            FaultRule::After(k) => n > k,
        };
        if !fail {
            return None;
        }
        self.injected += 1;
        Some(match self.kind {
            FaultKind::Transient => StoreError::transient(format!(
                "injected fault: write #{n} ({what}): database is busy"
            )),
            FaultKind::Permanent => {
                StoreError::permanent(format!("injected fault: write #{n} ({what}): disk is full"))
            }
            // The message of the panic `write` raises instead of returning an error.
            FaultKind::Panic => StoreError::permanent(format!(
                "injected fault: write #{n} ({what}): a bug in the store"
            )),
        })
    }
}

/// Wraps a store and makes the writes chosen by a [`FaultRule`] fail with a [`FaultKind`] of
/// error; reads and the ownership hooks (`acquire`, `release`, `claim_runnable`,
/// `request_start`) always pass through. Writes are counted, and faults decided, when
/// `create`/`apply`/`delete` is called, so the numbering follows the order of the calls.
pub struct FaultyStore<S> {
    inner: S,
    faults: Mutex<Faults>,
}

impl<S: Store> FaultyStore<S> {
    /// A wrapper that fails nothing until [`set_faults`](Self::set_faults) is called.
    pub fn new(inner: S) -> FaultyStore<S> {
        FaultyStore::failing(inner, FaultRule::Never, FaultKind::Transient)
    }

    /// A wrapper that fails the writes `rule` chooses with errors of `kind`.
    pub fn failing(inner: S, rule: FaultRule, kind: FaultKind) -> FaultyStore<S> {
        let rng = fastrand::Rng::with_seed(seed_of(&rule));
        FaultyStore {
            inner,
            faults: Mutex::new(Faults {
                rule,
                kind,
                timing: FaultTiming::Instead,
                rng,
                writes: 0,
                injected: 0,
            }),
        }
    }

    /// Whether failing writes are dropped (the default) or stored anyway.
    pub fn with_timing(self, timing: FaultTiming) -> FaultyStore<S> {
        self.faults.lock().timing = timing;
        self
    }

    /// From now on, fails the writes `rule` chooses with errors of `kind`. Write numbers keep
    /// counting from the writes already made; a random rule starts its sequence again.
    pub fn set_faults(&self, rule: FaultRule, kind: FaultKind) {
        let mut faults = self.faults.lock();
        faults.rng = fastrand::Rng::with_seed(seed_of(&rule));
        faults.rule = rule;
        faults.kind = kind;
    }

    /// From now on, fails nothing.
    pub fn heal(&self) {
        self.faults.lock().rule = FaultRule::Never;
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// How many writes were called so far.
    pub fn writes(&self) -> u64 {
        self.faults.lock().writes
    }

    /// How many of them were failed on purpose.
    pub fn injected(&self) -> u64 {
        self.faults.lock().injected
    }

    fn write<'a>(
        &'a self,
        what: impl FnOnce() -> String,
        write: impl FnOnce() -> BoxFuture<'a, Result<(), StoreError>>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (fault, timing, kind) = {
            let mut faults = self.faults.lock();
            (faults.next(&what()), faults.timing, faults.kind)
        };
        if let (Some(e), FaultKind::Panic) = (&fault, kind) {
            let message = e.to_string();
            return Box::pin(async move { panic!("{message}") });
        }
        match (fault, timing) {
            (None, _) => write(),
            (Some(e), FaultTiming::Instead) => Box::pin(async move { Err(e) }),
            (Some(e), FaultTiming::AfterWrite) => {
                let written = write();
                Box::pin(async move {
                    written.await?;
                    Err(e)
                })
            }
        }
    }
}

fn seed_of(rule: &FaultRule) -> u64 {
    match rule {
        FaultRule::Random { seed, .. } => *seed,
        _ => 0,
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn create<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Result<(), StoreError>> {
        self.write(
            || format!("create plan {}", plan.id),
            || self.inner.create(plan),
        )
    }

    fn apply<'a>(
        &'a self,
        id: PlanId,
        changes: &'a [Change],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.write(
            || format!("apply {} changes to plan {id}", changes.len()),
            || self.inner.apply(id, changes),
        )
    }

    fn read(&self, id: PlanId) -> BoxFuture<'_, Result<Plan, StoreError>> {
        self.inner.read(id)
    }

    fn read_page(
        &self,
        id: PlanId,
        spec: super::PageSpec,
    ) -> BoxFuture<'_, Result<super::PlanPage, StoreError>> {
        self.inner.read_page(id, spec)
    }

    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> BoxFuture<'a, Result<Vec<PlanSummary>, StoreError>> {
        self.inner.list(filter)
    }

    fn delete(&self, id: PlanId) -> BoxFuture<'_, Result<(), StoreError>> {
        self.write(|| format!("delete plan {id}"), || self.inner.delete(id))
    }

    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
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
    use crate::storage::contract::{at, sample_plan};
    use crate::workflow::Reason;

    fn heartbeat(i: i64) -> [Change; 1] {
        [Change::Heartbeat(at(i, 0))]
    }

    /// Applies heartbeats 1..=n and returns which failed (1-based write numbers, the create
    /// being write 1).
    async fn failures(store: &FaultyStore<MemoryStore>, plan: &Plan, n: i64) -> Vec<u64> {
        let mut failed = Vec::new();
        for i in 1..=n {
            if store.apply(plan.id, &heartbeat(i)).await.is_err() {
                failed.push(i as u64 + 1);
            }
        }
        failed
    }

    #[tokio::test]
    async fn fails_only_the_nth_write_and_does_not_pass_it_on() {
        let plan = sample_plan("nth");
        let store =
            FaultyStore::failing(MemoryStore::new(), FaultRule::Nth(3), FaultKind::Transient);
        store.create(&plan).await.unwrap();
        store.apply(plan.id, &heartbeat(1)).await.unwrap();
        let err = store
            .apply(plan.id, &[Change::Reason(Reason::Block)])
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(err.to_string().contains("write #3"), "{err}");
        let read = store.read(plan.id).await.unwrap();
        assert_eq!(
            read.reason(),
            Reason::None,
            "the failed write was not stored"
        );
        assert_eq!(read.heartbeat(), Some(at(1, 0)));
        store.apply(plan.id, &heartbeat(4)).await.unwrap();
        assert_eq!((store.writes(), store.injected()), (4, 1));
    }

    #[tokio::test]
    async fn fails_everything_after_n_until_healed_with_permanent_errors() {
        let plan = sample_plan("after");
        let store = FaultyStore::failing(
            MemoryStore::new(),
            FaultRule::After(2),
            FaultKind::Permanent,
        );
        store.create(&plan).await.unwrap();
        assert_eq!(failures(&store, &plan, 5).await, vec![3, 4, 5, 6]);
        let err = store.delete(plan.id).await.unwrap_err();
        assert!(matches!(err, StoreError::Permanent { .. }), "{err:?}");
        assert_eq!(
            store.read(plan.id).await.unwrap().heartbeat(),
            Some(at(1, 0)),
            "reads pass through"
        );
        store.heal();
        assert_eq!(failures(&store, &plan, 3).await, Vec::<u64>::new());
        assert_eq!(
            store.read(plan.id).await.unwrap().heartbeat(),
            Some(at(3, 0))
        );
    }

    #[tokio::test]
    async fn random_faults_follow_the_seed_and_the_probability() {
        let run = |probability: f64, seed: u64| async move {
            let plan = sample_plan("random");
            let store = FaultyStore::new(MemoryStore::new());
            store.create(&plan).await.unwrap();
            store.set_faults(
                FaultRule::Random { probability, seed },
                FaultKind::Transient,
            );
            failures(&store, &plan, 400).await
        };
        let a = run(0.25, 42).await;
        assert_eq!(
            a,
            run(0.25, 42).await,
            "the same seed fails the same writes"
        );
        assert_ne!(a, run(0.25, 43).await, "another seed fails other writes");
        assert!(
            (60..=140).contains(&a.len()),
            "{} of 400 writes failed with p = 0.25",
            a.len()
        );
        assert!(run(0.0, 1).await.is_empty());
        assert_eq!(run(1.0, 1).await.len(), 400);
    }

    #[tokio::test]
    async fn after_write_timing_stores_the_write_but_reports_the_error() {
        let plan = sample_plan("lost ack");
        let store =
            FaultyStore::failing(MemoryStore::new(), FaultRule::Nth(2), FaultKind::Permanent)
                .with_timing(FaultTiming::AfterWrite);
        store.create(&plan).await.unwrap();
        assert!(
            store
                .apply(plan.id, &[Change::Reason(Reason::PreCheck)])
                .await
                .is_err()
        );
        assert_eq!(
            store.read(plan.id).await.unwrap().reason(),
            Reason::PreCheck,
            "the write was stored"
        );
        // A write the inner store refuses reports the inner error, not the injected one.
        store.set_faults(FaultRule::Nth(3), FaultKind::Permanent);
        let unknown = PlanId::new_v7();
        assert_eq!(
            store.delete(unknown).await,
            Err(StoreError::NotFound(unknown))
        );
        assert_eq!(store.describe(), "faulty(memory)");
    }
}

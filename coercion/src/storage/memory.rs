//! [`MemoryStore`]: plans kept in this process only.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Change, Changed, ListFilter, PlanSummary, Store, StoreError};
use crate::plugin::BoxFuture;
use crate::workflow::{Plan, PlanId, Status};

/// Plans kept in memory: for tests and ephemeral runs. Cloning gives another handle to the same
/// plans. Nothing survives the process.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), coercion::Error> {
/// use coercion::{MemoryStore, Workstream};
/// let store = MemoryStore::new();
/// // Two workstreams over the same plans (a clone is another handle, not a copy).
/// let ws = Workstream::builder().store(store.clone()).build().await?;
/// # drop(ws);
/// # Ok(()) }
/// ```
///
/// It tells of every write ([`Store::changes`]): all its writers are in this process.
#[derive(Clone)]
pub struct MemoryStore {
    plans: Arc<Mutex<HashMap<PlanId, Plan>>>,
    notices: tokio::sync::broadcast::Sender<Changed>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            plans: Arc::default(),
            notices: tokio::sync::broadcast::channel(1_024).0,
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Tells the receivers of [`Store::changes`] that plan `id` changed (if there are any).
    fn notify(&self, id: PlanId) {
        if self.notices.receiver_count() > 0 {
            let _ = self.notices.send(Changed::Plans(Arc::new([id])));
        }
    }

    fn apply_now(&self, id: PlanId, changes: &[Change]) -> Result<(), StoreError> {
        let mut plans = self.plans.lock();
        let plan = plans.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        // Atomic: check the whole batch first, so a bad change cannot leave it half applied.
        super::check_batch(plan, changes, false)?;
        for c in changes {
            c.apply_to(plan)?;
        }
        Ok(())
    }
}

impl Store for MemoryStore {
    fn create<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = {
            match self.plans.lock().entry(plan.id) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    Err(StoreError::AlreadyExists(plan.id))
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(plan.clone());
                    Ok(())
                }
            }
        };
        if result.is_ok() {
            self.notify(plan.id);
        }
        Box::pin(async move { result })
    }

    fn apply<'a>(
        &'a self,
        id: PlanId,
        changes: &'a [Change],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = self.apply_now(id, changes);
        if result.is_ok() {
            self.notify(id);
        }
        Box::pin(async move { result })
    }

    fn read(&self, id: PlanId) -> BoxFuture<'_, Result<Plan, StoreError>> {
        let result = self
            .plans
            .lock()
            .get(&id)
            .cloned()
            .ok_or(StoreError::NotFound(id));
        Box::pin(async move { result })
    }

    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> BoxFuture<'a, Result<Vec<PlanSummary>, StoreError>> {
        let mut all: Vec<PlanSummary> = self
            .plans
            .lock()
            .values()
            .map(PlanSummary::of)
            .filter(|s| filter.matches(s))
            .collect();
        all.sort_by(|a, b| b.submit_time.cmp(&a.submit_time).then(b.id.cmp(&a.id)));
        let page = all
            .into_iter()
            .skip(filter.offset)
            .take(filter.limit.unwrap_or(usize::MAX))
            .collect();
        Box::pin(async move { Ok(page) })
    }

    fn delete(&self, id: PlanId) -> BoxFuture<'_, Result<(), StoreError>> {
        let result = {
            let mut plans = self.plans.lock();
            match plans.get(&id) {
                None => Err(StoreError::NotFound(id)),
                Some(p) if p.status() == Status::Running => Err(StoreError::Running(id)),
                Some(_) => {
                    plans.remove(&id);
                    Ok(())
                }
            }
        };
        if result.is_ok() {
            self.notify(id);
        }
        Box::pin(async move { result })
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Changed>> {
        Some(self.notices.subscribe())
    }
}

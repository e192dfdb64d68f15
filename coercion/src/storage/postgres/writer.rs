//! The writers: a few tasks (shards), each owning one connection. Writes are queued to the
//! shard of their plan (so one plan's writes run in call order) when `create`/`apply`/`delete`
//! is *called*. A shard takes everything queued at the moment (a group), runs it in one
//! transaction, commits once and only then answers every caller: group commit, as in the
//! SQLite store. When a write of the group fails, the transaction is rolled back and each write
//! of the group runs again in its own transaction, so only the failing caller gets the error.
//!
//! Every `apply` is fenced: it first locks the plan's row and checks the lease. A write of a
//! process that holds the plan's lease must carry the lease's current epoch; a write of a
//! process that holds no lease is accepted only while no live lease exists. A write whose
//! check fails changes nothing and gets [`StoreError::Locked`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::codec::{Op, PreparedPlan, pg_error};
use crate::storage::StoreError;
use crate::workflow::PlanId;

/// How a write is checked against the plan's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fence {
    /// This process holds the lease at this epoch.
    Lease { owner: Uuid, epoch: i64 },
    /// This process holds no lease on the plan: accepted only while nobody holds a live one.
    Unleased,
}

/// One queued write.
pub(super) enum Write {
    Create(Box<PreparedPlan>),
    Apply {
        id: PlanId,
        ops: Vec<Op>,
        fence: Fence,
    },
    Delete(PlanId),
}

/// A write and where to send its result.
pub(super) struct Request {
    pub write: Write,
    pub reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Counters of the writers, read by [`PostgresStore::stats`](super::PostgresStore::stats).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub commits: AtomicU64,
    pub writes: AtomicU64,
    pub failed_writes: AtomicU64,
    pub fenced_writes: AtomicU64,
    pub largest_group: AtomicU64,
}

/// One shard: a queue and the task that serves it.
pub(super) struct Shard {
    pub pool: deadpool_postgres::Pool,
    pub store: Arc<str>,
    pub counters: Arc<Counters>,
    pub max_group: usize,
    /// How far a heartbeat pushes the lease's expiry.
    pub lease: Duration,
}

const LOCK_PLAN: &str = "SELECT status, lease_owner, lease_epoch, \
     (lease_owner IS NULL OR lease_expires IS NULL OR lease_expires < now()) AS free, lease_expires::text \
     FROM plans WHERE id = $1 FOR NO KEY UPDATE";
const PLAN_STATUS: &str = "SELECT status FROM plans WHERE id = $1 FOR NO KEY UPDATE";
const INSERT_PLAN: &str = "INSERT INTO plans (id, group_id, name, descr, submit_time_ns, status, start_ns, end_ns, \
     reason, heartbeat_ns, paused) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING";
const INSERT_DEFINITION: &str =
    "INSERT INTO plan_definitions (plan_id, definition) VALUES ($1, $2)";
const INSERT_OBJECTS: &str = "INSERT INTO objects (plan_id, id, loc, kind, status, start_ns, end_ns) \
     SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])";
const INSERT_ATTEMPTS: &str = "INSERT INTO attempts (plan_id, action_id, idx, start_ns, end_ns, outcome) \
     SELECT $1, * FROM unnest($2::uuid[], $3::int[], $4::bigint[], $5::bigint[], $6::text[])";
const UPDATE_OBJECT_STATE: &str = "UPDATE objects SET status = $4, start_ns = $5, end_ns = $6 \
     WHERE plan_id = $1 AND id = $2 AND loc = $3";
/// Sets attempt `$4` of an action (insert or update) and drops later ones, in one statement.
/// Returns the number of attempts before, or no row if the action does not exist; writes
/// nothing when attempt `$4` would leave a gap.
const SET_ATTEMPT: &str = "WITH obj AS ( \
       SELECT (SELECT count(*) FROM attempts a WHERE a.plan_id = $1 AND a.action_id = $2) AS n \
       FROM objects WHERE plan_id = $1 AND id = $2 AND loc = $3 AND kind = 'action'), \
     del AS ( \
       DELETE FROM attempts WHERE plan_id = $1 AND action_id = $2 AND idx > $4 \
       AND EXISTS (SELECT 1 FROM obj WHERE n >= $4)), \
     up AS ( \
       INSERT INTO attempts (plan_id, action_id, idx, start_ns, end_ns, outcome) \
       SELECT $1, $2, $4, $5, $6, $7 FROM obj WHERE n >= $4 \
       ON CONFLICT (plan_id, action_id, idx) DO UPDATE \
       SET start_ns = EXCLUDED.start_ns, end_ns = EXCLUDED.end_ns, outcome = EXCLUDED.outcome) \
     SELECT n FROM obj";
const RESET_ACTION: &str = "UPDATE objects SET status = 'NotStarted', start_ns = NULL, end_ns = NULL \
     WHERE plan_id = $1 AND id = $2 AND loc = $3 AND kind = 'action'";
const DELETE_ATTEMPTS: &str = "DELETE FROM attempts WHERE plan_id = $1 AND action_id = $2";
/// Every column of the plan's row that changes take part in: `$n` flags say which are set.
const UPDATE_PLAN: &str = "UPDATE plans SET \
       status = CASE WHEN $2 THEN $3 ELSE status END, \
       start_ns = CASE WHEN $2 THEN $4 ELSE start_ns END, \
       end_ns = CASE WHEN $2 THEN $5 ELSE end_ns END, \
       reason = coalesce($6, reason), \
       heartbeat_ns = coalesce($7, heartbeat_ns), \
       paused = coalesce($8, paused), \
       lease_expires = CASE WHEN $9 THEN now() + make_interval(secs => $10) ELSE lease_expires END \
     WHERE id = $1";
const DELETE_PLAN: &str = "DELETE FROM plans WHERE id = $1";

/// Why a request failed: its own error, or a failure of the database or the connection that
/// spoils the whole group.
enum Failure {
    Request(StoreError),
    Group(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Request(e)
    }
}

type Conn = deadpool_postgres::Object;

impl Shard {
    /// Serves requests until every sender is gone.
    pub async fn run(self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut group = Vec::with_capacity(self.max_group);
        let mut conn: Option<Conn> = None;
        while let Some(first) = requests.recv().await {
            group.push(first);
            while group.len() < self.max_group {
                match requests.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut conn, &mut group).await;
        }
    }

    fn err(&self, doing: &str, e: &tokio_postgres::Error) -> Failure {
        Failure::Group(pg_error(&self.store, doing, e))
    }

    async fn commit_group(&self, conn: &mut Option<Conn>, group: &mut Vec<Request>) {
        let n = group.len() as u64;
        self.counters.writes.fetch_add(n, Ordering::Relaxed);
        self.counters.largest_group.fetch_max(n, Ordering::Relaxed);
        let results = match self.connection(conn).await {
            Err(e) => vec![Err(e); group.len()],
            Ok(c) => match self.run_group(c, group).await {
                Ok(()) => {
                    self.counters.commits.fetch_add(1, Ordering::Relaxed);
                    vec![Ok(()); group.len()]
                }
                Err(Failure::Group(e)) => {
                    let _ = c.batch_execute("ROLLBACK").await;
                    if c.is_closed() {
                        *conn = None;
                    }
                    vec![Err(e); group.len()]
                }
                Err(Failure::Request(_)) if group.len() > 1 => {
                    // One write failed: run each alone so only its caller gets the error.
                    let _ = c.batch_execute("ROLLBACK").await;
                    let mut results = Vec::with_capacity(group.len());
                    for request in group.iter() {
                        let one = std::slice::from_ref(request);
                        results.push(match self.run_group(c, one).await {
                            Ok(()) => {
                                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                                Ok(())
                            }
                            Err(Failure::Request(e) | Failure::Group(e)) => {
                                let _ = c.batch_execute("ROLLBACK").await;
                                Err(e)
                            }
                        });
                    }
                    if c.is_closed() {
                        *conn = None;
                    }
                    results
                }
                Err(Failure::Request(e)) => {
                    let _ = c.batch_execute("ROLLBACK").await;
                    vec![Err(e)]
                }
            },
        };
        let failed = results.iter().filter(|r| r.is_err()).count() as u64;
        let fenced = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::Locked(_))))
            .count() as u64;
        self.counters
            .failed_writes
            .fetch_add(failed, Ordering::Relaxed);
        self.counters
            .fenced_writes
            .fetch_add(fenced, Ordering::Relaxed);
        for (request, result) in group.drain(..).zip(results) {
            let _ = request.reply.send(result);
        }
    }

    async fn connection<'c>(&self, conn: &'c mut Option<Conn>) -> Result<&'c mut Conn, StoreError> {
        if conn.as_ref().is_some_and(|c| c.is_closed()) {
            *conn = None;
        }
        if conn.is_none() {
            let c = self.pool.get().await.map_err(|e| {
                StoreError::Transient(format!("{}: cannot get a connection: {e}", self.store))
            })?;
            *conn = Some(c);
        }
        Ok(conn.as_mut().expect("just set"))
    }

    /// Runs `group` in one transaction and commits it. The writes of one plan run one after
    /// the other, in order; the plans run concurrently, so their statements are pipelined on
    /// the connection (one round trip per step of the longest chain, not per statement).
    async fn run_group(&self, c: &Conn, group: &[Request]) -> Result<(), Failure> {
        c.batch_execute("BEGIN")
            .await
            .map_err(|e| self.err("starting a transaction", &e))?;
        let mut chains: Vec<Vec<&Write>> = Vec::new();
        let mut chain_of: HashMap<PlanId, usize> = HashMap::new();
        for request in group {
            let id = match &request.write {
                Write::Create(plan) => plan.id,
                Write::Apply { id, .. } | Write::Delete(id) => *id,
            };
            let i = *chain_of.entry(id).or_insert_with(|| {
                chains.push(Vec::new());
                chains.len() - 1
            });
            chains[i].push(&request.write);
        }
        let outcomes = futures_util::future::join_all(chains.iter().map(|chain| async move {
            // The plan's row stays locked by this transaction once fenced, so a later write of
            // the same plan with the same fence needs no second check.
            let mut checked: Option<(Fence, bool)> = None;
            for write in chain {
                match write {
                    Write::Create(plan) => self.create(c, plan).await?,
                    Write::Apply { id, ops, fence } => {
                        let leased = match checked {
                            Some((f, leased)) if f == *fence => leased,
                            _ => {
                                let leased = self.fence(c, *id, *fence).await?;
                                checked = Some((*fence, leased));
                                leased
                            }
                        };
                        self.apply(c, *id, ops, leased).await?
                    }
                    Write::Delete(id) => {
                        checked = None;
                        self.delete(c, *id).await?
                    }
                }
            }
            Ok::<(), Failure>(())
        }))
        .await;
        let mut first_request_error = None;
        for outcome in outcomes {
            match outcome {
                Ok(()) => {}
                Err(Failure::Group(e)) => return Err(Failure::Group(e)),
                Err(Failure::Request(e)) => {
                    first_request_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_request_error {
            return Err(Failure::Request(e));
        }
        c.batch_execute("COMMIT")
            .await
            .map_err(|e| self.err("committing", &e))
    }

    async fn exec(
        &self,
        c: &Conn,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        doing: &(dyn Fn() -> String + Sync),
    ) -> Result<u64, Failure> {
        let stmt = c
            .prepare_cached(sql)
            .await
            .map_err(|e| self.fail(&doing(), e))?;
        c.execute(&stmt, params)
            .await
            .map_err(|e| self.fail(&doing(), e))
    }

    async fn query_opt(
        &self,
        c: &Conn,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        doing: &(dyn Fn() -> String + Sync),
    ) -> Result<Option<tokio_postgres::Row>, Failure> {
        let stmt = c
            .prepare_cached(sql)
            .await
            .map_err(|e| self.fail(&doing(), e))?;
        c.query_opt(&stmt, params)
            .await
            .map_err(|e| self.fail(&doing(), e))
    }

    /// A database error inside a write: an error of the whole group either way (the
    /// transaction is aborted), but retried write by write when the database is fine.
    fn fail(&self, doing: &str, e: tokio_postgres::Error) -> Failure {
        let err = pg_error(&self.store, doing, &e);
        if e.is_closed() || err.is_transient() {
            Failure::Group(err)
        } else {
            Failure::Request(err)
        }
    }

    async fn create(&self, c: &Conn, p: &PreparedPlan) -> Result<(), Failure> {
        let doing = || format!("creating plan {}", p.id);
        let id = p.id.0;
        let n = self
            .exec(
                c,
                INSERT_PLAN,
                &[
                    &id,
                    &p.group_id,
                    &p.name,
                    &p.descr,
                    &p.submit_time,
                    &p.state.status,
                    &p.state.start,
                    &p.state.end,
                    &p.reason,
                    &p.heartbeat,
                    &p.paused,
                ],
                &doing,
            )
            .await?;
        if n == 0 {
            return Err(Failure::Request(StoreError::AlreadyExists(p.id)));
        }
        self.exec(c, INSERT_DEFINITION, &[&id, &p.definition], &doing)
            .await?;
        let o = &p.objects;
        if !o.id.is_empty() {
            self.exec(
                c,
                INSERT_OBJECTS,
                &[&id, &o.id, &o.loc, &o.kind, &o.status, &o.start, &o.end],
                &doing,
            )
            .await?;
        }
        let a = &p.attempts;
        if !a.action_id.is_empty() {
            self.exec(
                c,
                INSERT_ATTEMPTS,
                &[&id, &a.action_id, &a.idx, &a.start, &a.end, &a.outcome],
                &doing,
            )
            .await?;
        }
        Ok(())
    }

    /// Locks the plan's row and checks the lease. Returns whether this process holds it.
    async fn fence(&self, c: &Conn, id: PlanId, fence: Fence) -> Result<bool, Failure> {
        let doing = || format!("updating plan {id}");
        let Some(row) = self.query_opt(c, LOCK_PLAN, &[&id.0], &doing).await? else {
            return Err(Failure::Request(StoreError::NotFound(id)));
        };
        let owner: Option<Uuid> = row.get(1);
        let epoch: i64 = row.get(2);
        let free: bool = row.get(3);
        let expires: Option<String> = row.get(4);
        match fence {
            Fence::Lease {
                owner: me,
                epoch: mine,
            } => {
                if owner == Some(me) && epoch == mine {
                    return Ok(true);
                }
                let holder = match owner {
                    Some(o) if o == me => "this process again, under a newer lease".to_owned(),
                    Some(o) => format!("process {o} (lease epoch {epoch})"),
                    None => "no process (the lease was released)".to_owned(),
                };
                Err(Failure::Request(StoreError::Locked(format!(
                    "{}: plan {id}: this process's lease (epoch {mine}) was lost — the plan is now held by {holder}; \
                     this process no longer writes to it",
                    self.store
                ))))
            }
            Fence::Unleased => {
                if free {
                    return Ok(false);
                }
                Err(Failure::Request(StoreError::Locked(format!(
                    "{}: plan {id} is leased by process {} until {} (epoch {epoch}); only that process may change it",
                    self.store,
                    owner.map(|o| o.to_string()).unwrap_or_default(),
                    expires.unwrap_or_default()
                ))))
            }
        }
    }

    /// Applies `ops` to plan `id`, whose row [`fence`](Self::fence) locked and checked
    /// (`leased`: this process holds its lease).
    async fn apply(&self, c: &Conn, id: PlanId, ops: &[Op], leased: bool) -> Result<(), Failure> {
        let doing = || format!("updating plan {id}");
        let missing = |what: String| Failure::Request(StoreError::Permanent(what));
        let key = id.0;
        // Changes of the plan's own row are gathered into one update; they touch no object, so
        // their order relative to object changes does not matter.
        let mut state = None;
        let mut reason: Option<&str> = None;
        let mut heartbeat: Option<i64> = None;
        let mut paused: Option<bool> = None;
        for op in ops {
            match op {
                Op::PlanState {
                    id: object,
                    state: s,
                } => {
                    if *object != id.0 {
                        return Err(missing(format!("plan {id} has no object {object} at Plan")));
                    }
                    state = Some(s);
                }
                Op::ObjectState {
                    id: object,
                    loc,
                    debug_loc,
                    state: s,
                } => {
                    let n = self
                        .exec(
                            c,
                            UPDATE_OBJECT_STATE,
                            &[&key, object, loc, &s.status, &s.start, &s.end],
                            &doing,
                        )
                        .await?;
                    if n == 0 {
                        return Err(missing(format!(
                            "plan {id} has no object {object} at {debug_loc:?}"
                        )));
                    }
                }
                Op::Attempt {
                    id: object,
                    loc,
                    debug_loc,
                    index,
                    cols,
                } => {
                    let row = self
                        .query_opt(
                            c,
                            SET_ATTEMPT,
                            &[
                                &key,
                                object,
                                loc,
                                index,
                                &cols.start,
                                &cols.end,
                                &cols.outcome,
                            ],
                            &doing,
                        )
                        .await?;
                    let Some(row) = row else {
                        return Err(missing(format!(
                            "plan {id} has no action {object} at {debug_loc:?}"
                        )));
                    };
                    let count: i64 = row.get(0);
                    if i64::from(*index) > count {
                        return Err(missing(format!(
                            "plan {id}: attempt {index} of the action at {debug_loc:?} skips attempt {count}"
                        )));
                    }
                }
                Op::Reset {
                    id: object,
                    loc,
                    debug_loc,
                } => {
                    let n = self
                        .exec(c, RESET_ACTION, &[&key, object, loc], &doing)
                        .await?;
                    if n == 0 {
                        return Err(missing(format!(
                            "plan {id} has no action {object} at {debug_loc:?}"
                        )));
                    }
                    self.exec(c, DELETE_ATTEMPTS, &[&key, object], &doing)
                        .await?;
                }
                Op::Reason(r) => reason = Some(r),
                Op::Heartbeat(t) => heartbeat = Some(*t),
                Op::Paused(p) => paused = Some(*p),
            }
        }
        // A heartbeat of the lease holder renews the lease.
        let renew = leased && heartbeat.is_some();
        if state.is_some() || reason.is_some() || heartbeat.is_some() || paused.is_some() {
            let has_state = state.is_some();
            let status = state.map(|s| s.status);
            let start = state.and_then(|s| s.start);
            let end = state.and_then(|s| s.end);
            let lease_secs = self.lease.as_secs_f64();
            self.exec(
                c,
                UPDATE_PLAN,
                &[
                    &key,
                    &has_state,
                    &status,
                    &start,
                    &end,
                    &reason,
                    &heartbeat,
                    &paused,
                    &renew,
                    &lease_secs,
                ],
                &doing,
            )
            .await?;
        }
        Ok(())
    }

    async fn delete(&self, c: &Conn, id: PlanId) -> Result<(), Failure> {
        let doing = || format!("deleting plan {id}");
        let row = self.query_opt(c, PLAN_STATUS, &[&id.0], &doing).await?;
        match row.map(|r| r.get::<_, String>(0)).as_deref() {
            None => Err(Failure::Request(StoreError::NotFound(id))),
            Some("Running") => Err(Failure::Request(StoreError::Running(id))),
            Some(_) => {
                self.exec(c, DELETE_PLAN, &[&id.0], &doing).await?;
                Ok(())
            }
        }
    }
}

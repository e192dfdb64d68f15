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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::codec::{PreparedPlan, loc_json, pg_error};
use super::notify;
use crate::storage::StoreError;
use crate::storage::sql::{Failure, GroupCounters, Op};
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
pub(super) type Request = crate::storage::sql::Request<Write>;

/// Counters of the writers, read by [`PostgresStore::stats`](super::PostgresStore::stats).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub group: GroupCounters,
    pub fenced_writes: AtomicU64,
}

/// One shard: a queue and the task that serves it.
pub(super) struct Shard {
    pub pool: deadpool_postgres::Pool,
    pub store: Arc<str>,
    /// The store's schema, named in the notice of each committed group.
    pub schema: Arc<str>,
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
     reason, heartbeat_ns, paused, plugins) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (id) DO NOTHING";
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
       resumptions = CASE WHEN $13::text IS NULL THEN resumptions \
         ELSE (resumptions::jsonb || $13::text::jsonb)::text END, \
       decisions = CASE WHEN $14::text IS NULL THEN decisions \
         ELSE (decisions::jsonb || $14::text::jsonb)::text END, \
       lease_expires = CASE WHEN $9 AND lease_owner = $11 AND lease_epoch = $12 \
         THEN now() + make_interval(secs => $10) ELSE lease_expires END \
     WHERE id = $1";
const DELETE_PLAN: &str = "DELETE FROM plans WHERE id = $1 AND status <> 'Running'";

/// A writer's connection and its prepared statements.
struct Conn {
    client: deadpool_postgres::Object,
    st: Statements,
}

impl std::ops::Deref for Conn {
    type Target = deadpool_postgres::Object;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

/// The writer's statements, prepared on its connection.
struct Statements {
    lock_plan: Statement,
    plan_status: Statement,
    insert_plan: Statement,
    insert_definition: Statement,
    insert_objects: Statement,
    insert_attempts: Statement,
    update_object_state: Statement,
    set_attempt: Statement,
    reset_action: Statement,
    delete_attempts: Statement,
    update_plan: Statement,
    delete_plan: Statement,
    notify: Statement,
}

impl Statements {
    async fn prepare(c: &deadpool_postgres::Object) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            lock_plan: c.prepare(LOCK_PLAN).await?,
            plan_status: c.prepare(PLAN_STATUS).await?,
            insert_plan: c.prepare(INSERT_PLAN).await?,
            insert_definition: c.prepare(INSERT_DEFINITION).await?,
            insert_objects: c.prepare(INSERT_OBJECTS).await?,
            insert_attempts: c.prepare(INSERT_ATTEMPTS).await?,
            update_object_state: c.prepare(UPDATE_OBJECT_STATE).await?,
            set_attempt: c.prepare(SET_ATTEMPT).await?,
            reset_action: c.prepare(RESET_ACTION).await?,
            delete_attempts: c.prepare(DELETE_ATTEMPTS).await?,
            update_plan: c.prepare(UPDATE_PLAN).await?,
            delete_plan: c.prepare(DELETE_PLAN).await?,
            notify: c.prepare("SELECT pg_notify($1, $2)").await?,
        })
    }
}

type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;
type Pending<'a, T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'a>,
>;

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

    fn err(&self, doing: &str, e: tokio_postgres::Error) -> Failure {
        Failure::Group(pg_error(&self.store, doing, e))
    }

    async fn commit_group(&self, conn: &mut Option<Conn>, group: &mut Vec<Request>) {
        self.counters.group.group(group.len());
        let results = match self.connection(conn).await {
            Err(e) => vec![Err(e); group.len()],
            Ok(c) => match self.run_group(c, group).await {
                Ok(()) => {
                    self.counters.group.committed();
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
                                self.counters.group.committed();
                                Ok(())
                            }
                            Err(failure) => {
                                let _ = c.batch_execute("ROLLBACK").await;
                                Err(failure.into_error())
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
        self.counters.group.results(&results);
        let fenced = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::Locked(_))))
            .count() as u64;
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
                StoreError::transient(format!("{}: cannot get a connection", self.store))
                    .caused_by(e)
            })?;
            let st = Statements::prepare(&c)
                .await
                .map_err(|e| pg_error(&self.store, "preparing statements", e))?;
            *conn = Some(Conn { client: c, st });
        }
        Ok(conn.as_mut().expect("just set"))
    }

    /// Runs `group` in one transaction and commits it. Every statement of the group is sent
    /// at once, in order (each write issues all its statements when first polled, and the
    /// writes are polled in order), pipelined on the connection; the results are checked
    /// afterwards, write by write. A write that fails is undone with the whole transaction and
    /// the group runs again write by write, so what statements after a failing one did never
    /// counts.
    async fn run_group(&self, c: &Conn, group: &[Request]) -> Result<(), Failure> {
        c.batch_execute("BEGIN")
            .await
            .map_err(|e| self.err("starting a transaction", e))?;
        let outcomes = futures_util::future::join_all(group.iter().map(|r| async move {
            match &r.write {
                Write::Create(plan) => self.create(c, plan).await,
                Write::Apply { id, ops, fence } => self.apply(c, *id, ops, *fence).await,
                Write::Delete(id) => self.delete(c, *id).await,
            }
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
        // One notice per group, naming its plans, sent right after COMMIT in the same round
        // trip but in a transaction of its own: a notice that fails (PostgreSQL's notice queue
        // full because some listener stalls) must not fail the writes, and the lock PostgreSQL
        // takes to queue a notice at commit is not held by the writes' transaction. Readers
        // also read at least every few seconds, so a lost notice only delays them.
        let payload = notify::payload(
            &self.schema,
            group.iter().map(|r| match &r.write {
                Write::Create(plan) => plan.id,
                Write::Apply { id, .. } | Write::Delete(id) => *id,
            }),
        );
        let channel = notify::CHANNEL;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&channel, &payload];
        let (committed, notified) = tokio::join!(
            biased;
            c.client.batch_execute("COMMIT"),
            c.client.execute(&c.st.notify, &params),
        );
        committed.map_err(|e| self.err("committing", e))?;
        if let Err(e) = notified {
            tracing::warn!(store = %self.store, error = %e, "telling listeners of committed changes failed; they read again within seconds");
        }
        Ok(())
    }

    /// A database error inside a write: an error of the whole group either way (the
    /// transaction is aborted), but retried write by write when the database is fine.
    fn fail(&self, doing: &str, e: tokio_postgres::Error) -> Failure {
        let closed = e.is_closed();
        let err = pg_error(&self.store, doing, e);
        if closed || err.is_transient() {
            Failure::Group(err)
        } else {
            Failure::Request(err)
        }
    }

    /// Sends a statement now (when the returned future is first polled, which `execute` does at
    /// once) and returns its row count later.
    fn exec<'a>(c: &'a Conn, st: &'a Statement, params: Params<'a>) -> Pending<'a, u64> {
        Box::pin(async move { c.client.execute(st, &params).await })
    }

    fn query_opt<'a>(
        c: &'a Conn,
        st: &'a Statement,
        params: Params<'a>,
    ) -> Pending<'a, Option<tokio_postgres::Row>> {
        Box::pin(async move {
            let mut rows = c.client.query(st, &params).await?;
            Ok(rows.pop())
        })
    }

    async fn create(&self, c: &Conn, p: &PreparedPlan) -> Result<(), Failure> {
        let id = &p.id.0;
        let st = &c.st;
        let o = &p.objects;
        let a = &p.attempts;
        // All statements are sent on the first poll, in order.
        let (plan, def, objects, attempts) = tokio::join!(
            biased;
            Self::exec(
                c,
                &st.insert_plan,
                vec![
                    id,
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
                    &p.plugins,
                ],
            ),
            Self::exec(c, &st.insert_definition, vec![id, &p.definition]),
            Self::exec_if(
                !o.id.is_empty(),
                c,
                &st.insert_objects,
                vec![id, &o.id, &o.loc, &o.kind, &o.status, &o.start, &o.end],
            ),
            Self::exec_if(
                !a.action_id.is_empty(),
                c,
                &st.insert_attempts,
                vec![id, &a.action_id, &a.idx, &a.start, &a.end, &a.outcome],
            ),
        );
        let doing = format!("creating plan {}", p.id);
        if plan.map_err(|e| self.fail(&doing, e))? == 0 {
            return Err(Failure::Request(StoreError::AlreadyExists(p.id)));
        }
        def.map_err(|e| self.fail(&doing, e))?;
        objects.map_err(|e| self.fail(&doing, e))?;
        attempts.map_err(|e| self.fail(&doing, e))?;
        Ok(())
    }

    /// [`exec`](Self::exec) if `run`, else nothing (0 rows).
    fn exec_if<'a>(
        run: bool,
        c: &'a Conn,
        st: &'a Statement,
        params: Params<'a>,
    ) -> Pending<'a, u64> {
        if run {
            Self::exec(c, st, params)
        } else {
            Box::pin(async { Ok(0) })
        }
    }

    /// Judges the locked plan row against the write's fence. Returns whether this process
    /// holds the lease.
    fn judge_fence(
        &self,
        id: PlanId,
        row: Option<tokio_postgres::Row>,
        fence: Fence,
    ) -> Result<bool, Failure> {
        let Some(row) = row else {
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

    /// Locks plan `id`'s row, checks the lease (in the same transaction) and applies `ops`.
    /// Every statement is sent on the first poll, in order; the results are judged after.
    async fn apply(&self, c: &Conn, id: PlanId, ops: &[Op], fence: Fence) -> Result<(), Failure> {
        let st = &c.st;
        let key = id.0;
        // Changes of the plan's own row are gathered into one update; they touch no object, so
        // their order relative to object changes does not matter. A heartbeat of the lease
        // holder renews the lease (the statement checks owner and epoch itself).
        let mut values = UpdateValues {
            lease_secs: self.lease.as_secs_f64(),
            ..UpdateValues::default()
        };
        let mut touches_plan = false;
        let mut bad_plan_state = None;
        for op in ops {
            match op {
                Op::PlanState {
                    id: object,
                    state: s,
                } => {
                    if *object != id.0 && bad_plan_state.is_none() {
                        bad_plan_state = Some(format!("plan {id} has no object {object} at Plan"));
                    }
                    values.has_state = true;
                    values.status = Some(s.status);
                    values.start = s.start;
                    values.end = s.end;
                    touches_plan = true;
                }
                Op::Reason(r) => {
                    values.reason = Some(r.clone());
                    touches_plan = true;
                }
                Op::Heartbeat(t) => {
                    values.heartbeat = Some(*t);
                    touches_plan = true;
                }
                Op::Paused(p) => {
                    values.paused = Some(*p);
                    touches_plan = true;
                }
                // JSON arrays of this write's resumptions and decisions, appended in one go.
                Op::Owner(json) => {
                    json_list_push(&mut values.resumptions, json);
                    touches_plan = true;
                }
                Op::Decided(json) => {
                    json_list_push(&mut values.decisions, json);
                    touches_plan = true;
                }
                _ => {}
            }
        }
        for list in [&mut values.resumptions, &mut values.decisions]
            .into_iter()
            .flatten()
        {
            list.push(']');
        }
        if let Fence::Lease { owner, epoch } = fence {
            values.owner = Some(owner);
            values.epoch = epoch;
            values.renew = values.heartbeat.is_some();
        }
        // Each object change's location as stored (JSON) and attempt index as an `int`.
        let mut keys: Vec<(String, i32)> = Vec::with_capacity(ops.len());
        for op in ops {
            keys.push(match op {
                Op::ObjectState { loc, .. } | Op::Reset { loc, .. } => (loc_json(loc), 0),
                Op::Attempt { loc, index, .. } => (
                    loc_json(loc),
                    i32::try_from(*index).map_err(|_| {
                        Failure::Request(StoreError::permanent(format!(
                            "plan {id}: attempt index {index} of the action at {loc:?} is too large"
                        )))
                    })?,
                ),
                _ => (String::new(), 0),
            });
        }
        let steps = ops.iter().zip(&keys).filter_map(
            |(op, (loc, index))| -> Option<Pending<'_, StepResult>> {
                match op {
                    Op::ObjectState {
                        id: object,
                        state: s,
                        ..
                    } => {
                        let f = Self::exec(
                            c,
                            &st.update_object_state,
                            vec![&key, object, loc, &s.status, &s.start, &s.end],
                        );
                        Some(Box::pin(async move { f.await.map(StepResult::Rows) }))
                    }
                    Op::Attempt {
                        id: object, cols, ..
                    } => {
                        let f = Self::query_opt(
                            c,
                            &st.set_attempt,
                            vec![
                                &key,
                                object,
                                loc,
                                index,
                                &cols.start,
                                &cols.end,
                                &cols.outcome,
                            ],
                        );
                        Some(Box::pin(async move {
                            f.await
                                .map(|r| StepResult::Count(r.map(|r| r.get::<_, i64>(0))))
                        }))
                    }
                    Op::Reset { id: object, .. } => {
                        let reset = Self::exec(c, &st.reset_action, vec![&key, object, loc]);
                        let delete = Self::exec(c, &st.delete_attempts, vec![&key, object]);
                        Some(Box::pin(async move {
                            let (n, d) = tokio::join!(biased; reset, delete);
                            d?;
                            n.map(StepResult::Rows)
                        }))
                    }
                    _ => None,
                }
            },
        );
        let steps: Vec<Pending<'_, StepResult>> = steps.collect();
        let (row, results, updated) = tokio::join!(
            biased;
            Self::query_opt(c, &st.lock_plan, vec![&key]),
            futures_util::future::join_all(steps),
            Self::exec_if(
                touches_plan,
                c,
                &st.update_plan,
                vec![
                    &key,
                    &values.has_state,
                    &values.status,
                    &values.start,
                    &values.end,
                    &values.reason,
                    &values.heartbeat,
                    &values.paused,
                    &values.renew,
                    &values.lease_secs,
                    &values.owner,
                    &values.epoch,
                    &values.resumptions,
                    &values.decisions,
                ],
            ),
        );
        let doing = format!("updating plan {id}");
        let fail = |e| self.fail(&doing, e);
        let missing = |what: String| Failure::Request(StoreError::permanent(what));
        self.judge_fence(id, row.map_err(&fail)?, fence)?;
        if let Some(what) = bad_plan_state {
            return Err(missing(what));
        }
        let mut results = results.into_iter();
        for op in ops {
            match op {
                Op::ObjectState {
                    id: object, loc, ..
                } => {
                    let changed = matches!(
                        results.next().transpose().map_err(&fail)?,
                        Some(StepResult::Rows(n)) if n > 0
                    );
                    if !changed {
                        return Err(missing(format!(
                            "plan {id} has no object {object} at {loc:?}"
                        )));
                    }
                }
                Op::Reset {
                    id: object, loc, ..
                } => {
                    let changed = matches!(
                        results.next().transpose().map_err(&fail)?,
                        Some(StepResult::Rows(n)) if n > 0
                    );
                    if !changed {
                        return Err(missing(format!(
                            "plan {id} has no action {object} at {loc:?}"
                        )));
                    }
                }
                Op::Attempt {
                    id: object,
                    loc,
                    index,
                    ..
                } => {
                    let count = match results.next().transpose().map_err(&fail)? {
                        Some(StepResult::Count(Some(n))) => n,
                        _ => {
                            return Err(missing(format!(
                                "plan {id} has no action {object} at {loc:?}"
                            )));
                        }
                    };
                    if i64::from(*index) > count {
                        return Err(missing(format!(
                            "plan {id}: attempt {index} of the action at {loc:?} skips attempt {count}"
                        )));
                    }
                }
                _ => {}
            }
        }
        updated.map_err(&fail)?;
        Ok(())
    }

    async fn delete(&self, c: &Conn, id: PlanId) -> Result<(), Failure> {
        let key = id.0;
        // Both statements are sent at once; the delete spares a running plan by itself.
        let (row, deleted) = tokio::join!(
            biased;
            Self::query_opt(c, &c.st.plan_status, vec![&key]),
            Self::exec(c, &c.st.delete_plan, vec![&key]),
        );
        let doing = format!("deleting plan {id}");
        let row = row.map_err(|e| self.fail(&doing, e))?;
        deleted.map_err(|e| self.fail(&doing, e))?;
        match row.map(|r| r.get::<_, String>(0)).as_deref() {
            None => Err(Failure::Request(StoreError::NotFound(id))),
            Some("Running") => Err(Failure::Request(StoreError::Running(id))),
            Some(_) => Ok(()),
        }
    }
}

/// What one pipelined statement of an `apply` returned.
enum StepResult {
    /// Rows changed.
    Rows(u64),
    /// Attempts before (none: no such action).
    Count(Option<i64>),
}

/// The values of the plan row's update, owned by the write's future.
#[derive(Default)]
struct UpdateValues {
    has_state: bool,
    status: Option<&'static str>,
    start: Option<i64>,
    end: Option<i64>,
    reason: Option<String>,
    heartbeat: Option<i64>,
    paused: Option<bool>,
    renew: bool,
    lease_secs: f64,
    owner: Option<Uuid>,
    epoch: i64,
    resumptions: Option<String>,
    decisions: Option<String>,
}

/// Appends the JSON value `json` to the JSON array being built in `list` (opened on first use;
/// the caller closes it).
fn json_list_push(list: &mut Option<String>, json: &str) {
    let list = list.get_or_insert_with(|| "[".to_owned());
    if list.len() > 1 {
        list.push(',');
    }
    list.push_str(json);
}

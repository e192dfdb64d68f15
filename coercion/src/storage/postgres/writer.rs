//! The writers: a few tasks (shards), each owning one connection. Writes are queued to the
//! shard of their plan (so one plan's writes run in call order) when `create`/`apply`/`delete`
//! is *called*. A shard takes everything queued at the moment (a group), runs it in one
//! transaction, commits once and only then answers every caller: group commit, as in the
//! SQLite store. When a write of the group fails, the transaction is rolled back and each write
//! of the group runs again in its own transaction, so only the failing caller gets the error.
//!
//! The applies of a group are one batch, whatever their number: one round trip (pipelined with
//! BEGIN) locks their plans' rows and reads what the checks need of the objects they touch
//! (location and kind); the writes are checked in call order and folded into the
//! final state of each object, each action's attempts and each plan's row; one more round trip
//! writes those with a statement per table (`unnest` arrays), COMMITs and sends the group's
//! notice. A group costs three round trips and a handful of statements instead of a few
//! statements per change.
//!
//! Every `apply` is fenced: it first locks the plan's row and checks the lease. A write of a
//! process that holds the plan's lease must carry the lease's current epoch; a write of a
//! process that holds no lease is accepted only while no live lease exists. A write whose
//! check fails changes nothing and gets [`StoreError::Locked`].

use std::collections::{BTreeMap, HashMap};
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
use crate::storage::sql::{AttemptCols, Failure, GroupCounters, Op, StateCols};
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

/// Locks the rows of the plans a batch of applies changes, for the fence and for every check.
const LOCK_PLANS: &str = "SELECT status, lease_owner, lease_epoch, \
     (lease_owner IS NULL OR lease_expires IS NULL OR lease_expires < now()) AS free, lease_expires::text, id \
     FROM plans WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";
const PLAN_STATUS: &str = "SELECT status FROM plans WHERE id = $1 FOR NO KEY UPDATE";
const INSERT_PLAN: &str = "INSERT INTO plans (id, group_id, name, descr, submit_time_ns, status, start_ns, end_ns, \
     reason, heartbeat_ns, paused, plugins) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (id) DO NOTHING";
const INSERT_DEFINITION: &str =
    "INSERT INTO plan_definitions (plan_id, definition) VALUES ($1, $2)";
const INSERT_SEQUENCES: &str = "INSERT INTO sequence_definitions \
     (plan_id, block, first, counts, heads, bodies) \
     SELECT $1, * FROM unnest($2::integer[], $3::integer[], $4::text[], $5::text[], $6::text[])";
const INSERT_OBJECTS: &str = "INSERT INTO objects (plan_id, id, loc, kind, status, start_ns, end_ns) \
     SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])";
const INSERT_ATTEMPTS: &str = "INSERT INTO attempts (plan_id, action_id, idx, start_ns, end_ns, outcome) \
     SELECT $1, * FROM unnest($2::uuid[], $3::int[], $4::bigint[], $5::bigint[], $6::text[])";
/// What a batch's checks need of the objects it touches: where each is and its kind (read
/// under the plans' locks). Attempt indexes are not checked here: the engine checks them
/// against its own tree (`storage::check_changes`).
const READ_OBJECTS: &str = "SELECT o.plan_id, o.id, o.loc, o.kind \
     FROM objects o JOIN unnest($1::uuid[], $2::uuid[]) AS u(p, i) ON o.plan_id = u.p AND o.id = u.i";
/// The final state of every object a batch changes, in one statement.
const UPDATE_OBJECTS: &str = "UPDATE objects o SET status = u.status, start_ns = u.s, end_ns = u.e \
     FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::bigint[]) AS u(p, i, status, s, e) \
     WHERE o.plan_id = u.p AND o.id = u.i";
/// Drops every attempt of each listed action (a reset).
const TRIM_ATTEMPTS: &str = "DELETE FROM attempts a \
     USING unnest($1::uuid[], $2::uuid[]) AS u(p, i) \
     WHERE a.plan_id = u.p AND a.action_id = u.i";
/// Every attempt a batch sets, each once, in one statement.
const UPSERT_ATTEMPTS: &str = "INSERT INTO attempts (plan_id, action_id, idx, start_ns, end_ns, outcome) \
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::bigint[], $5::bigint[], $6::text[]) \
     ON CONFLICT (plan_id, action_id, idx) DO UPDATE \
     SET start_ns = EXCLUDED.start_ns, end_ns = EXCLUDED.end_ns, outcome = EXCLUDED.outcome";
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
/// Deletes an ended plan (its objects by their foreign key, its attempts here: they have none).
const DELETE_PLAN: &str = "WITH gone AS (DELETE FROM plans WHERE id = $1 AND status <> 'Running' RETURNING id) \
     DELETE FROM attempts WHERE plan_id IN (SELECT id FROM gone)";

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
    lock_plans: Statement,
    plan_status: Statement,
    insert_plan: Statement,
    insert_definition: Statement,
    insert_sequences: Statement,
    insert_objects: Statement,
    insert_attempts: Statement,
    read_objects: Statement,
    update_objects: Statement,
    trim_attempts: Statement,
    upsert_attempts: Statement,
    update_plan: Statement,
    delete_plan: Statement,
    notify: Statement,
}

impl Statements {
    async fn prepare(c: &deadpool_postgres::Object) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            lock_plans: c.prepare(LOCK_PLANS).await?,
            plan_status: c.prepare(PLAN_STATUS).await?,
            insert_plan: c.prepare(INSERT_PLAN).await?,
            insert_definition: c.prepare(INSERT_DEFINITION).await?,
            insert_sequences: c.prepare(INSERT_SEQUENCES).await?,
            insert_objects: c.prepare(INSERT_OBJECTS).await?,
            insert_attempts: c.prepare(INSERT_ATTEMPTS).await?,
            read_objects: c.prepare(READ_OBJECTS).await?,
            update_objects: c.prepare(UPDATE_OBJECTS).await?,
            trim_attempts: c.prepare(TRIM_ATTEMPTS).await?,
            upsert_attempts: c.prepare(UPSERT_ATTEMPTS).await?,
            update_plan: c.prepare(UPDATE_PLAN).await?,
            delete_plan: c.prepare(DELETE_PLAN).await?,
            notify: c.prepare("SELECT pg_notify($1, $2)").await?,
        })
    }
}

type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;
/// The parameters of the notice sent after a group commits: channel and payload.
type Notice<'a> = [&'a (dyn ToSql + Sync); 2];
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
        let notice: Notice<'_> = [&channel, &payload];
        // BEGIN goes out in the same round trip as the group's first statements.
        let (begun, committed) = tokio::join!(
            biased;
            c.batch_execute("BEGIN"),
            self.run_writes(c, group, &notice),
        );
        begun.map_err(|e| self.err("starting a transaction", e))?;
        if !committed? {
            self.commit(c, &notice).await?;
        }
        Ok(())
    }

    /// Runs the writes of `group` in call order — each run of applies as one batch (a few
    /// statements for all of them), each run of creates and deletes pipelined. When the last run
    /// is a batch of applies and every write before it succeeded, the batch commits (and sends
    /// `notice`) in the round trip of its writes: returns whether it did.
    async fn run_writes(
        &self,
        c: &Conn,
        group: &[Request],
        notice: &Notice<'_>,
    ) -> Result<bool, Failure> {
        let mut first_request_error = None;
        let mut committed = false;
        // A create is the first write of its plan: it goes first, so that the applies around it
        // stay one batch (`submit_and_start` in many tasks interleaves creates and applies). One
        // after an earlier write of its id in this group keeps its place.
        let mut seen = std::collections::HashSet::new();
        let mut ordered: Vec<&Request> = Vec::with_capacity(group.len());
        let mut rest: Vec<&Request> = Vec::with_capacity(group.len());
        for r in group {
            match &r.write {
                Write::Create(plan) if !seen.contains(&plan.id) => {
                    seen.insert(plan.id);
                    ordered.push(r);
                }
                Write::Create(plan) => {
                    seen.insert(plan.id);
                    rest.push(r);
                }
                Write::Apply { id, .. } | Write::Delete(id) => {
                    seen.insert(*id);
                    rest.push(r);
                }
            }
        }
        ordered.extend(rest);
        let runs: Vec<&[&Request]> = ordered
            .chunk_by(|a, b| {
                matches!(a.write, Write::Apply { .. }) == matches!(b.write, Write::Apply { .. })
            })
            .collect();
        let last = runs.len().saturating_sub(1);
        for (i, run) in runs.into_iter().enumerate() {
            let outcomes = if matches!(run[0].write, Write::Apply { .. }) {
                let applies: Vec<Apply<'_>> = run
                    .iter()
                    .filter_map(|r| match &r.write {
                        Write::Apply { id, ops, fence } => Some(Apply {
                            id: *id,
                            ops,
                            fence: *fence,
                        }),
                        _ => None,
                    })
                    .collect();
                let commit = (i == last && first_request_error.is_none()).then_some(notice);
                let outcome = self.apply_batch(c, &applies, commit).await;
                committed = commit.is_some() && outcome.is_ok();
                vec![outcome]
            } else {
                futures_util::future::join_all(run.iter().map(|r| async move {
                    match &r.write {
                        Write::Create(plan) => self.create(c, plan).await,
                        Write::Delete(id) => self.delete(c, *id).await,
                        Write::Apply { .. } => unreachable!("a run holds no apply"),
                    }
                }))
                .await
            };
            for outcome in outcomes {
                match outcome {
                    Ok(()) => {}
                    Err(Failure::Group(e)) => return Err(Failure::Group(e)),
                    Err(Failure::Request(e)) => {
                        first_request_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_request_error {
            Some(e) => Err(Failure::Request(e)),
            None => Ok(committed),
        }
    }

    /// Commits, and sends `notice` in the same round trip (its failure is only logged).
    async fn commit(&self, c: &Conn, notice: &Notice<'_>) -> Result<(), Failure> {
        let (committed, notified) = tokio::join!(
            biased;
            c.client.batch_execute("COMMIT"),
            c.client.execute(&c.st.notify, notice),
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
        let q = &p.sequences;
        // All statements are sent on the first poll, in order.
        let (plan, def, sequences, objects, attempts) = tokio::join!(
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
                !q.block.is_empty(),
                c,
                &st.insert_sequences,
                vec![id, &q.block, &q.first, &q.counts, &q.heads, &q.bodies],
            ),
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
        sequences.map_err(|e| self.fail(&doing, e))?;
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
        row: Option<&tokio_postgres::Row>,
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

    /// Applies a run of writes in a few statements whatever their number: locks the rows of
    /// their plans and reads what the checks need of the objects they touch (one round trip),
    /// checks every write in call order against that — the fence, each object's location and
    /// kind, each attempt's index — while folding them into the final state of each object,
    /// each action's attempts and each plan's row, then writes those (one more round trip). A
    /// write that fails a check fails the batch with its error (the group then runs write by
    /// write, so only its caller gets it); nothing is written for a batch that fails.
    ///
    /// With `commit`, the batch's writes are followed, in the same round trip, by COMMIT and
    /// the notice (a write that fails has aborted the transaction, so that COMMIT rolls back).
    async fn apply_batch(
        &self,
        c: &Conn,
        applies: &[Apply<'_>],
        commit: Option<&Notice<'_>>,
    ) -> Result<(), Failure> {
        let st = &c.st;
        let doing = match applies {
            [one] => format!("updating plan {}", one.id),
            _ => format!("updating {} plans", applies.len()),
        };
        let fail = |e| self.fail(&doing, e);

        // What to lock and read.
        let mut plan_ids: Vec<Uuid> = applies.iter().map(|a| a.id.0).collect();
        plan_ids.sort_unstable();
        plan_ids.dedup();
        let mut keys: Vec<(Uuid, Uuid)> = applies
            .iter()
            .flat_map(|a| {
                a.ops.iter().filter_map(move |op| match op {
                    Op::ObjectState { id, .. } | Op::Attempt { id, .. } | Op::Reset { id, .. } => {
                        Some((a.id.0, *id))
                    }
                    _ => None,
                })
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let (key_plans, key_objects): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
        let lock_params: [&(dyn ToSql + Sync); 1] = [&plan_ids];
        let read_params: [&(dyn ToSql + Sync); 2] = [&key_plans, &key_objects];
        let (locked, read) = tokio::join!(
            biased;
            c.client.query(&st.lock_plans, &lock_params),
            async {
                if keys.is_empty() {
                    Ok(Vec::new())
                } else {
                    c.client.query(&st.read_objects, &read_params).await
                }
            },
        );
        let locked = locked.map_err(&fail)?;
        let read = read.map_err(&fail)?;
        let rows: HashMap<Uuid, &tokio_postgres::Row> =
            locked.iter().map(|r| (r.get::<_, Uuid>(5), r)).collect();
        let known: HashMap<(Uuid, Uuid), Known> = read
            .iter()
            .map(|r| {
                (
                    (r.get(0), r.get(1)),
                    Known {
                        loc: r.get(2),
                        kind: r.get(3),
                    },
                )
            })
            .collect();

        // Check and fold, write by write, op by op, in call order.
        // An action reset: back to its definition's state.
        const NOT_STARTED: StateCols = StateCols {
            status: "NotStarted",
            start: None,
            end: None,
        };
        let mut objects: HashMap<(Uuid, Uuid), &StateCols> = HashMap::new();
        let mut attempts: HashMap<(Uuid, Uuid), Attempts<'_>> = HashMap::new();
        let mut plans: Vec<(Uuid, UpdateValues)> = Vec::new();
        let missing = |what: String| Failure::Request(StoreError::permanent(what));
        for apply in applies {
            let id = apply.id;
            let plan = id.0;
            // Judged against the row as locked for the batch, before any renewal an earlier
            // write of the batch makes: owner and epoch do not change within a batch (a renewal
            // only moves the expiry), and a process writes unleased only after releasing.
            self.judge_fence(id, rows.get(&plan).copied(), apply.fence)?;
            let at = match plans.iter().position(|(p, _)| *p == plan) {
                Some(i) => i,
                None => {
                    plans.push((
                        plan,
                        UpdateValues {
                            lease_secs: self.lease.as_secs_f64(),
                            ..UpdateValues::default()
                        },
                    ));
                    plans.len() - 1
                }
            };
            let values = &mut plans[at].1;
            if let Fence::Lease { owner, epoch } = apply.fence {
                values.owner = Some(owner);
                values.epoch = epoch;
            }
            // The plan's own row first (as before: its changes touch no object).
            for op in apply.ops {
                match op {
                    Op::Plan(set) => {
                        values.touched = true;
                        if let Some(s) = &set.state {
                            values.has_state = true;
                            values.status = Some(s.status);
                            values.start = s.start;
                            values.end = s.end;
                        }
                        if let Some(r) = &set.reason {
                            values.reason = Some(r.clone());
                        }
                        if let Some(t) = set.heartbeat {
                            values.heartbeat = Some(t);
                            // A heartbeat of the lease holder renews the lease (the statement
                            // checks owner and epoch itself).
                            values.renew |= matches!(apply.fence, Fence::Lease { .. });
                        }
                        if let Some(p) = set.paused {
                            values.paused = Some(p);
                        }
                        if let Some(json) = &set.owner {
                            json_list_push(&mut values.resumptions, json);
                        }
                        if let Some(json) = &set.decision {
                            json_list_push(&mut values.decisions, json);
                        }
                    }
                    Op::ObjectState { .. } | Op::Attempt { .. } | Op::Reset { .. } => {}
                }
            }
            // The action `object` at `loc` of this plan, as read.
            let action = |object: &Uuid, loc: &crate::workflow::Loc| {
                known
                    .get(&(plan, *object))
                    .filter(|k| k.kind == "action" && k.loc == loc_json(loc))
                    .ok_or_else(|| missing(format!("plan {id} has no action {object} at {loc:?}")))
            };
            for op in apply.ops {
                match op {
                    Op::ObjectState {
                        id: object,
                        loc,
                        state: s,
                    } => {
                        if known
                            .get(&(plan, *object))
                            .is_none_or(|k| k.loc != loc_json(loc))
                        {
                            return Err(missing(format!(
                                "plan {id} has no object {object} at {loc:?}"
                            )));
                        }
                        objects.insert((plan, *object), s);
                    }
                    Op::Attempt {
                        id: object,
                        loc,
                        index,
                        cols,
                    } => {
                        action(object, loc)?;
                        let index = i32::try_from(*index).map_err(|_| {
                            missing(format!(
                                "plan {id}: attempt index {index} of the action at {loc:?} is too large"
                            ))
                        })?;
                        attempts
                            .entry((plan, *object))
                            .or_default()
                            .set
                            .insert(index, cols);
                    }
                    Op::Reset { id: object, loc } => {
                        action(object, loc)?;
                        objects.insert((plan, *object), &NOT_STARTED);
                        let a = attempts.entry((plan, *object)).or_default();
                        a.set.clear();
                        a.reset = true;
                    }
                    _ => {}
                }
            }
        }
        for (_, values) in &mut plans {
            for list in [&mut values.resumptions, &mut values.decisions]
                .into_iter()
                .flatten()
            {
                list.push(']');
            }
        }

        // Write the folded state: one statement per table, one per plan row changed.
        let mut o = ObjectCols::default();
        for (&(p, i), state) in &objects {
            o.plan.push(p);
            o.id.push(i);
            o.status.push(state.status);
            o.start.push(state.start);
            o.end.push(state.end);
        }
        let (mut trim, mut set) = (TrimCols::default(), SetCols::default());
        for (&(p, i), a) in &attempts {
            if a.reset {
                trim.plan.push(p);
                trim.id.push(i);
            }
            for (&idx, cols) in &a.set {
                set.plan.push(p);
                set.id.push(i);
                set.idx.push(idx);
                set.start.push(cols.start);
                set.end.push(cols.end);
                set.outcome.push(cols.outcome.as_deref());
            }
        }
        let plan_updates = plans.iter().filter(|(_, v)| v.touched).map(|(plan, v)| {
            Self::exec(
                c,
                &st.update_plan,
                vec![
                    plan,
                    &v.has_state,
                    &v.status,
                    &v.start,
                    &v.end,
                    &v.reason,
                    &v.heartbeat,
                    &v.paused,
                    &v.renew,
                    &v.lease_secs,
                    &v.owner,
                    &v.epoch,
                    &v.resumptions,
                    &v.decisions,
                ],
            )
        });
        let plan_updates: Vec<Pending<'_, u64>> = plan_updates.collect();
        // Trimming before setting: the two touch different indexes, but a set attempt must
        // never be dropped by a trim sent after it.
        let (updated, trimmed, upserted, plans_updated, committed) = tokio::join!(
            biased;
            Self::exec_if(
                !o.id.is_empty(),
                c,
                &st.update_objects,
                vec![&o.plan, &o.id, &o.status, &o.start, &o.end],
            ),
            Self::exec_if(
                !trim.id.is_empty(),
                c,
                &st.trim_attempts,
                vec![&trim.plan, &trim.id],
            ),
            Self::exec_if(
                !set.id.is_empty(),
                c,
                &st.upsert_attempts,
                vec![&set.plan, &set.id, &set.idx, &set.start, &set.end, &set.outcome],
            ),
            futures_util::future::join_all(plan_updates),
            async {
                match commit {
                    Some(notice) => self.commit(c, notice).await,
                    None => Ok(()),
                }
            },
        );
        updated.map_err(&fail)?;
        trimmed.map_err(&fail)?;
        upserted.map_err(&fail)?;
        for u in plans_updated {
            u.map_err(&fail)?;
        }
        committed
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

/// One `apply` of a batch.
struct Apply<'a> {
    id: PlanId,
    ops: &'a [Op],
    fence: Fence,
}

/// What a batch's checks know of an object: its location as stored and its kind.
struct Known {
    loc: String,
    kind: String,
}

/// What a batch does to an action's attempts: whether it drops those stored before it (a
/// reset), and the ones it sets (each the last or the next: `storage::check_changes`).
#[derive(Default)]
struct Attempts<'a> {
    reset: bool,
    set: BTreeMap<i32, &'a AttemptCols>,
}

/// The columns of `UPDATE_OBJECTS`.
#[derive(Default)]
struct ObjectCols {
    plan: Vec<Uuid>,
    id: Vec<Uuid>,
    status: Vec<&'static str>,
    start: Vec<Option<i64>>,
    end: Vec<Option<i64>>,
}

/// The columns of `TRIM_ATTEMPTS`.
#[derive(Default)]
struct TrimCols {
    plan: Vec<Uuid>,
    id: Vec<Uuid>,
}

/// The columns of `UPSERT_ATTEMPTS`.
#[derive(Default)]
struct SetCols<'a> {
    plan: Vec<Uuid>,
    id: Vec<Uuid>,
    idx: Vec<i32>,
    start: Vec<i64>,
    end: Vec<Option<i64>>,
    outcome: Vec<Option<&'a str>>,
}

/// The values of the plan row's update, owned by the write's future.
#[derive(Default)]
struct UpdateValues {
    /// Whether any change touches the row (else no statement is sent).
    touched: bool,
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

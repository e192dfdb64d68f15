//! Reads: pooled connections, each read of a plan in one read-only `REPEATABLE READ`
//! transaction (a consistent snapshot; PostgreSQL readers never block writers).

use std::collections::HashMap;

use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::codec::pg_error;
use crate::storage::sql::{
    AttemptCols, ChunkRow, PlanRow, StateCols, clamp_ns, corrupt, decode_owner, from_ns,
    push_attempt,
};
use crate::storage::{ListFilter, PlanSummary, StoreError};
use crate::workflow::{Loc, Plan, PlanId};

fn text(store: &str, id: PlanId, bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|e| corrupt(store, id, e))
}

/// A plan's rows of `sequence_definitions`, in order (a plan created before schema version 7
/// has none: its definition holds its sequences).
const CHUNKS: &str = "SELECT block, first, counts, heads, bodies FROM sequence_definitions \
     WHERE plan_id = $1 ORDER BY block, first";

/// A plan's own row and its definition.
pub(super) const HEAD: &str = "SELECT p.status, p.start_ns, p.end_ns, p.reason, p.heartbeat_ns, \
     p.paused, d.definition, p.resumptions, p.decisions FROM plans p \
     JOIN plan_definitions d ON d.plan_id = p.id WHERE p.id = $1";

/// A row of [`HEAD`].
pub(super) fn plan_row(r: &tokio_postgres::Row) -> PlanRow<'_> {
    PlanRow {
        status: r.get(0),
        start: r.get(1),
        end: r.get(2),
        reason: r.get(3),
        heartbeat: r.get(4),
        paused: r.get(5),
        definition: r.get(6),
        owners: r.get(7),
        decisions: r.get(8),
    }
}

/// A row of [`CHUNKS`] (its `bodies`, column 4, apart), or of a query of its first four columns.
pub(super) fn chunk_row(r: &tokio_postgres::Row) -> ChunkRow<'_> {
    ChunkRow {
        block: i64::from(r.get::<_, i32>(0)),
        first: i64::from(r.get::<_, i32>(1)),
        counts: r.get(2),
        heads: r.get(3),
    }
}

/// A read-only `REPEATABLE READ` transaction on `conn`: one consistent snapshot (readers never
/// block writers).
pub(super) async fn snapshot(
    conn: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
    conn.build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

/// Reads plan `id` whole: the stored definition with every object's state and attempts.
pub(super) async fn read_plan(
    conn: &mut deadpool_postgres::Object,
    store: &str,
    id: PlanId,
) -> Result<Plan, StoreError> {
    let err = |e: tokio_postgres::Error| pg_error(store, &format!("reading plan {id}"), e);
    let tx = snapshot(conn).await.map_err(err)?;
    let key = id.0;
    let head = tx.prepare_cached(HEAD).await.map_err(err)?;
    let objects = tx
        .prepare_cached("SELECT id, status, start_ns, end_ns FROM objects WHERE plan_id = $1")
        .await
        .map_err(err)?;
    let attempts = tx
        .prepare_cached(
            "SELECT action_id, idx, start_ns, end_ns, outcome FROM attempts WHERE plan_id = $1 \
             ORDER BY action_id, idx",
        )
        .await
        .map_err(err)?;
    let chunks = tx.prepare_cached(CHUNKS).await.map_err(err)?;
    // The four queries are pipelined on the connection.
    let params: [&(dyn ToSql + Sync); 1] = [&key];
    let (head, chunks, objects, attempts) = tokio::join!(
        tx.query_opt(&head, &params),
        tx.query(&chunks, &params),
        tx.query(&objects, &params),
        tx.query(&attempts, &params)
    );
    let Some(row) = head.map_err(err)? else {
        return Err(StoreError::NotFound(id));
    };
    let chunks = chunks.map_err(err)?;
    let objects = objects.map_err(err)?;
    let attempts = attempts.map_err(err)?;
    tx.commit().await.map_err(err)?;

    let mut plan = plan_row(&row).decode(store, id)?;
    for r in &chunks {
        chunk_row(r)
            .attach(&mut plan, r.get(4))
            .map_err(|e| corrupt(store, id, e))?;
    }

    let locs: HashMap<Uuid, Loc> = plan.walk().map(|(loc, o)| (o.id(), loc)).collect();
    let locate = |object: Uuid| -> Result<Loc, StoreError> {
        locs.get(&object).copied().ok_or_else(|| {
            corrupt(
                store,
                id,
                format_args!("object {object} is not in its definition"),
            )
        })
    };
    for r in &objects {
        let loc = locate(r.get(0))?;
        let state =
            StateCols::decode(r.get(1), r.get(2), r.get(3)).map_err(|e| corrupt(store, id, e))?;
        if let Some(s) = plan.state_at_mut(loc) {
            *s = state;
        }
    }
    for r in &attempts {
        push_attempt_row(store, id, &mut plan, r, |object| locate(object).ok())?;
    }
    Ok(plan)
}

/// Appends the attempt of row `r` (`action_id, idx, start_ns, end_ns, outcome`) to its action,
/// placed by `locate`.
pub(super) fn push_attempt_row(
    store: &str,
    id: PlanId,
    plan: &mut Plan,
    r: &tokio_postgres::Row,
    locate: impl Fn(Uuid) -> Option<Loc>,
) -> Result<(), StoreError> {
    let object: Uuid = r.get(0);
    let idx: i32 = r.get(1);
    let outcome: Option<&str> = r.get(4);
    let attempt =
        AttemptCols::decode(r.get(2), r.get(3), outcome).map_err(|e| corrupt(store, id, e))?;
    let loc = locate(object).ok_or_else(|| {
        corrupt(
            store,
            id,
            format_args!("object {object} is not in its definition"),
        )
    })?;
    push_attempt(
        store,
        id,
        object,
        plan.attempts_mut(loc),
        i64::from(idx),
        attempt,
    )
}

/// Lists plans matching `filter`, newest submitted first (unsubmitted last), then by id,
/// descending.
/// The arguments of a query built by [`select_plans`].
type Args = Vec<Box<dyn ToSql + Sync + Send>>;

/// `columns` of the plans matching `filter`, newest submitted first, `offset` and `limit`
/// applied, with its arguments.
fn select_plans(columns: &str, filter: &ListFilter) -> (String, Args) {
    let mut sql = format!("SELECT {columns} FROM plans WHERE TRUE");
    let mut args: Args = Vec::new();
    let mut arg = |sql: &mut String, fragment: &str, value: Box<dyn ToSql + Sync + Send>| {
        args.push(value);
        sql.push_str(&fragment.replace("$?", &format!("${}", args.len())));
    };
    if !filter.statuses.is_empty() {
        let statuses: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        arg(
            &mut sql,
            " AND status = ANY($?::text[])",
            Box::new(statuses),
        );
    }
    if let Some(group) = filter.group_id {
        arg(&mut sql, " AND group_id = $?", Box::new(group));
    }
    if let Some(name) = &filter.name_contains {
        arg(
            &mut sql,
            " AND position($?::bytea in name) > 0",
            Box::new(name.as_bytes().to_vec()),
        );
    }
    if let Some(t) = filter.submitted_after {
        arg(&mut sql, " AND submit_time_ns >= $?", Box::new(clamp_ns(t)));
    }
    if let Some(t) = filter.submitted_before {
        arg(&mut sql, " AND submit_time_ns < $?", Box::new(clamp_ns(t)));
    }
    sql.push_str(" ORDER BY submit_time_ns DESC NULLS LAST, id DESC");
    let limit: Option<i64> = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    arg(&mut sql, " LIMIT $?", Box::new(limit));
    arg(
        &mut sql,
        " OFFSET $?",
        Box::new(i64::try_from(filter.offset).unwrap_or(i64::MAX)),
    );
    (sql, args)
}

/// How many plans match `filter`, counted by the server.
pub(super) async fn count_plans(
    conn: &deadpool_postgres::Object,
    store: &str,
    filter: &ListFilter,
) -> Result<u64, StoreError> {
    let err = |e: tokio_postgres::Error| pg_error(store, "counting plans", e);
    let (sql, args) = select_plans("1", filter);
    let sql = format!("SELECT count(*) FROM ({sql}) AS matching");
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as _).collect();
    let n: i64 = conn.query_one(&sql, &params).await.map_err(err)?.get(0);
    Ok(u64::try_from(n).unwrap_or_default())
}

pub(super) async fn list_plans(
    conn: &deadpool_postgres::Object,
    store: &str,
    filter: &ListFilter,
) -> Result<Vec<PlanSummary>, StoreError> {
    let err = |e: tokio_postgres::Error| pg_error(store, "listing plans", e);
    let (sql, args) = select_plans(
        "id, group_id, name, descr, submit_time_ns, status, start_ns, end_ns, reason, \
         (SELECT count(*) FROM json_array_elements(resumptions::json) o \
          WHERE coalesce((o->>'resumed')::boolean, true))::int4, \
         (resumptions::json -> -1)::text",
        filter,
    );
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let stmt = conn.prepare_cached(&sql).await.map_err(err)?;
    let rows = conn.query(&stmt, &params).await.map_err(err)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id = PlanId(r.get::<_, Uuid>(0));
        let status: &str = r.get(5);
        let reason: &str = r.get(8);
        out.push(PlanSummary {
            id,
            group_id: r.get(1),
            name: text(store, id, r.get(2))?,
            descr: text(store, id, r.get(3))?,
            submit_time: r.get::<_, Option<i64>>(4).map(from_ns),
            state: StateCols::decode(status, r.get(6), r.get(7))
                .map_err(|e| corrupt(store, id, e))?,
            reason: reason.parse().map_err(|e| corrupt(store, id, e))?,
            resumptions: u32::try_from(r.get::<_, i32>(9)).unwrap_or(0),
            owner: decode_owner(store, id, r.get(10))?,
        });
    }
    Ok(out)
}

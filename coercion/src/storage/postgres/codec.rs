//! How values are written to and read from PostgreSQL: ids as `uuid`, times as `bigint`
//! nanoseconds since the Unix epoch (NULL when unset; `timestamptz` keeps only microseconds),
//! statuses and reasons as their names, names and descriptions as UTF-8 `bytea` (PostgreSQL
//! `text` cannot hold NUL characters), locations, definitions and outcomes as JSON text (JSON
//! escapes NUL). Also the mapping of driver errors to [`StoreError`].

use uuid::Uuid;

use crate::storage::StoreError;
use crate::storage::sql::{AttemptCols, StateCols, encode_objects, opt_ns};
use crate::workflow::{Loc, ObjectRef, Plan, PlanId};

pub(super) fn loc_json(loc: &Loc) -> String {
    serde_json::to_string(loc).unwrap_or_default()
}

/// Everything `create` writes, encoded by the caller so the writer only runs SQL. Objects and
/// attempts are kept as column arrays, inserted with one `unnest` statement each.
#[derive(Debug)]
pub(super) struct PreparedPlan {
    pub id: PlanId,
    pub group_id: Option<Uuid>,
    pub name: Vec<u8>,
    pub descr: Vec<u8>,
    pub submit_time: Option<i64>,
    pub state: StateCols,
    pub reason: String,
    pub heartbeat: Option<i64>,
    pub paused: bool,
    /// The plugins the plan calls, sorted, once each.
    pub plugins: Vec<String>,
    /// The definition without its blocks' sequences (schema version 7).
    pub definition: String,
    /// The sequences, in chunks.
    pub sequences: ChunkCols,
    pub objects: ObjectCols,
    pub attempts: AttemptRows,
}

/// The `objects` rows of a plan, column by column.
#[derive(Debug, Default)]
pub(super) struct ObjectCols {
    pub id: Vec<Uuid>,
    pub loc: Vec<String>,
    pub kind: Vec<&'static str>,
    pub status: Vec<&'static str>,
    pub start: Vec<Option<i64>>,
    pub end: Vec<Option<i64>>,
}

/// The `sequence_definitions` rows of a plan, column by column.
#[derive(Debug, Default)]
pub(super) struct ChunkCols {
    pub block: Vec<i32>,
    pub first: Vec<i32>,
    pub counts: Vec<String>,
    pub heads: Vec<String>,
    pub bodies: Vec<String>,
}

/// The `attempts` rows of a plan, column by column.
#[derive(Debug, Default)]
pub(super) struct AttemptRows {
    pub action_id: Vec<Uuid>,
    pub idx: Vec<i32>,
    pub start: Vec<i64>,
    pub end: Vec<Option<i64>>,
    pub outcome: Vec<Option<String>>,
}

impl PreparedPlan {
    /// Encodes `plan`. Fails if two objects share an id (ids address objects in the store), or
    /// if a time is out of range.
    pub fn of(plan: &Plan) -> Result<PreparedPlan, StoreError> {
        let mut objects = ObjectCols::default();
        let mut attempts = AttemptRows::default();
        for object in encode_objects(plan) {
            let object = object?;
            for (idx, attempt) in object.attempts.iter().enumerate() {
                let cols = AttemptCols::of(attempt)?;
                attempts.action_id.push(object.id);
                attempts.idx.push(i32::try_from(idx).unwrap_or(i32::MAX));
                attempts.start.push(cols.start);
                attempts.end.push(cols.end);
                attempts.outcome.push(cols.outcome);
            }
            objects.id.push(object.id);
            objects.loc.push(loc_json(&object.loc));
            objects.kind.push(object.kind);
            objects.status.push(object.state.status);
            objects.start.push(object.state.start);
            objects.end.push(object.state.end);
        }
        let (skeleton, chunks) = crate::storage::sql::definition_parts(plan)?;
        // Wrapped: a worker of a version before 7 cannot take it for a plan of empty blocks.
        let definition = crate::storage::sql::wrap_skeleton(&skeleton);
        let mut sequences = ChunkCols::default();
        for c in chunks {
            sequences
                .block
                .push(i32::try_from(c.block).unwrap_or(i32::MAX));
            sequences
                .first
                .push(i32::try_from(c.first).unwrap_or(i32::MAX));
            sequences.counts.push(c.counts);
            sequences.heads.push(c.heads);
            sequences.bodies.push(c.bodies);
        }
        let plugins: std::collections::BTreeSet<String> = plan
            .walk()
            .filter_map(|(_, o)| match o {
                ObjectRef::Action(a) => Some(a.plugin.to_string()),
                _ => None,
            })
            .collect();
        Ok(PreparedPlan {
            id: plan.id,
            group_id: plan.group_id,
            name: plan.name.as_bytes().to_vec(),
            descr: plan.descr.as_bytes().to_vec(),
            submit_time: opt_ns(plan.submit_time)?,
            state: StateCols::of(&plan.state())?,
            reason: plan.reason().to_string(),
            heartbeat: opt_ns(plan.heartbeat())?,
            paused: plan.is_paused(),
            plugins: plugins.into_iter().collect(),
            definition,
            sequences,
            objects,
            attempts,
        })
    }
}

/// Maps a driver error to a store error. Lost connections, serialization failures, deadlocks,
/// a server shutting down or out of connections are transient; everything else (constraint
/// violations, bad data, permissions, disk full) is permanent. The message names the store and
/// what was being done (and, for a server error, its severity and SQLSTATE); the driver's error
/// is the source.
pub(super) fn pg_error(store: &str, doing: &str, e: tokio_postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(db) => format!(
            "{store}: {doing} ({}, SQLSTATE {})",
            db.severity(),
            db.code().code()
        ),
        None => format!("{store}: {doing}"),
    };
    if is_transient(&e) {
        StoreError::transient(message).caused_by(e)
    } else {
        StoreError::permanent(message).caused_by(e)
    }
}

/// Whether retrying may help.
pub(super) fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        // A closed connection or an I/O error; a conversion error is a bug, not transient; a
        // TLS failure (a certificate refused, no common protocol) is a setting to fix.
        None => {
            let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
            let tls = io
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<rustls::Error>());
            !tls && (e.is_closed() || io.is_some())
        }
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exceptions
                || c.starts_with("40") // serialization failure, deadlock
                || c.starts_with("57P") // admin/crash shutdown, cannot connect now
                || c == "53300" // too many connections
                || c == "55P03" // lock not available
        }
    }
}

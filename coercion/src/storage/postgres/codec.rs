//! How values are written to and read from PostgreSQL: ids as `uuid`, times as `bigint`
//! nanoseconds since the Unix epoch (NULL when unset; `timestamptz` keeps only microseconds),
//! statuses and reasons as their names, names and descriptions as UTF-8 `bytea` (PostgreSQL
//! `text` cannot hold NUL characters), locations, definitions and outcomes as JSON text (JSON
//! escapes NUL). Also the mapping of driver errors to [`StoreError`].

use std::collections::HashMap;
use std::str::FromStr;

use chrono::DateTime;
use uuid::Uuid;

use crate::storage::{Change, StoreError};
use crate::workflow::{
    Attempt, Loc, ObjectRef, Outcome, Plan, PlanId, Reason, State, Status, Timestamp,
};

/// A time as nanoseconds since the epoch; times outside 1677..2262 cannot be stored.
pub(super) fn ns(t: Timestamp) -> Result<i64, StoreError> {
    t.timestamp_nanos_opt().ok_or_else(|| {
        StoreError::permanent(format!(
            "time {t} cannot be stored: the PostgreSQL store holds times between 1677-09-21 and 2262-04-11"
        ))
    })
}

pub(super) fn opt_ns(t: Option<Timestamp>) -> Result<Option<i64>, StoreError> {
    t.map(ns).transpose()
}

pub(super) fn from_ns(n: i64) -> Timestamp {
    DateTime::from_timestamp_nanos(n)
}

/// A bound for a time filter: times out of range clamp to the ends of the range.
pub(super) fn clamp_ns(t: Timestamp) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() > 0 {
        i64::MAX
    } else {
        i64::MIN
    })
}

pub(super) fn parse_status(text: &str) -> Result<Status, String> {
    Status::from_str(text)
}

pub(super) fn parse_reason(text: &str) -> Result<Reason, String> {
    Reason::from_str(text)
}

pub(super) fn loc_json(loc: &Loc) -> String {
    serde_json::to_string(loc).unwrap_or_default()
}

fn kind_of(object: &ObjectRef<'_>) -> &'static str {
    match object {
        ObjectRef::Plan(_) => "plan",
        ObjectRef::Checks(_) => "checks",
        ObjectRef::Block(_) => "block",
        ObjectRef::Sequence(_) => "sequence",
        ObjectRef::Batch(_) => "batch",
        ObjectRef::Action(_) => "action",
    }
}

/// A state in column form: status name, start and end.
#[derive(Debug, Clone)]
pub(super) struct StateCols {
    pub status: &'static str,
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl StateCols {
    pub fn of(state: &State) -> Result<StateCols, StoreError> {
        Ok(StateCols {
            status: state.status.as_str(),
            start: opt_ns(state.start)?,
            end: opt_ns(state.end)?,
        })
    }
}

/// An attempt in column form.
#[derive(Debug, Clone)]
pub(super) struct AttemptCols {
    pub start: i64,
    pub end: Option<i64>,
    pub outcome: Option<String>,
}

impl AttemptCols {
    pub fn of(attempt: &Attempt) -> Result<AttemptCols, StoreError> {
        let outcome = match &attempt.outcome {
            None => None,
            Some(o) => Some(serde_json::to_string(o).map_err(|e| {
                StoreError::permanent("an attempt's outcome does not serialize").caused_by(e)
            })?),
        };
        Ok(AttemptCols {
            start: ns(attempt.start)?,
            end: opt_ns(attempt.end)?,
            outcome,
        })
    }

    pub fn decode(start: i64, end: Option<i64>, outcome: Option<&str>) -> Result<Attempt, String> {
        let outcome = match outcome {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<Outcome>(text)
                    .map_err(|e| format!("unreadable attempt outcome: {e}"))?,
            ),
        };
        Ok(Attempt {
            start: from_ns(start),
            end: end.map(from_ns),
            outcome,
        })
    }
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
    pub definition: String,
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
        let mut seen: HashMap<Uuid, Loc> = HashMap::new();
        let mut objects = ObjectCols::default();
        let mut attempts = AttemptRows::default();
        for (loc, object) in plan.walk() {
            let id = object.id();
            if let Some(first) = seen.insert(id, loc) {
                return Err(StoreError::permanent(format!(
                    "plan {}: object id {id} is used twice (at {} and at {}); ids must be unique within a plan",
                    plan.id,
                    plan.path(first),
                    plan.path(loc)
                )));
            }
            if let ObjectRef::Plan(_) = object {
                continue;
            }
            if let ObjectRef::Action(action) = object {
                for (idx, attempt) in action.attempts.iter().enumerate() {
                    let cols = AttemptCols::of(attempt)?;
                    attempts.action_id.push(id);
                    attempts.idx.push(i32::try_from(idx).unwrap_or(i32::MAX));
                    attempts.start.push(cols.start);
                    attempts.end.push(cols.end);
                    attempts.outcome.push(cols.outcome);
                }
            }
            let state = StateCols::of(&object.state())?;
            objects.id.push(id);
            objects.loc.push(loc_json(&loc));
            objects.kind.push(kind_of(&object));
            objects.status.push(state.status);
            objects.start.push(state.start);
            objects.end.push(state.end);
        }
        let definition = crate::storage::definition_json(plan)?;
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
            state: StateCols::of(&plan.state)?,
            reason: plan.reason.to_string(),
            heartbeat: opt_ns(plan.heartbeat)?,
            paused: plan.paused,
            plugins: plugins.into_iter().collect(),
            definition,
            objects,
            attempts,
        })
    }
}

/// One change, encoded for the writer.
#[derive(Debug)]
pub(super) enum Op {
    /// The plan's own state (`Loc::Plan`); `id` must be the plan's id.
    PlanState { id: Uuid, state: StateCols },
    /// The state of a non-plan object.
    ObjectState {
        id: Uuid,
        loc: String,
        debug_loc: Loc,
        state: StateCols,
    },
    /// Sets attempt `index` of an action and drops later ones.
    Attempt {
        id: Uuid,
        loc: String,
        debug_loc: Loc,
        index: i32,
        cols: AttemptCols,
    },
    /// An action back to `NotStarted` without attempts.
    Reset {
        id: Uuid,
        loc: String,
        debug_loc: Loc,
    },
    /// The plan's failure reason.
    Reason(String),
    /// The plan's heartbeat; also renews this process's lease on the plan.
    Heartbeat(i64),
    /// Whether the plan is paused.
    Paused(bool),
    /// A resumption to append, as JSON.
    Resumed(String),
    /// A gate's decision to append, as JSON.
    Decided(String),
}

impl Op {
    pub fn of(change: &Change) -> Result<Op, StoreError> {
        Ok(match change {
            Change::State {
                loc: Loc::Plan,
                id,
                state,
            } => Op::PlanState {
                id: *id,
                state: StateCols::of(state)?,
            },
            Change::State { loc, id, state } => Op::ObjectState {
                id: *id,
                loc: loc_json(loc),
                debug_loc: *loc,
                state: StateCols::of(state)?,
            },
            Change::Attempt {
                loc,
                id,
                index,
                attempt,
            } => Op::Attempt {
                id: *id,
                loc: loc_json(loc),
                debug_loc: *loc,
                index: i32::try_from(*index).map_err(|_| {
                    StoreError::permanent(format!("attempt index {index} is too large"))
                })?,
                cols: AttemptCols::of(attempt)?,
            },
            Change::Reset { loc, id } => Op::Reset {
                id: *id,
                loc: loc_json(loc),
                debug_loc: *loc,
            },
            Change::Reason(r) => Op::Reason(r.to_string()),
            Change::Heartbeat(t) => Op::Heartbeat(ns(*t)?),
            Change::Paused(p) => Op::Paused(*p),
            Change::Resumed(r) => Op::Resumed(serde_json::to_string(r).map_err(|e| {
                StoreError::permanent("a resumption does not serialize").caused_by(e)
            })?),
            Change::Decided(d) => Op::Decided(serde_json::to_string(d).map_err(|e| {
                StoreError::permanent("a gate's decision does not serialize").caused_by(e)
            })?),
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

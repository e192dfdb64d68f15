//! How values are written to and read from SQLite: ids as canonical UUID text, times as
//! integer nanoseconds since the Unix epoch (NULL when unset), statuses and reasons as their
//! names, locations and outcomes as JSON. Also the mapping of SQLite errors to [`StoreError`].

use std::collections::HashMap;
use std::str::FromStr;

use chrono::DateTime;
use rusqlite::ErrorCode;
use uuid::Uuid;

use crate::storage::{Change, StoreError};
use crate::workflow::{
    Attempt, Loc, ObjectRef, Outcome, Parent, Plan, PlanId, Reason, State, Status, Timestamp,
};

/// A time as nanoseconds since the epoch; times outside 1677..2262 cannot be stored.
pub(super) fn ns(t: Timestamp) -> Result<i64, StoreError> {
    t.timestamp_nanos_opt().ok_or_else(|| {
        StoreError::permanent(format!(
            "time {t} cannot be stored: the SQLite store holds times between 1677-09-21 and 2262-04-11"
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

pub(super) fn id_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

pub(super) fn parse_id(text: &str, what: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|e| format!("{what} `{text}` is not a UUID: {e}"))
}

pub(super) fn parse_status(text: &str) -> Result<Status, String> {
    Status::from_str(text)
}

pub(super) fn parse_reason(text: &str) -> Result<Reason, String> {
    Reason::from_str(text)
}

pub(super) fn kind_of(object: &ObjectRef<'_>) -> &'static str {
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
#[derive(Debug)]
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
#[derive(Debug)]
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

/// An object of a plan being created: where it is, and its row of the `objects` table if it
/// needs one (it has a state other than the default, or attempts).
#[derive(Debug)]
pub(super) struct ObjectRow {
    pub ord: i64,
    pub id: Uuid,
    pub loc: Loc,
    pub kind: &'static str,
    pub state: StateCols,
    pub stored: bool,
}

/// One row of the `attempts` table.
#[derive(Debug)]
pub(super) struct AttemptRow {
    pub ord: i64,
    pub idx: i64,
    pub cols: AttemptCols,
}

/// Everything `create` writes, encoded by the caller so the writer thread only runs SQL.
#[derive(Debug)]
pub(super) struct PreparedPlan {
    pub id: PlanId,
    pub id_text: String,
    pub group_id: Option<String>,
    pub name: String,
    pub descr: String,
    pub submit_time: Option<i64>,
    pub state: StateCols,
    pub reason: String,
    pub heartbeat: Option<i64>,
    pub paused: bool,
    pub definition: String,
    pub objects: Vec<ObjectRow>,
    pub attempts: Vec<AttemptRow>,
}

impl PreparedPlan {
    /// Encodes `plan`. Fails if two objects share an id (ids address objects in the store), or
    /// if a time is out of range.
    pub fn of(plan: &Plan) -> Result<PreparedPlan, StoreError> {
        let mut seen: HashMap<Uuid, Loc> = HashMap::new();
        let mut objects = Vec::new();
        let mut attempts = Vec::new();
        let order = execution_order(plan);
        for ((loc, object), ord) in plan.walk().zip(order) {
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
                    attempts.push(AttemptRow {
                        ord,
                        idx: idx as i64,
                        cols: AttemptCols::of(attempt)?,
                    });
                }
            }
            let state = object.state();
            objects.push(ObjectRow {
                ord,
                id,
                loc,
                kind: kind_of(&object),
                state: StateCols::of(&state)?,
                stored: state != State::default()
                    || matches!(object, ObjectRef::Action(a) if !a.attempts.is_empty()),
            });
        }
        let definition = crate::storage::definition_json(plan)?;
        Ok(PreparedPlan {
            id: plan.id,
            id_text: id_text(plan.id.0),
            group_id: plan.group_id.map(id_text),
            name: plan.name.clone(),
            descr: plan.descr.clone(),
            submit_time: opt_ns(plan.submit_time)?,
            state: StateCols::of(&plan.state)?,
            reason: plan.reason.to_string(),
            heartbeat: opt_ns(plan.heartbeat)?,
            paused: plan.paused,
            definition,
            objects,
            attempts,
        })
    }
}

/// The clustering key (`ord`) of every object of `plan`, in walk order: its rank in an order
/// where, in each block, the sequences come together and their actions are ordered by index in
/// the sequence first and sequence second; everything else keeps its walk order. Actions that
/// concurrent sequences run at about the same time thus get neighbouring keys.
pub(super) fn execution_order(plan: &Plan) -> Vec<i64> {
    let mut first_sequence: HashMap<usize, usize> = HashMap::new();
    let keys: Vec<(usize, u8, usize, usize)> = plan
        .walk()
        .enumerate()
        .map(|(position, (loc, _))| match loc {
            Loc::Sequence { block, seq } => {
                (*first_sequence.entry(block).or_insert(position), 1, seq, 0)
            }
            Loc::Action {
                parent: Parent::Sequence { block, seq },
                index,
            } => (
                *first_sequence.entry(block).or_insert(position),
                2,
                index,
                seq,
            ),
            _ => (position, 0, 0, 0),
        })
        .collect();
    let mut by_key: Vec<usize> = (0..keys.len()).collect();
    by_key.sort_unstable_by_key(|&i| keys[i]);
    let mut ord = vec![0; keys.len()];
    for (rank, i) in by_key.into_iter().enumerate() {
        ord[i] = rank as i64;
    }
    ord
}

/// One change, encoded for the writer thread. Objects are named by their id and location: the
/// writer checks them against what it knows of the plan's objects.
#[derive(Debug)]
pub(super) enum Op {
    /// The plan's own state (`Loc::Plan`); `id` must be the plan's id.
    PlanState { id: Uuid, state: StateCols },
    /// The state of a non-plan object.
    ObjectState {
        id: Uuid,
        loc: Loc,
        state: StateCols,
    },
    /// Sets attempt `index` of an action and drops later ones.
    Attempt {
        id: Uuid,
        loc: Loc,
        index: i64,
        cols: AttemptCols,
    },
    /// An action back to `NotStarted` without attempts.
    Reset { id: Uuid, loc: Loc },
    /// The plan's failure reason.
    Reason(String),
    /// The plan's heartbeat.
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
                loc: *loc,
                state: StateCols::of(state)?,
            },
            Change::Attempt {
                loc,
                id,
                index,
                attempt,
            } => Op::Attempt {
                id: *id,
                loc: *loc,
                index: i64::from(*index),
                cols: AttemptCols::of(attempt)?,
            },
            Change::Reset { loc, id } => Op::Reset { id: *id, loc: *loc },
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

/// Maps a SQLite error to a store error: busy and locked databases are transient, everything
/// else (disk full, I/O errors, corruption, read-only files, misuse) is permanent. The message
/// names the store, what was being done and, for SQLite's own failures, the kind of failure in
/// words; the driver's error is the source.
pub(super) fn sql_error(store: &str, doing: &str, e: rusqlite::Error) -> StoreError {
    let message = match &e {
        rusqlite::Error::SqliteFailure(err, _) => {
            format!("{store}: {doing}: {}", describe_code(err.code))
        }
        _ => format!("{store}: {doing}"),
    };
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::transient(message).caused_by(e)
        }
        _ => StoreError::permanent(message).caused_by(e),
    }
}

fn describe_code(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::DatabaseBusy => "the database is busy",
        ErrorCode::DatabaseLocked => "a table is locked",
        ErrorCode::DiskFull => "the disk is full",
        ErrorCode::SystemIoFailure => "disk I/O error",
        ErrorCode::DatabaseCorrupt => "the database file is corrupt",
        ErrorCode::NotADatabase => "the file is not a SQLite database",
        ErrorCode::ReadOnly => "the database is read-only",
        ErrorCode::CannotOpen => "the file cannot be opened",
        ErrorCode::PermissionDenied => "permission denied",
        ErrorCode::ConstraintViolation => "constraint violation",
        ErrorCode::TooBig => "value too big",
        _ => "SQLite error",
    }
}

//! How SQLite stores what the SQL stores share ([`crate::storage::sql`]): ids as canonical UUID
//! text, a plan's objects by their place in execution order (`ord`), each with its row only
//! when it has a state or attempts. Also the mapping of SQLite errors to [`StoreError`].

use std::collections::HashMap;

use rusqlite::ErrorCode;
use uuid::Uuid;

use crate::storage::StoreError;
use crate::storage::sql::{AttemptCols, StateCols, encode_objects, opt_ns};
use crate::workflow::{Loc, Parent, Plan, PlanId};

pub(super) fn id_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

pub(super) fn parse_id(text: &str, what: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|e| format!("{what} `{text}` is not a UUID: {e}"))
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
        let mut objects = Vec::new();
        let mut attempts = Vec::new();
        let order = execution_order(plan);
        for object in encode_objects(plan) {
            let object = object?;
            let ord = order[object.position];
            for (idx, attempt) in object.attempts.iter().enumerate() {
                attempts.push(AttemptRow {
                    ord,
                    idx: idx as i64,
                    cols: AttemptCols::of(attempt)?,
                });
            }
            objects.push(ObjectRow {
                ord,
                id: object.id,
                loc: object.loc,
                kind: object.kind,
                state: object.state,
                stored: object.touched,
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

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
    /// The definition without its blocks' sequences (schema version 5).
    pub definition: String,
    /// The sequences' definitions, in chunks, block by block.
    pub sequences: Vec<crate::storage::sql::ChunkDef>,
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
        let (definition, sequences) = crate::storage::sql::definition_parts(plan)?;
        Ok(PreparedPlan {
            id: plan.id,
            id_text: id_text(plan.id.0),
            group_id: plan.group_id.map(id_text),
            name: plan.name.clone(),
            descr: plan.descr.clone(),
            submit_time: opt_ns(plan.submit_time)?,
            state: StateCols::of(&plan.state())?,
            reason: plan.reason().to_string(),
            heartbeat: opt_ns(plan.heartbeat())?,
            paused: plan.is_paused(),
            definition,
            sequences,
            objects,
            attempts,
        })
    }
}

/// Where the objects of a plan sit in execution order (their `ord`), from the plan without its
/// sequences' actions and each sequence's number of actions: what [`execution_order`] gives
/// for the whole plan, without holding every action. In walk order, a block's sequences and
/// their actions are one run of positions; the run keeps its place, and within it the
/// sequences come first, then the actions by index in the sequence and sequence.
pub(super) struct Layout {
    /// `ord` of each object outside the runs, by location.
    outside: HashMap<Loc, i64>,
    /// Per block, where its run starts and each sequence's number of actions.
    runs: Vec<(i64, Vec<u32>)>,
}

impl Layout {
    /// The layout of `plan`, whose sequence `seq` of block `block` has `counts[block][seq]`
    /// actions (its own actions, if any, are not looked at).
    pub fn new(plan: &Plan, counts: &[Vec<u32>]) -> Layout {
        let mut outside = HashMap::new();
        let mut runs: Vec<(i64, Vec<u32>)> = counts.iter().map(|c| (0, c.clone())).collect();
        let mut position: i64 = 0;
        for (loc, _) in plan.walk() {
            match loc {
                Loc::Sequence { block, seq } => {
                    let n = counts
                        .get(block)
                        .and_then(|c| c.get(seq))
                        .copied()
                        .unwrap_or(0);
                    if seq == 0
                        && let Some(run) = runs.get_mut(block)
                    {
                        run.0 = position;
                    }
                    position += 1 + i64::from(n);
                }
                Loc::Action {
                    parent: Parent::Sequence { .. },
                    ..
                } => {}
                _ => {
                    outside.insert(loc, position);
                    position += 1;
                }
            }
        }
        Layout { outside, runs }
    }

    /// `ord` of the object at `loc` outside the blocks' sequences (`None` for one inside).
    pub fn outside(&self, loc: Loc) -> Option<i64> {
        self.outside.get(&loc).copied()
    }

    /// The `ord`s of block `block`'s sequences: `start..start + n`.
    pub fn sequences(&self, block: usize) -> std::ops::Range<i64> {
        self.runs
            .get(block)
            .map_or(0..0, |(start, c)| *start..*start + c.len() as i64)
    }

    /// The `ord`s of block `block`'s sequences' actions.
    pub fn action_range(&self, block: usize) -> std::ops::Range<i64> {
        self.runs.get(block).map_or(0..0, |(start, c)| {
            let first = *start + c.len() as i64;
            first..first + c.iter().map(|&n| i64::from(n)).sum::<i64>()
        })
    }

    /// The `ord`s of the actions of the sequences `seqs` (ascending) of block `block`: for
    /// each, one `ord` per action, in order.
    pub fn actions(&self, block: usize, seqs: &[usize]) -> Vec<Vec<i64>> {
        let Some((start, counts)) = self.runs.get(block) else {
            return Vec::new();
        };
        // Only the indexes the sequences asked for have: a count read from a damaged row of
        // another sequence sizes nothing.
        let longest = seqs
            .iter()
            .map(|&s| counts.get(s).copied().unwrap_or(0) as usize)
            .max()
            .unwrap_or(0);
        // How many sequences have more than `i` actions; then where index `i` starts.
        let mut having = vec![0i64; longest];
        for &c in counts {
            for h in &mut having[..(c as usize).min(longest)] {
                *h += 1;
            }
        }
        let mut first = Vec::with_capacity(longest);
        let mut at = *start + counts.len() as i64;
        for h in &having {
            first.push(at);
            at += h;
        }
        // Sequences before the one looked at that have more than `i` actions.
        let mut before = vec![0i64; longest];
        let mut next = 0;
        let mut out = Vec::with_capacity(seqs.len());
        for &s in seqs {
            while next < s.min(counts.len()) {
                for b in &mut before[..(counts[next] as usize).min(longest)] {
                    *b += 1;
                }
                next += 1;
            }
            let n = counts.get(s).copied().unwrap_or(0) as usize;
            out.push((0..n).map(|i| first[i] + before[i]).collect());
        }
        out
    }

    /// How many objects the plan has (the `ord`s are `0..end`).
    pub fn end(&self) -> i64 {
        let outside = self.outside.values().copied().max().map_or(0, |o| o + 1);
        let runs = self
            .runs
            .iter()
            .map(|(start, c)| {
                *start + c.len() as i64 + c.iter().map(|&n| i64::from(n)).sum::<i64>()
            })
            .max()
            .unwrap_or(0);
        outside.max(runs)
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

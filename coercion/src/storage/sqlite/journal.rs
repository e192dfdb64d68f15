//! The journal (schema version 2): the object changes of each write, appended by the writer at
//! commit time and folded into `objects` and `attempts` later. See the `schema` module for the
//! table.
//!
//! A row holds the changes of one `apply` to the plan's objects (states, attempts, resets) as
//! one compact blob, encoded by the caller before the write is queued, so the writer only binds
//! four values per write. The encoding (little-endian):
//!
//! ```text
//! entry*            one per change, in the order of the write
//! entry  = tag:u8 id:[u8; 16] body
//! tag 1  = state:   status:u8 flags:u8 [start:i64 if flags & 1] [end:i64 if flags & 2]
//! tag 2  = attempt: index:u32 start:i64 flags:u8 [end:i64 if flags & 1]
//!                   [outcome_len:u32 outcome:utf-8 JSON if flags & 2]
//! tag 3  = reset
//! ```
//!
//! `id` is the object's UUID; statuses are numbered in [`STATUSES`] order. An attempt replaces
//! the attempt of its index (the last or the next one: `storage::check_changes`); a reset puts
//! the action back to `NotStarted` without attempts.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, params};
use uuid::Uuid;

use super::codec::sql_error;
use crate::storage::StoreError;
use crate::storage::sql::Op;
use crate::workflow::Status;

const APPEND: &str = "INSERT INTO journal (plan_pk, seq, changes, drops) VALUES (?1, ?2, ?3, ?4)";
const READ: &str =
    "SELECT seq, changes, drops FROM journal WHERE plan_pk = ?1 ORDER BY seq LIMIT ?2";
const DELETE_FOLDED: &str = "DELETE FROM journal WHERE plan_pk = ?1 AND seq <= ?2";
const PENDING: &str = "SELECT plan_pk, count(*), max(seq) FROM journal GROUP BY plan_pk";
const UPSERT_OBJECT: &str = "INSERT INTO objects (plan_pk, ord, kind, status, start_ns, end_ns) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (plan_pk, ord) DO UPDATE SET \
     status = excluded.status, start_ns = excluded.start_ns, end_ns = excluded.end_ns";
const ENSURE_OBJECT: &str = "INSERT INTO objects (plan_pk, ord, kind, status) \
     VALUES (?1, ?2, ?3, 'NotStarted') ON CONFLICT (plan_pk, ord) DO NOTHING";
const TRUNCATE_ATTEMPTS: &str =
    "DELETE FROM attempts WHERE plan_pk = ?1 AND ord = ?2 AND idx >= ?3";
const UPSERT_ATTEMPT: &str = "INSERT INTO attempts (plan_pk, ord, idx, start_ns, end_ns, outcome) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (plan_pk, ord, idx) DO UPDATE SET \
     start_ns = excluded.start_ns, end_ns = excluded.end_ns, outcome = excluded.outcome";

/// Statuses by their number in the encoding.
pub(super) const STATUSES: [Status; 5] = [
    Status::NotStarted,
    Status::Running,
    Status::Completed,
    Status::Failed,
    Status::Stopped,
];

const STATE: u8 = 1;
const ATTEMPT: u8 = 2;
const RESET: u8 = 3;

/// Encodes the object changes among `ops` (the plan's own fields are not journaled). Empty if
/// there are none.
pub(super) fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::ObjectState { id, state, .. } => {
                out.push(STATE);
                out.extend_from_slice(id.as_bytes());
                let status = STATUSES
                    .iter()
                    .position(|s| s.as_str() == state.status)
                    .unwrap_or(0);
                out.push(status as u8);
                out.push(u8::from(state.start.is_some()) | u8::from(state.end.is_some()) << 1);
                for t in [state.start, state.end].into_iter().flatten() {
                    out.extend_from_slice(&t.to_le_bytes());
                }
            }
            Op::Attempt {
                id, index, cols, ..
            } => {
                out.push(ATTEMPT);
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&cols.start.to_le_bytes());
                out.push(u8::from(cols.end.is_some()) | u8::from(cols.outcome.is_some()) << 1);
                if let Some(end) = cols.end {
                    out.extend_from_slice(&end.to_le_bytes());
                }
                if let Some(outcome) = &cols.outcome {
                    let len = u32::try_from(outcome.len()).unwrap_or(u32::MAX);
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(outcome.as_bytes());
                }
            }
            Op::Reset { id, .. } => {
                out.push(RESET);
                out.extend_from_slice(id.as_bytes());
            }
            Op::Plan(_) => {}
        }
    }
    out
}

/// One decoded change of a journal row.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Entry<'a> {
    State {
        id: Uuid,
        status: Status,
        start: Option<i64>,
        end: Option<i64>,
    },
    Attempt {
        id: Uuid,
        index: i64,
        start: i64,
        end: Option<i64>,
        outcome: Option<&'a str>,
    },
    Reset {
        id: Uuid,
    },
}

impl Entry<'_> {
    /// The object it changes.
    pub fn id(&self) -> Uuid {
        match self {
            Entry::State { id, .. } | Entry::Attempt { id, .. } | Entry::Reset { id } => *id,
        }
    }
}

/// Decodes a journal row's blob; the error says what is wrong and where.
pub(super) fn decode(blob: &[u8]) -> Result<Vec<Entry<'_>>, String> {
    let mut r = Reader { blob, at: 0 };
    let mut entries = Vec::new();
    while r.at < blob.len() {
        let tag = r.u8()?;
        if !matches!(tag, STATE | ATTEMPT | RESET) {
            return Err(format!("unknown change tag {tag} at byte {}", r.at - 1));
        }
        let id = Uuid::from_bytes(r.array()?);
        entries.push(match tag {
            STATE => {
                let n = r.u8()?;
                let status = *STATUSES
                    .get(usize::from(n))
                    .ok_or_else(|| format!("unknown status number {n} at byte {}", r.at - 1))?;
                let flags = r.u8()?;
                let start = if flags & 1 != 0 { Some(r.i64()?) } else { None };
                let end = if flags & 2 != 0 { Some(r.i64()?) } else { None };
                Entry::State {
                    id,
                    status,
                    start,
                    end,
                }
            }
            ATTEMPT => {
                let index = i64::from(u32::from_le_bytes(r.array()?));
                let start = r.i64()?;
                let flags = r.u8()?;
                let end = if flags & 1 != 0 { Some(r.i64()?) } else { None };
                let outcome = if flags & 2 != 0 {
                    let len = u32::from_le_bytes(r.array()?) as usize;
                    let at = r.at;
                    let bytes = r.bytes(len)?;
                    Some(
                        std::str::from_utf8(bytes)
                            .map_err(|e| format!("an outcome at byte {at} is not UTF-8: {e}"))?,
                    )
                } else {
                    None
                };
                Entry::Attempt {
                    id,
                    index,
                    start,
                    end,
                    outcome,
                }
            }
            _ => Entry::Reset { id },
        });
    }
    Ok(entries)
}

struct Reader<'a> {
    blob: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.blob.len());
        let Some(end) = end else {
            return Err(format!(
                "the blob ends at byte {} inside a change that needs {n} more bytes from byte {}",
                self.blob.len(),
                self.at
            ));
        };
        let bytes = &self.blob[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }
}

/// Appends `changes` (an [`encode`]d blob) to plan `plan`'s journal as row `*seq`, which then
/// advances. Its `drops` flag is 0: an attempt no longer drops later ones (see the `schema`
/// module).
pub(super) fn append(
    conn: &Connection,
    plan: i64,
    seq: &mut i64,
    changes: &[u8],
) -> rusqlite::Result<()> {
    conn.prepare_cached(APPEND)?
        .execute(params![plan, *seq, changes, false])?;
    *seq += 1;
    Ok(())
}

/// A journal row as read back: its sequence number, blob, and `drops` flag.
pub(super) type Row = (i64, Vec<u8>, bool);

/// The first `limit` (all, if `None`) journal rows of plan `plan`, in order.
pub(super) fn read(
    conn: &Connection,
    plan: i64,
    limit: Option<usize>,
) -> rusqlite::Result<Vec<Row>> {
    let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let mut stmt = conn.prepare_cached(READ)?;
    let rows = stmt.query_map(params![plan, limit], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    rows.collect()
}

/// Journal rows per plan, and the highest sequence number in use.
pub(super) fn pending(conn: &Connection) -> rusqlite::Result<(BTreeMap<i64, usize>, i64)> {
    let mut stmt = conn.prepare_cached(PENDING)?;
    let mut rows = stmt.query([])?;
    let (mut plans, mut last) = (BTreeMap::new(), -1);
    while let Some(r) = rows.next()? {
        let count: i64 = r.get(1)?;
        plans.insert(r.get(0)?, usize::try_from(count).unwrap_or(0));
        last = last.max(r.get(2)?);
    }
    Ok((plans, last))
}

/// What a run of journal rows does to one object, collapsed.
struct Folded {
    kind: &'static str,
    /// Status, start, end.
    state: Option<(Status, Option<i64>, Option<i64>)>,
    /// Stored attempts from this index on are dropped. Attempts written by the journal need
    /// no deletion when no row dropped any: their indices then only grow or repeat.
    truncate: Option<i64>,
    /// Whether a row of the run dropped attempts (a reset, or a row with `drops`).
    drops: bool,
    /// Attempts written (index, start, end, outcome), by index, after the truncation.
    attempts: Vec<(i64, i64, Option<i64>, Option<String>)>,
}

/// The collapsed changes of object `id`, placed by `ord_of`.
fn slot<'m>(
    objects: &'m mut HashMap<i64, Folded>,
    ord_of: &mut dyn FnMut(Uuid) -> Result<(i64, &'static str), StoreError>,
    id: Uuid,
) -> Result<&'m mut Folded, StoreError> {
    let (ord, kind) = ord_of(id)?;
    Ok(objects.entry(ord).or_insert_with(|| Folded {
        kind,
        state: None,
        truncate: None,
        drops: false,
        attempts: Vec::new(),
    }))
}

/// Folds the first `limit` (all, if `None`) journal rows of plan `plan` into its tables and
/// deletes them, in the caller's transaction. `ord_of` gives an object's clustering key and kind
/// from its id: objects get their row (see the `schema` module) when first folded. Each object's
/// changes are collapsed first, so an action that started and finished costs one write of its
/// row and one attempt row. Returns how many rows were folded.
pub(super) fn fold(
    conn: &Connection,
    store: &str,
    plan: i64,
    limit: Option<usize>,
    ord_of: &mut dyn FnMut(Uuid) -> Result<(i64, &'static str), StoreError>,
) -> Result<usize, StoreError> {
    let err = |e| sql_error(store, "folding the journal", e);
    let rows = read(conn, plan, limit).map_err(err)?;
    let Some(last) = rows.last().map(|r| r.0) else {
        return Ok(0);
    };
    let mut objects: HashMap<i64, Folded> = HashMap::new();
    for (seq, blob, drops) in &rows {
        let entries = decode(blob).map_err(|e| {
            StoreError::permanent(format!(
                "{store}: folding the journal: row {seq} of plan #{plan} is unreadable: {e}"
            ))
        })?;
        for entry in entries {
            match entry {
                Entry::State {
                    id,
                    status,
                    start,
                    end,
                } => {
                    slot(&mut objects, ord_of, id)?.state = Some((status, start, end));
                }
                Entry::Attempt {
                    id,
                    index,
                    start,
                    end,
                    outcome,
                } => {
                    let object = slot(&mut objects, ord_of, id)?;
                    object.attempts.retain(|a| a.0 < index);
                    object
                        .attempts
                        .push((index, start, end, outcome.map(str::to_owned)));
                    object.truncate = Some(object.truncate.map_or(index + 1, |t| t.min(index + 1)));
                    object.drops |= drops;
                }
                Entry::Reset { id } => {
                    let object = slot(&mut objects, ord_of, id)?;
                    object.state = Some((Status::NotStarted, None, None));
                    object.truncate = Some(0);
                    object.drops = true;
                    object.attempts.clear();
                }
            }
        }
    }
    let mut objects: Vec<(i64, Folded)> = objects.into_iter().collect();
    objects.sort_unstable_by_key(|(ord, _)| *ord);
    let mut upsert_object = conn.prepare_cached(UPSERT_OBJECT).map_err(err)?;
    let mut ensure_object = conn.prepare_cached(ENSURE_OBJECT).map_err(err)?;
    let mut truncate = conn.prepare_cached(TRUNCATE_ATTEMPTS).map_err(err)?;
    let mut upsert = conn.prepare_cached(UPSERT_ATTEMPT).map_err(err)?;
    for (ord, object) in &objects {
        match object.state {
            Some((status, start, end)) => {
                upsert_object
                    .execute(params![plan, ord, object.kind, status.as_str(), start, end])
                    .map_err(err)?;
            }
            // Attempts need their object's row.
            None if !object.attempts.is_empty() => {
                ensure_object
                    .execute(params![plan, ord, object.kind])
                    .map_err(err)?;
            }
            None => {}
        }
        if let (Some(from), true) = (object.truncate, object.drops) {
            truncate.execute(params![plan, ord, from]).map_err(err)?;
        }
        for (idx, start, end, outcome) in &object.attempts {
            upsert
                .execute(params![plan, ord, idx, start, end, outcome])
                .map_err(err)?;
        }
    }
    conn.prepare_cached(DELETE_FOLDED)
        .and_then(|mut s| s.execute(params![plan, last]))
        .map_err(err)?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sql::{AttemptCols, PlanSet, StateCols};
    use crate::workflow::Loc;

    #[test]
    fn changes_round_trip_and_bad_blobs_give_errors_not_panics() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let ops = vec![
            Op::ObjectState {
                id: a,
                loc: Loc::Block(0),
                state: StateCols {
                    status: "Completed",
                    start: Some(-5),
                    end: Some(i64::MAX),
                },
            },
            Op::Plan(Box::new(PlanSet {
                heartbeat: Some(7),
                ..PlanSet::default()
            })),
            Op::Attempt {
                id: b,
                loc: Loc::Block(1),
                index: 3,
                cols: AttemptCols {
                    start: 11,
                    end: None,
                    outcome: Some("{\"response\":\"é ✓\"}".to_owned()),
                },
            },
            Op::Reset {
                id: a,
                loc: Loc::Block(0),
            },
            Op::ObjectState {
                id: b,
                loc: Loc::Block(1),
                state: StateCols {
                    status: "NotStarted",
                    start: None,
                    end: None,
                },
            },
        ];
        let blob = encode(&ops);
        assert_eq!(
            decode(&blob).unwrap(),
            vec![
                Entry::State {
                    id: a,
                    status: Status::Completed,
                    start: Some(-5),
                    end: Some(i64::MAX)
                },
                Entry::Attempt {
                    id: b,
                    index: 3,
                    start: 11,
                    end: None,
                    outcome: Some("{\"response\":\"é ✓\"}")
                },
                Entry::Reset { id: a },
                Entry::State {
                    id: b,
                    status: Status::NotStarted,
                    start: None,
                    end: None
                },
            ]
        );
        let plan_only = Op::Plan(Box::new(PlanSet {
            heartbeat: Some(1),
            paused: Some(true),
            ..PlanSet::default()
        }));
        assert!(encode(&[plan_only]).is_empty());
        // Every truncation, and some corruptions, are errors that say where.
        for n in 0..blob.len() {
            let cut = &blob[..n];
            if let Err(e) = decode(cut) {
                assert!(e.contains("byte"), "{e}");
            }
        }
        let mut bad = blob.clone();
        bad[0] = 9;
        assert!(
            decode(&bad)
                .unwrap_err()
                .contains("unknown change tag 9 at byte 0")
        );
        let mut bad = blob.clone();
        bad[17] = 200;
        assert!(
            decode(&bad)
                .unwrap_err()
                .contains("unknown status number 200")
        );
    }
}

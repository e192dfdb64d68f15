//! The journal (schema version 2): changes to objects appended by the writer at commit time,
//! and folded into `objects` and `attempts` later. See the `schema` module for the table.
//!
//! Everything here is plain SQL on a connection the caller holds in a transaction: the writer
//! appends and folds, readers replay what is not folded yet.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use rusqlite::{Connection, params};

use super::codec::{AttemptCols, StateCols, sql_error};
use crate::storage::StoreError;
use crate::workflow::Status;

const APPEND: &str = "INSERT INTO journal (plan_pk, seq, ord, reset, status, start_ns, end_ns, \
     idx, attempt_start_ns, attempt_end_ns, outcome, drops) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
const READ: &str = "SELECT seq, ord, reset, status, start_ns, end_ns, idx, attempt_start_ns, \
     attempt_end_ns, outcome, drops FROM journal WHERE plan_pk = ?1 ORDER BY seq LIMIT ?2";
const DELETE_FOLDED: &str = "DELETE FROM journal WHERE plan_pk = ?1 AND seq <= ?2";
const PENDING: &str = "SELECT plan_pk, count(*), max(seq) FROM journal GROUP BY plan_pk";
const UPDATE_OBJECT_STATE: &str =
    "UPDATE objects SET status = ?3, start_ns = ?4, end_ns = ?5 WHERE plan_pk = ?1 AND ord = ?2";
const TRUNCATE_ATTEMPTS: &str =
    "DELETE FROM attempts WHERE plan_pk = ?1 AND ord = ?2 AND idx >= ?3";
const UPSERT_ATTEMPT: &str = "INSERT INTO attempts (plan_pk, ord, idx, start_ns, end_ns, outcome) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (plan_pk, ord, idx) DO UPDATE SET \
     start_ns = excluded.start_ns, end_ns = excluded.end_ns, outcome = excluded.outcome";

/// What one write changes of one object: a row of the journal, borrowed from the write's ops.
struct Pending<'a> {
    ord: i64,
    reset: bool,
    state: Option<&'a StateCols>,
    attempt: Option<(i64, &'a AttemptCols)>,
    drops: bool,
}

/// The journal rows of one write, built change by change. Consecutive changes of one object
/// share a row where the row's order of application (reset, state, attempt) keeps their
/// meaning: an action's "attempt finished" and "completed" are one row.
#[derive(Default)]
pub(super) struct Rows<'a> {
    rows: Vec<Pending<'a>>,
}

impl<'a> Rows<'a> {
    /// The last row, if it is `ord`'s.
    fn last(&mut self, ord: i64) -> Option<&mut Pending<'a>> {
        self.rows.last_mut().filter(|r| r.ord == ord)
    }

    fn push(&mut self, ord: i64) -> &mut Pending<'a> {
        self.rows.push(Pending {
            ord,
            reset: false,
            state: None,
            attempt: None,
            drops: false,
        });
        self.rows.last_mut().expect("just pushed")
    }

    /// The object's state becomes `state`. A state and an attempt are independent, and of two
    /// states the later wins, so a state always joins the object's last row.
    pub fn state(&mut self, ord: i64, state: &'a StateCols) {
        match self.last(ord) {
            Some(row) => row.state = Some(state),
            None => self.push(ord).state = Some(state),
        }
    }

    /// Attempt `idx` of the action becomes `attempt`, and later ones are dropped; `drops`
    /// says whether there are any (the action has more than `idx + 1` attempts).
    pub fn attempt(&mut self, ord: i64, idx: i64, attempt: &'a AttemptCols, drops: bool) {
        let row = match self.last(ord).filter(|r| r.attempt.is_none()) {
            Some(row) => row,
            None => self.push(ord),
        };
        row.attempt = Some((idx, attempt));
        row.drops = drops;
    }

    /// The action goes back to `NotStarted` without attempts: it starts a row, since a reset
    /// is applied before the rest of its row.
    pub fn reset(&mut self, ord: i64) {
        self.push(ord).reset = true;
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Appends the rows to plan `plan`'s journal, numbered from `*seq` on.
    pub fn append(&self, conn: &Connection, plan: i64, seq: &mut i64) -> rusqlite::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut insert = conn.prepare_cached(APPEND)?;
        for row in &self.rows {
            let (status, start, end) = match row.state {
                Some(s) => (Some(s.status), s.start, s.end),
                None => (None, None, None),
            };
            let (idx, a_start, a_end, outcome) = match row.attempt {
                Some((idx, a)) => (Some(idx), Some(a.start), a.end, a.outcome.as_deref()),
                None => (None, None, None, None),
            };
            insert.execute(params![
                plan, *seq, row.ord, row.reset, status, start, end, idx, a_start, a_end, outcome,
                row.drops
            ])?;
            *seq += 1;
        }
        Ok(())
    }
}

/// A journal row as read back.
#[derive(Debug)]
pub(super) struct Entry {
    pub seq: i64,
    pub ord: i64,
    pub reset: bool,
    /// Status name, start, end.
    pub state: Option<(String, Option<i64>, Option<i64>)>,
    /// Index, start, end, outcome.
    pub attempt: Option<(i64, i64, Option<i64>, Option<String>)>,
}

/// The first `limit` (all, if `None`) journal rows of plan `plan`, in order.
pub(super) fn read(
    conn: &Connection,
    plan: i64,
    limit: Option<usize>,
) -> rusqlite::Result<Vec<Entry>> {
    let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let mut stmt = conn.prepare_cached(READ)?;
    let rows = stmt.query_map(params![plan, limit], |r| {
        let status: Option<String> = r.get(3)?;
        let idx: Option<i64> = r.get(6)?;
        Ok(Entry {
            seq: r.get(0)?,
            ord: r.get(1)?,
            reset: r.get(2)?,
            state: match status {
                Some(status) => Some((status, r.get(4)?, r.get(5)?)),
                None => None,
            },
            attempt: match idx {
                Some(idx) => Some((idx, r.get(7)?, r.get(8)?, r.get(9)?)),
                None => None,
            },
        })
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
#[derive(Default)]
struct Folded {
    /// Status name, start, end.
    state: Option<(&'static str, Option<i64>, Option<i64>)>,
    /// Stored attempts from this index on are dropped. Attempts written by the journal's rows
    /// need no deletion when no row dropped any: their indices then only grow or repeat.
    truncate: Option<i64>,
    /// Whether a row of the run dropped attempts (a reset, or an attempt with `drops`).
    drops: bool,
    /// Attempts written (index, start, end, outcome), by index, after the truncation.
    attempts: Vec<(i64, i64, Option<i64>, Option<String>)>,
}

/// Folds the first `limit` (all, if `None`) journal rows of plan `plan` into its tables and
/// deletes them, in the caller's transaction. Each object's rows are collapsed first, so an
/// action that started and finished costs one update of its row and one attempt row. Returns
/// how many rows were folded.
pub(super) fn fold(
    conn: &Connection,
    store: &str,
    plan: i64,
    limit: Option<usize>,
) -> Result<usize, StoreError> {
    let err = |e| sql_error(store, "folding the journal", e);
    let corrupt = |what: String| {
        StoreError::Permanent(format!(
            "{store}: folding the journal of plan #{plan}: {what}"
        ))
    };
    let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let mut objects: HashMap<i64, Folded> = HashMap::new();
    let (mut rows, mut last) = (0, None);
    {
        let mut stmt = conn.prepare_cached(READ).map_err(err)?;
        let mut cursor = stmt.query(params![plan, limit]).map_err(err)?;
        while let Some(r) = cursor.next().map_err(err)? {
            rows += 1;
            last = Some(r.get::<_, i64>(0).map_err(err)?);
            let object = objects.entry(r.get(1).map_err(err)?).or_default();
            if r.get::<_, bool>(2).map_err(err)? {
                object.state = Some((Status::NotStarted.as_str(), None, None));
                object.truncate = Some(0);
                object.drops = true;
                object.attempts.clear();
            }
            if let Some(status) = r
                .get_ref(3)
                .map_err(err)?
                .as_str_or_null()
                .map_err(|e| err(e.into()))?
            {
                let status = Status::from_str(status).map_err(corrupt)?;
                object.state = Some((
                    status.as_str(),
                    r.get(4).map_err(err)?,
                    r.get(5).map_err(err)?,
                ));
            }
            if let Some(idx) = r.get::<_, Option<i64>>(6).map_err(err)? {
                let outcome = r
                    .get_ref(9)
                    .map_err(err)?
                    .as_str_or_null()
                    .map_err(|e| err(e.into()))?
                    .map(str::to_owned);
                let attempt = (idx, r.get(7).map_err(err)?, r.get(8).map_err(err)?, outcome);
                object.attempts.retain(|a| a.0 < idx);
                object.attempts.push(attempt);
                object.truncate = Some(object.truncate.map_or(idx + 1, |t| t.min(idx + 1)));
                object.drops |= r.get::<_, bool>(10).map_err(err)?;
            }
        }
    }
    let Some(last) = last else {
        return Ok(0);
    };
    let mut objects: Vec<(i64, Folded)> = objects.into_iter().collect();
    objects.sort_unstable_by_key(|(ord, _)| *ord);
    let mut update = conn.prepare_cached(UPDATE_OBJECT_STATE).map_err(err)?;
    let mut truncate = conn.prepare_cached(TRUNCATE_ATTEMPTS).map_err(err)?;
    let mut upsert = conn.prepare_cached(UPSERT_ATTEMPT).map_err(err)?;
    for (ord, object) in &objects {
        if let Some((status, start, end)) = object.state {
            let changed = update
                .execute(params![plan, ord, status, start, end])
                .map_err(err)?;
            if changed != 1 {
                return Err(corrupt(format!("it has no object #{ord}")));
            }
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
    Ok(rows)
}

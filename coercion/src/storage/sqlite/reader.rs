//! Reads: read-only connections from a small pool, each read in its own read transaction (a
//! consistent snapshot, never blocked by the writer in WAL mode), run on tokio's blocking pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter, types::Value};
use uuid::Uuid;

use super::codec::{execution_order, id_text, parse_id, sql_error};
use super::journal;
use crate::storage::sql::{
    AttemptCols, ChunkRow, PlanRow, StateCols, clamp_ns, corrupt, decode_owner, from_ns, kind_of,
    push_attempt,
};
use crate::storage::{Change, ListFilter, PlanSummary, StoreError};
use crate::workflow::{Loc, Plan, PlanId, State};

/// Read-only connections to one file.
pub(super) struct ReaderPool {
    path: PathBuf,
    store: Arc<str>,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    /// Set when the file is read as immutable (see [`ReaderPool::immutable`]): the writer's
    /// lock file, checked before every read.
    immutable: Option<PathBuf>,
}

impl ReaderPool {
    pub fn new(
        path: PathBuf,
        store: Arc<str>,
        busy_timeout: Duration,
        max_idle: usize,
    ) -> ReaderPool {
        ReaderPool {
            path,
            store,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            max_idle,
            immutable: None,
        }
    }

    /// Reads the file as immutable (SQLite's `immutable=1`: no locks, no `-shm`), for a file
    /// beside which this user cannot create `-shm`. Sound only while nothing writes the file:
    /// every read first checks that no process holds the writer's lock `lock_path`, and no
    /// connection is kept between reads (an immutable connection never notices changes).
    pub fn immutable(mut self, lock_path: PathBuf) -> ReaderPool {
        self.immutable = Some(lock_path);
        self.max_idle = 0;
        self
    }

    /// Closes the idle connections.
    pub fn close_idle(&self) {
        self.idle.lock().clear();
    }

    /// Opens a read-only connection (not from the pool).
    pub fn connect(&self) -> Result<Connection, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_EXRESCODE;
        let conn = match &self.immutable {
            None => Connection::open_with_flags(&self.path, flags),
            Some(lock) => {
                self.check_still_immutable(lock)?;
                Connection::open_with_flags(
                    immutable_uri(&self.path),
                    flags | OpenFlags::SQLITE_OPEN_URI,
                )
            }
        }
        .map_err(|e| sql_error(&self.store, "opening a read connection", e))?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| sql_error(&self.store, "setting the busy timeout", e))?;
        Ok(conn)
    }

    /// For a file read as immutable: nothing writes it — no process holds the writer's lock
    /// `lock`, no `-shm` appeared (a writer opened it), no write-ahead log holds writes.
    fn check_still_immutable(&self, lock: &Path) -> Result<(), StoreError> {
        let held = super::lock::held_for(&self.store, lock)?;
        let wal = super::sidecar(&self.path, "-wal");
        let written = held
            || super::sidecar(&self.path, "-shm").exists()
            || std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
        if written {
            return Err(StoreError::permanent(format!(
                "{}: a process runs plans from it (or left writes in {}); this user cannot create {} \
                 to read it beside that process, and reading it as an immutable file could see torn \
                 pages or miss writes. Read it as a user who can write to {}, or while no process runs \
                 plans from it",
                self.store,
                wal.display(),
                super::sidecar(&self.path, "-shm").display(),
                self.path.parent().unwrap_or(Path::new("/")).display()
            )));
        }
        Ok(())
    }

    /// Runs `f` with a pooled connection. A connection whose use failed is not returned to
    /// the pool. A file read as immutable is checked again after the read: what was read while
    /// a writer started is not returned.
    pub fn with<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let conn = match self.idle.lock().pop() {
            Some(c) => c,
            None => self.connect()?,
        };
        let result = f(&conn);
        if let Some(lock) = &self.immutable
            && result.is_ok()
        {
            self.check_still_immutable(lock)?;
        }
        if result.is_ok() || matches!(result, Err(StoreError::NotFound(_))) {
            let mut idle = self.idle.lock();
            if idle.len() < self.max_idle {
                idle.push(conn);
            }
        }
        result
    }

    pub fn store(&self) -> &str {
        &self.store
    }

    pub fn is_immutable(&self) -> bool {
        self.immutable.is_some()
    }
}

/// The URI that opens `path` as an immutable file.
fn immutable_uri(path: &Path) -> String {
    use percent_encoding::{AsciiSet, CONTROLS, percent_encode};
    // What a URI's path cannot hold as it is: `?` and `#` end it, `%` escapes.
    const ESCAPED: &AsciiSet = &CONTROLS.add(b'%').add(b'?').add(b'#');
    let bytes = path.as_os_str().as_encoded_bytes();
    format!("file:{}?immutable=1", percent_encode(bytes, ESCAPED))
}

/// Runs blocking work on tokio's blocking pool when a runtime is there, inline otherwise.
pub(super) async fn blocking<R: Send + 'static>(
    store: &str,
    f: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
) -> Result<R, StoreError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(f).await.unwrap_or_else(|e| {
            Err(StoreError::permanent(format!("{store}: a read task failed")).caused_by(e))
        }),
        Err(_) => f(),
    }
}

/// Where each object of a plan is stored: id, `ord`, location and kind.
pub(super) type ObjectIndex = Vec<(Uuid, i64, Loc, &'static str)>;

/// Reads plan `id` whole: the stored definition with every object's state and attempts; with
/// `index`, also where its objects are stored (which the reader works out anyway, and the writer
/// needs to resume the plan).
pub(super) fn read_plan(
    conn: &Connection,
    store: &str,
    id: PlanId,
    index: bool,
) -> Result<(Plan, Option<(i64, ObjectIndex)>), StoreError> {
    let err = |e| sql_error(store, &format!("reading plan {id}"), e);
    let tx = conn.unchecked_transaction().map_err(err)?;
    let (pk, mut plan) = read_head(&tx, store, id)?;
    attach_sequences(&tx, pk, &mut plan)
        .map_err(err)?
        .map_err(|e| corrupt(store, id, e))?;

    // `ord` follows from the definition (see `execution_order`): where each row belongs.
    let mut by_ord: Vec<Option<(Loc, Uuid)>> = vec![None; plan.walk().len()];
    let mut kinds: Vec<&'static str> = vec![""; by_ord.len()];
    for ((loc, object), ord) in plan.walk().zip(execution_order(&plan)) {
        if let Some(slot) = by_ord.get_mut(ord as usize) {
            *slot = Some((loc, object.id()));
            kinds[ord as usize] = kind_of(&object);
        }
    }
    let place = |ord: i64| -> Result<(Loc, Uuid), StoreError> {
        usize::try_from(ord)
            .ok()
            .and_then(|i| by_ord.get(i).copied().flatten())
            .ok_or_else(|| {
                corrupt(
                    store,
                    id,
                    format_args!("object #{ord} is not in its definition"),
                )
            })
    };

    // Objects without a row are `NotStarted`, as in the definition.
    let mut stmt = tx
        .prepare_cached(
            "SELECT ord, kind, status, start_ns, end_ns FROM objects WHERE plan_pk = ?1",
        )
        .map_err(err)?;
    let mut rows = stmt.query([pk]).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        let ord: i64 = r.get(0).map_err(err)?;
        let (loc, object) = place(ord)?;
        let kind = r
            .get_ref(1)
            .map_err(err)?
            .as_str()
            .map_err(|e| err(e.into()))?;
        if kind != kinds[ord as usize] {
            return Err(corrupt(
                store,
                id,
                format_args!(
                    "the row of {} {object} is marked as kind `{kind}`",
                    kinds[ord as usize]
                ),
            ));
        }
        let status = r
            .get_ref(2)
            .map_err(err)?
            .as_str()
            .map_err(|e| err(e.into()))?;
        let state = StateCols::decode(
            status,
            r.get::<_, Option<i64>>(3).map_err(err)?,
            r.get::<_, Option<i64>>(4).map_err(err)?,
        )
        .map_err(|e| corrupt(store, id, e))?;
        if let Some(s) = plan.state_at_mut(loc) {
            *s = state;
        }
    }
    drop(rows);
    drop(stmt);

    let mut stmt = tx
        .prepare_cached(
            "SELECT ord, idx, start_ns, end_ns, outcome FROM attempts WHERE plan_pk = ?1 ORDER BY ord, idx",
        )
        .map_err(err)?;
    let mut rows = stmt.query([pk]).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        let (loc, object) = place(r.get(0).map_err(err)?)?;
        let idx: i64 = r.get(1).map_err(err)?;
        let outcome = r
            .get_ref(4)
            .map_err(err)?
            .as_str_or_null()
            .map_err(|e| err(e.into()))?;
        let attempt = AttemptCols::decode(r.get(2).map_err(err)?, r.get(3).map_err(err)?, outcome)
            .map_err(|e| corrupt(store, id, e))?;
        push_attempt(store, id, object, plan.attempts_mut(loc), idx, attempt)?;
    }
    drop(rows);
    drop(stmt);

    // What the writer has not folded into the tables yet, in order.
    let rows = journal::read(&tx, pk, None).map_err(err)?;
    if !rows.is_empty() {
        let locs: HashMap<Uuid, Loc> = by_ord
            .iter()
            .flatten()
            .map(|(loc, id)| (*id, *loc))
            .collect();
        for (seq, blob, _) in &rows {
            replay(&mut plan, &locs, blob)
                .map_err(|e| corrupt(store, id, format_args!("journal row {seq}: {e}")))?;
        }
    }
    tx.finish().map_err(err)?;
    let index = index.then(|| {
        let objects = by_ord
            .iter()
            .zip(&kinds)
            .enumerate()
            .filter_map(|(ord, (slot, kind))| {
                slot.filter(|(loc, _)| *loc != Loc::Plan)
                    .map(|(loc, object)| (object, ord as i64, loc, *kind))
            })
            .collect();
        (pk, objects)
    });
    Ok((plan, index))
}

/// The row of plan `id` and its definition without its blocks' sequences: its key and the
/// plan as far as they say.
pub(super) fn read_head(
    conn: &Connection,
    store: &str,
    id: PlanId,
) -> Result<(i64, Plan), StoreError> {
    let err = |e| sql_error(store, &format!("reading plan {id}"), e);
    let key = id_text(id.0);
    type HeadRow = (
        i64,
        String,
        Option<i64>,
        Option<i64>,
        String,
        Option<i64>,
        bool,
        String,
        String,
        String,
    );
    let row: Option<HeadRow> = conn
        .prepare_cached(
            "SELECT p.pk, p.status, p.start_ns, p.end_ns, p.reason, p.heartbeat_ns, p.paused, \
             d.definition, p.resumptions, p.decisions FROM plans p JOIN plan_definitions d ON d.plan_pk = p.pk WHERE p.id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([&key], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            })
            .optional()
        })
        .map_err(err)?;
    let Some((pk, status, start, end, reason, heartbeat, paused, definition, owners, decisions)) =
        row
    else {
        return Err(StoreError::NotFound(id));
    };
    let plan = PlanRow {
        status: &status,
        start,
        end,
        reason: &reason,
        heartbeat,
        paused,
        definition: &definition,
        owners: &owners,
        decisions: &decisions,
    };
    Ok((pk, plan.decode(store, id)?))
}

/// Lists plans matching `filter`, newest submitted first, then by id, descending.
pub(super) fn list_plans(
    conn: &Connection,
    store: &str,
    filter: &ListFilter,
) -> Result<Vec<PlanSummary>, StoreError> {
    let err = |e| sql_error(store, "listing plans", e);
    let (sql, args) = select_plans(
        "SELECT id, group_id, name, descr, submit_time_ns, status, start_ns, end_ns, reason, \
         (SELECT count(*) FROM json_each(resumptions) \
          WHERE coalesce(json_extract(value, '$.resumed'), 1)), \
         json_extract(resumptions, '$[#-1]')",
        filter,
    );

    let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
    let mut rows = stmt.query(params_from_iter(args)).map_err(err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(err)? {
        let id_col: String = r.get(0).map_err(err)?;
        let bad = |what: String| {
            StoreError::permanent(format!(
                "{store}: plan {id_col} is stored inconsistently: {what}"
            ))
        };
        let id = PlanId(parse_id(&id_col, "plan id").map_err(bad)?);
        let group_id = match r.get::<_, Option<String>>(1).map_err(err)? {
            Some(g) => Some(parse_id(&g, "group id").map_err(bad)?),
            None => None,
        };
        let status: String = r.get(5).map_err(err)?;
        let reason: String = r.get(8).map_err(err)?;
        // Names are shown, not parsed: a name that is not UTF-8 (written by another program)
        // is listed with replacement characters instead of failing the whole list.
        let text = |i: usize, what: &str| -> Result<String, StoreError> {
            match r.get_ref(i).map_err(err)? {
                rusqlite::types::ValueRef::Text(bytes) => {
                    let text = String::from_utf8_lossy(bytes);
                    if let std::borrow::Cow::Owned(_) = text {
                        tracing::warn!(store, plan = %id_col, "the plan's {what} is not UTF-8; shown with replacement characters");
                    }
                    Ok(text.into_owned())
                }
                rusqlite::types::ValueRef::Null => Ok(String::new()),
                other => Err(bad(format!(
                    "its {what} is {:?}, not text",
                    other.data_type()
                ))),
            }
        };
        out.push(PlanSummary {
            id,
            group_id,
            name: text(2, "name")?,
            descr: text(3, "description")?,
            submit_time: r.get::<_, Option<i64>>(4).map_err(err)?.map(from_ns),
            state: StateCols::decode(
                &status,
                r.get::<_, Option<i64>>(6).map_err(err)?,
                r.get::<_, Option<i64>>(7).map_err(err)?,
            )
            .map_err(bad)?,
            reason: reason.parse().map_err(bad)?,
            resumptions: r.get::<_, u32>(9).map_err(err)?,
            owner: decode_owner(
                store,
                id,
                r.get::<_, Option<String>>(10).map_err(err)?.as_deref(),
            )?,
        });
    }
    Ok(out)
}

/// `PRAGMA integrity_check` and `PRAGMA foreign_key_check`: Ok, or the problems found.
pub(super) fn integrity_check(conn: &Connection, store: &str) -> Result<(), StoreError> {
    let err = |e| sql_error(store, "checking integrity", e);
    let mut problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(err)?;
    problems.retain(|p| p != "ok");
    let fk: Vec<String> = conn
        .prepare("PRAGMA foreign_key_check")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(format!(
                    "a row of {} (rowid {:?}) has no parent in {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, String>(2)?
                ))
            })?
            .collect()
        })
        .map_err(err)?;
    problems.extend(fk);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StoreError::permanent(format!(
            "{store}: integrity check failed: {}",
            problems.join("; ")
        )))
    }
}

/// Puts the sequences of the plan with key `pk` (rows of `sequence_definitions`) into
/// `plan`, read from its definition without them. The inner error says what is wrong.
pub(super) fn attach_sequences(
    conn: &Connection,
    pk: i64,
    plan: &mut Plan,
) -> rusqlite::Result<Result<(), String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT block, first, counts, heads, bodies FROM sequence_definitions \
         WHERE plan_pk = ?1 ORDER BY block, first",
    )?;
    let mut rows = stmt.query([pk])?;
    while let Some(r) = rows.next()? {
        let chunk = ChunkRow {
            block: r.get(0)?,
            first: r.get(1)?,
            counts: r.get_ref(2)?.as_str()?,
            heads: r.get_ref(3)?.as_str()?,
        };
        if let Err(e) = chunk.attach(plan, r.get_ref(4)?.as_str()?) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// Applies the changes of one journal row to `plan`, as the `Change`s they were; `locs` places
/// objects by id.
fn replay(plan: &mut Plan, locs: &HashMap<Uuid, Loc>, blob: &[u8]) -> Result<(), String> {
    for entry in journal::decode(blob)? {
        let id = entry.id();
        let loc = locs
            .get(&id)
            .copied()
            .ok_or_else(|| format!("object {id} is not in the plan"))?;
        entry_change(entry, loc)?
            .apply_to(plan)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The `Change` a journal entry was, for the object at `loc`.
pub(super) fn entry_change(entry: journal::Entry<'_>, loc: Loc) -> Result<Change, String> {
    Ok(match entry {
        journal::Entry::State {
            id,
            status,
            start,
            end,
        } => Change::State {
            loc,
            id,
            state: State {
                status,
                start: start.map(from_ns),
                end: end.map(from_ns),
            },
        },
        journal::Entry::Attempt {
            id,
            index,
            start,
            end,
            outcome,
        } => Change::Attempt {
            loc,
            id,
            index: u32::try_from(index).map_err(|_| format!("attempt index {index}"))?,
            attempt: AttemptCols::decode(start, end, outcome)?,
        },
        journal::Entry::Reset { id } => Change::Reset { loc, id },
    })
}

/// How many plans match `filter`, counted by SQLite (an index walk, no rows read).
pub(super) fn count_plans(
    conn: &Connection,
    store: &str,
    filter: &ListFilter,
) -> Result<u64, StoreError> {
    let err = |e| sql_error(store, "counting plans", e);
    let (sql, args) = select_plans("SELECT 1", filter);
    let sql = format!("SELECT count(*) FROM ({sql})");
    let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
    let n: i64 = stmt
        .query_row(params_from_iter(args), |r| r.get(0))
        .map_err(err)?;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// `columns` of the plans matching `filter`, newest submitted first, with its arguments.
fn select_plans(columns: &str, filter: &ListFilter) -> (String, Vec<Value>) {
    let mut sql = format!("{columns} FROM plans WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    if !filter.statuses.is_empty() {
        sql.push_str(" AND status IN (");
        for (i, status) in filter.statuses.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('?');
            args.push(Value::Text(status.as_str().to_owned()));
        }
        sql.push(')');
    }
    if let Some(group) = filter.group_id {
        sql.push_str(" AND group_id = ?");
        args.push(Value::Text(id_text(group)));
    }
    if let Some(name) = &filter.name_contains {
        sql.push_str(" AND instr(name, ?) > 0");
        args.push(Value::Text(name.clone()));
    }
    if let Some(t) = filter.submitted_after {
        sql.push_str(" AND submit_time_ns >= ?");
        args.push(Value::Integer(clamp_ns(t)));
    }
    if let Some(t) = filter.submitted_before {
        sql.push_str(" AND submit_time_ns < ?");
        args.push(Value::Integer(clamp_ns(t)));
    }
    sql.push_str(" ORDER BY submit_time_ns DESC, id DESC LIMIT ? OFFSET ?");
    args.push(Value::Integer(
        filter
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)),
    ));
    args.push(Value::Integer(
        i64::try_from(filter.offset).unwrap_or(i64::MAX),
    ));

    (sql, args)
}

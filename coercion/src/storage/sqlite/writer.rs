//! The writer thread: the only connection that writes. It takes every write request queued at
//! the moment (a group), runs them in one transaction, commits once, and then answers every
//! caller. A write's future therefore completes only after its commit. If a write of the group
//! fails (an unknown plan, a bad location), the group is run again with each write in its own
//! savepoint, so the failed one is undone alone and only its caller gets the error.
//!
//! With [`Synchronous::Full`](super::Synchronous::Full) the connection commits without syncing
//! and hands the group's results to the syncer thread, which `fdatasync`s the WAL and only then
//! answers the callers, in commit order. The writer meanwhile runs the next group, so the disk's
//! sync latency no longer caps the number of commits per second.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::codec::{Op, PreparedPlan, id_text, sql_error};
use crate::storage::StoreError;
use crate::workflow::PlanId;

/// One queued write.
pub(super) enum Write {
    Create(Box<PreparedPlan>),
    Apply { id: PlanId, ops: Vec<Op> },
    Delete(PlanId),
}

/// A write and where to send its result.
pub(super) struct Request {
    pub write: Write,
    pub reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Counters of the writer, read by [`SqliteStore::stats`](super::SqliteStore::stats).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub commits: AtomicU64,
    pub writes: AtomicU64,
    pub failed_writes: AtomicU64,
    pub largest_group: AtomicU64,
    pub syncs: AtomicU64,
}

/// The results of a committed group, with where to send each.
pub(super) type Replies = Vec<(
    oneshot::Sender<Result<(), StoreError>>,
    Result<(), StoreError>,
)>;

/// The syncer thread, for [`Synchronous::Full`](super::Synchronous::Full).
pub(super) struct Syncer {
    /// Committed groups waiting for their sync.
    pub queue: Sender<Replies>,
    pub thread: JoinHandle<()>,
    /// Set when a sync failed: the data of the commits before it may be lost, and the store
    /// takes no more writes.
    pub failure: Arc<Mutex<Option<StoreError>>>,
}

impl Syncer {
    /// Starts the syncer of the WAL file `wal`.
    pub fn start(
        wal: PathBuf,
        store: Arc<str>,
        counters: Arc<Counters>,
    ) -> std::io::Result<Syncer> {
        let (queue, groups) = std::sync::mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let failed = failure.clone();
        let thread = std::thread::Builder::new()
            .name("coercion-sqlite-syncer".to_owned())
            .spawn(move || sync_loop(&wal, &store, &groups, &counters, &failed))?;
        Ok(Syncer {
            queue,
            thread,
            failure,
        })
    }
}

/// Takes every committed group waiting, syncs the WAL once, answers their callers in order.
fn sync_loop(
    wal: &std::path::Path,
    store: &str,
    groups: &Receiver<Replies>,
    counters: &Counters,
    failure: &Mutex<Option<StoreError>>,
) {
    let mut file: Option<File> = None;
    while let Ok(mut replies) = groups.recv() {
        while let Ok(more) = groups.try_recv() {
            replies.extend(more);
        }
        if replies.iter().any(|(_, r)| r.is_ok()) && failure.lock().is_none() {
            // The WAL exists once a transaction has been committed; SQLite keeps the same file
            // while its connection is open.
            let synced = match &file {
                Some(f) => f.sync_data(),
                None => File::open(wal).and_then(|f| {
                    let result = f.sync_data();
                    file = Some(f);
                    result
                }),
            };
            match synced {
                Ok(()) => {
                    counters.syncs.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    *failure.lock() = Some(StoreError::Permanent(format!(
                        "{store}: syncing {} failed ({e}): the last writes may not be durable; \
                         the store takes no more writes (reopen it to recover)",
                        wal.display()
                    )));
                }
            }
        }
        let failed = failure.lock().clone();
        for (reply, result) in replies {
            let result = match (&failed, result) {
                (Some(e), Ok(())) => Err(e.clone()),
                (_, result) => result,
            };
            let _ = reply.send(result);
        }
    }
}

pub(super) struct Writer {
    pub conn: Connection,
    pub store: Arc<str>,
    pub counters: Arc<Counters>,
    pub max_group: usize,
    pub syncer: Option<Syncer>,
}

const PLAN_KEY: &str = "SELECT pk, status FROM plans WHERE id = ?1";
const INSERT_PLAN: &str = "INSERT INTO plans (id, group_id, name, descr, submit_time_ns, status, \
     start_ns, end_ns, reason, heartbeat_ns, paused) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const INSERT_DEFINITION: &str =
    "INSERT INTO plan_definitions (plan_pk, definition) VALUES (?1, ?2)";
const INSERT_OBJECT: &str = "INSERT INTO objects \
     (plan_pk, ord, id, loc, kind, status, start_ns, end_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const INSERT_ATTEMPT: &str = "INSERT INTO attempts (plan_pk, ord, idx, start_ns, end_ns, outcome) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const UPDATE_PLAN_STATE: &str =
    "UPDATE plans SET status = ?2, start_ns = ?3, end_ns = ?4 WHERE pk = ?1";
const UPDATE_OBJECT_STATE: &str = "UPDATE objects SET status = ?4, start_ns = ?5, end_ns = ?6 \
     WHERE plan_pk = ?1 AND id = ?2 AND loc = ?3";
const ACTION_ATTEMPTS: &str = "SELECT o.ord, \
     (SELECT count(*) FROM attempts a WHERE a.plan_pk = ?1 AND a.ord = o.ord) \
     FROM objects o WHERE o.plan_pk = ?1 AND o.id = ?2 AND o.loc = ?3 AND o.kind = 'action'";
const DELETE_ATTEMPTS_AFTER: &str =
    "DELETE FROM attempts WHERE plan_pk = ?1 AND ord = ?2 AND idx > ?3";
const UPDATE_ATTEMPT: &str = "UPDATE attempts SET start_ns = ?4, end_ns = ?5, outcome = ?6 \
     WHERE plan_pk = ?1 AND ord = ?2 AND idx = ?3";
const RESET_ACTION: &str = "UPDATE objects SET status = 'NotStarted', start_ns = NULL, end_ns = NULL \
     WHERE plan_pk = ?1 AND id = ?2 AND loc = ?3 AND kind = 'action' RETURNING ord";
const DELETE_ATTEMPTS: &str = "DELETE FROM attempts WHERE plan_pk = ?1 AND ord = ?2";
const UPDATE_REASON: &str = "UPDATE plans SET reason = ?2 WHERE pk = ?1";
const UPDATE_HEARTBEAT: &str = "UPDATE plans SET heartbeat_ns = ?2 WHERE pk = ?1";
const UPDATE_PAUSED: &str = "UPDATE plans SET paused = ?2 WHERE pk = ?1";
const DELETE_PLAN: &str = "DELETE FROM plans WHERE pk = ?1";

/// Why a request failed: its own error, or a failure of SQLite that rolled back the whole group.
enum Failure {
    Request(StoreError),
    Group(StoreError),
}

impl Failure {
    fn into_error(self) -> StoreError {
        match self {
            Failure::Request(e) | Failure::Group(e) => e,
        }
    }
}

impl Writer {
    /// Serves requests until every sender is gone.
    pub fn run(mut self, requests: Receiver<Request>) {
        let mut group = Vec::with_capacity(self.max_group);
        while let Ok(first) = requests.recv() {
            group.push(first);
            while group.len() < self.max_group {
                match requests.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
        }
        // Let the syncer answer what it holds before the connection closes.
        if let Some(syncer) = self.syncer.take() {
            drop(syncer.queue);
            let _ = syncer.thread.join();
        }
    }

    fn commit_group(&self, group: &mut Vec<Request>) {
        let n = group.len() as u64;
        self.counters.writes.fetch_add(n, Ordering::Relaxed);
        self.counters.largest_group.fetch_max(n, Ordering::Relaxed);
        let poisoned = self.syncer.as_ref().and_then(|s| s.failure.lock().clone());
        // Fast path: the whole group in one transaction without savepoints. Only if a write
        // fails is the group run again with a savepoint around each write.
        let results = match poisoned {
            Some(e) => Err(Failure::Group(e)),
            None => self.run_group(group, false),
        };
        let results = match results {
            Ok(results) => Ok(results),
            Err(Failure::Request(_)) => self.run_group(group, true).map_err(Failure::into_error),
            Err(Failure::Group(e)) => Err(e),
        };
        let results = match results.and_then(|results| {
            self.exec("COMMIT")
                .map_err(|e| sql_error(&self.store, "committing", e))?;
            Ok(results)
        }) {
            Ok(results) => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                results
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.exec("ROLLBACK");
                }
                // Nothing of the group was kept: every caller gets the error.
                vec![Err(e); group.len()]
            }
        };
        let failed = results.iter().filter(|r| r.is_err()).count() as u64;
        self.counters
            .failed_writes
            .fetch_add(failed, Ordering::Relaxed);
        let replies: Replies = group.drain(..).map(|r| r.reply).zip(results).collect();
        let replies = match &self.syncer {
            // Failed groups wait too, so that callers are answered in order.
            Some(syncer) => match syncer.queue.send(replies) {
                Ok(()) => return,
                Err(unsent) => unsent.0,
            },
            None => replies,
        };
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
    }

    /// Runs every write of `group` in a new transaction, left open for the caller to commit.
    /// Without savepoints, the first write that fails rolls the transaction back and is
    /// returned as `Failure::Request`; with them, each failed write is undone alone and its
    /// error is its result. `Failure::Group` means the transaction is gone.
    fn run_group(
        &self,
        group: &[Request],
        savepoints: bool,
    ) -> Result<Vec<Result<(), StoreError>>, Failure> {
        self.exec("BEGIN IMMEDIATE")
            .map_err(|e| Failure::Group(sql_error(&self.store, "starting a transaction", e)))?;
        let mut results = Vec::with_capacity(group.len());
        for request in group {
            let result = if savepoints {
                self.run_in_savepoint(&request.write)
            } else {
                self.run_write(&request.write).map_err(|e| self.classify(e))
            };
            match result {
                Ok(()) => results.push(Ok(())),
                Err(Failure::Request(e)) if savepoints => results.push(Err(e)),
                Err(failure) => {
                    if !self.conn.is_autocommit() {
                        let _ = self.exec("ROLLBACK");
                    }
                    return Err(failure);
                }
            }
        }
        Ok(results)
    }

    /// A write's own error, unless SQLite rolled back the whole transaction (disk full, I/O
    /// error, …), which is the group's.
    fn classify(&self, e: StoreError) -> Failure {
        if self.conn.is_autocommit() {
            Failure::Group(e)
        } else {
            Failure::Request(e)
        }
    }

    fn exec(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    fn run_in_savepoint(&self, write: &Write) -> Result<(), Failure> {
        self.exec("SAVEPOINT write")
            .map_err(|e| Failure::Group(sql_error(&self.store, "opening a savepoint", e)))?;
        match self.run_write(write) {
            Ok(()) => self
                .exec("RELEASE write")
                .map_err(|e| Failure::Group(sql_error(&self.store, "releasing a savepoint", e))),
            Err(e) => match self.classify(e) {
                Failure::Request(e) => {
                    self.exec("ROLLBACK TO write")
                        .and_then(|()| self.exec("RELEASE write"))
                        .map_err(|e| {
                            Failure::Group(sql_error(&self.store, "rolling back a savepoint", e))
                        })?;
                    Err(Failure::Request(e))
                }
                group => Err(group),
            },
        }
    }

    fn run_write(&self, write: &Write) -> Result<(), StoreError> {
        match write {
            Write::Create(plan) => self.create(plan),
            Write::Apply { id, ops } => self.apply(*id, ops),
            Write::Delete(id) => self.delete(*id),
        }
    }

    /// The plan's key and status, if it exists.
    fn plan_key(&self, id: PlanId) -> Result<Option<(i64, String)>, StoreError> {
        self.conn
            .prepare_cached(PLAN_KEY)
            .and_then(|mut s| {
                s.query_row([id_text(id.0)], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(|e| sql_error(&self.store, &format!("looking up plan {id}"), e))
    }

    fn create(&self, p: &PreparedPlan) -> Result<(), StoreError> {
        let err = |e| sql_error(&self.store, &format!("creating plan {}", p.id), e);
        if self.plan_key(p.id)?.is_some() {
            return Err(StoreError::AlreadyExists(p.id));
        }
        self.conn
            .prepare_cached(INSERT_PLAN)
            .and_then(|mut s| {
                s.execute(params![
                    p.id_text,
                    p.group_id,
                    p.name,
                    p.descr,
                    p.submit_time,
                    p.state.status,
                    p.state.start,
                    p.state.end,
                    p.reason,
                    p.heartbeat,
                    p.paused
                ])
            })
            .map_err(err)?;
        let pk = self.conn.last_insert_rowid();
        self.conn
            .prepare_cached(INSERT_DEFINITION)
            .and_then(|mut s| s.execute(params![pk, p.definition]))
            .map_err(err)?;
        let mut insert = self.conn.prepare_cached(INSERT_OBJECT).map_err(err)?;
        for o in &p.objects {
            let state = &o.state;
            insert
                .execute(params![
                    pk,
                    o.ord,
                    o.id,
                    o.loc,
                    o.kind,
                    state.status,
                    state.start,
                    state.end
                ])
                .map_err(err)?;
        }
        let mut insert = self.conn.prepare_cached(INSERT_ATTEMPT).map_err(err)?;
        for a in &p.attempts {
            let c = &a.cols;
            insert
                .execute(params![pk, a.ord, a.idx, c.start, c.end, c.outcome])
                .map_err(err)?;
        }
        Ok(())
    }

    fn apply(&self, id: PlanId, ops: &[Op]) -> Result<(), StoreError> {
        let Some((plan, _)) = self.plan_key(id)? else {
            return Err(StoreError::NotFound(id));
        };
        for op in ops {
            self.apply_op(id, plan, op)?;
        }
        Ok(())
    }

    /// Runs one change on plan `id`, whose key is `plan`.
    fn apply_op(&self, id: PlanId, plan: i64, op: &Op) -> Result<(), StoreError> {
        let err = |e| sql_error(&self.store, &format!("updating plan {id}"), e);
        let execute = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Result<usize, StoreError> {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut s| s.execute(params))
                .map_err(err)
        };
        let query_one = |sql: &str,
                         params: &[&dyn rusqlite::ToSql]|
         -> Result<Option<(i64, i64)>, StoreError> {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut s| {
                    s.query_row(params, |row| {
                        Ok((
                            row.get(0)?,
                            if row.as_ref().column_count() > 1 {
                                row.get(1)?
                            } else {
                                0
                            },
                        ))
                    })
                    .optional()
                })
                .map_err(err)
        };
        let missing = |what: &str, object: &str, loc: &crate::workflow::Loc| {
            StoreError::Permanent(format!("plan {id} has no {what} {object} at {loc:?}"))
        };
        match op {
            Op::PlanState { id: object, state } => {
                if *object != id.0 {
                    return Err(StoreError::Permanent(format!(
                        "plan {id} has no object {object} at Plan"
                    )));
                }
                execute(
                    UPDATE_PLAN_STATE,
                    params![plan, state.status, state.start, state.end],
                )?;
            }
            Op::ObjectState {
                id: object,
                loc,
                debug_loc,
                state,
            } => {
                let n = execute(
                    UPDATE_OBJECT_STATE,
                    params![plan, object, loc, state.status, state.start, state.end],
                )?;
                if n == 0 {
                    return Err(missing("object", object, debug_loc));
                }
            }
            Op::Attempt {
                id: object,
                loc,
                debug_loc,
                index,
                cols,
            } => {
                let Some((ord, count)) = query_one(ACTION_ATTEMPTS, params![plan, object, loc])?
                else {
                    return Err(missing("action", object, debug_loc));
                };
                if *index > count {
                    return Err(StoreError::Permanent(format!(
                        "plan {id}: attempt {index} of the action at {debug_loc:?} skips attempt {count}"
                    )));
                }
                let row = params![plan, ord, index, cols.start, cols.end, cols.outcome];
                if *index < count {
                    if *index + 1 < count {
                        execute(DELETE_ATTEMPTS_AFTER, params![plan, ord, index])?;
                    }
                    execute(UPDATE_ATTEMPT, row)?;
                } else {
                    execute(INSERT_ATTEMPT, row)?;
                }
            }
            Op::Reset {
                id: object,
                loc,
                debug_loc,
            } => {
                let Some((ord, _)) = query_one(RESET_ACTION, params![plan, object, loc])? else {
                    return Err(missing("action", object, debug_loc));
                };
                execute(DELETE_ATTEMPTS, params![plan, ord])?;
            }
            Op::Reason(reason) => {
                execute(UPDATE_REASON, params![plan, reason])?;
            }
            Op::Heartbeat(t) => {
                execute(UPDATE_HEARTBEAT, params![plan, t])?;
            }
            Op::Paused(p) => {
                execute(UPDATE_PAUSED, params![plan, p])?;
            }
        }
        Ok(())
    }

    fn delete(&self, id: PlanId) -> Result<(), StoreError> {
        match self.plan_key(id)? {
            None => Err(StoreError::NotFound(id)),
            Some((_, status)) if status == "Running" => Err(StoreError::Running(id)),
            Some((plan, _)) => {
                self.conn
                    .prepare_cached(DELETE_PLAN)
                    .and_then(|mut s| s.execute([plan]))
                    .map_err(|e| sql_error(&self.store, &format!("deleting plan {id}"), e))?;
                Ok(())
            }
        }
    }
}

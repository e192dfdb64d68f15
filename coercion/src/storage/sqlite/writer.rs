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

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::codec::{PreparedPlan, execution_order, id_text, sql_error};
use super::journal;
use crate::storage::StoreError;
use crate::storage::sql::{Failure, GroupCounters, Op, kind_of};
use crate::workflow::{Loc, PlanId, Status};

/// One queued write.
pub(super) enum Write {
    Create(Box<PreparedPlan>),
    /// The changes, and the [`journal::encode`]d blob of those to objects.
    Apply {
        id: PlanId,
        ops: Vec<Op>,
        journal: Vec<u8>,
    },
    Delete(PlanId),
    /// Where the objects of plan `id` (key `pk`) are stored, as a reader found: the writer
    /// fills its cache. Handled outside transactions.
    Learn {
        id: PlanId,
        pk: i64,
        objects: super::reader::ObjectIndex,
    },
}

/// A write and where to send its result.
pub(super) type Request = crate::storage::sql::Request<Write>;

/// Counters of the writer, read by [`SqliteStore::stats`](super::SqliteStore::stats).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub group: GroupCounters,
    pub syncs: AtomicU64,
    pub folds: AtomicU64,
    pub folded_rows: AtomicU64,
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
                    *failure.lock() = Some(
                        StoreError::permanent(format!(
                            "{store}: syncing {} failed: the last writes may not be durable; \
                             the store takes no more writes (reopen it to recover)",
                            wal.display()
                        ))
                        .caused_by(e),
                    );
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
    pub cache: RefCell<Cache>,
    pub journal: RefCell<Journal>,
    pub folding: Folding,
    /// How often committed changes are copied from the WAL into the database file (a passive
    /// checkpoint), so that a copy of the file alone lags by seconds; `None`: only SQLite's
    /// automatic checkpoint (every 10,000 pages) and the one at close.
    pub checkpoint_every: Option<Duration>,
    /// When the last checkpoint ran, and whether anything was committed since.
    pub checkpointed: std::cell::Cell<(Instant, bool)>,
}

/// When the writer folds journals into the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Folding {
    /// A plan's journal is folded, even while writes wait, once it holds this many rows.
    pub limit: usize,
    /// Journals are folded after the writer has had nothing to do for this long.
    pub idle: Option<Duration>,
    /// Whether the journals are folded when the store closes.
    pub on_close: bool,
}

/// Rows folded in one transaction when a journal reached the limit (or the store closes):
/// writes arriving meanwhile wait for it, some 10–20 ms.
const FOLD_CHUNK: usize = 2_048;

/// Rows folded in one transaction when idle, so that a write arriving meanwhile waits little
/// (a few milliseconds).
const IDLE_FOLD_CHUNK: usize = 1_024;

/// After a plan's fold failed, its journal waits this long before the next try, twice as long
/// after each further failure, up to [`FOLD_RETRY_MAX`].
const FOLD_RETRY: Duration = Duration::from_secs(1);
const FOLD_RETRY_MAX: Duration = Duration::from_secs(60);

/// What the writer knows of the journal.
#[derive(Default)]
pub(super) struct Journal {
    /// The sequence number of the next row.
    next_seq: i64,
    /// Rows per plan key (a count to decide when to fold; counted again after a rollback).
    pending: BTreeMap<i64, usize>,
    /// The counts may be wrong (a transaction that appended rows rolled back).
    recount: bool,
    /// Plans whose last fold failed: when to try again, and the wait that led there.
    failures: HashMap<i64, (Instant, Duration)>,
}

impl Journal {
    /// When plan `plan`'s journal may be folded again, if its last fold failed.
    fn retry_at(&self, plan: i64) -> Option<Instant> {
        self.failures.get(&plan).map(|(at, _)| *at)
    }

    /// Plans with rows to fold whose fold may run now, with their row counts.
    fn due(&self) -> impl Iterator<Item = (i64, usize)> + '_ {
        let now = Instant::now();
        self.pending
            .iter()
            .filter(move |(plan, _)| self.retry_at(**plan).is_none_or(|t| t <= now))
            .map(|(plan, n)| (*plan, *n))
    }

    /// Before the rows already in the file are counted.
    pub fn unknown() -> Journal {
        Journal {
            recount: true,
            ..Journal::default()
        }
    }
}

/// What the writer knows of the rows it writes, so that a change finds its row by primary key
/// instead of by two index searches on text. The writer is the only connection that writes
/// (the lock file keeps other processes out), so what it learned stays true until one of its
/// own transactions or savepoints rolls back: every rollback empties the cache, which is then
/// filled again as writes need it. A plan's objects are forgotten when the plan ends, and whole
/// plans make room when the cache is full.
pub(super) struct Cache {
    /// A plan's integer key, by id.
    plans: HashMap<PlanId, i64>,
    /// The objects of each plan, by plan key and object id.
    objects: HashMap<i64, HashMap<uuid::Uuid, Known>>,
    /// How many objects `objects` holds.
    count: usize,
    /// How many it may hold before other plans are forgotten.
    cap: usize,
    /// Plans that ended while rows of their journal were still to fold: forgotten once folded.
    ended: std::collections::HashSet<i64>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            plans: HashMap::new(),
            objects: HashMap::new(),
            count: 0,
            cap: CACHED_OBJECTS,
            ended: Default::default(),
        }
    }
}

/// The objects the cache holds (about 100 bytes each) before it forgets other plans to make
/// room: a tenth of what the engine holds for plans that large, and more than any set of plans
/// one process runs at a time in practice.
const CACHED_OBJECTS: usize = 1 << 22;

/// One object row: its clustering key, location and kind, which never change.
#[derive(Clone, Copy)]
struct Known {
    ord: i64,
    loc: Loc,
    kind: &'static str,
}

impl Cache {
    fn clear(&mut self) {
        self.plans.clear();
        self.objects.clear();
        self.count = 0;
        self.ended.clear();
    }

    fn get(&self, plan: i64, object: uuid::Uuid) -> Option<Known> {
        self.objects.get(&plan)?.get(&object).copied()
    }

    /// Adds what is not known yet of `objects` of the plan with key `plan`, first forgetting
    /// other plans if the cache would hold too many.
    fn add(&mut self, plan: i64, objects: impl ExactSizeIterator<Item = (uuid::Uuid, Known)>) {
        let others: Vec<i64> = self
            .objects
            .keys()
            .copied()
            .filter(|&p| p != plan)
            .collect();
        for other in others {
            if self.count + objects.len() <= self.cap {
                break;
            }
            self.forget(other);
        }
        let known = self.objects.entry(plan).or_default();
        let before = known.len();
        for (object, k) in objects {
            known.entry(object).or_insert(k);
        }
        self.count += known.len() - before;
    }

    /// Forgets the objects of the plan with key `plan`.
    fn forget(&mut self, plan: i64) {
        if let Some(known) = self.objects.remove(&plan) {
            self.count -= known.len();
        }
        self.ended.remove(&plan);
    }
}

const PLAN_KEY: &str = "SELECT pk, status FROM plans WHERE id = ?1";
const INSERT_PLAN: &str = "INSERT INTO plans (id, group_id, name, descr, submit_time_ns, status, \
     start_ns, end_ns, reason, heartbeat_ns, paused) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const INSERT_DEFINITION: &str =
    "INSERT INTO plan_definitions (plan_pk, definition) VALUES (?1, ?2)";
const INSERT_OBJECT: &str = "INSERT INTO objects (plan_pk, ord, kind, status, start_ns, end_ns) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const INSERT_SEQUENCE_DEFINITION: &str = "INSERT INTO sequence_definitions \
     (plan_pk, block, first, counts, heads, bodies) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const DEFINITION: &str = "SELECT definition FROM plan_definitions WHERE plan_pk = ?1";
const INSERT_ATTEMPT: &str = "INSERT INTO attempts (plan_pk, ord, idx, start_ns, end_ns, outcome) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// The plan's state ([`crate::storage::sql::PlanSet::state`]), apart from its other columns:
/// `status` is indexed, and naming it in an `UPDATE` rewrites its index entry even when the value
/// stays (every heartbeat would).
const UPDATE_PLAN_STATE: &str =
    "UPDATE plans SET status = ?2, start_ns = ?3, end_ns = ?4 WHERE pk = ?1";
/// Every other column of the plan's row a change may write: a `NULL` leaves it as it is.
const UPDATE_PLAN_RUN: &str = "UPDATE plans SET \
       reason = coalesce(?2, reason), \
       heartbeat_ns = coalesce(?3, heartbeat_ns), \
       paused = coalesce(?4, paused), \
       resumptions = CASE WHEN ?5 IS NULL THEN resumptions \
         ELSE json_insert(resumptions, '$[#]', json(?5)) END, \
       decisions = CASE WHEN ?6 IS NULL THEN decisions \
         ELSE json_insert(decisions, '$[#]', json(?6)) END \
     WHERE pk = ?1";
const DELETE_PLAN: &str = "DELETE FROM plans WHERE pk = ?1";

impl Writer {
    /// Serves requests until every sender is gone, folding journals when idle and when they
    /// grow past the limit; folds what is left when the store closes.
    pub fn run(mut self, requests: Receiver<Request>) {
        // Mark the file as open by a writer, in the file itself (checkpointed at once): a file
        // found so marked without a WAL lost its WAL (`refuse_lost_wal`). Done here, once
        // nothing of the opening can fail any more (a failed open must not leave the mark); a
        // clean close clears it.
        let marked = self
            .conn
            .pragma_update(None, "user_version", super::WRITER_OPEN)
            .and_then(|()| {
                self.conn
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            });
        if let Err(e) = marked {
            tracing::warn!(store = %self.store, error = %e, "could not mark the store as open; a lost WAL would go unnoticed");
        }
        self.recount();
        let mut group = Vec::with_capacity(self.max_group);
        loop {
            let wait = match (self.idle_wait(), self.checkpoint_wait()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let first = match wait {
                None => match requests.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
                Some(wait) => match requests.recv_timeout(wait) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => {
                        if self.idle_wait().is_some_and(|w| w.is_zero() || w <= wait) {
                            self.fold_chunk(None, IDLE_FOLD_CHUNK);
                        }
                        self.checkpoint_if_due();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            group.push(first);
            while group.len() < self.max_group {
                match requests.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            // What a reader tells needs no transaction, nor a sync.
            if group.iter().any(|r| matches!(r.write, Write::Learn { .. })) {
                let (learns, writes): (Vec<Request>, Vec<Request>) = group
                    .drain(..)
                    .partition(|r| matches!(r.write, Write::Learn { .. }));
                for learn in learns {
                    let _ = learn.reply.send(self.run_write(&learn.write));
                }
                group.extend(writes);
                if group.is_empty() {
                    continue;
                }
            }
            self.commit_group(&mut group);
            self.fold_over_limit();
            let (last, _) = self.checkpointed.get();
            self.checkpointed.set((last, true));
            self.checkpoint_if_due();
        }
        if self.folding.on_close {
            self.fold_all();
        }
        // Let the syncer answer what it holds before the connection closes.
        if let Some(syncer) = self.syncer.take() {
            drop(syncer.queue);
            let _ = syncer.thread.join();
        }
        // A clean close: the connection's close checkpoints this into the file with the rest.
        if let Err(e) = self.conn.pragma_update(None, "user_version", 0) {
            tracing::warn!(store = %self.store, error = %e, "could not mark the store as closed cleanly");
        }
    }

    /// How long until the next checkpoint is due, if anything was committed since the last.
    fn checkpoint_wait(&self) -> Option<Duration> {
        let every = self.checkpoint_every?;
        let (last, dirty) = self.checkpointed.get();
        dirty.then(|| every.saturating_sub(last.elapsed()))
    }

    /// Copies what the WAL holds into the database file, without waiting for readers (a
    /// passive checkpoint), when one is due. A checkpoint at `synchronous = NORMAL` syncs the
    /// WAL first and the database file after, so it never makes the file hold more than is
    /// durable. A failure is logged; the next one tries again.
    fn checkpoint_if_due(&self) {
        if !self.checkpoint_wait().is_some_and(|w| w.is_zero()) || self.sync_failed() {
            return;
        }
        let result = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                row.get::<_, i64>(0)
            });
        if let Err(e) = result {
            tracing::debug!(store = %self.store, error = %e, "periodic WAL checkpoint failed; trying again later");
        }
        self.checkpointed.set((Instant::now(), false));
    }

    /// How long to wait for a write before folding, if there is anything to fold.
    fn idle_wait(&self) -> Option<Duration> {
        self.recount();
        let idle = self.folding.idle?;
        let journal = self.journal.borrow();
        let now = Instant::now();
        // The soonest a plan's journal may be folded (plans whose fold failed wait).
        let next = journal
            .pending
            .keys()
            .map(|plan| {
                journal
                    .retry_at(*plan)
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
            })
            .min()?;
        Some(idle.max(next))
    }

    /// Folds journals that reached the limit, a chunk per transaction, skipping plans whose
    /// fold failed a moment ago.
    fn fold_over_limit(&self) {
        loop {
            self.recount();
            let over = {
                let journal = self.journal.borrow();
                journal
                    .due()
                    .find(|(_, n)| *n >= self.folding.limit.max(1))
                    .map(|(plan, _)| plan)
            };
            // A fold that fails marks its plan to wait, one that finds nothing drops the plan's
            // count: either way the next round looks at other plans.
            match over {
                Some(plan) if !self.fold_chunk(Some(plan), FOLD_CHUNK) && self.sync_failed() => {
                    return;
                }
                Some(_) => {}
                None => return,
            }
        }
    }

    /// Folds what is left when the store closes, plan by plan, leaving plans that fail.
    fn fold_all(&self) {
        let plans: Vec<i64> = self.journal.borrow().pending.keys().copied().collect();
        for plan in plans {
            while self.fold_chunk(Some(plan), FOLD_CHUNK) {}
        }
    }

    /// Folds up to `rows` rows of plan `plan`'s journal (of the plan with the most rows whose
    /// fold may run now, if `None`) in a transaction of its own. Its commit is not synced: it
    /// changes how the state is stored, not what it is, and the next synced commit covers it.
    /// Returns whether rows were folded. A failure is logged and undone, and the plan's journal
    /// waits before the next try (1 s, doubling up to a minute); nothing is folded once a sync
    /// failed (the store takes no more writes).
    fn fold_chunk(&self, plan: Option<i64>, rows: usize) -> bool {
        if self.sync_failed() {
            return false;
        }
        let plan = plan.or_else(|| {
            let journal = self.journal.borrow();
            journal.due().max_by_key(|(_, n)| *n).map(|(plan, _)| plan)
        });
        let Some(plan) = plan else {
            return false;
        };
        let folded = self
            .exec("BEGIN IMMEDIATE")
            .map_err(|e| sql_error(&self.store, "starting a transaction", e))
            .and_then(|()| {
                let folded = self.fold_plan(plan, Some(rows))?;
                self.exec("COMMIT")
                    .map_err(|e| sql_error(&self.store, "committing a fold", e))?;
                Ok(folded > 0)
            });
        match folded {
            Ok(folded) => {
                self.journal.borrow_mut().failures.remove(&plan);
                if folded {
                    self.counters.folds.fetch_add(1, Ordering::Relaxed);
                }
                folded
            }
            Err(e) => {
                self.roll_back();
                let mut journal = self.journal.borrow_mut();
                let wait = journal
                    .failures
                    .get(&plan)
                    .map_or(FOLD_RETRY, |(_, wait)| (*wait * 2).min(FOLD_RETRY_MAX));
                tracing::warn!(store = %self.store, plan_key = plan, error = %crate::storage::Chain(&e), retry_in = ?wait, "folding a plan's journal failed; its rows stay in the journal, readers still see them");
                journal.failures.insert(plan, (Instant::now() + wait, wait));
                false
            }
        }
    }

    /// Whether a sync failed: the store then takes no more writes, folds included.
    fn sync_failed(&self) -> bool {
        self.syncer
            .as_ref()
            .is_some_and(|s| s.failure.lock().is_some())
    }

    /// Counts the journal's rows again if a rollback made the counts unreliable. Until a count
    /// succeeds the next sequence number is unknown, and writes that append are refused.
    fn recount(&self) {
        if !self.journal.borrow().recount {
            return;
        }
        match journal::pending(&self.conn) {
            Ok((pending, last)) => {
                let mut journal = self.journal.borrow_mut();
                journal.pending = pending;
                journal.next_seq = journal.next_seq.max(last + 1);
                journal.recount = false;
            }
            Err(e) => {
                tracing::warn!(store = %self.store, error = %crate::storage::Chain(&e), "counting the journal's rows failed; counting again later");
                self.journal.borrow_mut().pending.clear();
            }
        }
    }

    fn commit_group(&self, group: &mut Vec<Request>) {
        self.counters.group.group(group.len());
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
                self.counters.group.committed();
                results
            }
            Err(e) => {
                self.roll_back();
                // Nothing of the group was kept: every caller gets the error.
                vec![Err(e); group.len()]
            }
        };
        self.counters.group.results(&results);
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
                    self.roll_back();
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

    /// Ends the open transaction, if SQLite has not already, keeping nothing of it.
    fn roll_back(&self) {
        self.forget_uncommitted();
        if !self.conn.is_autocommit() {
            let _ = self.exec("ROLLBACK");
        }
    }

    /// Before a rollback: what the writer learned may come from the changes undone.
    fn forget_uncommitted(&self) {
        self.cache.borrow_mut().clear();
        self.journal.borrow_mut().recount = true;
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
                    self.forget_uncommitted();
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
            Write::Apply { id, ops, journal } => self.apply(*id, ops, journal),
            Write::Delete(id) => self.delete(*id),
            Write::Learn { id, pk, objects } => {
                // The plan may have been deleted (and stored again) since it was read.
                if self.plan_key(*id)? == Some(*pk) {
                    self.learn(*pk, objects);
                }
                Ok(())
            }
        }
    }

    /// The plan's key, if it exists.
    fn plan_key(&self, id: PlanId) -> Result<Option<i64>, StoreError> {
        if let Some(&pk) = self.cache.borrow().plans.get(&id) {
            return Ok(Some(pk));
        }
        let found = self.plan_row(id)?.map(|(pk, _)| pk);
        if let Some(pk) = found {
            self.cache.borrow_mut().plans.insert(id, pk);
        }
        Ok(found)
    }

    /// The plan's key and status, from the database.
    fn plan_row(&self, id: PlanId) -> Result<Option<(i64, String)>, StoreError> {
        self.conn
            .prepare_cached(PLAN_KEY)
            .and_then(|mut s| {
                s.query_row([id_text(id.0)], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(|e| sql_error(&self.store, &format!("looking up plan {id}"), e))
    }

    /// The row of object `object` at `loc` of plan `id` (key `plan`); with `action`, it must
    /// be an action.
    fn object(
        &self,
        id: PlanId,
        plan: i64,
        object: uuid::Uuid,
        loc: Loc,
        action: bool,
    ) -> Result<Known, StoreError> {
        let missing = || {
            StoreError::permanent(format!(
                "plan {id} has no {} {object} at {loc:?}",
                if action { "action" } else { "object" }
            ))
        };
        let known = match self.known(plan, object)? {
            Some(known) => known,
            None => return Err(missing()),
        };
        if known.loc != loc || (action && known.kind != "action") {
            return Err(missing());
        }
        Ok(known)
    }

    /// What the writer knows of object `object` of the plan with key `plan`; on a miss, it
    /// learns every object of the plan from the plan's definition. `None` if the plan has no
    /// such object.
    fn known(&self, plan: i64, object: uuid::Uuid) -> Result<Option<Known>, StoreError> {
        if let Some(known) = self.cache.borrow().get(plan, object) {
            return Ok(Some(known));
        }
        self.learn_plan(plan)?;
        Ok(self.cache.borrow().get(plan, object))
    }

    /// Fills the cache with the objects of the plan with key `plan`, from its definition (ids
    /// and locations) and the execution order (`ord`), as the reader places rows.
    fn learn_plan(&self, plan: i64) -> Result<(), StoreError> {
        let err = |e| {
            sql_error(
                &self.store,
                &format!("reading the definition of plan #{plan}"),
                e,
            )
        };
        let definition: Option<String> = self
            .conn
            .prepare_cached(DEFINITION)
            .and_then(|mut s| s.query_row([plan], |row| row.get(0)).optional())
            .map_err(err)?;
        let Some(definition) = definition else {
            return Ok(());
        };
        let unreadable = |e: String| {
            StoreError::permanent(format!(
                "{}: the definition of plan #{plan} is unreadable: {e}",
                self.store
            ))
        };
        let mut def =
            crate::workflow::Plan::from_json(&definition).map_err(|e| unreadable(e.to_string()))?;
        super::reader::attach_sequences(&self.conn, plan, &mut def)
            .map_err(err)?
            .map_err(unreadable)?;
        let objects: super::reader::ObjectIndex = def
            .walk()
            .zip(execution_order(&def))
            .filter(|((loc, _), _)| *loc != Loc::Plan)
            .map(|((loc, object), ord)| (object.id(), ord, loc, kind_of(&object)))
            .collect();
        self.learn(plan, &objects);
        Ok(())
    }

    /// Caches `objects` of the plan with key `plan`, keeping what is already known.
    fn learn(&self, plan: i64, objects: &super::reader::ObjectIndex) {
        self.cache.borrow_mut().add(
            plan,
            objects
                .iter()
                .map(|&(object, ord, loc, kind)| (object, Known { ord, loc, kind })),
        );
    }

    /// The clustering key and kind of object `object` of the plan with key `plan`, for folding.
    fn ord_of(&self, plan: i64, object: uuid::Uuid) -> Result<(i64, &'static str), StoreError> {
        match self.known(plan, object)? {
            Some(known) => Ok((known.ord, known.kind)),
            None => Err(StoreError::permanent(format!(
                "{}: folding the journal: plan #{plan} has no object {object}",
                self.store
            ))),
        }
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
        self.cache.borrow_mut().plans.insert(p.id, pk);
        self.conn
            .prepare_cached(INSERT_DEFINITION)
            .and_then(|mut s| s.execute(params![pk, p.definition]))
            .map_err(err)?;
        let mut insert = self
            .conn
            .prepare_cached(INSERT_SEQUENCE_DEFINITION)
            .map_err(err)?;
        for c in &p.sequences {
            insert
                .execute(params![pk, c.block, c.first, c.counts, c.heads, c.bodies])
                .map_err(err)?;
        }
        let mut insert = self.conn.prepare_cached(INSERT_OBJECT).map_err(err)?;
        for o in p.objects.iter().filter(|o| o.stored) {
            let state = &o.state;
            insert
                .execute(params![
                    pk,
                    o.ord,
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
        self.remember(pk, p);
        Ok(())
    }

    /// Caches the objects of a plan just created: its first changes then find them without a
    /// query.
    fn remember(&self, pk: i64, p: &PreparedPlan) {
        self.cache.borrow_mut().add(
            pk,
            p.objects.iter().map(|o| {
                let known = Known {
                    ord: o.ord,
                    loc: o.loc,
                    kind: o.kind,
                };
                (o.id, known)
            }),
        );
    }

    /// Runs the changes of one `apply`: the plan's own fields are updated in place; changes to
    /// its objects are checked against what the writer knows of them (that each is in the plan,
    /// where the change says; attempt indexes are the caller's, see `storage::check_changes`),
    /// and `blob`, their encoding, is appended to the journal.
    fn apply(&self, id: PlanId, ops: &[Op], blob: &[u8]) -> Result<(), StoreError> {
        let Some(plan) = self.plan_key(id)? else {
            return Err(StoreError::NotFound(id));
        };
        let err = |e| sql_error(&self.store, &format!("updating plan {id}"), e);
        let execute = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Result<(), StoreError> {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut s| s.execute(params))
                .map(drop)
                .map_err(err)
        };
        let mut ended = false;
        for op in ops {
            match op {
                Op::Plan(set) => {
                    if let Some(state) = &set.state {
                        ended = Status::from_str(state.status).is_ok_and(Status::is_terminal);
                        execute(
                            UPDATE_PLAN_STATE,
                            params![plan, state.status, state.start, state.end],
                        )?;
                    }
                    let run = set.reason.is_some()
                        || set.heartbeat.is_some()
                        || set.paused.is_some()
                        || set.owner.is_some()
                        || set.decision.is_some();
                    if run {
                        execute(
                            UPDATE_PLAN_RUN,
                            params![
                                plan,
                                set.reason,
                                set.heartbeat,
                                set.paused,
                                set.owner,
                                set.decision
                            ],
                        )?;
                    }
                }
                Op::ObjectState {
                    id: object, loc, ..
                } => {
                    self.object(id, plan, *object, *loc, false)?;
                }
                Op::Attempt {
                    id: object, loc, ..
                }
                | Op::Reset { id: object, loc } => {
                    self.object(id, plan, *object, *loc, true)?;
                }
            }
        }
        if !blob.is_empty() {
            self.recount();
            if self.journal.borrow().recount {
                return Err(StoreError::transient(format!(
                    "{}: the journal's rows cannot be counted, so new rows cannot be numbered yet",
                    self.store
                )));
            }
            let mut journal = self.journal.borrow_mut();
            journal::append(&self.conn, plan, &mut journal.next_seq, blob).map_err(err)?;
            *journal.pending.entry(plan).or_default() += 1;
        }
        if ended {
            // Its objects will hardly change again (and are learned again if they do); folding
            // its journal still needs them.
            let folded = !self.journal.borrow().pending.contains_key(&plan);
            let mut cache = self.cache.borrow_mut();
            if folded {
                cache.forget(plan);
            } else {
                cache.ended.insert(plan);
            }
        }
        Ok(())
    }

    /// Folds (the first `limit` rows of) plan `plan`'s journal in the open transaction.
    fn fold_plan(&self, plan: i64, limit: Option<usize>) -> Result<usize, StoreError> {
        let folded = journal::fold(&self.conn, &self.store, plan, limit, &mut |object| {
            self.ord_of(plan, object)
        })?;
        self.counters
            .folded_rows
            .fetch_add(folded as u64, Ordering::Relaxed);
        let mut journal = self.journal.borrow_mut();
        // Nothing folded means nothing was left (the count was stale).
        let left = match folded {
            0 => 0,
            _ => journal
                .pending
                .get(&plan)
                .map_or(0, |n| n.saturating_sub(folded)),
        };
        if left == 0 {
            journal.pending.remove(&plan);
            let mut cache = self.cache.borrow_mut();
            if cache.ended.contains(&plan) {
                cache.forget(plan);
            }
        } else {
            journal.pending.insert(plan, left);
        }
        Ok(folded)
    }

    fn delete(&self, id: PlanId) -> Result<(), StoreError> {
        match self.plan_row(id)? {
            None => Err(StoreError::NotFound(id)),
            Some((_, status)) if status == "Running" => Err(StoreError::Running(id)),
            Some((plan, _)) => {
                self.conn
                    .prepare_cached(DELETE_PLAN)
                    .and_then(|mut s| s.execute([plan]))
                    .map_err(|e| sql_error(&self.store, &format!("deleting plan {id}"), e))?;
                // The plan's journal went with it (the foreign key cascades). If the group
                // rolls back, the rollback empties the cache and recounts the journal.
                let mut cache = self.cache.borrow_mut();
                cache.forget(plan);
                cache.plans.remove(&id);
                let mut journal = self.journal.borrow_mut();
                journal.pending.remove(&plan);
                journal.failures.remove(&plan);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(n: u32) -> impl ExactSizeIterator<Item = (uuid::Uuid, Known)> {
        (0..n).map(|i| {
            let known = Known {
                ord: i64::from(i),
                loc: Loc::Block(i as usize),
                kind: "block",
            };
            (uuid::Uuid::from_u128(u128::from(i)), known)
        })
    }

    #[test]
    fn the_cache_forgets_other_plans_to_make_room_and_counts_what_it_holds() {
        let mut cache = Cache {
            cap: 10,
            ..Cache::default()
        };
        cache.add(1, objects(6));
        cache.add(1, objects(6));
        assert_eq!(cache.count, 6, "known objects are not added twice");
        cache.add(2, objects(3));
        assert_eq!(cache.count, 9);
        assert!(cache.get(1, uuid::Uuid::from_u128(5)).is_some());
        // 9 + 4 > 10: plan 1 or plan 2 makes room, whichever comes first.
        cache.add(3, objects(4));
        let held: usize = cache.objects.values().map(HashMap::len).sum();
        assert_eq!(cache.count, held);
        assert!(
            cache.count <= 10 && cache.objects.len() == 2,
            "{}",
            cache.count
        );
        assert_eq!(
            cache.get(3, uuid::Uuid::from_u128(3)).map(|k| k.ord),
            Some(3)
        );
        // A plan larger than the cap is held whole, alone.
        cache.add(4, objects(12));
        assert_eq!(cache.count, 12);
        assert_eq!(cache.objects.len(), 1);
        cache.forget(4);
        assert_eq!(cache.count, 0);
        assert!(cache.get(4, uuid::Uuid::from_u128(0)).is_none());
    }
}

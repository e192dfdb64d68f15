//! [`SqliteStore`]: plans in one SQLite file — the embedded default store. How it works (durability,
//! the single writer, group commit, the journal, readers, the schema) is documented on the type.

mod codec;
mod journal;
mod lock;
mod page;
mod reader;
mod schema;
mod writer;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use self::codec::{PreparedPlan, sql_error};
use self::lock::WriterLock;
use self::reader::{ReaderPool, blocking};
use self::writer::{Counters, Folding, Journal, Request, Syncer, Write, Writer};
use super::{Change, ListFilter, PlanSummary, Store, StoreError};
use crate::plugin::BoxFuture;
use crate::storage::sql::Op;
use crate::workflow::{Plan, PlanId};

/// How hard SQLite works to make a commit durable (`PRAGMA synchronous`, in WAL mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Synchronous {
    /// A commit survives a crash of the process, but the last commits may be lost on power
    /// loss or an OS crash. Faster: the WAL is synced only at checkpoints.
    Normal,
    /// A commit survives power loss (the default): a write's future completes only after the
    /// WAL holding it has been synced to disk. The store syncs the WAL itself, on a second
    /// thread, after each group commit, so the next group runs while the disk syncs; readers
    /// may therefore see a write a moment before its future completes.
    #[default]
    Full,
    /// SQLite syncs the WAL at every commit and the directory too, for file systems that need
    /// it; commits are not pipelined.
    Extra,
}

impl Synchronous {
    /// The connection's `PRAGMA synchronous`: `Full` is `NORMAL` plus the store's own syncs.
    fn as_sql(self) -> &'static str {
        match self {
            Synchronous::Normal | Synchronous::Full => "NORMAL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

/// `PRAGMA user_version` of a store file while a writer has it open; 0 once it closed cleanly.
pub(super) const WRITER_OPEN: i64 = 1;

/// Refuses a file that a writer left open (it did not close cleanly) whose write-ahead log is
/// gone — deleted, or not copied with the file: its latest changes are lost, and using it as
/// if nothing happened would resume plans from an older state, or start over empty.
fn refuse_lost_wal(conn: &Connection, store: &str, path: &Path) -> Result<(), StoreError> {
    let mark: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| sql_error(store, "reading the file's header", e))?;
    if mark != WRITER_OPEN {
        return Ok(());
    }
    Err(StoreError::permanent(format!(
        "{store}: the file was left open by a process that stopped without closing it, and its \
         write-ahead log {} is missing, so the latest changes are lost (the log was deleted, or \
         the file was copied without it). Put the -wal file back beside it; to copy a store, use \
         `coercion backup`. To open the file as it is anyway, losing what the log held, clear \
         the mark: sqlite3 {} 'PRAGMA user_version = 0'",
        sidecar(path, "-wal").display(),
        path.display()
    )))
}

/// SQLite's `quick_check` (the file's structure, without comparing indexes to tables: a
/// fraction of `integrity_check`'s time), refusing a damaged file with what it found.
fn quick_check(conn: &Connection, store: &str) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check(20)")
        .map_err(|e| sql_error(store, "checking the file after an unclean shutdown", e))?;
    let found: Vec<String> = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| sql_error(store, "checking the file after an unclean shutdown", e))?;
    if found.len() == 1 && found[0] == "ok" {
        return Ok(());
    }
    Err(StoreError::permanent(format!(
        "{store}: the file is damaged (SQLite's quick_check after an unclean shutdown found: {}); \
         nothing was written to it. Restore the store from a backup (`coercion backup` makes one), \
         or keep this file aside for inspection and start a new one",
        found.join("; ")
    )))
}

/// Options of [`SqliteStore::open_with`]; [`SqliteOptions::default()`] is what
/// [`SqliteStore::open`] uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    synchronous: Synchronous,
    busy_timeout: Duration,
    max_group: usize,
    read_connections: usize,
    folding: Folding,
    checkpoint_every: Option<Duration>,
    /// Tests: a page limit, to make the database "full".
    #[cfg(test)]
    max_page_count: Option<u32>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_group: 1_000,
            read_connections: 4,
            folding: Folding {
                limit: 32_768,
                idle: Some(Duration::from_millis(20)),
                on_close: true,
            },
            checkpoint_every: Some(Duration::from_secs(2)),
            #[cfg(test)]
            max_page_count: None,
        }
    }
}

impl SqliteOptions {
    /// Durability of commits (default [`Synchronous::Full`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long a statement waits for a lock held by another connection before it fails with
    /// [`StoreError::Transient`] (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// At most this many queued writes share one transaction (default 1,000; at least 1).
    pub fn max_group(mut self, writes: usize) -> Self {
        self.max_group = writes.max(1);
        self
    }

    /// How many idle read connections are kept open (default 4).
    pub fn read_connections(mut self, connections: usize) -> Self {
        self.read_connections = connections;
        self
    }

    /// How many journal rows a plan may gather before the writer folds them into its tables
    /// even while writes are waiting (default 32,768, about 16,000 actions' steps; 0 folds
    /// after every commit). See [`SqliteStore`] on the journal.
    pub fn fold_limit(mut self, rows: usize) -> Self {
        self.folding.limit = rows;
        self
    }

    /// How long the writer waits without writes before it folds journals (default 20 ms;
    /// `None`: only at the limit and when the store closes).
    pub fn fold_when_idle(mut self, after: Option<Duration>) -> Self {
        self.folding.idle = after;
        self
    }

    /// How often, while writes come in, the writer copies committed changes from the WAL into
    /// the database file (a passive checkpoint: it never waits for readers), so that the file
    /// alone lags by seconds (default 2 s; `None`: only SQLite's automatic checkpoint every
    /// 10,000 pages and the one at close). For a consistent copy while plans run, use
    /// SQLite's online backup instead of copying the file.
    pub fn checkpoint_every(mut self, every: Option<Duration>) -> Self {
        self.checkpoint_every = every.map(|d| d.min(crate::workflow::MAX_DURATION));
        self
    }

    /// Tests: leave the journal unfolded when the store closes, as a crash does.
    #[cfg(test)]
    pub(crate) fn no_fold_on_close(mut self) -> Self {
        self.folding.on_close = false;
        self
    }
}

/// Counters of a store's writer since it was opened (all zero for a read-only store).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteStats {
    /// Write requests (`create`, `apply`, `delete` calls) the writer ran.
    pub writes: u64,
    /// Of those, the ones that failed.
    pub failed_writes: u64,
    /// Transactions committed: with group commit, far fewer than `writes` under load.
    pub commits: u64,
    /// The most writes one transaction carried.
    pub largest_group: u64,
    /// Syncs of the WAL by the store itself (with [`Synchronous::Full`]; each covers every
    /// transaction committed before it).
    pub syncs: u64,
    /// Transactions that folded journal rows into the tables, outside the commits of writes.
    pub folds: u64,
    /// Journal rows folded, in those and in writes.
    pub folded_rows: u64,
}

/// Plans in one SQLite file. Cloning gives another handle to the same store; the file is
/// closed (and the writer lock released) when the last handle is dropped.
///
/// ```
/// use coercion::plugins::{Sleep, SleepReq};
/// use coercion::prelude::*;
/// use coercion::storage::{SqliteStore, Store as _};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("coercion-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let path = dir.join("ops.db");
/// let ws = Workstream::builder()
///     .store(SqliteStore::open(&path)?) // or `Workstream::open(&path, registry)`
///     .registry(Registry::from_inventory()?)
///     .build()
///     .await?;
/// let plan = Plan::builder("nap")
///     .block(Block::builder("b").sequence(Sequence::builder("s").action(
///         ActionSpec::new::<Sleep>("nap", SleepReq::new(std::time::Duration::from_millis(1))),
///     )))
///     .build();
/// let id = ws.run(plan).await?.id();
/// drop(ws); // the last handle: the file is closed, the WAL checkpointed into it
///
/// // Another process (or this one, later) reads what happened.
/// let store = SqliteStore::open(&path)?;
/// assert_eq!(store.read(id).await?.status(), Status::Completed);
/// # drop(store); std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
///
/// * **Durable.** The file is in WAL mode; by default ([`Synchronous::Full`]) a write whose
///   future completed has been synced to disk and survives a crash of the process and a power
///   loss ([`Synchronous::Normal`] trades the latter for speed).
/// * **One writer process.** [`SqliteStore::open`] holds an exclusive lock on `<file>.lock` for
///   the store's lifetime; a second process (or a second store in this process) that opens the
///   file to run plans gets [`StoreError::Locked`]. [`SqliteStore::open_read_only`] works at any
///   time, also while another process runs plans, and sees every committed write. Where the
///   reader cannot create `<file>-shm` and no process runs plans from the file, it reads the file
///   as immutable ([`SqliteStore::is_immutable`]).
/// * **Group commit.** One writer thread owns the only writing connection. Writes are queued in
///   the order `create`/`apply`/`delete` are *called* (not the order their futures are polled);
///   the writer runs everything queued in one transaction, commits once, and only then completes
///   the futures — with [`Synchronous::Full`], once a syncer thread has synced the WAL, while
///   the writer already runs the next group. A write that fails (an unknown plan, a bad
///   location) is undone alone, in its own savepoint, and only its caller gets the error.
///   Dropping a write's future does not cancel the write. Writes complete on the store's own
///   threads, which tokio's paused test clock does not see: with `start_paused`, timers may
///   advance while a write is in flight.
/// * **Journal.** A write's changes to the plan's objects (states, attempts) are appended to the
///   `journal` table as one small row rather than written into the object and attempt rows, so a
///   commit touches a page or two however many sequences run. The writer *folds* a plan's
///   journal into its tables when it has had nothing to do for a moment
///   ([`SqliteOptions::fold_when_idle`], 20 ms), when the journal grows past
///   [`SqliteOptions::fold_limit`] rows, and when the store closes. Folding changes how the
///   state is stored, not what it is: readers replay the rows not folded yet on top of the
///   tables in the same snapshot, and a crash before a fold loses nothing (the next writer, or
///   any reader, picks the journal up).
/// * **Readers** use their own read-only connections on tokio's blocking pool; each read is one
///   consistent snapshot. A *page* of a plan ([`Store::read_page`]) reads the definition
///   without its sequences' actions, every sequence's head and state, the page's actions, and
///   counts the rest by key range and through the index of unfinished rows: the page of a
///   1,000,000-action plan takes about 0.3 s and tens of megabytes, not a whole read.
/// * **Closing.** When the last handle is dropped, the writer commits what is queued, folds the
///   journals, and closes last, which checkpoints the WAL into the database file and removes
///   it: the file alone then holds everything (a copy of it is a complete backup).
/// * **Schema** (version 5): tables `plans`, `plan_definitions` (the definition without its
///   blocks' sequences), `sequence_definitions` (one row per sequence), `objects`, `attempts`,
///   `journal`, `schema_version`; foreign keys cascade from plans; times
///   are integer nanoseconds since the epoch (NULL when unset), so the store holds times between
///   1677 and 2262. A file of an older version is migrated when opened for writing. Files of other
///   applications and files written by a newer coercion are refused.
///
/// Object ids must be unique within a plan (the engine assigns UUIDv7s): `create` refuses a plan
/// that reuses one. A change whose id does not match the object at its location is refused.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    store: Arc<str>,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    readers: Arc<ReaderPool>,
    counters: Arc<Counters>,
    /// Running plans whose objects the writer was told about by a read.
    learned: parking_lot::Mutex<std::collections::HashSet<PlanId>>,
    // Dropped after the writer thread has been joined, so the file is closed first.
    _lock: Option<WriterLock>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer's connection must be the last to close: the last connection checkpoints
        // the WAL into the database file and removes it, and a read-only one cannot. The file
        // alone then holds everything (a copy of it is a complete backup).
        self.readers.close_idle();
        // Closing the queue ends the writer once it has committed what is queued.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the store at `path` to run plans, with default options.
    ///
    /// Fails with [`StoreError::Locked`] if another process — or another `SqliteStore` of this
    /// process — has it open to run plans, and with [`StoreError::Permanent`] naming the file if
    /// it cannot be opened, is not a SQLite database, belongs to another application, or was
    /// written by a newer coercion.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// [`open`](Self::open) with `options`.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        let path = absolute(path.as_ref());
        let store: Arc<str> = format!("sqlite:{}", path.display()).into();
        let lock = WriterLock::acquire(&sidecar(&path, ".lock"), &path)?;
        // A clean close removes the WAL: one left behind means the last writer stopped without
        // closing (a crash, a kill, a power loss), and the file is checked before it is used.
        let wal = std::fs::metadata(sidecar(&path, "-wal"));
        let unclean = wal.as_ref().is_ok_and(|m| m.len() > 0);
        let wal_missing = wal.is_err();
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_EXRESCODE,
        )
        .map_err(|e| schema::open_error(&store, e))?;
        let setup = |e| sql_error(&store, "configuring the connection", e);
        conn.busy_timeout(options.busy_timeout).map_err(setup)?;
        // Judge the file before changing anything in it.
        if unclean {
            quick_check(&conn, &store)?;
        }
        let identity = schema::identify(&conn, &store)?;
        // Only a coercion store carries the mark (another application's file is refused by
        // `migrate`, naming it).
        if wal_missing && matches!(identity, schema::Identity::Coercion(_)) {
            refuse_lost_wal(&conn, &store, &path)?;
        }
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(setup)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::permanent(format!(
                "{store}: cannot switch the database to WAL mode (it stays in `{mode}` mode)"
            )));
        }
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(setup)?;
        // A transaction of a large group touches many pages: keep them in memory (32 MiB).
        conn.pragma_update(None, "cache_size", -32_768)
            .map_err(setup)?;
        // Checkpoint every 10,000 pages (40 MiB) of WAL rather than SQLite's 1,000: a page that
        // many commits rewrite is copied to the database once per checkpoint, not once per 1,000
        // pages. Truncate the WAL back to 64 MiB after a checkpoint.
        conn.pragma_update(None, "wal_autocheckpoint", 10_000)
            .map_err(setup)?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(setup)?;
        conn.pragma_update(None, "synchronous", options.synchronous.as_sql())
            .map_err(setup)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(setup)?;
        schema::migrate(&mut conn, &store, identity)?;
        #[cfg(test)]
        if let Some(pages) = options.max_page_count {
            conn.pragma_update(None, "max_page_count", pages)
                .map_err(setup)?;
        }
        conn.set_prepared_statement_cache_capacity(64);

        let counters = Arc::new(Counters::default());
        let (requests, queue) = mpsc::channel();
        let syncer = match options.synchronous {
            Synchronous::Full => Some(
                Syncer::start(sidecar(&path, "-wal"), store.clone(), counters.clone()).map_err(
                    |e| {
                        StoreError::permanent(format!("{store}: cannot start the syncer thread"))
                            .caused_by(e)
                    },
                )?,
            ),
            Synchronous::Normal | Synchronous::Extra => None,
        };
        let writer = Writer {
            conn,
            store: store.clone(),
            counters: counters.clone(),
            max_group: options.max_group,
            syncer,
            cache: Default::default(),
            journal: RefCell::new(Journal::unknown()),
            folding: options.folding,
            checkpoint_every: options.checkpoint_every,
            checkpointed: std::cell::Cell::new((std::time::Instant::now(), false)),
        };
        let thread = std::thread::Builder::new()
            .name("coercion-sqlite-writer".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(|e| {
                StoreError::permanent(format!("{store}: cannot start the writer thread"))
                    .caused_by(e)
            })?;
        let readers = ReaderPool::new(
            path.clone(),
            store.clone(),
            options.busy_timeout,
            options.read_connections,
        );
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                store,
                requests: Some(requests),
                writer: Some(thread),
                readers: Arc::new(readers),
                counters,
                learned: Default::default(),
                _lock: Some(lock),
            }),
        })
    }

    /// Opens an existing store to read it only (the CLI, the web UI), also while another
    /// process runs plans from it; reads see every committed write. Writes fail with
    /// [`StoreError::Permanent`]. Fails if the file does not exist or is not a coercion store of
    /// the schema version this build reads.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = absolute(path.as_ref());
        let store: Arc<str> = format!("sqlite:{} (read-only)", path.display()).into();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(StoreError::permanent(format!("{store}: not a file"))),
            Err(e) => {
                return Err(StoreError::permanent(format!("{store}: cannot open")).caused_by(e));
            }
        }
        let options = SqliteOptions::default();
        let pool = |store: &Arc<str>| {
            ReaderPool::new(
                path.clone(),
                store.clone(),
                options.busy_timeout,
                options.read_connections,
            )
        };
        let check = |readers: &ReaderPool| {
            readers.with(|conn| {
                schema::check_readable(readers.store(), schema::identify(conn, readers.store())?)
            })
        };
        let mut readers = pool(&store);
        if let Err(e) = check(&readers) {
            let shm = sidecar(&path, "-shm");
            if shm.exists() || !cannot_write_beside(&e) {
                return Err(e);
            }
            // SQLite reads a file in WAL mode through `-shm`, which this user cannot create
            // (a read-only mount, another user's directory). With no writer and no log to
            // read, the file is all there is: read it as immutable.
            let wal = sidecar(&path, "-wal");
            if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                return Err(StoreError::permanent(format!(
                    "{store}: its write-ahead log {} holds writes the file lacks, and reading it needs {}, \
                     which this user cannot create; open the store once as a user who can write beside it \
                     (that folds the log into the file), or copy the three files elsewhere",
                    wal.display(),
                    shm.display()
                ))
                .caused_by(e));
            }
            let store: Arc<str> =
                format!("sqlite:{} (read-only, immutable)", path.display()).into();
            readers = pool(&store).immutable(sidecar(&path, ".lock"));
            if let Err(immutable) = check(&readers) {
                // Not a file this user cannot write beside after all (or one being written):
                // the first error says what happened.
                return Err(match immutable {
                    StoreError::Permanent { source: None, .. } => immutable,
                    _ => e,
                });
            }
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                store,
                requests: None,
                writer: None,
                readers: Arc::new(readers),
                counters: Arc::new(Counters::default()),
                learned: Default::default(),
                _lock: None,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the store was opened with [`open_read_only`](Self::open_read_only).
    pub fn is_read_only(&self) -> bool {
        self.inner.requests.is_none()
    }

    /// Whether [`open_read_only`](Self::open_read_only) reads the file as immutable: this user
    /// cannot create the `-shm` file SQLite reads a store through (the file is on a read-only
    /// mount, or in a directory of another user) and no process was running plans from it.
    /// Every read then first checks that still no process does, and fails if one does.
    pub fn is_immutable(&self) -> bool {
        self.inner.readers.is_immutable()
    }

    /// Whether a process runs plans from this file now: this store, if it writes, or another
    /// process holding the file's writer lock (`<db>.lock`). A plan stored `Running` while no
    /// process does was left by a process that stopped; it resumes when a program that runs
    /// plans opens the file. Fails only when the lock file cannot be read.
    pub fn runs_plans_now(&self) -> Result<bool, StoreError> {
        if self.inner.requests.is_some() {
            return Ok(true);
        }
        lock::held_for(&self.inner.store, &sidecar(&self.inner.path, ".lock"))
    }

    /// What the writer did so far.
    pub fn stats(&self) -> SqliteStats {
        let c = &self.inner.counters;
        SqliteStats {
            writes: c.group.writes.load(Ordering::Relaxed),
            failed_writes: c.group.failed_writes.load(Ordering::Relaxed),
            commits: c.group.commits.load(Ordering::Relaxed),
            largest_group: c.group.largest_group.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            folds: c.folds.load(Ordering::Relaxed),
            folded_rows: c.folded_rows.load(Ordering::Relaxed),
        }
    }

    /// Runs SQLite's `integrity_check` and `foreign_key_check` on the file; fails with
    /// [`StoreError::Permanent`] listing the problems found.
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        let readers = self.inner.readers.clone();
        blocking(&self.inner.store, move || {
            readers.with(|conn| reader::integrity_check(conn, readers.store()))
        })
        .await
    }

    /// Writes a consistent copy of the store to the new file `dest` while plans may be running
    /// (SQLite's `VACUUM INTO`: one read transaction, so the copy is the store as of one
    /// moment, with no WAL beside it, compacted). The copy opens like any store file. Fails
    /// if `dest` exists (nothing is overwritten) or cannot be written; a failed copy is
    /// removed.
    pub async fn backup(&self, dest: impl AsRef<Path>) -> Result<(), StoreError> {
        let dest = std::path::absolute(dest.as_ref()).map_err(|e| {
            StoreError::permanent(format!(
                "{}: backup to {}: cannot resolve the path",
                self.inner.store,
                dest.as_ref().display()
            ))
            .caused_by(e)
        })?;
        let Some(dest_text) = dest.to_str().map(str::to_owned) else {
            return Err(StoreError::permanent(format!(
                "{}: backup to {}: the path is not valid UTF-8",
                self.inner.store,
                dest.display()
            )));
        };
        // Created here, empty and new (SQLite fills an empty file): an existing file is never
        // touched, and a failed copy removes only what it created.
        if let Err(e) = std::fs::File::create_new(&dest) {
            let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "the file exists; choose a new file (nothing was overwritten)"
            } else {
                "cannot create the file"
            };
            return Err(StoreError::permanent(format!(
                "{}: backup to {dest_text}: {why}",
                self.inner.store
            ))
            .caused_by(e));
        }
        let readers = self.inner.readers.clone();
        let store = self.inner.store.clone();
        blocking(&self.inner.store, move || {
            readers.with(|conn| {
                // The copy is a closed store: without the writer's open mark (VACUUM INTO
                // copies the header), or it would be taken for a file that lost its WAL.
                let copy = || -> rusqlite::Result<()> {
                    conn.execute("VACUUM INTO ?1", [&dest_text])?;
                    Connection::open(&dest_text)?.pragma_update(None, "user_version", 0)
                };
                copy().map_err(|e| {
                    let _ = std::fs::remove_file(&dest_text);
                    codec::sql_error(&store, &format!("backup to {dest_text}"), e)
                })
            })
        })
        .await
    }

    /// Queues a write now (so writes run in call order) and returns a future of its result.
    fn enqueue(
        &self,
        make: impl FnOnce() -> Result<Write, StoreError>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let Some(requests) = &self.inner.requests else {
            let err =
                StoreError::permanent(format!("{}: the store is open read-only", self.inner.store));
            return Box::pin(async move { Err(err) });
        };
        let write = match make() {
            Ok(w) => w,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let (reply, result) = oneshot::channel();
        let gone = || {
            StoreError::permanent(format!(
                "{}: the writer thread has stopped",
                self.inner.store
            ))
        };
        if requests.send(Request { write, reply }).is_err() {
            let err = gone();
            return Box::pin(async move { Err(err) });
        }
        let err = gone();
        Box::pin(async move { result.await.unwrap_or(Err(err)) })
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("read_only", &self.is_read_only())
            .finish_non_exhaustive()
    }
}

impl Store for SqliteStore {
    fn create<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Result<(), StoreError>> {
        self.enqueue(|| Ok(Write::Create(Box::new(PreparedPlan::of(plan)?))))
    }

    fn apply<'a>(
        &'a self,
        id: PlanId,
        changes: &'a [Change],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.enqueue(|| {
            let ops: Vec<Op> = changes
                .iter()
                .map(|c| Op::of(id, c))
                .collect::<Result<_, _>>()?;
            let journal = journal::encode(&ops);
            Ok(Write::Apply { id, ops, journal })
        })
    }

    fn read(&self, id: PlanId) -> BoxFuture<'_, Result<Plan, StoreError>> {
        let readers = self.inner.readers.clone();
        // A running plan read by the process that writes is about to be resumed: hand the
        // writer where its objects are, which saves it parsing the definition again.
        let index = !self.is_read_only();
        Box::pin(async move {
            let (plan, index) = blocking(&self.inner.store, move || {
                readers.with(|conn| reader::read_plan(conn, readers.store(), id, index))
            })
            .await?;
            if let (Some((pk, objects)), crate::workflow::Status::Running) = (index, plan.status())
            {
                // Once per plan; nobody waits for this: the writer learns what it does not know
                // yet, outside any transaction.
                if self.inner.learned.lock().insert(id) {
                    drop(self.enqueue(|| Ok(Write::Learn { id, pk, objects })));
                }
            }
            Ok(plan)
        })
    }

    fn read_page(
        &self,
        id: PlanId,
        spec: crate::storage::PageSpec,
    ) -> BoxFuture<'_, Result<crate::storage::PlanPage, StoreError>> {
        let readers = self.inner.readers.clone();
        Box::pin(async move {
            blocking(&self.inner.store, move || {
                readers.with(|conn| page::read_page(conn, readers.store(), id, spec))
            })
            .await
        })
    }

    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> BoxFuture<'a, Result<Vec<PlanSummary>, StoreError>> {
        let readers = self.inner.readers.clone();
        let filter = filter.clone();
        Box::pin(blocking(&self.inner.store, move || {
            readers.with(|conn| reader::list_plans(conn, readers.store(), &filter))
        }))
    }

    fn count<'a>(&'a self, filter: &'a ListFilter) -> BoxFuture<'a, Result<u64, StoreError>> {
        let readers = self.inner.readers.clone();
        let filter = filter.clone();
        Box::pin(blocking(&self.inner.store, move || {
            readers.with(|conn| reader::count_plans(conn, readers.store(), &filter))
        }))
    }

    fn delete(&self, id: PlanId) -> BoxFuture<'_, Result<(), StoreError>> {
        self.enqueue(|| Ok(Write::Delete(id)))
    }

    fn describe(&self) -> String {
        self.inner.store.to_string()
    }
}

/// `path` with links resolved (those of its directory, if the file does not exist yet), so that
/// every path to one file names the same lock file.
fn absolute(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(p) = std::fs::canonicalize(parent) {
            return p.join(name);
        }
    }
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `path` with `suffix` appended to its file name (`plans.db` → `plans.db.lock`).
/// Whether `e`, from opening a file read-only, says SQLite could not create a file beside it
/// (its `-shm`).
fn cannot_write_beside(e: &StoreError) -> bool {
    let code = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<rusqlite::Error>())
        .and_then(rusqlite::Error::sqlite_error_code);
    matches!(
        code,
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
    )
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

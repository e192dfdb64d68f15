//! Opening a store read-only — a SQLite file, or (feature `postgres`) a PostgreSQL database —
//! and finding plans in it by (abbreviated) id, with errors that name the store and the id.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::{Chain, ListFilter, SqliteStore, Store, StoreError};
use crate::workflow::{Plan, PlanId};

use super::CliError;

/// A store opened read-only, as the CLI and the web UI use it.
#[derive(Clone)]
pub struct Db {
    store: Arc<dyn Store>,
    /// The SQLite file (the control socket and backups are found from it); `None` for
    /// PostgreSQL.
    path: Option<PathBuf>,
    label: String,
    /// The same store when it is a SQLite file, which can tell whether a process runs plans
    /// from it.
    file: Option<Arc<SqliteStore>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("store", &self.label).finish()
    }
}

/// Whether `db` names a PostgreSQL database (`postgres://…` or `postgresql://…`) rather than a
/// SQLite file.
pub fn is_postgres_url(db: &Path) -> bool {
    db.to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

impl Db {
    /// Opens the store `db` names: a PostgreSQL URL (read through schema `pg_schema`, changing
    /// nothing in the database) or a SQLite file.
    pub async fn connect(db: &Path, pg_schema: &str) -> Result<Db, CliError> {
        if !is_postgres_url(db) {
            return Db::open(db);
        }
        #[cfg(feature = "postgres")]
        {
            let url = db.to_str().unwrap_or_default();
            let options = crate::storage::PostgresOptions::default()
                .schema(pg_schema)
                .migrate(false)
                .pool_size(2)
                .writers(1);
            let store = crate::storage::PostgresStore::connect_with(url, options)
                .await
                .map_err(|e| {
                    CliError::new(format!(
                        "{} (--pg-schema or COERCION_PG_SCHEMA names the schema; now {pg_schema:?})",
                        Chain(&e)
                    ))
                })?;
            let label = store.describe();
            Ok(Db {
                store: Arc::new(store),
                path: None,
                label,
                file: None,
            })
        }
        #[cfg(not(feature = "postgres"))]
        {
            let _ = pg_schema;
            Err(CliError::new(
                "--db names a PostgreSQL database, but this coercion was built without the \
                 `postgres` feature (cargo install --path coercion --features cli,postgres)"
                    .to_owned(),
            ))
        }
    }

    /// [`connect`](Self::connect) to change the store: a SQLite file is opened as its writer,
    /// which fails, naming the process, while another process runs plans from it (a PostgreSQL
    /// store takes writes from any number of processes).
    pub async fn connect_for_writes(db: &Path, pg_schema: &str) -> Result<Db, CliError> {
        if is_postgres_url(db) {
            return Db::connect(db, pg_schema).await;
        }
        must_be_a_file(db)?;
        // Judged as a reader would first: an empty file or another application's database is
        // refused, never turned into a store.
        drop(SqliteStore::open_read_only(db).map_err(|e| store_error(db, e))?);
        let store = SqliteStore::open(db).map_err(|e| match e {
            StoreError::Locked(_) => CliError::new(format!(
                "{}: {}; a SQLite store has one writer: stop it first, or prune while no process \
                 runs plans from this file",
                db.display(),
                e.detail()
            )),
            other => store_error(db, other),
        })?;
        let label = db.display().to_string();
        let store = Arc::new(store);
        Ok(Db {
            store: store.clone(),
            file: Some(store),
            path: Some(db.to_path_buf()),
            label,
        })
    }

    /// A store the program opened itself (its own [`Store`], a `MemoryStore`), shown as
    /// `label`. Control requests, which go through a SQLite file's socket, are refused for it.
    pub fn from_store(store: Arc<dyn Store>, label: impl Into<String>) -> Db {
        Db {
            store,
            path: None,
            label: label.into(),
            file: None,
        }
    }

    /// Opens the store file at `path` read-only (it may be in use by a process that runs plans).
    ///
    /// Fails with a message naming the file if it does not exist, is not a file, is not a
    /// SQLite database or not a coercion store, or is locked by another program.
    pub fn open(path: &Path) -> Result<Db, CliError> {
        must_be_a_file(path)?;
        let store = SqliteStore::open_read_only(path).map_err(|e| store_error(path, e))?;
        if store.is_immutable() {
            let mut shm = path.as_os_str().to_owned();
            shm.push("-shm");
            let _ = writeln!(
                anstream::stderr(),
                "coercion: note: {} cannot be created by this user, so {} is read as an immutable file \
                 (no process runs plans from it; a read fails if one starts)",
                std::path::Path::new(&shm).display(),
                path.display()
            );
        }
        let store = Arc::new(store);
        Ok(Db {
            store: store.clone(),
            file: Some(store),
            path: Some(path.to_path_buf()),
            label: path.display().to_string(),
        })
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The SQLite file, as given; `None` for PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether a process runs plans from the store now, when the store can tell: a SQLite file
    /// (its writer's lock). `None` for PostgreSQL (a worker takes a plan over when its lease
    /// lapses) and for a store the program opened itself, or when the lock cannot be read.
    pub fn runs_plans_now(&self) -> Option<bool> {
        self.file.as_ref()?.runs_plans_now().ok()
    }

    /// Whether a process runs plan `id` (Running) now, when the store can tell: over a SQLite
    /// file, whether any process runs plans from it; over PostgreSQL, whether a live process
    /// holds the plan's lease. `None` when the store cannot tell or the question failed.
    pub async fn plan_has_process(&self, id: PlanId) -> Option<bool> {
        if self.file.is_some() {
            return self.runs_plans_now();
        }
        self.store.shared()?.lease_held(id).await.ok().flatten()
    }

    /// The store for people: the file as given, or the database without its password.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The SQLite file, or an error saying that `what` needs one.
    pub fn file_for(&self, what: &str) -> Result<&Path, CliError> {
        self.path().ok_or_else(|| {
            CliError::new(format!(
                "{what} works on SQLite store files only; {} is not one",
                self.label
            ))
        })
    }

    /// The one plan whose id is `id`, starts with `id` or ends with it (case-insensitive,
    /// dashes optional). UUIDv7 ids made within the same minute share their first characters,
    /// while their last ones are random: the last 8 characters of an id are unique in practice.
    ///
    /// Fails naming the id and the file when no plan or more than one plan matches.
    pub async fn resolve(&self, id: &str) -> Result<PlanId, CliError> {
        let wanted: String = id
            .chars()
            .filter(|c| *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        if wanted.is_empty() || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(CliError::new(format!(
                "`{id}` is not a plan id (nor its start or end): ids are UUIDs such as \
                 0193a5e2-7c1d-7f00-8000-000000000000"
            )));
        }
        if let Ok(full) = id.parse::<PlanId>() {
            return Ok(full);
        }
        let all = self
            .store
            .list(&ListFilter::default())
            .await
            .map_err(|e| store_error(&self.label, e))?;
        let matches: Vec<_> = all
            .iter()
            .filter(|s| {
                let hex = s.id.0.simple().to_string();
                hex.starts_with(&wanted) || hex.ends_with(&wanted)
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.id),
            [] => Err(CliError::new(format!(
                "no plan with an id starting or ending with `{id}` in {}",
                self.label
            ))),
            many => {
                let mut msg = format!(
                    "`{id}` is ambiguous: {} plans in {} have ids starting or ending with it; give more characters (the last 8 are unique in practice):",
                    many.len(),
                    self.label
                );
                for s in many.iter().take(10) {
                    msg.push_str(&format!(
                        "\n  {} {:<10} {}",
                        s.id,
                        s.state.status.as_str(),
                        super::format::clean(&s.name)
                    ));
                }
                if many.len() > 10 {
                    msg.push_str(&format!("\n  … and {} more", many.len() - 10));
                }
                Err(CliError::new(msg))
            }
        }
    }

    /// Reads the plan `id` (a full or abbreviated id).
    pub async fn read(&self, id: &str) -> Result<Plan, CliError> {
        let id = self.resolve(id).await?;
        self.read_id(id).await
    }

    /// Reads the plan with exactly this id.
    pub async fn read_id(&self, id: PlanId) -> Result<Plan, CliError> {
        self.store
            .read(id)
            .await
            .map_err(|e| self.read_error(id, e))
    }

    /// Reads the page `spec` of the plan with exactly this id.
    pub async fn read_page(
        &self,
        id: PlanId,
        spec: crate::storage::PageSpec,
    ) -> Result<crate::storage::PlanPage, CliError> {
        self.store
            .read_page(id, spec)
            .await
            .map_err(|e| self.read_error(id, e))
    }

    fn read_error(&self, id: PlanId, e: StoreError) -> CliError {
        match e {
            StoreError::NotFound(_) => CliError::new(format!("no plan {id} in {}", self.label)),
            other => store_error(&self.label, other),
        }
    }
}

/// A store error as a CLI error naming the store (a file as given, or a database).
pub(crate) fn store_error(store: impl AsRef<std::ffi::OsStr>, e: StoreError) -> CliError {
    let store = Path::new(store.as_ref()).display();
    match &e {
        StoreError::Transient { .. } | StoreError::Locked(_) => CliError::new(format!(
            "{store} is locked by another program and could not be read ({}); try again, or stop the \
             program that holds it exclusively",
            e.detail()
        )),
        StoreError::NotFound(id) => CliError::new(format!("no plan {id} in {store}")),
        other => CliError::new(format!("cannot read {store}: {}", Chain(other))),
    }
}

/// Fails naming `path` unless it is an existing file: a store that is not there is never
/// created by a command that reads or prunes it.
fn must_be_a_file(path: &Path) -> Result<(), CliError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(CliError::new(format!("{}: not a file", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CliError::new(format!(
            "{}: no such file; `--db PATH` names the store file (default `coercion.db` in the \
             working directory, the file a Workstream writes by default), or \
             `--db postgres://…` a PostgreSQL store",
            path.display()
        ))),
        Err(e) => Err(CliError::new(format!(
            "{}: cannot open: {e}",
            path.display()
        ))),
    }
}

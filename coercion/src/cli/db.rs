//! Opening a store file read-only and finding plans in it by (abbreviated) id, with errors that
//! name the file and the id.

use std::path::{Path, PathBuf};

use crate::storage::{Chain, ListFilter, SqliteStore, Store, StoreError};
use crate::workflow::{Plan, PlanId};

use super::CliError;

/// A store file opened read-only, as the CLI and the web UI use it.
#[derive(Clone, Debug)]
pub struct Db {
    store: SqliteStore,
    path: PathBuf,
}

impl Db {
    /// Opens the store file at `path` read-only (it may be in use by a process that runs plans).
    ///
    /// Fails with a message naming the file if it does not exist, is not a file, is not a
    /// SQLite database or not a coercion store, or is locked by another program.
    pub fn open(path: &Path) -> Result<Db, CliError> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(CliError::new(format!("{}: not a file", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CliError::new(format!(
                    "{}: no such file; `--db PATH` names the store file (default `coercion.db` in the \
                     working directory, the file a Workstream writes by default)",
                    path.display()
                )));
            }
            Err(e) => {
                return Err(CliError::new(format!(
                    "{}: cannot open: {e}",
                    path.display()
                )));
            }
        }
        let store = SqliteStore::open_read_only(path).map_err(|e| store_error(path, e))?;
        Ok(Db {
            store,
            path: path.to_path_buf(),
        })
    }

    /// The store.
    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    /// The file, as given.
    pub fn path(&self) -> &Path {
        &self.path
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
            .map_err(|e| store_error(&self.path, e))?;
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
                self.path.display()
            ))),
            many => {
                let mut msg = format!(
                    "`{id}` is ambiguous: {} plans in {} have ids starting or ending with it; give more characters (the last 8 are unique in practice):",
                    many.len(),
                    self.path.display()
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
        self.store.read(id).await.map_err(|e| match e {
            StoreError::NotFound(_) => {
                CliError::new(format!("no plan {id} in {}", self.path.display()))
            }
            other => store_error(&self.path, other),
        })
    }
}

/// A store error as a CLI error naming the file.
pub(crate) fn store_error(path: &Path, e: StoreError) -> CliError {
    match &e {
        StoreError::Transient { .. } | StoreError::Locked(_) => CliError::new(format!(
            "{} is locked by another program and could not be read ({}); try again, or stop the \
             program that holds it exclusively",
            path.display(),
            e.detail()
        )),
        StoreError::NotFound(id) => CliError::new(format!("no plan {id} in {}", path.display())),
        other => CliError::new(format!("cannot read {}: {}", path.display(), Chain(other))),
    }
}

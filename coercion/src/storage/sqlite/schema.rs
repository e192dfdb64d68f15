//! The schema of a coercion SQLite file, its version and its migrations.
//!
//! A coercion file is marked with `PRAGMA application_id` = [`APPLICATION_ID`] and carries its
//! schema version in the one-row table `schema_version`. Opening a file for writing applies every
//! migration it lacks, each in its own transaction; a new version is its SQL appended to
//! [`MIGRATIONS`]. Files of other applications, and files written by a newer
//! coercion, are refused with a clear error instead of being modified.

use rusqlite::{Connection, OptionalExtension};

use super::codec::sql_error;
use crate::storage::StoreError;
use crate::storage::sql::Migrations;

/// `PRAGMA application_id` of coercion files: "coer" in ASCII.
pub(super) const APPLICATION_ID: i32 = 0x636F_6572;

/// Every migration, oldest first: step `i` brings the file to version `i + 1`.
pub(super) const MIGRATIONS: Migrations = Migrations(&[V1, V2, V3, V4, V5]);

/// The schema version this build reads and writes.
pub(super) fn latest() -> i64 {
    MIGRATIONS.latest()
}

/// Version 1.
///
/// * `plans`: one small row per plan with what listing and filtering need (times are integer
///   nanoseconds since the epoch, NULL when unset; statuses and reasons are names). `id` is the
///   plan's UUID; the other tables refer to the plan by its integer key `pk`, which keeps their
///   keys short.
/// * `plan_definitions`: the plan as submitted, as JSON, without states or attempts. Kept apart
///   from `plans` so updating a plan's status does not rewrite a large row.
/// * `objects`: one row per check section, block, sequence, deferred batch and action, with its
///   id, location (JSON of [`Loc`](crate::workflow::Loc)), kind and state. Rows are clustered by
///   `ord`, the object's place in an *execution order* computed at create: in a block, the
///   actions of its sequences are ordered by their index in the sequence first, then by
///   sequence, so the actions that concurrent sequences run at about the same time share pages
///   and a commit rewrites a few pages instead of one per sequence (this halves the writer's
///   work with 100 concurrent sequences). Objects are found by id through `objects_by_id`.
/// * `attempts`: one row per attempt of an action (`ord` is the action's), clustered with it;
///   the outcome is JSON.
///
/// Deleting a plan cascades to everything else. (CHECK constraints are written as `OR` chains:
/// SQLite evaluates an `IN` list of more than two values with a temporary table on every row
/// written.)
pub(super) const V1: &str = "
CREATE TABLE schema_version (
    version INTEGER NOT NULL
);

CREATE TABLE plans (
    pk             INTEGER PRIMARY KEY,
    id             TEXT    NOT NULL UNIQUE,
    group_id       TEXT,
    name           TEXT    NOT NULL,
    descr          TEXT    NOT NULL,
    submit_time_ns INTEGER,
    status         TEXT    NOT NULL
        CHECK (status = 'NotStarted' OR status = 'Running' OR status = 'Completed'
               OR status = 'Failed' OR status = 'Stopped'),
    start_ns       INTEGER,
    end_ns         INTEGER,
    reason         TEXT    NOT NULL,
    heartbeat_ns   INTEGER,
    paused         INTEGER NOT NULL CHECK (paused IN (0, 1))
);
CREATE INDEX plans_by_submit_time ON plans (submit_time_ns DESC, id DESC);
CREATE INDEX plans_by_status ON plans (status, submit_time_ns DESC, id DESC);
CREATE INDEX plans_by_group ON plans (group_id, submit_time_ns DESC, id DESC);
CREATE INDEX plans_by_name ON plans (name);

CREATE TABLE plan_definitions (
    plan_pk    INTEGER PRIMARY KEY REFERENCES plans (pk) ON DELETE CASCADE,
    definition TEXT NOT NULL
);

CREATE TABLE objects (
    plan_pk  INTEGER NOT NULL REFERENCES plans (pk) ON DELETE CASCADE,
    ord      INTEGER NOT NULL,
    id       TEXT    NOT NULL,
    loc      TEXT    NOT NULL,
    kind     TEXT    NOT NULL CHECK (kind = 'checks' OR kind = 'block' OR kind = 'sequence' OR kind = 'batch'
                                     OR kind = 'action'),
    status   TEXT    NOT NULL
        CHECK (status = 'NotStarted' OR status = 'Running' OR status = 'Completed'
               OR status = 'Failed' OR status = 'Stopped'),
    start_ns INTEGER,
    end_ns   INTEGER,
    PRIMARY KEY (plan_pk, ord)
) WITHOUT ROWID;
CREATE UNIQUE INDEX objects_by_id ON objects (plan_pk, id);

CREATE TABLE attempts (
    plan_pk  INTEGER NOT NULL,
    ord      INTEGER NOT NULL,
    idx      INTEGER NOT NULL CHECK (idx >= 0),
    start_ns INTEGER NOT NULL,
    end_ns   INTEGER,
    outcome  TEXT,
    PRIMARY KEY (plan_pk, ord, idx),
    FOREIGN KEY (plan_pk, ord) REFERENCES objects (plan_pk, ord) ON DELETE CASCADE
) WITHOUT ROWID;
";

/// Version 2: the `journal`, and `objects` without what the definition already says.
///
/// A change to an object (a state, an attempt, a reset) is not written into `objects` and
/// `attempts` at once: the changes of each write are appended to `journal` as one row, keyed by
/// plan and a sequence number the writer hands out in write order, holding them as a compact
/// blob (the `journal` module documents its encoding). An action's step then costs a commit one
/// small appended row instead of rewrites of the object's and the attempt's pages, which is what
/// bounds how many steps per second a disk sustains. The writer later *folds* a plan's journal
/// into its tables — when it has had nothing else to do for a moment, when the plan's journal
/// grows past a limit, and when the store closes — in transactions that apply the rows in order
/// and delete them. Readers apply a plan's remaining journal rows, in order, on top of its
/// tables within the same snapshot, so what they see does not depend on folding. `drops` is 1
/// when an attempt of the write dropped later attempts that existed: folding then deletes
/// stored attempts, and otherwise does not look for any. Only rows of older versions have it:
/// an attempt is now always the last one or the next (`storage::check_changes`), and a reset,
/// which drops them all, tells the fold by itself.
///
/// `objects` keeps, per object, only its kind and its state: its id and location follow from
/// the definition and its `ord` (the reader and the writer both derive them), and an object
/// still `NotStarted` without attempts has no row at all — rows are written when a plan is
/// created with states (a clone, a restored plan) and when the journal is folded. Creating a
/// plan thus writes two rows, however large it is. The version-1 table (with `id`, `loc` and the
/// index on ids) is rebuilt into this one, keeping every row.
const V2: &str = "
CREATE TABLE objects_v2 (
    plan_pk  INTEGER NOT NULL REFERENCES plans (pk) ON DELETE CASCADE,
    ord      INTEGER NOT NULL,
    kind     TEXT    NOT NULL CHECK (kind = 'checks' OR kind = 'block' OR kind = 'sequence' OR kind = 'batch'
                                     OR kind = 'action'),
    status   TEXT    NOT NULL
        CHECK (status = 'NotStarted' OR status = 'Running' OR status = 'Completed'
               OR status = 'Failed' OR status = 'Stopped'),
    start_ns INTEGER,
    end_ns   INTEGER,
    PRIMARY KEY (plan_pk, ord)
) WITHOUT ROWID;
INSERT INTO objects_v2 (plan_pk, ord, kind, status, start_ns, end_ns)
    SELECT plan_pk, ord, kind, status, start_ns, end_ns FROM objects;
DROP TABLE objects;
ALTER TABLE objects_v2 RENAME TO objects;

CREATE TABLE journal (
    plan_pk INTEGER NOT NULL REFERENCES plans (pk) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    changes BLOB    NOT NULL,
    drops   INTEGER NOT NULL CHECK (drops = 0 OR drops = 1),
    PRIMARY KEY (plan_pk, seq)
) WITHOUT ROWID;
";

/// Version 3: `plans.resumptions`, the JSON array of the plan's resumptions
/// ([`Owner`](crate::workflow::Owner)s since the owners were recorded: `at`, `by`, `epoch`,
/// `resumed`; before, resumptions only: `at`, `by`), oldest first; `[]` for every plan
/// of an older file (none recorded them).
const V3: &str = "
ALTER TABLE plans ADD COLUMN resumptions TEXT NOT NULL DEFAULT '[]';
";

/// Version 4: `plans.decisions`, the JSON array of the decisions people took at the plan's
/// gates ([`Decision`](crate::workflow::Decision): `gate`, `approved`, `by`, `at`, `comment`),
/// oldest first; `[]` for every plan of an older file (none had gates).
const V4: &str = "
ALTER TABLE plans ADD COLUMN decisions TEXT NOT NULL DEFAULT '[]';
";

/// Version 5: the definition in pieces, so that a face can read a page of a large plan.
///
/// `plan_definitions.definition` keeps the plan as submitted without its blocks' sequences
/// (each block's `sequences` is `[]`). `sequence_definitions` holds the sequences in chunks of
/// consecutive ones of a block (up to `codec::CHUNK`; `first` is the index of the chunk's first
/// one), each a row of three JSON arrays with one element per sequence: `counts`, how many
/// actions it has; `heads`, the sequence with `actions: []`; `bodies`, its actions. The `ord` of
/// every object follows from the definition without the actions and the counts (see
/// `codec::Layout`). A whole read joins the pieces; a page reads every chunk's counts and heads
/// (the columns before `bodies`, so its overflow pages are not read) and the bodies of the
/// chunks that hold its sequences. Chunks keep a create to a few large rows (one row per
/// sequence made a create of 1,000 sequences 20 % slower). Existing definitions are split by
/// SQLite's JSON functions, which keep member order and number text; a definition that is not
/// JSON is left as it is (reading that plan names it as damaged, as before) rather than
/// stopping the migration of every other plan.
///
/// `objects_unfinished` indexes the few object rows not `Completed`, so that a page counts a
/// plan's actions by status without reading a million rows: rows are counted by key range,
/// those not completed are found through the index.
const V5: &str = "
CREATE INDEX objects_unfinished ON objects (plan_pk, ord, status) WHERE status <> 'Completed';

CREATE TABLE sequence_definitions (
    plan_pk INTEGER NOT NULL REFERENCES plans (pk) ON DELETE CASCADE,
    block   INTEGER NOT NULL CHECK (block >= 0),
    first   INTEGER NOT NULL CHECK (first >= 0),
    counts  TEXT    NOT NULL,
    heads   TEXT    NOT NULL,
    bodies  TEXT    NOT NULL,
    PRIMARY KEY (plan_pk, block, first)
);

INSERT INTO sequence_definitions (plan_pk, block, first, counts, heads, bodies)
    SELECT d.plan_pk, b.key, (s.key / 64) * 64,
           json_group_array(json_array_length(s.value, '$.actions') ORDER BY s.key),
           json_group_array(json(json_set(s.value, '$.actions', json('[]'))) ORDER BY s.key),
           json_group_array(json(json_extract(s.value, '$.actions')) ORDER BY s.key)
    FROM plan_definitions d, json_each(d.definition, '$.blocks') b,
         json_each(b.value, '$.sequences') s
    WHERE json_valid(d.definition)
    GROUP BY d.plan_pk, b.key, s.key / 64;

UPDATE plan_definitions SET definition = json_set(definition, '$.blocks', json((
    SELECT json_group_array(json_set(b.value, '$.sequences', json('[]')) ORDER BY b.key)
    FROM json_each(plan_definitions.definition, '$.blocks') b)))
    WHERE json_valid(definition) AND json_array_length(definition, '$.blocks') > 0;
";

/// What a file holds, judged without changing it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Identity {
    /// An empty database (or an empty file): a new store.
    Empty,
    /// A coercion store at this schema version.
    Coercion(i64),
}

/// Tells a coercion store from an empty database and from anything else. Reads only.
pub(super) fn identify(conn: &Connection, store: &str) -> Result<Identity, StoreError> {
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(|e| open_error(store, e))?;
    let tables: Vec<String> = (|| {
        let mut stmt = conn.prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )?;
        let names = stmt.query_map([], |row| row.get(0))?.collect::<Result<Vec<String>, _>>()?;
        Ok(names)
    })()
    .map_err(|e| open_error(store, e))?;
    if app_id == 0 && tables.is_empty() {
        return Ok(Identity::Empty);
    }
    if app_id != APPLICATION_ID {
        let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        return Err(StoreError::permanent(format!(
            "{store}: this SQLite database is not a coercion store (application_id {app_id:#x}, tables: {}{}); \
             refusing to use it",
            if shown.is_empty() {
                "none".to_owned()
            } else {
                shown.join(", ")
            },
            if tables.len() > shown.len() {
                ", …"
            } else {
                ""
            },
        )));
    }
    let version: Option<i64> = conn
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .optional()
        .map_err(|e| {
            StoreError::permanent(format!(
                "{store}: a coercion store without a readable schema version"
            ))
            .caused_by(e)
        })?;
    match version {
        Some(v) => Ok(Identity::Coercion(v)),
        None => Err(StoreError::permanent(format!(
            "{store}: a coercion store whose schema_version table is empty"
        ))),
    }
}

/// Brings a file opened for writing to the latest schema. `identity` is what [`identify`] found.
pub(super) fn migrate(
    conn: &mut Connection,
    store: &str,
    identity: Identity,
) -> Result<(), StoreError> {
    let current = match identity {
        Identity::Empty => 0,
        Identity::Coercion(v) => v,
    };
    check_not_newer(store, current)?;
    if current == latest() {
        return Ok(());
    }
    // A migration may rebuild a table that others refer to: foreign keys are off meanwhile
    // (dropping the old table must not cascade), and checked before they are on again.
    let fk = |conn: &Connection, on: bool| {
        conn.pragma_update(None, "foreign_keys", on)
            .map_err(|e| sql_error(store, "switching foreign keys for a migration", e))
    };
    fk(conn, false)?;
    let migrated = apply_migrations(conn, store, current);
    fk(conn, true)?;
    migrated
}

fn apply_migrations(conn: &mut Connection, store: &str, current: i64) -> Result<(), StoreError> {
    for (version, sql) in MIGRATIONS.after(current) {
        let doing = format!("migrating the schema to version {version}");
        let tx = conn
            .transaction()
            .map_err(|e| sql_error(store, &doing, e))?;
        (|| {
            tx.execute_batch(sql)?;
            tx.execute("DELETE FROM schema_version", [])?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [version],
            )?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            let broken: i64 =
                tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                    r.get(0)
                })?;
            if broken > 0 {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                    Some(format!("{broken} rows would break a foreign key")),
                ));
            }
            Ok(())
        })()
        .map_err(|e| sql_error(store, &doing, e))?;
        tx.commit().map_err(|e| sql_error(store, &doing, e))?;
    }
    Ok(())
}

/// A reader can only read the schema this build writes.
pub(super) fn check_readable(store: &str, identity: Identity) -> Result<(), StoreError> {
    match identity {
        Identity::Empty => Err(StoreError::permanent(format!(
            "{store}: not a coercion store yet (the database is empty); it becomes one when a program that runs plans opens it (`Workstream::open`, `SqliteStore::open`)"
        ))),
        Identity::Coercion(v) if v < latest() => Err(StoreError::permanent(format!(
            "{store}: written with schema version {v}; this build reads version {}: open it for writing once to migrate it",
            latest()
        ))),
        Identity::Coercion(v) => check_not_newer(store, v),
    }
}

fn check_not_newer(store: &str, version: i64) -> Result<(), StoreError> {
    if version > latest() {
        return Err(StoreError::permanent(format!(
            "{store}: written by a newer coercion (schema version {version}; this build knows versions up to {})",
            latest()
        )));
    }
    Ok(())
}

/// An error while opening: a file that is not a database gets a message that says so.
pub(super) fn open_error(store: &str, e: rusqlite::Error) -> StoreError {
    sql_error(store, "cannot open", e)
}

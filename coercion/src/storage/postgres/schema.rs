//! The schema of a coercion PostgreSQL store, its version and its migrations.
//!
//! A store lives in one PostgreSQL schema (`public` by default, see
//! [`PostgresOptions::schema`](super::PostgresOptions::schema)) and carries its version in the
//! one-row table `coercion_schema_version`. Connecting applies every migration the schema
//! lacks, all in one transaction under a transaction-level advisory lock, so several workers
//! starting at once migrate it exactly once. Adding version 2 means appending one
//! step to [`MIGRATIONS`]. A schema written by a newer coercion is refused.

use tokio_postgres::{Client, GenericClient};

use super::codec::pg_error;
use crate::storage::StoreError;
use crate::storage::sql::Migrations;

/// Every migration, oldest first: step `i` brings the schema to version `i + 1`.
pub(super) const MIGRATIONS: Migrations = Migrations(&[V1, V2, V3, V4, V5, V6, V7]);

/// Version 7: the definitions of new plans in pieces, so that a face can read a page of a
/// large plan (as SQLite's version 5). `plan_definitions.definition` of a plan created from now
/// on is the plan without its blocks' sequences; `sequence_definitions` holds them in chunks of
/// consecutive sequences of a block (`first`: the index of the chunk's first one), each a row of
/// three JSON arrays, one element per sequence: `counts` (its number of actions), `heads` (the
/// sequence with `actions: []`), `bodies` (its actions). Plans created before keep their whole
/// definition and no chunk (a reader tells them apart so); their pages are cut from whole reads.
/// The partial index [`CONTAINERS_INDEX`] comes with it, built outside the migration.
const V7: &str = "
CREATE TABLE sequence_definitions (
    plan_id UUID    NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    block   INTEGER NOT NULL CHECK (block >= 0),
    first   INTEGER NOT NULL CHECK (first >= 0),
    counts  TEXT    NOT NULL,
    heads   TEXT    NOT NULL,
    bodies  TEXT    NOT NULL,
    PRIMARY KEY (plan_id, block, first)
);
";

/// Version 6: `attempts` no longer references `objects` by a foreign key. Checking it cost
/// every attempt written a lookup and a row lock of its object (~19 µs, a fifth of a group's
/// writes); the writer checks that the object is an action of the plan, under the plan's
/// lock, before it writes, and deleting a plan deletes its attempts itself.
const V6: &str = "
DO $$
DECLARE c name;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'attempts'::regclass AND contype = 'f'
                   AND confrelid = 'objects'::regclass LOOP
        EXECUTE format('ALTER TABLE attempts DROP CONSTRAINT %I', c);
    END LOOP;
END
$$;
";

/// Version 5: `control_requests`, the stop, pause, resume, approve and reject requests of
/// clients on any machine (the control protocol's JSON), carried out by the process that holds
/// the plan's lease, which records its answer. Who asked is the role the client logged in as
/// (`session_user`), set by a trigger whatever the client writes: a client cannot speak for
/// another role.
const V5: &str = "
CREATE TABLE control_requests (
    id           BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan_id      UUID        NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    request      TEXT        NOT NULL,
    requested_by TEXT        NOT NULL DEFAULT session_user,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    answered_at  TIMESTAMPTZ,
    answered_by  UUID,
    answer       TEXT
);
CREATE INDEX control_requests_pending ON control_requests (plan_id, id) WHERE answered_at IS NULL;
CREATE OR REPLACE FUNCTION control_requests_asked_by() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.requested_by := session_user;
        NEW.requested_at := now();
    ELSE
        NEW.requested_by := OLD.requested_by;
        NEW.requested_at := OLD.requested_at;
        NEW.request := OLD.request;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER control_requests_asked_by BEFORE INSERT OR UPDATE ON control_requests
    FOR EACH ROW EXECUTE FUNCTION control_requests_asked_by();
";

/// Version 4: `plans.decisions`, the JSON array of the decisions people took at the plan's
/// gates ([`Decision`](crate::workflow::Decision)), oldest first; `[]` for the plans of an
/// older schema (none had gates).
const V4: &str = "ALTER TABLE plans ADD COLUMN decisions TEXT NOT NULL DEFAULT '[]';";

/// Version 3: `plans.plugins`, the names of the plugins the plan calls (sorted, once each), so
/// a worker claims only plans it can run; NULL for the plans of an older schema (claimed by
/// any worker, as before).
const V3: &str = "ALTER TABLE plans ADD COLUMN plugins TEXT[];";

/// Version 2: `plans.resumptions`, the JSON array of the plan's resumptions
/// ([`Owner`](crate::workflow::Owner)s since the owners were recorded: `at`, `by`, `epoch`,
/// `resumed`; before, resumptions only: `at`, `by`), oldest first; `[]` for the plans
/// of an older schema (none recorded them).
const V2: &str = "ALTER TABLE plans ADD COLUMN resumptions TEXT NOT NULL DEFAULT '[]';";

/// The schema version this build reads and writes.
pub(super) fn latest() -> i64 {
    MIGRATIONS.latest()
}

/// Key of the advisory lock that serializes migrations ("coer" "sche").
const MIGRATION_LOCK: i64 = 0x636F_6572_7363_6865;

/// Version 1: the tables of the SQLite store, plus the lease columns.
///
/// * `plans`: one small row per plan with what listing and filtering need (times are bigint
///   nanoseconds since the epoch, NULL when unset; statuses and reasons are names; name and
///   description are UTF-8 bytes). The lease: `lease_owner` (the id of the store instance that
///   runs the plan, NULL when none), `lease_expires` (server time; another process may take the
///   plan over after it), `lease_epoch` (incremented at every grant; every write of the owner
///   is checked against it in its own transaction). `start_requested`: a client asked for the
///   plan to be started by whichever worker claims it.
/// * `plan_definitions`: the plan as submitted, as JSON, without states or attempts.
/// * `objects`: one row per check section, block, sequence, deferred batch and action.
/// * `attempts`: one row per attempt of an action; the outcome is JSON.
///
/// Deleting a plan cascades to everything else (since version 6, attempts excepted: the
/// writer's delete removes them in the same statement).
const V1: &str = "
CREATE TABLE coercion_schema_version (
    version BIGINT NOT NULL
);

CREATE TABLE plans (
    id              UUID    NOT NULL PRIMARY KEY,
    group_id        UUID,
    name            BYTEA   NOT NULL,
    descr           BYTEA   NOT NULL,
    submit_time_ns  BIGINT,
    status          TEXT    NOT NULL
        CHECK (status IN ('NotStarted', 'Running', 'Completed', 'Failed', 'Stopped')),
    start_ns        BIGINT,
    end_ns          BIGINT,
    reason          TEXT    NOT NULL,
    heartbeat_ns    BIGINT,
    paused          BOOLEAN NOT NULL,
    start_requested BOOLEAN NOT NULL DEFAULT FALSE,
    lease_owner     UUID,
    lease_expires   TIMESTAMPTZ,
    lease_epoch     BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX plans_by_submit_time ON plans (submit_time_ns DESC NULLS LAST, id DESC);
CREATE INDEX plans_by_status ON plans (status, submit_time_ns DESC NULLS LAST, id DESC);
CREATE INDEX plans_by_group ON plans (group_id, submit_time_ns DESC NULLS LAST, id DESC);
CREATE INDEX plans_runnable ON plans (submit_time_ns, id)
    WHERE status = 'Running' OR (status = 'NotStarted' AND start_requested);
CREATE INDEX plans_by_lease_owner ON plans (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE plan_definitions (
    plan_id    UUID NOT NULL PRIMARY KEY REFERENCES plans (id) ON DELETE CASCADE,
    definition TEXT NOT NULL
);

CREATE TABLE objects (
    plan_id  UUID   NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    id       UUID   NOT NULL,
    loc      TEXT   NOT NULL,
    kind     TEXT   NOT NULL CHECK (kind IN ('checks', 'block', 'sequence', 'batch', 'action')),
    status   TEXT   NOT NULL
        CHECK (status IN ('NotStarted', 'Running', 'Completed', 'Failed', 'Stopped')),
    start_ns BIGINT,
    end_ns   BIGINT,
    PRIMARY KEY (plan_id, id)
);

CREATE TABLE attempts (
    plan_id   UUID    NOT NULL,
    action_id UUID    NOT NULL,
    idx       INTEGER NOT NULL CHECK (idx >= 0),
    start_ns  BIGINT  NOT NULL,
    end_ns    BIGINT,
    outcome   TEXT,
    PRIMARY KEY (plan_id, action_id, idx),
    FOREIGN KEY (plan_id, action_id) REFERENCES objects (plan_id, id) ON DELETE CASCADE
);
";

/// Creates the schema `schema` if needed and brings it to the latest version. `client` must
/// already use `schema` as its search path.
pub(super) async fn migrate(
    client: &mut Client,
    store: &str,
    schema: &str,
) -> Result<(), StoreError> {
    let doing = "migrating the schema";
    let err = |e: tokio_postgres::Error| pg_error(store, doing, e);
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident(schema)
    ))
    .await
    .map_err(err)?;
    let current = match stored_version(&tx, store, schema).await? {
        Stored::Version(v) => v,
        Stored::Empty => 0,
        Stored::Foreign => {
            return Err(StoreError::permanent(format!(
                "{store}: schema {schema:?} has a `plans` table but is not a coercion store; \
                 refusing to use it (choose another schema with PostgresOptions::schema)"
            )));
        }
    };
    if current > latest() {
        return Err(StoreError::permanent(format!(
            "{store}: written by a newer coercion (schema version {current}; this build knows versions up to {})",
            latest()
        )));
    }
    for (version, sql) in MIGRATIONS.after(current) {
        tx.batch_execute(sql).await.map_err(err)?;
        tx.execute("DELETE FROM coercion_schema_version", &[])
            .await
            .map_err(err)?;
        tx.execute(
            "INSERT INTO coercion_schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)?;
    // Built without a lock on writes (a store with millions of rows keeps running while it
    // builds), hence outside the migration's transaction; a page reads without it, only
    // slower, so a failure (another process building it at the same moment) is no error.
    if let Err(e) = client.batch_execute(CONTAINERS_INDEX).await {
        tracing::debug!(store, error = %e, "the index objects_containers is not built (yet)");
    }
    Ok(())
}

/// `objects_containers` indexes the rows of everything but actions: a page reads the states of
/// a plan's sequences through it (since version 7). `kind` never changes, so updates of states
/// stay in place (HOT).
const CONTAINERS_INDEX: &str = "CREATE INDEX CONCURRENTLY IF NOT EXISTS objects_containers \
     ON objects (plan_id) WHERE kind <> 'action'";

/// What schema `schema` holds.
enum Stored {
    /// A coercion store of this version.
    Version(i64),
    /// No coercion store, nor anything that looks like one.
    Empty,
    /// A `plans` table that is not coercion's.
    Foreign,
}

async fn stored_version(
    client: &impl GenericClient,
    store: &str,
    schema: &str,
) -> Result<Stored, StoreError> {
    let err = |e: tokio_postgres::Error| pg_error(store, "reading the schema version", e);
    let table = |name: &'static str| async move {
        client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
                 WHERE table_schema = $1 AND table_name = $2)",
                &[&schema, &name],
            )
            .await
            .map(|row| row.get::<_, bool>(0))
    };
    if table("coercion_schema_version").await.map_err(err)? {
        let row = client
            .query_opt("SELECT version FROM coercion_schema_version", &[])
            .await
            .map_err(err)?;
        return match row {
            Some(r) => Ok(Stored::Version(r.get(0))),
            None => Err(StoreError::permanent(format!(
                "{store}: a coercion store whose coercion_schema_version table is empty"
            ))),
        };
    }
    if table("plans").await.map_err(err)? {
        Ok(Stored::Foreign)
    } else {
        Ok(Stored::Empty)
    }
}

/// Checks, changing nothing, that schema `schema` holds a coercion store of this build's
/// version (for tools that only read).
pub(super) async fn check(client: &Client, store: &str, schema: &str) -> Result<(), StoreError> {
    match stored_version(client, store, schema).await? {
        Stored::Version(v) if v == latest() => Ok(()),
        Stored::Version(v) if v > latest() => Err(StoreError::permanent(format!(
            "{store}: written by a newer coercion (schema version {v}; this build knows versions up to {})",
            latest()
        ))),
        Stored::Version(v) => Err(StoreError::permanent(format!(
            "{store}: the store is at schema version {v}, older than this build's {}; a \
             workstream or worker of this build migrates it when it connects",
            latest()
        ))),
        Stored::Empty | Stored::Foreign => Err(StoreError::permanent(format!(
            "{store}: schema {schema:?} holds no coercion store (a workstream or worker creates \
             it when it connects; is the schema name right?)"
        ))),
    }
}

/// `name` as a quoted SQL identifier.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

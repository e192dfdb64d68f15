//! Unit tests of the SQLite store that need crate-private access or a second, raw connection
//! to the file: foreign and newer files, the schema marker, error mapping, a busy database and
//! a full disk.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::{Connection, ffi};

use super::codec::sql_error;
use super::schema::{APPLICATION_ID, latest};
use super::{SqliteOptions, SqliteStore};
use crate::storage::contract::{at, sample_plan};
use crate::storage::{Change, Store, StoreError};
use crate::workflow::PlanId;

pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir()
            .join("coercion-sqlite-unit")
            .join(format!("{test}-{}", PlanId::new_v7()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    pub(super) fn db(&self) -> PathBuf {
        self.0.join("plans.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn permanent(result: Result<SqliteStore, StoreError>) -> String {
    match result {
        Err(StoreError::Permanent { message: m, .. }) => m,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[test]
fn a_store_in_a_directory_that_does_not_exist_is_refused_naming_the_directory() {
    let dir = TempDir::new("missing-dir");
    let missing = dir.0.join("not-made-yet");
    let msg = permanent(SqliteStore::open(missing.join("plans.db")));
    assert!(
        msg.contains(&format!(
            "the directory {} does not exist",
            missing.display()
        )),
        "{msg}"
    );
    assert!(!missing.exists(), "nothing was created");
    // A file where the directory should be is named too.
    std::fs::write(&missing, b"").unwrap();
    let msg = permanent(SqliteStore::open(missing.join("plans.db")));
    assert!(
        msg.contains(&format!("{} is not a directory", missing.display())),
        "{msg}"
    );
}

#[test]
fn a_new_file_is_marked_and_at_the_latest_schema_version_and_reopens() {
    let dir = TempDir::new("marked");
    drop(SqliteStore::open(dir.db()).unwrap());
    drop(SqliteStore::open(dir.db()).unwrap());
    let raw = Connection::open(dir.db()).unwrap();
    let version: i64 = raw
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, latest());
    assert_eq!(
        raw.query_row("SELECT count(*) FROM schema_version", [], |r| r
            .get::<_, i64>(0))
            .unwrap(),
        1
    );
    let app: i32 = raw
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    assert_eq!(app, APPLICATION_ID);
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_sqlite_database_of_another_application_is_refused_untouched() {
    let dir = TempDir::new("foreign");
    {
        let raw = Connection::open(dir.db()).unwrap();
        raw.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'ann');")
            .unwrap();
    }
    for message in [
        permanent(SqliteStore::open(dir.db())),
        permanent(SqliteStore::open_read_only(dir.db())),
    ] {
        assert!(
            message.contains(&dir.db().display().to_string()),
            "{message}"
        );
        assert!(
            message.contains("not a coercion store") && message.contains("users"),
            "{message}"
        );
    }
    let raw = Connection::open(dir.db()).unwrap();
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "the foreign file was not switched to WAL");
    let tables: i64 = raw
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "no table was added");
}

#[test]
fn a_file_from_a_newer_coercion_is_refused() {
    let dir = TempDir::new("newer");
    drop(SqliteStore::open(dir.db()).unwrap());
    Connection::open(dir.db())
        .unwrap()
        .execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    for message in [
        permanent(SqliteStore::open(dir.db())),
        permanent(SqliteStore::open_read_only(dir.db())),
    ] {
        assert!(
            message.contains("newer coercion") && message.contains("99"),
            "{message}"
        );
    }
}

#[test]
fn busy_and_locked_are_transient_everything_else_permanent() {
    let err = |code| rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some("boom".to_owned()));
    for code in [
        ffi::SQLITE_BUSY,
        ffi::SQLITE_LOCKED,
        ffi::SQLITE_BUSY_SNAPSHOT,
    ] {
        assert!(
            sql_error("sqlite:/x.db", "writing", err(code)).is_transient(),
            "code {code}"
        );
    }
    for (code, words) in [
        (ffi::SQLITE_FULL, "disk is full"),
        (ffi::SQLITE_IOERR, "I/O error"),
        (ffi::SQLITE_IOERR_FSYNC, "I/O error"),
        (ffi::SQLITE_CORRUPT, "corrupt"),
        (ffi::SQLITE_NOTADB, "not a SQLite database"),
        (ffi::SQLITE_READONLY, "read-only"),
    ] {
        match sql_error("sqlite:/x.db", "writing", err(code)) {
            e @ StoreError::Permanent { .. } => {
                // The driver's message is the source, not flattened into the message.
                let m = crate::storage::Chain(&e).to_string();
                assert!(
                    m.starts_with("storage error: sqlite:/x.db: writing: "),
                    "{m}"
                );
                assert!(m.contains(": boom"), "{m}");
                assert!(m.contains(words), "code {code}: {m}");
                let source = std::error::Error::source(&e).expect("the driver's error");
                assert!(
                    source.downcast_ref::<rusqlite::Error>().is_some(),
                    "{source:?}"
                );
            }
            other => panic!("code {code} gave {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_by_someone_else_gives_transient_errors_then_recovers() {
    let dir = TempDir::new("busy");
    let store = SqliteStore::open_with(
        dir.db(),
        SqliteOptions::default().busy_timeout(Duration::from_millis(100)),
    )
    .unwrap();
    let plan = sample_plan("busy");
    store.create(&plan).await.unwrap();
    // A connection that ignores the writer lock and holds SQLite's write lock.
    let raw = Connection::open(dir.db()).unwrap();
    raw.execute_batch("BEGIN IMMEDIATE").unwrap();
    let result = store.apply(plan.id, &[Change::Heartbeat(at(1, 1))]).await;
    assert!(
        matches!(&result, Err(StoreError::Transient { message: m, .. }) if m.contains("busy")),
        "{result:?}"
    );
    assert_eq!(
        store.read(plan.id).await.unwrap().heartbeat(),
        None,
        "reads go on meanwhile"
    );
    raw.execute_batch("COMMIT").unwrap();
    store
        .apply(plan.id, &[Change::Heartbeat(at(2, 2))])
        .await
        .unwrap();
    assert_eq!(
        store.read(plan.id).await.unwrap().heartbeat(),
        Some(at(2, 2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_writes_it_touches_and_the_store_stays_consistent() {
    let dir = TempDir::new("full");
    let pages: u32 = {
        drop(SqliteStore::open(dir.db()).unwrap());
        Connection::open(dir.db())
            .unwrap()
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap()
    };
    let options = SqliteOptions {
        max_page_count: Some(pages + 30),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(dir.db(), options).unwrap();
    let small = sample_plan("small");
    store.create(&small).await.unwrap();

    let mut huge = sample_plan("huge");
    huge.descr = "x".repeat(1 << 20);
    let heartbeats: Vec<[Change; 1]> = (0..20).map(|i| [Change::Heartbeat(at(i, 0))]).collect();
    // One group: heartbeats around a create that cannot fit.
    let before: Vec<_> = heartbeats[..10]
        .iter()
        .map(|h| store.apply(small.id, h))
        .collect();
    let create = store.create(&huge);
    let after: Vec<_> = heartbeats[10..]
        .iter()
        .map(|h| store.apply(small.id, h))
        .collect();
    let mut results = Vec::new();
    for w in before {
        results.push(w.await);
    }
    let created = create.await;
    for w in after {
        results.push(w.await);
    }
    assert!(
        matches!(&created, Err(StoreError::Permanent { message: m, .. }) if m.contains("full")),
        "{created:?}"
    );
    assert_eq!(
        store.read(huge.id).await.err(),
        Some(StoreError::NotFound(huge.id))
    );
    // Each heartbeat that reported success is stored; the last one that did is the one read.
    let last_ok = results.iter().rposition(Result::is_ok);
    let read = store.read(small.id).await.unwrap();
    assert_eq!(
        read.heartbeat(),
        last_ok.map(|i| at(i as i64, 0)),
        "{results:?}"
    );
    for r in &results {
        assert!(
            r.is_ok()
                || matches!(r, Err(StoreError::Permanent { message: m, .. }) if m.contains("full")),
            "{r:?}"
        );
    }
    store
        .apply(small.id, &[Change::Paused(true)])
        .await
        .unwrap();
    assert!(store.read(small.id).await.unwrap().is_paused());
    store.integrity_check().await.unwrap();
}

#[test]
fn the_execution_order_interleaves_concurrent_sequences_and_is_a_permutation() {
    use crate::workflow::{Loc, Parent};
    let plan = sample_plan("order");
    let ord = super::codec::execution_order(&plan);
    let locs: Vec<Loc> = plan.walk().map(|(loc, _)| loc).collect();
    let mut sorted = ord.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..locs.len() as i64).collect::<Vec<_>>(),
        "each object gets its own rank"
    );
    let rank = |wanted: Loc| ord[locs.iter().position(|l| *l == wanted).expect("a location")];
    let action = |block, seq, index| Loc::Action {
        parent: Parent::Sequence { block, seq },
        index,
    };
    // Block 0 has three sequences of two actions: first actions of all three, then second ones.
    let expected = [
        action(0, 0, 0),
        action(0, 1, 0),
        action(0, 2, 0),
        action(0, 0, 1),
        action(0, 1, 1),
        action(0, 2, 1),
    ];
    let ranks: Vec<i64> = expected.iter().map(|l| rank(*l)).collect();
    assert!(ranks.windows(2).all(|w| w[1] == w[0] + 1), "{ranks:?}");
    // The block and its bypass/pre/cont checks come before its sequences, its post and deferred
    // checks after; blocks stay in order.
    assert!(rank(Loc::Block(0)) < rank(Loc::Sequence { block: 0, seq: 0 }));
    assert!(rank(Loc::Sequence { block: 0, seq: 2 }) < ranks[0]);
    let post = Loc::Checks {
        block: Some(0),
        slot: crate::workflow::CheckSlot::Post,
    };
    assert!(ranks[5] < rank(post) && rank(post) < rank(Loc::Block(1)));
    assert!(rank(action(1, 1, 1)) < rank(Loc::Block(2)));
}

#[tokio::test]
async fn rows_that_disagree_with_the_definition_give_a_clear_error_naming_the_file() {
    let dir = TempDir::new("tampered");
    let plan = sample_plan("tampered");
    {
        let store = SqliteStore::open(dir.db()).unwrap();
        store.create(&plan).await.unwrap();
        store.create(&sample_plan("intact")).await.unwrap();
    }
    let tamper = |sql: &str| {
        Connection::open(dir.db())
            .unwrap()
            .execute(sql, [])
            .unwrap()
    };
    let read_error = |plan: &crate::workflow::Plan| {
        let dir = &dir;
        let id = plan.id;
        async move {
            let store = SqliteStore::open(dir.db()).unwrap();
            match store.read(id).await {
                Err(StoreError::Permanent { message: m, .. }) => m,
                other => panic!("expected a permanent error, got {other:?}"),
            }
        }
    };
    let key = format!("(SELECT pk FROM plans WHERE id = '{}')", plan.id);
    tamper(&format!(
        "INSERT INTO objects (plan_pk, ord, kind, status) VALUES ({key}, 100000, 'action', 'Running')"
    ));
    let message = read_error(&plan).await;
    assert!(
        message.contains(&dir.db().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("stored inconsistently")
            && message.contains("object #100000 is not in its definition"),
        "{message}"
    );
    tamper("DELETE FROM objects WHERE ord = 100000");
    // A row of a block that says it is an action.
    let block = plan
        .walk()
        .zip(super::codec::execution_order(&plan))
        .find(|((loc, _), _)| matches!(loc, crate::workflow::Loc::Block(_)))
        .map(|(_, ord)| ord)
        .unwrap();
    tamper(&format!(
        "INSERT INTO objects (plan_pk, ord, kind, status) VALUES ({key}, {block}, 'action', 'Running')"
    ));
    let message = read_error(&plan).await;
    assert!(
        message.contains("the row of block") && message.contains("is marked as kind `action`"),
        "{message}"
    );
    tamper("DELETE FROM objects");

    // The CHECK constraints keep SQL from storing a status that does not exist; bypass them.
    let raw = Connection::open(dir.db()).unwrap();
    raw.pragma_update(None, "ignore_check_constraints", true)
        .unwrap();
    raw.execute("UPDATE plans SET status = 'Exploded'", [])
        .unwrap();
    drop(raw);
    let message = read_error(&plan).await;
    assert!(message.contains("unknown status `Exploded`"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_durability_syncs_the_wal_and_a_failed_sync_stops_all_writes() {
    use super::{SqliteStats, Synchronous};
    let dir = TempDir::new("syncs");
    let store = SqliteStore::open(dir.db()).unwrap();
    let plan = sample_plan("synced");
    store.create(&plan).await.unwrap();
    for i in 0..20 {
        store
            .apply(plan.id, &[Change::Heartbeat(at(i, 0))])
            .await
            .unwrap();
    }
    let stats: SqliteStats = store.stats();
    assert!(
        stats.syncs >= 1 && stats.syncs <= stats.commits,
        "{stats:?}"
    );
    drop(store);

    let normal = SqliteStore::open_with(
        dir.db(),
        SqliteOptions::default().synchronous(Synchronous::Normal),
    )
    .unwrap();
    normal
        .apply(plan.id, &[Change::Heartbeat(at(99, 0))])
        .await
        .unwrap();
    assert_eq!(
        normal.stats().syncs,
        0,
        "NORMAL leaves syncing to SQLite's checkpoints"
    );
    drop(normal);

    // The syncer cannot reach the WAL any more: the write is not acknowledged as durable, nor is
    // any later one.
    let store = SqliteStore::open(dir.db()).unwrap();
    std::fs::remove_file(super::sidecar(&dir.db(), "-wal")).unwrap();
    let failed = store.apply(plan.id, &[Change::Heartbeat(at(100, 0))]).await;
    assert!(
        matches!(&failed, Err(StoreError::Permanent { message: m, .. }) if m.contains("syncing") && m.contains("no more writes")),
        "{failed:?}"
    );
    let later = store.apply(plan.id, &[Change::Paused(true)]).await;
    assert_eq!(later, failed, "every later write fails the same way");
}

/// Journal rows in the file.
fn journal_rows(db: &std::path::Path) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_left_unfolded_is_read_whole_and_folded_by_the_next_writer() {
    use crate::workflow::{Attempt, Json, Loc, ObjectRef, Outcome, State, Status};
    let dir = TempDir::new("journal");
    let plan = sample_plan("journal");
    let (loc, id) = plan
        .walk()
        .find(|(_, o)| matches!(o, ObjectRef::Action(_)))
        .map(|(loc, o)| (loc, o.id()))
        .unwrap();
    let attempt = |i: i64, outcome: Option<Outcome>| Attempt {
        start: at(i, 0),
        end: outcome.as_ref().map(|_| at(i, 1)),
        outcome,
    };
    let state = |status, i| State {
        status,
        start: Some(at(i, 0)),
        end: (status != Status::Running).then(|| at(i, 2)),
    };
    let ok = || Some(Outcome::Response(Json::null()));
    // Three attempts, a reset, two more, and a reset with a new attempt 0 in one write: every
    // way a row changes attempts, with states in between and changes of the plan itself.
    let writes: Vec<Vec<Change>> = vec![
        vec![
            Change::State {
                loc: Loc::Plan,
                id: plan.id.0,
                state: state(Status::Running, 0),
            },
            Change::State {
                loc,
                id,
                state: state(Status::Running, 1),
            },
            Change::Attempt {
                loc,
                id,
                index: 0,
                attempt: attempt(1, None),
            },
        ],
        vec![Change::Attempt {
            loc,
            id,
            index: 0,
            attempt: attempt(1, ok()),
        }],
        vec![Change::Attempt {
            loc,
            id,
            index: 1,
            attempt: attempt(2, ok()),
        }],
        vec![
            Change::Attempt {
                loc,
                id,
                index: 2,
                attempt: attempt(3, ok()),
            },
            Change::State {
                loc,
                id,
                state: state(Status::Failed, 3),
            },
            Change::Heartbeat(at(3, 5)),
        ],
        vec![Change::Reset { loc, id }],
        vec![Change::Attempt {
            loc,
            id,
            index: 0,
            attempt: attempt(4, None),
        }],
        vec![
            Change::Attempt {
                loc,
                id,
                index: 0,
                attempt: attempt(4, ok()),
            },
            Change::Attempt {
                loc,
                id,
                index: 1,
                attempt: attempt(5, ok()),
            },
        ],
        vec![
            Change::Reset { loc, id },
            Change::Attempt {
                loc,
                id,
                index: 0,
                attempt: attempt(6, ok()),
            },
            Change::State {
                loc,
                id,
                state: state(Status::Completed, 6),
            },
        ],
    ];
    let mut expected = plan.clone();
    for write in &writes {
        for change in write {
            change.apply_to(&mut expected).unwrap();
        }
    }
    assert_eq!(expected.attempts_at(loc).unwrap().len(), 1);

    let unfolded = SqliteOptions::default()
        .fold_when_idle(None)
        .fold_limit(usize::MAX)
        .no_fold_on_close();
    {
        let store = SqliteStore::open_with(dir.db(), unfolded).unwrap();
        store.create(&plan).await.unwrap();
        for write in &writes {
            store.apply(plan.id, write).await.unwrap();
        }
        assert_eq!(store.read(plan.id).await.unwrap(), expected);
        assert_eq!(store.stats().folded_rows, 0);
    }
    // As after a crash: the journal holds the action's changes, readers replay it.
    assert!(journal_rows(&dir.db()) >= 6, "{}", journal_rows(&dir.db()));
    let reader = SqliteStore::open_read_only(dir.db()).unwrap();
    assert_eq!(reader.read(plan.id).await.unwrap(), expected);

    // A writer that finds the journal numbers its rows after the ones there (else they would
    // replay first), and folds everything when it closes.
    {
        let store = SqliteStore::open_with(dir.db(), SqliteOptions::default().fold_when_idle(None))
            .unwrap();
        let more = [
            Change::Heartbeat(at(9, 9)),
            Change::State {
                loc,
                id,
                state: state(Status::Stopped, 9),
            },
        ];
        store.apply(plan.id, &more).await.unwrap();
        for change in &more {
            change.apply_to(&mut expected).unwrap();
        }
        assert_eq!(store.read(plan.id).await.unwrap(), expected);
        let seqs: Vec<i64> = {
            let raw = Connection::open(dir.db()).unwrap();
            let mut stmt = raw.prepare("SELECT seq FROM journal ORDER BY seq").unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(seqs.len(), 9, "{seqs:?}");
        assert_eq!(seqs, (0..9).collect::<Vec<i64>>());
    }
    assert_eq!(journal_rows(&dir.db()), 0);
    assert_eq!(reader.read(plan.id).await.unwrap(), expected);
    reader.integrity_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_writer_places_changes_after_the_journal_and_refuses_objects_not_in_the_plan() {
    use crate::workflow::{Attempt, Loc, ObjectRef};
    let dir = TempDir::new("skip");
    let plan = sample_plan("skip");
    let (loc, id) = plan
        .walk()
        .find(|(_, o)| matches!(o, ObjectRef::Action(_)))
        .map(|(loc, o)| (loc, o.id()))
        .unwrap();
    let attempt = |i| Attempt {
        start: at(i, 0),
        end: None,
        outcome: None,
    };
    let unfolded = || {
        SqliteOptions::default()
            .fold_when_idle(None)
            .fold_limit(usize::MAX)
            .no_fold_on_close()
    };
    {
        let store = SqliteStore::open_with(dir.db(), unfolded()).unwrap();
        store.create(&plan).await.unwrap();
        for index in 0..2 {
            store
                .apply(
                    plan.id,
                    &[Change::Attempt {
                        loc,
                        id,
                        index,
                        attempt: attempt(i64::from(index)),
                    }],
                )
                .await
                .unwrap();
        }
    }
    // A new writer knows nothing of the plan: it learns its objects from the definition, and
    // the next attempt lands after the two in the journal.
    let store = SqliteStore::open_with(dir.db(), unfolded()).unwrap();
    let next = [Change::Attempt {
        loc,
        id,
        index: 2,
        attempt: attempt(2),
    }];
    store.apply(plan.id, &next).await.unwrap();
    // Nothing was folded.
    assert_eq!(journal_rows(&dir.db()), 3);
    assert_eq!(
        store
            .read(plan.id)
            .await
            .unwrap()
            .attempts_at(loc)
            .unwrap()
            .len(),
        3
    );
    let wrong_place = [Change::State {
        loc: Loc::Block(0),
        id,
        state: Default::default(),
    }];
    match store.apply(plan.id, &wrong_place).await {
        Err(StoreError::Permanent { message: m, .. }) => {
            assert!(m.contains("has no object"), "{m}")
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_file_is_migrated_when_opened_for_writing_and_keeps_its_plans() {
    use super::codec::PreparedPlan;
    let dir = TempDir::new("v1");
    // A plan with states and attempts, written the way schema version 1 stored it: a row per
    // object with its id and location, and the index on ids.
    let plan = crate::storage::contract::sample_run("v1");
    {
        let raw = Connection::open(dir.db()).unwrap();
        raw.execute_batch(super::schema::V1).unwrap();
        raw.execute("INSERT INTO schema_version (version) VALUES (1)", [])
            .unwrap();
        raw.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        let p = PreparedPlan::of(&plan).unwrap();
        insert_old_plan(&raw, &plan, &p, |raw| {
            for o in &p.objects {
                raw.execute(
                    "INSERT INTO objects (plan_pk, ord, id, loc, kind, status, start_ns, end_ns) \
                     VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    rusqlite::params![
                        o.ord,
                        o.id.hyphenated().to_string(),
                        serde_json::to_string(&o.loc).unwrap(),
                        o.kind,
                        o.state.status,
                        o.state.start,
                        o.state.end
                    ],
                )
                .unwrap();
            }
        });
        assert!(!p.attempts.is_empty());
    }
    let message = permanent(SqliteStore::open_read_only(dir.db()));
    assert!(
        message.contains("schema version 1") && message.contains("open it for writing once"),
        "{message}"
    );
    let mut expected = plan.clone();
    {
        let store = SqliteStore::open(dir.db()).unwrap();
        assert_eq!(store.read(plan.id).await.unwrap(), plan);
        // The migrated file takes changes of objects that have rows and of objects that have
        // none yet.
        let changes: Vec<Change> = plan
            .walk()
            .skip(1)
            .map(|(loc, o)| Change::State {
                loc,
                id: o.id(),
                state: crate::workflow::State {
                    status: crate::workflow::Status::Stopped,
                    start: Some(at(5, 0)),
                    end: Some(at(6, 0)),
                },
            })
            .collect();
        store.apply(plan.id, &changes).await.unwrap();
        for c in &changes {
            c.apply_to(&mut expected).unwrap();
        }
    }
    let raw = Connection::open(dir.db()).unwrap();
    let version: i64 = raw
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, latest());
    assert_eq!(latest(), 5);
    assert_eq!(journal_rows(&dir.db()), 0);
    // Version 5 split the definition: every sequence in its block's rows, none left in the
    // plan's own.
    let sequences: i64 = raw
        .query_row(
            "SELECT sum(json_array_length(heads)) FROM sequence_definitions",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let all: usize = plan.blocks().iter().map(|b| b.sequences().len()).sum();
    assert!(all > 1);
    assert_eq!(sequences, all as i64);
    let left: i64 = raw
        .query_row(
            "SELECT sum(json_array_length(b.value, '$.sequences')) FROM plan_definitions d, \
             json_each(d.definition, '$.blocks') b",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
    let indexes: i64 = raw
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name = 'objects_by_id'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0, "the version-1 index is gone with its table");
    drop(raw);
    let reader = SqliteStore::open_read_only(dir.db()).unwrap();
    assert_eq!(reader.read(plan.id).await.unwrap(), expected);
    reader.integrity_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_cannot_be_folded_gives_a_clear_error_and_does_not_hold_up_other_plans() {
    use crate::workflow::{Loc, State, Status};
    let dir = TempDir::new("unfoldable");
    let (bad, good) = (sample_plan("bad"), sample_plan("good"));
    let first = |plan: &crate::workflow::Plan| {
        let (loc, object) = plan
            .walk()
            .find(|(loc, _)| matches!(loc, Loc::Block(_)))
            .unwrap();
        (loc, object.id())
    };
    let running = |plan: &crate::workflow::Plan, i| {
        let (loc, id) = first(plan);
        [Change::State {
            loc,
            id,
            state: State {
                status: Status::Running,
                start: Some(at(i, 0)),
                end: None,
            },
        }]
    };
    let unfolded = SqliteOptions::default()
        .fold_when_idle(None)
        .fold_limit(usize::MAX)
        .no_fold_on_close();
    {
        let store = SqliteStore::open_with(dir.db(), unfolded).unwrap();
        for plan in [&bad, &good] {
            store.create(plan).await.unwrap();
            store.apply(plan.id, &running(plan, 1)).await.unwrap();
        }
    }
    Connection::open(dir.db())
        .unwrap()
        .execute(
            &format!(
                "UPDATE journal SET changes = x'09' WHERE plan_pk = (SELECT pk FROM plans WHERE id = '{}')",
                bad.id
            ),
            [],
        )
        .unwrap();
    {
        // Every plan's journal is over the limit of 1: the bad one fails, the good one folds.
        let store = SqliteStore::open_with(
            dir.db(),
            SqliteOptions::default().fold_when_idle(None).fold_limit(1),
        )
        .unwrap();
        store.apply(good.id, &running(&good, 2)).await.unwrap();
        store
            .apply(good.id, &[Change::Heartbeat(at(3, 0))])
            .await
            .unwrap();
        let left: i64 = Connection::open(dir.db())
            .unwrap()
            .query_row(
                &format!(
                    "SELECT count(*) FROM journal WHERE plan_pk = (SELECT pk FROM plans WHERE id = '{}')",
                    good.id
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "the good plan's journal was folded");
        match store.read(bad.id).await {
            Err(StoreError::Permanent { message: m, .. }) => assert!(
                m.contains("stored inconsistently") && m.contains("unknown change tag 9"),
                "{m}"
            ),
            other => panic!("expected a permanent error, got {other:?}"),
        }
        // Closing tries the bad journal once more and gives up on it.
    }
    assert_eq!(journal_rows(&dir.db()), 1);
    let reader = SqliteStore::open_read_only(dir.db()).unwrap();
    let read = reader.read(good.id).await.unwrap();
    assert_eq!(read.state_at(first(&good).0).unwrap().start, Some(at(2, 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_is_one_file_with_everything_in_it() {
    let dir = TempDir::new("closed");
    let plan = crate::storage::contract::sample_run("closed");
    {
        let store = SqliteStore::open(dir.db()).unwrap();
        store.create(&plan).await.unwrap();
        // Reads leave connections in the pool; they must not keep the WAL alive.
        assert_eq!(store.read(plan.id).await.unwrap(), plan);
        assert_eq!(store.read(plan.id).await.unwrap(), plan);
    }
    let wal = super::sidecar(&dir.db(), "-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "{} is left with {:?} bytes: a copy of the database file alone would miss them",
        wal.display(),
        std::fs::metadata(&wal).map(|m| m.len())
    );
    // The database file alone holds the plan.
    let copy = dir.0.join("copy.db");
    std::fs::copy(dir.db(), &copy).unwrap();
    let store = SqliteStore::open_read_only(&copy).unwrap();
    assert_eq!(store.read(plan.id).await.unwrap(), plan);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_file_alone_lags_an_open_store_by_seconds() {
    let dir = TempDir::new("checkpoint");
    let plan = crate::storage::contract::sample_run("checkpoint");
    let store = SqliteStore::open_with(
        dir.db(),
        SqliteOptions::default().checkpoint_every(Some(Duration::from_millis(200))),
    )
    .unwrap();
    store.create(&plan).await.unwrap();
    // The store stays open (plans are running): SQLite alone would checkpoint only after
    // 10,000 pages.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let copy = dir.0.join("copy.db");
    std::fs::copy(dir.db(), &copy).unwrap();
    let read = SqliteStore::open_read_only(&copy).unwrap();
    assert_eq!(read.read(plan.id).await.unwrap(), plan);
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writes_go_on_is_a_consistent_store() {
    let dir = TempDir::new("backup");
    let store = SqliteStore::open(dir.db()).unwrap();
    let plans: Vec<_> = (0..20)
        .map(|i| crate::storage::contract::sample_run(&format!("backup-{i}")))
        .collect();
    let writer = {
        let store = store.clone();
        let plans = plans.clone();
        tokio::spawn(async move {
            for plan in &plans {
                store.create(plan).await.unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let copy = dir.0.join("backup.db");
    store.backup(&copy).await.unwrap();
    writer.await.unwrap();

    let backup = SqliteStore::open_read_only(&copy).unwrap();
    backup.integrity_check().await.unwrap();
    // A moment of the store: a prefix of the plans created, each whole.
    let listed = backup.list(&Default::default()).await.unwrap();
    for summary in &listed {
        let plan = plans.iter().find(|p| p.id == summary.id).unwrap();
        assert_eq!(&backup.read(plan.id).await.unwrap(), plan);
    }
    assert!(
        !std::fs::exists(super::sidecar(&copy, "-wal")).unwrap(),
        "no WAL beside the copy"
    );

    // An existing file is never overwritten; a path that cannot be written is named.
    let before = std::fs::read(&copy).unwrap();
    let err = store.backup(&copy).await.unwrap_err().to_string();
    assert!(
        err.contains("the file exists") && err.contains("backup.db"),
        "{err}"
    );
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    let err = store
        .backup(dir.0.join("no/such/dir/b.db"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no/such/dir/b.db") && err.contains("cannot create"),
        "{err}"
    );
    // The copy is a closed store: it opens to run plans, with everything in it.
    drop(store);
    drop(backup);
    let restored = SqliteStore::open(&copy).unwrap();
    assert_eq!(restored.list(&Default::default()).await.unwrap(), listed);
}

#[tokio::test]
async fn a_damaged_file_left_by_an_unclean_shutdown_is_refused_naming_the_problem() {
    let dir = TempDir::new("damaged");
    let plans: Vec<_> = (0..40)
        .map(|i| crate::storage::contract::sample_run(&format!("damaged-{i}")))
        .collect();
    {
        let store = SqliteStore::open(dir.db()).unwrap();
        for plan in &plans {
            store.create(plan).await.unwrap();
        }
    }
    // Damage every b-tree page but the first (the schema), as a torn write might.
    let mut bytes = std::fs::read(dir.db()).unwrap();
    let page = 4096;
    assert!(bytes.len() > 4 * page, "{} bytes", bytes.len());
    for start in (page..bytes.len()).step_by(page) {
        bytes[start..start + 16].fill(0xA5);
    }
    std::fs::write(dir.db(), &bytes).unwrap();
    // The last writer did not close: its WAL is left (here: one SQLite cannot use).
    std::fs::write(super::sidecar(&dir.db(), "-wal"), [0u8; 32]).unwrap();

    let err = SqliteStore::open(dir.db()).unwrap_err().to_string();
    assert!(
        err.contains("the file is damaged")
            && err.contains("quick_check after an unclean shutdown found")
            && err.contains("Restore the store from a backup"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.db()).unwrap(),
        bytes,
        "nothing was written"
    );
}

#[tokio::test]
async fn a_file_left_open_whose_wal_is_gone_is_refused_not_opened_as_it_is() {
    let dir = TempDir::new("lost-wal");
    let copy = dir.0.join("copy.db");
    let plans: Vec<_> = (0..5)
        .map(|i| crate::storage::contract::sample_run(&format!("lost-{i}")))
        .collect();
    let store = SqliteStore::open(dir.db()).unwrap();
    for plan in &plans {
        store.create(plan).await.unwrap();
    }
    // The state a crash leaves when the WAL is then deleted, or a copy of the file alone
    // while a writer has it open: the file without its log.
    std::fs::copy(dir.db(), &copy).unwrap();
    let bytes = std::fs::read(&copy).unwrap();
    let err = SqliteStore::open(&copy).unwrap_err().to_string();
    assert!(
        err.contains("the file was left open by a process that stopped without closing it")
            && err.contains("copy.db-wal is missing, so the latest changes are lost")
            && err.contains("use `coercion backup`")
            && err.contains("PRAGMA user_version = 0"),
        "{err}"
    );
    assert_eq!(std::fs::read(&copy).unwrap(), bytes, "nothing was written");
    assert!(
        !super::sidecar(&copy, "-wal").exists(),
        "no WAL was made up"
    );
    // The CLI may still read what the copy holds.
    SqliteStore::open_read_only(&copy).unwrap();
    // Clearing the mark, as the message says, opens it as it is.
    Connection::open(&copy)
        .unwrap()
        .pragma_update(None, "user_version", 0)
        .unwrap();
    drop(SqliteStore::open(&copy).unwrap());

    // A store closed cleanly reopens without its (removed) WAL, and so does a file of an
    // earlier build (never marked).
    drop(store);
    assert!(!super::sidecar(&dir.db(), "-wal").exists());
    let reopened = SqliteStore::open(dir.db()).unwrap();
    assert_eq!(
        reopened.list(&Default::default()).await.unwrap().len(),
        plans.len()
    );
}

#[tokio::test]
async fn a_plan_whose_name_is_not_utf8_is_listed_with_the_others() {
    let dir = TempDir::new("not-utf8");
    let good = crate::storage::contract::sample_run("good");
    let odd = crate::storage::contract::sample_run("odd");
    {
        let store = SqliteStore::open(dir.db()).unwrap();
        store.create(&good).await.unwrap();
        store.create(&odd).await.unwrap();
    }
    // Another program writes bytes that are not UTF-8 into one plan's name.
    let conn = Connection::open(dir.db()).unwrap();
    conn.execute(
        "UPDATE plans SET name = CAST(x'6f64649fff' AS TEXT) WHERE id = ?1",
        [super::codec::id_text(odd.id.0)],
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open_read_only(dir.db()).unwrap();
    let listed = store.list(&Default::default()).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let shown = listed.iter().find(|s| s.id == odd.id).unwrap();
    assert_eq!(shown.name, "odd\u{FFFD}\u{FFFD}");
    assert!(
        listed
            .iter()
            .any(|s| s.id == good.id && s.name == good.name())
    );
}

#[test]
fn the_layout_places_objects_where_the_execution_order_does() {
    use super::codec::{Layout, execution_order};
    use crate::workflow::{Loc, Parent};
    let mut uneven = crate::storage::contract::sample_run("layout");
    // Sequences of different lengths, and one without actions.
    uneven.blocks[0].sequences[1].actions.truncate(1);
    uneven.blocks[1].sequences[0].actions.clear();
    let extra = uneven.blocks[0].sequences[0].actions[0].clone();
    uneven.blocks[0].sequences[2].actions.push(extra);
    for plan in [sample_plan("layout"), uneven] {
        let counts: Vec<Vec<u32>> = plan
            .blocks()
            .iter()
            .map(|b| {
                b.sequences()
                    .iter()
                    .map(|s| s.actions().len() as u32)
                    .collect()
            })
            .collect();
        let layout = Layout::new(&plan, &counts);
        let order = execution_order(&plan);
        for ((loc, _), ord) in plan.walk().zip(&order) {
            let placed = match loc {
                Loc::Plan => continue,
                Loc::Sequence { block, seq } => layout.sequences(block).start + seq as i64,
                Loc::Action {
                    parent: Parent::Sequence { block, seq },
                    index,
                } => layout.actions(block, &[seq])[0][index],
                other => layout.outside(other).unwrap(),
            };
            assert_eq!(placed, *ord, "{loc:?}");
        }
        for (b, block) in plan.blocks().iter().enumerate() {
            let all: Vec<usize> = (0..block.sequences().len()).collect();
            let each: Vec<Vec<i64>> = all
                .iter()
                .map(|&s| layout.actions(b, &[s]).remove(0))
                .collect();
            assert_eq!(layout.actions(b, &all), each, "block {b}, all at once");
        }
    }
}

/// A run as the engine writes it (each sequence starts, its actions run with attempts, it
/// ends), its pages read without a whole read, before and after the journal is folded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_is_read_without_the_whole_plan_and_matches_it() {
    use crate::storage::{PageSpec, PlanPage};
    use crate::workflow::{Attempt, Loc, Outcome, Parent, State, Status};
    let dir = TempDir::new("page");
    let mut plan = sample_plan("page");
    for b in 0..plan.blocks.len() {
        let more: Vec<_> = (0..150)
            .map(|i| {
                let mut s = plan.blocks[b].sequences[0].clone();
                s.id = uuid::Uuid::now_v7();
                s.name = format!("extra-{b}-{i}");
                for a in &mut s.actions {
                    a.id = uuid::Uuid::now_v7();
                }
                s
            })
            .collect();
        plan.blocks[b].sequences.extend(more);
    }
    let specs = [
        PageSpec::from(0),
        PageSpec {
            from: 10,
            len: 5,
            attention: 3,
        },
        PageSpec {
            from: 0,
            len: 0,
            attention: 0,
        },
    ];
    let check = |store: SqliteStore, what: &'static str| {
        let id = plan.id;
        async move {
            let whole = store.read(id).await.unwrap();
            let conn = Connection::open(dir_db(&store)).unwrap();
            for spec in specs {
                let part = super::page::read_part(&conn, "test", id, spec)
                    .unwrap()
                    .unwrap_or_else(|| panic!("{what}: {spec:?} needed a whole read"));
                assert_eq!(part, PlanPage::of(whole.clone(), spec), "{what}: {spec:?}");
                assert_eq!(store.read_page(id, spec).await.unwrap(), part);
            }
            store
        }
    };
    fn dir_db(store: &SqliteStore) -> PathBuf {
        PathBuf::from(store.describe().trim_start_matches("sqlite:"))
    }
    // Folded only at close: what is in the journal stays there.
    let store =
        SqliteStore::open_with(dir.db(), SqliteOptions::default().fold_when_idle(None)).unwrap();
    store.create(&plan).await.unwrap();
    let store = check(store, "created").await;
    let state = |status, t: i64| State {
        status,
        start: Some(at(t, 0)),
        end: (status != Status::Running).then(|| at(t + 1, 0)),
    };
    let mut t = 0;
    for (b, block) in plan.blocks.iter().enumerate() {
        for (s, seq) in block.sequences.iter().enumerate().step_by(3) {
            t += 10;
            let sloc = Loc::Sequence { block: b, seq: s };
            let mut batch = vec![Change::State {
                loc: sloc,
                id: seq.id,
                state: state(Status::Running, t),
            }];
            let fails = s % 7 == 6;
            for (i, a) in seq.actions.iter().enumerate() {
                let loc = Loc::Action {
                    parent: Parent::Sequence { block: b, seq: s },
                    index: i,
                };
                let ok = !(fails && i == 0);
                batch.push(Change::State {
                    loc,
                    id: a.id,
                    state: state(Status::Running, t),
                });
                batch.push(Change::Attempt {
                    loc,
                    id: a.id,
                    index: 0,
                    attempt: Attempt {
                        start: at(t, 0),
                        end: Some(at(t, 5)),
                        outcome: Some(if ok {
                            Outcome::Response(crate::workflow::Json::from_text("{}").unwrap())
                        } else {
                            Outcome::Error(Box::new(crate::plugin::PluginError::permanent("boom")))
                        }),
                    },
                });
                let end = if ok {
                    Status::Completed
                } else {
                    Status::Failed
                };
                batch.push(Change::State {
                    loc,
                    id: a.id,
                    state: state(end, t),
                });
                store.apply(plan.id, &batch).await.unwrap();
                batch.clear();
                if !ok {
                    break;
                }
            }
            // Every fifth sequence still runs.
            if s % 5 != 4 {
                let end = if fails {
                    Status::Failed
                } else {
                    Status::Completed
                };
                store
                    .apply(
                        plan.id,
                        &[Change::State {
                            loc: sloc,
                            id: seq.id,
                            state: state(end, t),
                        }],
                    )
                    .await
                    .unwrap();
            }
        }
    }
    let store = check(store, "in the journal").await;
    drop(store);
    // Folded only at close: what is in the journal stays there.
    let store =
        SqliteStore::open_with(dir.db(), SqliteOptions::default().fold_when_idle(None)).unwrap();
    assert_eq!(journal_rows(&dir.db()), 0, "closing folded the journal");
    let store = check(store, "folded").await;
    // Changes in the journal over rows in the tables: the sequences that ran end (one of
    // them stopped), and an action of each starts over.
    for (b, block) in plan.blocks.iter().enumerate() {
        for (s, seq) in block.sequences.iter().enumerate().skip(9).step_by(15) {
            t += 10;
            let end = if s % 2 == 0 {
                Status::Stopped
            } else {
                Status::Completed
            };
            let loc = Loc::Action {
                parent: Parent::Sequence { block: b, seq: s },
                index: 0,
            };
            let mut batch = vec![Change::Reset {
                loc,
                id: seq.actions[0].id,
            }];
            // One of them keeps running: its start is folded, its action's change is not (a
            // page without it finds that action through the sequences that run).
            if s != 39 {
                batch.push(Change::State {
                    loc: Loc::Sequence { block: b, seq: s },
                    id: seq.id,
                    state: state(end, t),
                });
            }
            store.apply(plan.id, &batch).await.unwrap();
        }
    }
    assert!(journal_rows(&dir.db()) > 0);
    let store = check(store, "in the journal over folded rows").await;

    // An action changed while its sequence never ran (no engine writes that): the page cannot
    // place it without every sequence's actions, so it is cut from a whole read — the same page.
    let (b, s) = (1, 100);
    let seq = &plan.blocks[b].sequences[s];
    assert_eq!(
        store.read(plan.id).await.unwrap().blocks()[b].sequences()[s].status(),
        Status::NotStarted
    );
    let loc = Loc::Action {
        parent: Parent::Sequence { block: b, seq: s },
        index: 1,
    };
    store
        .apply(
            plan.id,
            &[Change::State {
                loc,
                id: seq.actions[1].id,
                state: state(Status::Failed, t + 50),
            }],
        )
        .await
        .unwrap();
    let whole = store.read(plan.id).await.unwrap();
    let conn = Connection::open(dir.db()).unwrap();
    let spec = PageSpec {
        from: 0,
        len: 10,
        attention: 0,
    };
    assert!(
        super::page::read_part(&conn, "test", plan.id, spec)
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.read_page(plan.id, spec).await.unwrap(),
        PlanPage::of(whole, spec)
    );
    drop(store);

    // Counts that do not match the rows (a damaged row) give an error naming the plan, not a
    // page of misplaced states.
    conn.execute(
        "UPDATE sequence_definitions SET counts = json_set(counts, '$[5]', 3) WHERE block = 0 AND first = 0",
        [],
    )
    .unwrap();
    let damaged = super::page::read_part(
        &conn,
        "test",
        plan.id,
        PageSpec {
            from: 100,
            len: 5,
            attention: 0,
        },
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(damaged.contains(&plan.id.to_string()), "{damaged}");
}

/// A version-4 file (the definition whole) is split into version 5's pieces when opened for
/// writing: blocks of more sequences than a row holds read back whole and by page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_4_file_is_split_into_pieces_and_reads_back_the_same() {
    use super::codec::PreparedPlan;
    use crate::storage::{PageSpec, PlanPage};
    let dir = TempDir::new("v4");
    let mut plan = crate::storage::contract::sample_run("v4");
    let extra: Vec<_> = (0..150)
        .map(|i| {
            let mut s = plan.blocks[1].sequences[0].clone();
            s.name = format!("extra-{i}");
            s
        })
        .collect();
    plan.blocks[1].sequences.extend(extra);
    plan.assign_ids();
    {
        let raw = Connection::open(dir.db()).unwrap();
        for sql in &super::schema::MIGRATIONS.0[..4] {
            raw.execute_batch(sql).unwrap();
        }
        raw.execute("INSERT INTO schema_version (version) VALUES (4)", [])
            .unwrap();
        raw.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        let p = PreparedPlan::of(&plan).unwrap();
        insert_old_plan(&raw, &plan, &p, |raw| {
            for o in p.objects.iter().filter(|o| o.stored) {
                raw.execute(
                    "INSERT INTO objects (plan_pk, ord, kind, status, start_ns, end_ns) \
                     VALUES (1, ?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![o.ord, o.kind, o.state.status, o.state.start, o.state.end],
                )
                .unwrap();
            }
        });
    }
    let store = SqliteStore::open(dir.db()).unwrap();
    assert_eq!(store.read(plan.id).await.unwrap(), plan);
    let conn = Connection::open(dir.db()).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT count(*) FROM sequence_definitions WHERE block = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 3, "152 sequences in rows of 64");
    for spec in [
        PageSpec::from(0),
        PageSpec {
            from: 60,
            len: 10,
            attention: 2,
        },
        PageSpec {
            from: 150,
            len: 100,
            attention: 0,
        },
    ] {
        let part = super::page::read_part(&conn, "test", plan.id, spec)
            .unwrap()
            .expect("no journal: read in part");
        assert_eq!(part, PlanPage::of(plan.clone(), spec), "{spec:?}");
    }
}

/// Writes `plan` (prepared as `p`) as a file of a version before 5 held it: its row as plan 1,
/// its whole definition, its objects by `objects` (their table changed between versions), then
/// its attempts (which refer to them).
fn insert_old_plan(
    raw: &Connection,
    plan: &crate::workflow::Plan,
    p: &super::codec::PreparedPlan,
    objects: impl FnOnce(&Connection),
) {
    raw.execute(
        "INSERT INTO plans (pk, id, group_id, name, descr, submit_time_ns, status, start_ns, \
         end_ns, reason, heartbeat_ns, paused) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        rusqlite::params![
            p.id_text, p.group_id, p.name, p.descr, p.submit_time, p.state.status, p.state.start,
            p.state.end, p.reason, p.heartbeat, p.paused
        ],
    )
    .unwrap();
    raw.execute(
        "INSERT INTO plan_definitions (plan_pk, definition) VALUES (1, ?1)",
        [serde_json::to_string(&plan.definition()).unwrap()],
    )
    .unwrap();
    objects(raw);
    for a in &p.attempts {
        raw.execute(
            "INSERT INTO attempts (plan_pk, ord, idx, start_ns, end_ns, outcome) \
             VALUES (1, ?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![a.ord, a.idx, a.cols.start, a.cols.end, a.cols.outcome],
        )
        .unwrap();
    }
}

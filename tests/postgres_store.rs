//! The PostgreSQL store (feature `postgres`): the storage contract, and what only a store shared
//! by several processes promises — leases, fencing by epoch, claiming with `FOR UPDATE SKIP
//! LOCKED`, client start requests, migrations.
//!
//! Needs a server: run through `scripts/with-postgres.sh`, which exports `COERCION_PG_URL`.
//! Without it every test fails, unless `COERCION_SKIP_PG=1` (then they say loudly that they
//! skipped). Each test works in its own PostgreSQL schema.

use std::time::Duration;

use coercion::storage::contract::{self, at, sample_plan};
use coercion::storage::{Change, PostgresOptions, PostgresStore, SharedStore, Store, StoreError};
use coercion::workflow::Loc;
use coercion::{PlanId, State, Status};

/// The server's URL, or `None` (after a loud line) when the PostgreSQL tests are skipped.
fn pg_url(test: &str) -> Option<String> {
    match std::env::var("COERCION_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("COERCION_SKIP_PG").as_deref() == Ok("1") => {
            eprintln!(
                "!!!!!!!! SKIPPED {test}: COERCION_SKIP_PG=1 and no COERCION_PG_URL — the PostgreSQL store was NOT tested !!!!!!!!"
            );
            None
        }
        _ => panic!(
            "COERCION_PG_URL is not set: the PostgreSQL tests need a server. Run them through \
             `scripts/with-postgres.sh cargo test --features postgres --test postgres_store` \
             (it installs PostgreSQL if needed and starts a throwaway cluster), or set \
             COERCION_SKIP_PG=1 to skip them"
        ),
    }
}

/// A fresh schema name for `test`.
fn schema(test: &str) -> String {
    format!("t_{}_{}", test, PlanId::new_v7().0.simple())
        .chars()
        .take(63)
        .collect()
}

async fn store(url: &str, schema: &str, lease: Duration) -> PostgresStore {
    PostgresStore::connect_with(url, PostgresOptions::default().schema(schema).lease(lease))
        .await
        .unwrap_or_else(|e| panic!("connect to {url} (schema {schema}): {e}"))
}

/// A plan of one action that runs until it is cancelled.
fn waiting_plan(name: &str) -> coercion::Plan {
    coercion::Plan::builder(name)
        .block(
            coercion::Block::builder("b").sequence(coercion::Sequence::builder("s").action(
                coercion::ActionSpec::new::<coercion::testing::FakeAction>(
                    "waits",
                    coercion::testing::FakeReq::wait_for_cancel(),
                ),
            )),
        )
        .build()
}

/// A workstream over `store` with the fake plugins, renewing its leases every `heartbeat`.
async fn worker_workstream(
    store: &PostgresStore,
    fakes: &coercion::testing::Fakes,
    heartbeat: Duration,
) -> coercion::Workstream {
    coercion::Workstream::builder()
        .store(store.clone())
        .registry(fakes.registry())
        .heartbeat_interval(heartbeat)
        .build()
        .await
        .unwrap()
}

macro_rules! contract_tests {
    ($($name:ident: |$store:ident| $check:expr;)*) => {
        mod contract_suite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(url) = pg_url(stringify!($name)) else { return };
                    let store = store(&url, &schema(stringify!($name)), Duration::from_secs(30)).await;
                    let $store: &dyn Store = &store;
                    $check.await;
                }
            )*
        }
    };
}

contract_tests! {
    create_then_read: |store| contract::create_then_read(store);
    duplicate_create: |store| contract::duplicate_create(store);
    unknown_plan: |store| contract::unknown_plan(store);
    every_change_kind: |store| contract::every_change_kind(store);
    batches_are_atomic: |store| contract::batches_are_atomic(store);
    a_batch_applied_twice_reads_as_once: |store| contract::a_batch_applied_twice_reads_as_once(store);
    random_changes_seed_1: |store| contract::random_changes(store, 1, 200);
    random_changes_seed_2: |store| contract::random_changes(store, 2, 200);
    random_changes_seed_3: |store| contract::random_changes(store, 0xdead_beef, 200);
    random_changes_in_flight: |store| contract::random_changes_in_flight(store, 4, 400, 8);
    concurrent_applies_complete_in_order: |store| contract::concurrent_applies_complete_in_order(store, 500);
    list_filters_and_paging: |store| contract::list_filters_and_paging(store);
    delete_rules: |store| contract::delete_rules(store);
    prune_rules: |store| contract::prune_rules(store);
    large_plan: |store| contract::large_plan(store, 20_000);
    hostile_text: |store| contract::hostile_text(store);
    whole_suite_on_one_store: |store| contract::all(store);
}

fn running(plan: &coercion::Plan, secs: i64) -> Vec<Change> {
    vec![Change::State {
        loc: Loc::Plan,
        id: plan.id().0,
        state: State {
            status: Status::Running,
            start: Some(at(secs, 0)),
            end: None,
        },
    }]
}

fn locked(result: Result<(), StoreError>, what: &str) -> String {
    match result {
        Err(StoreError::Locked(m)) => m,
        other => panic!("{what}: expected StoreError::Locked, got {other:?}"),
    }
}

/// Another process is told of the plans a store writes (LISTEN/NOTIFY, one notice per committed
/// group): of those of its own schema only, and not of a write that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_store_instance_is_told_of_the_plans_written_in_its_schema() {
    use coercion::storage::Changed;
    use tokio::sync::broadcast::error::RecvError;

    let Some(url) = pg_url("another_store_instance_is_told_of_the_plans_written_in_its_schema")
    else {
        return;
    };
    let schema = schema("notices");
    let writer = store(&url, &schema, Duration::from_secs(30)).await;
    let reader = store(&url, &schema, Duration::from_secs(30)).await;
    let elsewhere = store(
        &url,
        &self::schema("notices_other"),
        Duration::from_secs(30),
    )
    .await;
    let mut told = reader
        .changes()
        .expect("a PostgreSQL store tells of changes");
    // The listener says "anything may have changed" once it listens: from then on, nothing
    // is missed.
    let first = tokio::time::timeout(Duration::from_secs(10), told.recv()).await;
    assert_eq!(first.expect("the listener listens").unwrap(), Changed::Any);
    async fn next(
        told: &mut tokio::sync::broadcast::Receiver<Changed>,
    ) -> Result<Changed, RecvError> {
        tokio::time::timeout(Duration::from_secs(10), told.recv())
            .await
            .expect("a notice within 10 s")
    }

    let plan = sample_plan("told");
    writer.create(&plan).await.unwrap();
    assert_eq!(
        next(&mut told).await.unwrap(),
        Changed::Plans(vec![plan.id()].into())
    );
    writer.apply(plan.id(), &running(&plan, 1)).await.unwrap();
    assert!(next(&mut told).await.unwrap().concerns(plan.id()));
    // A write to another schema, and a write that fails, tell this schema's readers nothing.
    let other = sample_plan("elsewhere");
    elsewhere.create(&other).await.unwrap();
    assert!(writer.create(&plan).await.is_err());
    writer.delete(plan.id()).await.unwrap_err(); // Running: refused
    let marker = sample_plan("marker");
    writer.create(&marker).await.unwrap();
    match next(&mut told).await {
        Ok(changed) => assert_eq!(changed, Changed::Plans(vec![marker.id()].into())),
        Err(RecvError::Lagged(n)) => panic!("lagged by {n}"),
        Err(RecvError::Closed) => panic!("closed"),
    }
}

/// A lease keeps other processes out; once it expires another process takes the plan over
/// with a new epoch, and from then on every write of the first process is refused — also a
/// heartbeat, also one in a batch with other changes — and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_fences_every_later_write() {
    let Some(url) = pg_url("a_lost_lease_fences_every_later_write") else {
        return;
    };
    let schema = schema("fence");
    let lease = Duration::from_millis(800);
    let a = store(&url, &schema, lease).await;
    let b = store(&url, &schema, lease).await;
    assert_ne!(a.owner_id(), b.owner_id());

    let plan = sample_plan("fenced");
    a.create(&plan).await.unwrap();
    a.acquire(plan.id())
        .await
        .expect("a free plan can be leased");
    a.apply(plan.id(), &running(&plan, 1))
        .await
        .expect("the holder writes");
    // While A's lease is live, B can neither lease the plan, nor claim it, nor write to it.
    locked(b.acquire(plan.id()).await, "B leases A's live plan");
    assert_eq!(
        b.claim_runnable(10).await.unwrap(),
        Vec::<PlanId>::new(),
        "B claims a live plan"
    );
    let m = locked(
        b.apply(plan.id(), &[Change::Heartbeat(at(2, 0))]).await,
        "B writes to A's plan",
    );
    assert!(
        m.contains(&a.owner_id().to_string()),
        "names the holder: {m}"
    );

    // A heartbeat renews the lease: A stays the holder well past one lease period.
    for i in 0..6 {
        tokio::time::sleep(lease / 3).await;
        a.apply(plan.id(), &[Change::Heartbeat(at(10 + i, 0))])
            .await
            .expect("A heartbeats");
    }
    assert_eq!(
        b.claim_runnable(10).await.unwrap(),
        Vec::<PlanId>::new(),
        "the lease was renewed"
    );

    // A stops heartbeating (paused); its lease expires; B claims the running plan.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    assert_eq!(
        b.claim_runnable(10).await.unwrap(),
        vec![plan.id()],
        "B takes over the expired plan"
    );
    let before = b.read(plan.id()).await.unwrap();
    let fenced_before = a.fenced_writes();
    for changes in [
        vec![Change::Heartbeat(at(100, 0))],
        vec![Change::Paused(true), Change::Heartbeat(at(101, 0))],
        running(&plan, 102),
    ] {
        let m = locked(
            a.apply(plan.id(), &changes).await,
            "A writes after losing its lease",
        );
        assert!(
            m.contains("lease") && m.contains(&b.owner_id().to_string()),
            "explains: {m}"
        );
    }
    assert_eq!(a.fenced_writes(), fenced_before + 3);
    // A fenced-off lease is no longer listed as A's.
    assert!(
        !a.leased_plans().contains(&plan.id()),
        "A still lists the plan it lost: {:?}",
        a.leased_plans()
    );
    assert_eq!(b.leased_plans(), vec![plan.id()]);
    // …yet A's later writes are still fenced with the lost epoch.
    locked(
        a.apply(plan.id(), &[Change::Heartbeat(at(103, 0))]).await,
        "A writes after its lease was found lost",
    );
    assert_eq!(
        b.read(plan.id()).await.unwrap(),
        before,
        "fenced writes changed nothing"
    );
    // A cannot take it back while B's lease lives, and releasing does not free B's lease.
    locked(a.acquire(plan.id()).await, "A re-leases B's plan");
    a.release(plan.id()).await.unwrap();
    locked(a.acquire(plan.id()).await, "A's release freed B's lease");
    b.apply(plan.id(), &[Change::Heartbeat(at(200, 0))])
        .await
        .expect("the new holder writes");
    assert_eq!(
        b.read(plan.id()).await.unwrap().heartbeat(),
        Some(at(200, 0))
    );
    // Once B releases, anyone may lease it again.
    b.release(plan.id()).await.unwrap();
    a.acquire(plan.id())
        .await
        .expect("a released plan can be leased");
    a.apply(plan.id(), &[Change::Heartbeat(at(300, 0))])
        .await
        .expect("with a fresh epoch");
}

/// Idle workers claim runnable plans with `FOR UPDATE SKIP LOCKED`: concurrent claims never
/// return the same plan; only requested or orphaned plans are claimed, oldest first, at most
/// `limit` at a time, orphans before plans waiting for their first start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_split_the_runnable_plans() {
    let Some(url) = pg_url("concurrent_claims_split_the_runnable_plans") else {
        return;
    };
    let schema = schema("claim");
    let lease = Duration::from_secs(30);
    let client = store(&url, &schema, lease).await;
    let workers: Vec<PostgresStore> = futures_join(4, || store(&url, &schema, lease)).await;

    // 40 plans a client asked to start, 5 submitted but not requested, 5 running with no lease
    // (their process is gone), 5 finished.
    let mut runnable = Vec::new();
    let mut other = Vec::new();
    for i in 0..55 {
        let plan = sample_plan(&format!("plan {i}"));
        client.create(&plan).await.unwrap();
        match i {
            0..40 => {
                client.request_start(plan.id()).await.unwrap();
                runnable.push(plan.id());
            }
            40..45 => other.push(plan.id()),
            45..50 => {
                client.apply(plan.id(), &running(&plan, 1)).await.unwrap();
                runnable.push(plan.id());
            }
            _ => {
                let done = State {
                    status: Status::Completed,
                    start: Some(at(1, 0)),
                    end: Some(at(2, 0)),
                };
                client
                    .apply(
                        plan.id(),
                        &[Change::State {
                            loc: Loc::Plan,
                            id: plan.id().0,
                            state: done,
                        }],
                    )
                    .await
                    .unwrap();
                other.push(plan.id());
            }
        }
    }
    let first = workers[0].claim_runnable(3).await.unwrap();
    assert_eq!(
        first,
        runnable[40..43].to_vec(),
        "orphans (already started) first, oldest first, at most the limit"
    );
    let mut claimed = first.clone();
    loop {
        let rounds =
            futures_util::future::join_all(workers.iter().map(|w| w.claim_runnable(4))).await;
        let mut got = 0;
        for r in rounds {
            let ids = r.expect("claim");
            assert!(ids.len() <= 4, "a claim is bounded by its limit");
            got += ids.len();
            claimed.extend(ids);
        }
        if got == 0 {
            break;
        }
    }
    let mut sorted = claimed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        claimed.len(),
        "a plan was claimed twice: {claimed:?}"
    );
    let mut expected = runnable.clone();
    expected.sort();
    assert_eq!(
        sorted, expected,
        "every runnable plan, and only those, is claimed"
    );
    for id in &other {
        assert!(!claimed.contains(id));
    }
    // A claimed plan is leased to its claimer: others cannot lease it.
    locked(client.acquire(claimed[0]).await, "a claimed plan");
    // A started plan cannot be requested again; an unknown one is not found.
    let err = client
        .request_start(other[other.len() - 1])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Permanent { message: ref m, .. } if m.contains("Completed")),
        "{err:?}"
    );
    let unknown = PlanId::new_v7();
    assert_eq!(
        client.request_start(unknown).await,
        Err(StoreError::NotFound(unknown))
    );
}

async fn futures_join<F, Fut>(n: usize, make: F) -> Vec<PostgresStore>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = PostgresStore>,
{
    futures_util::future::join_all((0..n).map(|_| make())).await
}

/// Several processes connecting at once to a fresh schema migrate it once; a schema holding
/// someone else's `plans` table is refused; bad schema names and URLs are refused clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_safe_and_foreign_schemas_refused() {
    let Some(url) = pg_url("migrations_are_safe_and_foreign_schemas_refused") else {
        return;
    };
    let schema_name = schema("migrate");
    let stores = futures_util::future::join_all((0..6).map(|_| {
        PostgresStore::connect_with(&url, PostgresOptions::default().schema(&schema_name))
    }))
    .await;
    for s in &stores {
        assert!(s.is_ok(), "concurrent connect: {s:?}");
    }
    let again = store(&url, &schema_name, Duration::from_secs(30)).await;
    assert!(
        again.describe().contains(&schema_name),
        "{}",
        again.describe()
    );
    assert!(!again.describe().contains("password"));

    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let foreign = schema("foreign");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {foreign}; CREATE TABLE {foreign}.plans (x int)"
        ))
        .await
        .unwrap();
    match PostgresStore::connect_with(&url, PostgresOptions::default().schema(&foreign)).await {
        Err(StoreError::Permanent { message: m, .. }) => {
            assert!(m.contains("not a coercion store"), "{m}")
        }
        other => panic!("a foreign schema was accepted: {other:?}"),
    }
    client
        .batch_execute(&format!(
            "UPDATE {schema_name}.coercion_schema_version SET version = 99"
        ))
        .await
        .unwrap();
    match PostgresStore::connect_with(&url, PostgresOptions::default().schema(&schema_name)).await {
        Err(StoreError::Permanent { message: m, .. }) => {
            assert!(m.contains("newer coercion"), "{m}")
        }
        other => panic!("a newer schema was accepted: {other:?}"),
    }
    match PostgresStore::connect_with(&url, PostgresOptions::default().schema("Bad; DROP")).await {
        Err(StoreError::Permanent { message: m, .. }) => assert!(m.contains("schema name"), "{m}"),
        other => panic!("a bad schema name was accepted: {other:?}"),
    }
    assert!(matches!(
        PostgresStore::connect("not a url at all ===").await,
        Err(StoreError::Permanent { .. })
    ));
}

/// The TLS fixtures of `scripts/with-postgres.sh`: the URL of a role that may connect only over
/// TLS (host name `db.test`, address 127.0.0.1), the CA that signed the server's certificate
/// (issued for `db.test` only) and an unrelated CA.
fn tls_fixtures(test: &str) -> Option<(String, String, String)> {
    pg_url(test)?;
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the PostgreSQL tests through scripts/with-postgres.sh")
        })
    };
    Some((
        var("COERCION_PG_TLS_URL"),
        var("COERCION_PG_CA"),
        var("COERCION_PG_OTHER_CA"),
    ))
}

async fn connect_error(url: &str, schema: &str) -> String {
    match PostgresStore::connect_with(url, PostgresOptions::default().schema(schema)).await {
        Ok(_) => panic!("{url} must be refused"),
        Err(e) => {
            assert!(
                matches!(e, StoreError::Permanent { .. }),
                "a refused connection is a setting to fix, not worth retrying: {e:?}"
            );
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            text
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_checks_the_ca_and_the_name_and_the_weaker_modes_do_what_libpq_does() {
    let Some((tls_url, ca, other_ca)) = tls_fixtures("tls") else {
        return;
    };
    let schema = schema("tls");
    // The role cannot connect in clear: the server refuses it.
    let clear = format!("{tls_url}&sslmode=disable");
    let err = connect_error(&clear, &schema).await;
    assert!(err.contains("no encryption"), "{err}");

    // verify-full: the CA and the name (db.test, reached at hostaddr 127.0.0.1) are checked;
    // the store works over it.
    let full = format!("{tls_url}&sslmode=verify-full&sslrootcert={ca}");
    let over_tls = store(&full, &schema, Duration::from_secs(30)).await;
    let plan = sample_plan("over TLS");
    over_tls.create(&plan).await.unwrap();
    assert_eq!(over_tls.read(plan.id()).await.unwrap().id(), plan.id());
    drop(over_tls);

    // The same in the key=value form, the CA's path quoted.
    let port = tls_url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap();
    let keywords = format!(
        "host=db.test hostaddr=127.0.0.1 port={port} user=coercion_tls dbname=coercion_test \
         sslmode=verify-full sslrootcert='{ca}'"
    );
    store(&keywords, &schema, Duration::from_secs(30)).await;

    // A certificate from another CA is refused, naming why.
    let err = connect_error(
        &format!("{tls_url}&sslmode=verify-full&sslrootcert={other_ca}"),
        &schema,
    )
    .await;
    assert!(err.contains("UnknownIssuer"), "{err}");

    // Reached by an address the certificate was not issued for: verify-full refuses it,
    // verify-ca (the CA only) accepts it.
    let by_address = tls_url
        .replace("@db.test:", "@127.0.0.1:")
        .replace("?hostaddr=127.0.0.1", "?application_name=tls");
    let err = connect_error(
        &format!("{by_address}&sslmode=verify-full&sslrootcert={ca}"),
        &schema,
    )
    .await;
    assert!(
        err.contains("certificate not valid for name \"127.0.0.1\""),
        "{err}"
    );
    store(
        &format!("{by_address}&sslmode=verify-ca&sslrootcert={ca}"),
        &schema,
        Duration::from_secs(30),
    )
    .await;
    // verify-ca still checks the CA.
    let err = connect_error(
        &format!("{by_address}&sslmode=verify-ca&sslrootcert={other_ca}"),
        &schema,
    )
    .await;
    assert!(err.contains("UnknownIssuer"), "{err}");

    // require (and the default, prefer) encrypt without checking the certificate, as libpq.
    store(
        &format!("{by_address}&sslmode=require"),
        &schema,
        Duration::from_secs(30),
    )
    .await;
    store(&by_address, &schema, Duration::from_secs(30)).await;
    // require with a CA checks it, as libpq.
    let err = connect_error(
        &format!("{by_address}&sslmode=require&sslrootcert={other_ca}"),
        &schema,
    )
    .await;
    assert!(err.contains("UnknownIssuer"), "{err}");
}

/// Plans whose worker died (already started, their hosts half done) are taken over before plans
/// that only wait for a first start, whatever their age: with every worker busy, an orphan
/// should not wait behind a queue of new plans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_claimed_before_plans_waiting_to_start() {
    let Some(url) = pg_url("orphans_are_claimed_before_plans_waiting_to_start") else {
        return;
    };
    let schema = schema("orphans");
    let client = store(&url, &schema, Duration::from_secs(30)).await;
    let worker = store(&url, &schema, Duration::from_secs(30)).await;
    // First in the queue (same submit time, smaller id): waits for its first start.
    let waiting = sample_plan("waiting");
    client.create(&waiting).await.unwrap();
    client.request_start(waiting.id()).await.unwrap();
    // Behind it: started by a process that died (Running, no live lease).
    let orphan = sample_plan("orphan");
    assert!(orphan.id() > waiting.id() && orphan.submit_time() == waiting.submit_time());
    client.create(&orphan).await.unwrap();
    client
        .apply(orphan.id(), &running(&orphan, 61))
        .await
        .unwrap();

    assert_eq!(worker.claim_runnable(1).await.unwrap(), vec![orphan.id()]);
    assert_eq!(worker.claim_runnable(1).await.unwrap(), vec![waiting.id()]);
}

/// A heartbeat that does not come at least twice per lease is refused when the workstream is
/// built: one late heartbeat would let another worker take a live plan over and run its actions
/// again (seen with a 4 s heartbeat and a 1.5 s lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_slower_than_half_the_lease_is_refused() {
    let Some(url) = pg_url("a_heartbeat_slower_than_half_the_lease_is_refused") else {
        return;
    };
    let schema = schema("heartbeat");
    let lease = Duration::from_millis(1500);
    let build = |heartbeat| {
        let url = url.clone();
        let schema = schema.clone();
        async move {
            coercion::Workstream::builder()
                .store(store(&url, &schema, lease).await)
                .registry(coercion::Registry::new())
                .heartbeat_interval(heartbeat)
                .build()
                .await
        }
    };
    match build(Duration::from_secs(4)).await {
        Err(coercion::Error::Config(message)) => assert!(
            message.contains("heartbeat_interval is 4s but the store's lease is 1.5s")
                && message.contains("at most 750ms"),
            "{message}"
        ),
        other => panic!("a 4 s heartbeat on a 1.5 s lease must be refused: {other:?}"),
    }
    build(Duration::from_millis(750))
        .await
        .expect("two heartbeats per lease are enough");
}

#[path = "support/captured.rs"]
mod captured;

/// A worker that starts logs the plans it actually resumed, not every `Running` plan of the
/// fleet: a plan whose lease a live worker holds is left to it, silently — also when its
/// heartbeat looks older than `max_last_update` (a clock apart): the start-up does not fail
/// on it, nor expire it.
#[tokio::test]
async fn start_up_recovery_logs_only_the_plans_it_resumed() {
    let Some(url) = pg_url("start_up_recovery_logs_only_the_plans_it_resumed") else {
        return;
    };
    let schema = schema("recover_log");
    let live = store(&url, &schema, Duration::from_secs(30)).await;
    let held = sample_plan("held by a live worker");
    live.create(&held).await.unwrap();
    live.acquire(held.id()).await.unwrap();
    live.apply(held.id(), &running(&held, 1)).await.unwrap();

    let captured = captured::Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing_subscriber::util::SubscriberInitExt::set_default(subscriber);
    let fakes = coercion::testing::Fakes::new();
    let ws = coercion::Workstream::builder()
        .store(store(&url, &schema, Duration::from_secs(30)).await)
        .registry(fakes.registry())
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let log = captured.text();
    assert!(!log.contains("resum"), "{log}");
    assert!(!log.contains(&held.id().to_string()), "{log}");
    assert_eq!(
        live.read(held.id()).await.unwrap().status(),
        Status::Running
    );
    drop(ws);
}

/// A worker claims only plans whose plugins its registry has: a plan it could not run stays
/// for a worker that can (before, it was claimed and released again on every poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_claims_only_plans_it_can_run() {
    let Some(url) = pg_url("a_worker_claims_only_plans_it_can_run") else {
        return;
    };
    let schema = schema("plugins");
    let client = store(&url, &schema, Duration::from_secs(30)).await;
    let worker = store(&url, &schema, Duration::from_secs(30)).await;
    // sample_plan calls the test kit's action and check plugins.
    let plan = sample_plan("needs both fakes");
    client.create(&plan).await.unwrap();
    client.request_start(plan.id()).await.unwrap();

    let action_only = vec!["coercion.testing/action".to_owned()];
    assert_eq!(
        worker.claim_runnable_for(10, &action_only).await.unwrap(),
        Vec::<PlanId>::new(),
        "a worker without the check plugin claims it"
    );
    let both = vec![
        "coercion.testing/action".to_owned(),
        "coercion.testing/check".to_owned(),
        "something/else".to_owned(),
    ];
    assert_eq!(
        worker.claim_runnable_for(10, &both).await.unwrap(),
        vec![plan.id()]
    );
}

/// A schema written by the first version (no `resumptions`, no `plugins`) holding a plan is
/// migrated in place at connect: the plan reads as before, with no resumption, and any worker
/// may claim it (its plugins were not recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_holding_plans_is_migrated_in_place() {
    let Some(url) = pg_url("a_version_1_schema_holding_plans_is_migrated_in_place") else {
        return;
    };
    let schema = schema("v1");
    let plan = sample_plan("from version 1");
    {
        let s = store(&url, &schema, Duration::from_secs(30)).await;
        s.create(&plan).await.unwrap();
        s.request_start(plan.id()).await.unwrap();
    }
    // Back to version 1, as an older coercion left it.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // A build before version 7 cannot take a definition stored in pieces for a plan of empty
    // blocks: it does not read as a plan at all.
    let stored: String = client
        .query_one(
            &format!("SELECT definition FROM {schema}.plan_definitions"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let refused = coercion::Plan::from_json(&stored).unwrap_err().to_string();
    assert!(refused.contains("missing field"), "{refused}");
    client
        .batch_execute(&format!(
            "ALTER TABLE {schema}.plans DROP COLUMN resumptions, DROP COLUMN plugins, DROP COLUMN decisions; \
             DROP TABLE {schema}.control_requests; DROP FUNCTION {schema}.control_requests_asked_by(); \
             ALTER TABLE {schema}.attempts ADD FOREIGN KEY (plan_id, action_id) \
               REFERENCES {schema}.objects (plan_id, id) ON DELETE CASCADE; \
             DROP TABLE {schema}.sequence_definitions; DROP INDEX {schema}.objects_containers; \
             UPDATE {schema}.coercion_schema_version SET version = 1"
        ))
        .await
        .unwrap();
    // Its definition whole, as every version before 7 stored it.
    client
        .execute(
            &format!("UPDATE {schema}.plan_definitions SET definition = $1"),
            &[&serde_json::to_string(&plan).unwrap()],
        )
        .await
        .unwrap();

    let migrated = store(&url, &schema, Duration::from_secs(30)).await;
    let version: i64 = client
        .query_one(
            &format!("SELECT version FROM {schema}.coercion_schema_version"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 7);
    let read = migrated.read(plan.id()).await.unwrap();
    // A definition stored whole (before version 7) reads back whole, and by page.
    assert_eq!(read.blocks().len(), plan.blocks().len());
    for (a, b) in read.blocks().iter().zip(plan.blocks()) {
        assert_eq!(a.sequences().len(), b.sequences().len());
    }
    let spec = coercion::storage::PageSpec {
        from: 1,
        len: 1,
        attention: 0,
    };
    assert_eq!(
        migrated.read_page(plan.id(), spec).await.unwrap(),
        coercion::storage::PlanPage::of(read.clone(), spec)
    );
    assert!(read.resumptions().is_empty());
    assert!(read.decisions().is_empty());
    assert_eq!(read.id(), plan.id());
    // Plugins not recorded: claimed even by a worker that lists none.
    assert_eq!(
        migrated.claim_runnable_for(10, &[]).await.unwrap(),
        vec![plan.id()]
    );
    // Version 6: attempts no longer reference objects by a foreign key…
    let keys: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = '{schema}.attempts'::regclass \
                 AND contype = 'f'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 0, "the attempts' foreign key is dropped");
    // …and deleting a plan deletes its attempts all the same.
    let (loc, action) = read
        .walk()
        .find_map(|(l, o)| {
            matches!(o, coercion::workflow::ObjectRef::Action(_)).then_some((l, o.id()))
        })
        .unwrap();
    migrated.release(plan.id()).await.unwrap();
    let ended = [
        Change::Attempt {
            loc,
            id: action,
            index: 0,
            attempt: coercion::Attempt {
                start: at(1, 0),
                end: Some(at(2, 0)),
                outcome: None,
            },
        },
        Change::State {
            loc: Loc::Plan,
            id: plan.id().0,
            state: State {
                status: Status::Completed,
                start: Some(at(1, 0)),
                end: Some(at(3, 0)),
            },
        },
    ];
    migrated.apply(plan.id(), &ended).await.unwrap();
    let attempts = format!("SELECT count(*) FROM {schema}.attempts WHERE plan_id = $1");
    let id = plan.id().0;
    let count: i64 = client.query_one(&attempts, &[&id]).await.unwrap().get(0);
    assert_eq!(count, 1);
    migrated.delete(plan.id()).await.unwrap();
    let count: i64 = client.query_one(&attempts, &[&id]).await.unwrap().get(0);
    assert_eq!(count, 0, "the plan's attempts went with it");
}

/// After an outage, a restarted worker takes over at most `max_running` orphans — the rest
/// stay for other workers — and its start-up takes none outside its slots (it took every
/// orphan before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_takes_over_at_most_max_running_orphans() {
    let Some(url) = pg_url("a_restarted_worker_takes_over_at_most_max_running_orphans") else {
        return;
    };
    let schema = schema("recover_slots");
    // A worker that died with four plans running: leases of 1 s, never renewed.
    let dead = store(&url, &schema, Duration::from_secs(1)).await;
    let mut orphans = Vec::new();
    for i in 0..4 {
        let mut plan = waiting_plan(&format!("orphan {i}"));
        contract::assign_ids(&mut plan);
        dead.create(&plan).await.unwrap();
        dead.acquire(plan.id()).await.unwrap();
        let now = chrono::Utc::now();
        dead.apply(
            plan.id(),
            &[
                Change::State {
                    loc: Loc::Plan,
                    id: plan.id().0,
                    state: State {
                        status: Status::Running,
                        start: Some(now),
                        end: None,
                    },
                },
                Change::Heartbeat(now),
            ],
        )
        .await
        .unwrap();
        orphans.push(plan.id());
    }
    drop(dead);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let restarted = store(&url, &schema, Duration::from_secs(30)).await;
    let fakes = coercion::testing::Fakes::new();
    let ws = worker_workstream(&restarted, &fakes, Duration::from_secs(1)).await;
    assert_eq!(
        restarted.leased_plans(),
        Vec::<PlanId>::new(),
        "start-up takes no plan outside the worker's slots"
    );
    let worker = ws
        .spawn_worker(
            coercion::worker::WorkerOptions::default()
                .max_running(2)
                .poll_interval(Duration::from_millis(50)),
        )
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while restarted.leased_plans().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker took no orphan"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Many polls later, still two: the others wait for a free slot (or another worker).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut taken = restarted.leased_plans();
    taken.sort();
    assert_eq!(taken.len(), 2, "{taken:?}");
    assert!(taken.iter().all(|id| orphans.contains(id)));
    let other = store(&url, &schema, Duration::from_secs(30)).await;
    let claimed = other.claim_runnable(10).await.unwrap();
    assert_eq!(claimed.len(), 2, "the two left are for another worker");
    assert!(claimed.iter().all(|id| !taken.contains(id)));
    worker.stop().await;
    drop(ws);
}

/// A worker that claims a plan it runs itself — its lease lapsed (a late heartbeat, a database
/// hiccup) and the claim took it again — keeps the lease: the run goes on under it, and the plan
/// is not left for another worker to run a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_claims_its_own_running_plan_keeps_the_lease() {
    let Some(url) = pg_url("a_worker_that_claims_its_own_running_plan_keeps_the_lease") else {
        return;
    };
    let schema = schema("reclaim");
    let s = store(&url, &schema, Duration::from_secs(30)).await;
    let fakes = coercion::testing::Fakes::new();
    let ws = worker_workstream(&s, &fakes, Duration::from_secs(10)).await;
    let worker = ws
        .spawn_worker(
            coercion::worker::WorkerOptions::default().poll_interval(Duration::from_millis(50)),
        )
        .unwrap();
    let id = ws.submit_and_start(waiting_plan("long")).await.unwrap();
    assert_eq!(s.leased_plans(), vec![id]);
    let (sql, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let query = format!("SELECT lease_owner::text FROM {schema}.plans WHERE id = $1");
    async fn owner(sql: &tokio_postgres::Client, query: &str, id: PlanId) -> Option<String> {
        sql.query_one(query, &[&id.0]).await.unwrap().get(0)
    }
    let me = Some(s.owner_id().to_string());
    assert_eq!(owner(&sql, &query, id).await, me);
    // The lease lapses; the worker's next polls claim the plan it runs.
    sql.execute(
        &format!(
            "UPDATE {schema}.plans SET lease_expires = now() - interval '1 second' WHERE id = $1"
        ),
        &[&id.0],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        owner(&sql, &query, id).await,
        me,
        "the worker gave its running plan up"
    );
    assert_eq!(s.leased_plans(), vec![id]);
    let other = store(&url, &schema, Duration::from_secs(30)).await;
    assert_eq!(
        other.claim_runnable(10).await.unwrap(),
        Vec::<PlanId>::new()
    );
    ws.stop(id).await.unwrap();
    ws.wait(id).await.unwrap();
    worker.stop().await;
}

/// `submit_and_start` over a shared store: no other worker can claim the plan between its
/// creation and this process's lease (it used to be stored `Running` without a lease, which a
/// worker polling at that moment took for an orphan: the submitter then failed with "owned
/// elsewhere" while another process ran the plan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_start_keeps_the_plan_from_other_workers() {
    let Some(url) = pg_url("submit_and_start_keeps_the_plan_from_other_workers") else {
        return;
    };
    let schema = schema("submit_start");
    let fakes = coercion::testing::Fakes::new();
    let mine = store(&url, &schema, Duration::from_secs(30)).await;
    let ws = worker_workstream(&mine, &fakes, Duration::from_secs(10)).await;
    // Another process's worker, claiming as fast as it can.
    let other = store(&url, &schema, Duration::from_secs(30)).await;
    let other_ws = worker_workstream(&other, &fakes, Duration::from_secs(10)).await;
    let worker = other_ws
        .spawn_worker(
            coercion::worker::WorkerOptions::default()
                .poll_interval(Duration::from_millis(1))
                .claim_batch(100),
        )
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = ws
            .submit_and_start(waiting_plan(&format!("mine {i}")))
            .await
            .unwrap_or_else(|e| panic!("plan {i}: {e}"));
        ids.push(id);
    }
    for id in &ids {
        assert!(ws.is_running_here(*id), "plan {id} does not run here");
        assert!(
            !other_ws.is_running_here(*id),
            "plan {id} runs in the other process"
        );
    }
    assert_eq!(other.leased_plans(), Vec::<coercion::PlanId>::new());
    for id in ids {
        ws.stop(id).await.unwrap();
        ws.wait(id).await.unwrap();
    }
    worker.stop().await;
}

/// The listener for changed plans runs on the runtime of the caller that started it; when that
/// runtime shuts down, the next caller of `changes` gets a listener on its own runtime (it used
/// to get a receiver that nothing fed any more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_starts_again_when_its_runtime_is_gone() {
    use coercion::storage::Changed;

    let Some(url) = pg_url("the_listener_starts_again_when_its_runtime_is_gone") else {
        return;
    };
    let schema = schema("listener_rt");
    let writer = store(&url, &schema, Duration::from_secs(30)).await;
    let reader = store(&url, &schema, Duration::from_secs(30)).await;
    // A first caller on a runtime of its own, which then shuts down.
    let first = reader.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut told = first.changes().expect("notices");
            let listening = tokio::time::timeout(Duration::from_secs(10), told.recv()).await;
            assert_eq!(
                listening.expect("the listener listens").unwrap(),
                Changed::Any
            );
        });
    })
    .join()
    .unwrap();
    // This runtime's caller is told of what is written from now on.
    let mut told = reader.changes().expect("notices");
    async fn next(told: &mut tokio::sync::broadcast::Receiver<Changed>) -> Changed {
        tokio::time::timeout(Duration::from_secs(10), told.recv())
            .await
            .expect("a notice within 10 s")
            .unwrap()
    }
    assert_eq!(next(&mut told).await, Changed::Any, "listening again");
    let plan = sample_plan("after the runtime");
    writer.create(&plan).await.unwrap();
    assert_eq!(
        next(&mut told).await,
        Changed::Plans(vec![plan.id()].into())
    );
}

/// A page is read the same whether its actions are counted on a second connection (in the
/// first one's snapshot) or, with none free, on the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_is_the_same_with_one_connection_or_two() {
    let Some(url) = pg_url("a_page_is_the_same_with_one_connection_or_two") else {
        return;
    };
    use coercion::storage::{PageSpec, PlanPage};
    let schema = schema("pages");
    let two = store(&url, &schema, Duration::from_secs(30)).await;
    let plan = contract::sample_run("pages");
    two.create(&plan).await.unwrap();
    let one = PostgresStore::connect_with(
        &url,
        PostgresOptions::default().schema(&schema).pool_size(1),
    )
    .await
    .unwrap();
    let whole = two.read(plan.id()).await.unwrap();
    for spec in [
        PageSpec::from(0),
        PageSpec {
            from: 1,
            len: 1,
            attention: 0,
        },
    ] {
        let want = PlanPage::of(whole.clone(), spec);
        assert_eq!(
            two.read_page(plan.id(), spec).await.unwrap(),
            want,
            "{spec:?}"
        );
        // One connection for reads (`pool_size(1)`): the count always shares it.
        let (a, b) = tokio::join!(
            one.read_page(plan.id(), spec),
            one.read_page(plan.id(), spec)
        );
        assert_eq!(a.unwrap(), want, "{spec:?}, one connection");
        assert_eq!(b.unwrap(), want, "{spec:?}, one connection");
    }
}

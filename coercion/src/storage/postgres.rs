//! [`PostgresStore`]: plans in a PostgreSQL database shared by several processes (feature
//! `postgres`).
//!
//! * **Same data as the SQLite store.** Tables `plans`, `plan_definitions`, `objects`,
//!   `attempts` and `coercion_schema_version` in one PostgreSQL schema (`public` by default);
//!   migrations run at connect time under an advisory lock. Times are bigint nanoseconds.
//! * **Durable, group-committed writes.** A few writer tasks ([`PostgresOptions::writers`]),
//!   each with its own connection; every plan's writes go to one of them, in call order. A
//!   writer commits everything queued at the moment in one transaction and completes the
//!   futures only after the commit.
//! * **Leases.** Each store instance has an owner id ([`PostgresStore::owner_id`]). Before a
//!   plan runs or resumes, [`SharedStore::acquire`] grants this instance a lease on it: owner, expiry
//!   (server clock, [`PostgresOptions::lease`] from now) and an epoch incremented at every
//!   grant. The run's heartbeat ([`Change::Heartbeat`]) renews the lease. Another process may
//!   take a plan over only once its lease expired, and taking over increments the epoch.
//! * **Fencing.** Every `apply` locks the plan's row and checks, in the same transaction, that
//!   the writer still holds the lease at the epoch it was granted. A process that lost its lease
//!   (paused, partitioned, too slow to heartbeat) gets [`StoreError::Locked`] for every later
//!   write of that plan, so its run aborts and writes nothing more. A process that holds no
//!   lease on a plan may change it only while nobody holds a live lease.
//! * **Claiming.** [`SharedStore::claim_runnable`] takes, with `FOR UPDATE SKIP LOCKED`, up to
//!   `limit` plans that are `Running` with an expired (or no) lease — their process died — or
//!   that a client asked to start ([`SharedStore::request_start`]) — orphans first, then oldest
//!   submitted first — and grants this instance their leases. The workstream's worker loop (`coercion::worker`) calls it.

mod codec;
mod notify;
mod page;
mod password;
mod reader;
mod schema;
mod tls;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use self::codec::{PreparedPlan, pg_error};
use self::writer::{Counters, Fence, Request, Shard, Write};
use super::{Change, ListFilter, PlanSummary, SharedStore, Store, StoreError, StoredControl};
use crate::plugin::BoxFuture;
use crate::storage::sql::Op;
use crate::workflow::{Plan, PlanId, Status};

/// Options of [`PostgresStore::connect_with`]; [`PostgresOptions::default()`] is what
/// [`PostgresStore::connect`] uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresOptions {
    schema: String,
    pool_size: usize,
    writers: usize,
    max_group: usize,
    lease: Duration,
    connect_timeout: Duration,
    migrate: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "public".to_owned(),
            pool_size: 8,
            writers: 2,
            max_group: 500,
            lease: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            migrate: true,
        }
    }
}

impl PostgresOptions {
    /// The PostgreSQL schema the store's tables live in (default `public`; created if missing).
    /// Lower-case letters, digits and `_`, not starting with a digit. Several independent
    /// stores can share one database in different schemas.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// How many connections serve reads and lease operations (default 8; at least 1).
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections.max(1);
        self
    }

    /// How many writer tasks (each with its own connection) group-commit writes (default 2; at
    /// least 1). One plan's writes always go to the same writer.
    pub fn writers(mut self, writers: usize) -> Self {
        self.writers = writers.max(1);
        self
    }

    /// At most this many queued writes share one transaction (default 500; at least 1).
    pub fn max_group(mut self, writes: usize) -> Self {
        self.max_group = writes.max(1);
        self
    }

    /// How long a lease lasts without being renewed (default 30 s). The run's heartbeat
    /// renews it, so it must be several times the workstream's heartbeat interval
    /// ([`WorkstreamBuilder::heartbeat_interval`](crate::WorkstreamBuilder::heartbeat_interval),
    /// 5 s by default). It is also how long a dead process's plans wait before another process
    /// takes them over.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long connecting to the server may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether connecting creates the schema and brings it to this build's version (default
    /// `true`). Tools that only look — the `coercion` CLI and its web UI — pass `false`:
    /// connecting then changes nothing in the database, and fails naming the schema when it
    /// holds no coercion store or one of another version.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }
}

/// Plans in a PostgreSQL database, shared by several processes. Cloning gives another handle to
/// the same store instance (same owner id, same leases); connections close when the last handle
/// is dropped.
///
/// ```no_run
/// use coercion::prelude::*;
/// use coercion::storage::{PostgresOptions, PostgresStore};
/// use coercion::worker::WorkerOptions;
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // TLS as libpq's sslmode and sslrootcert say.
/// let url = "postgres://coercion@db.internal/ops?sslmode=verify-full&sslrootcert=/etc/ssl/ops-ca.pem";
/// let store = PostgresStore::connect_with(url, PostgresOptions::default()).await?;
/// let ws = Workstream::builder()
///     .store(store)
///     .registry(Registry::from_inventory()?)
///     .build()
///     .await?;
/// // Takes over the plans whose process died (their lease expired), then the plans clients
/// // hand to any worker.
/// let worker = ws.spawn_worker(WorkerOptions::default())?;
/// # let _ = worker; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<str>,
    pool: deadpool_postgres::Pool,
    /// How many of the pool's connections serve reads ([`PostgresOptions::pool_size`]; the
    /// rest are the writers').
    read_slots: usize,
    owner: Uuid,
    lease: Duration,
    /// The epoch of every lease this instance was granted and has not released, and whether
    /// it was found lost (a write fenced off): a lost lease still fences this instance's writes
    /// at its old epoch, so they stay refused.
    leases: Mutex<HashMap<PlanId, (i64, bool)>>,
    shards: Vec<mpsc::UnboundedSender<Request>>,
    counters: Arc<Counters>,
    schema: Arc<str>,
    /// How to connect the listener of [`Store::changes`].
    listener: (
        tokio_postgres::Config,
        tokio_postgres_rustls::MakeRustlsConnect,
    ),
    /// The notices of changed plans, once something asked for them: the channel, the task
    /// that listens (on the runtime of the caller that started it), and the guard that stops
    /// it with the store.
    notices: parking_lot::Mutex<Option<Listener>>,
}

/// The task that listens for notices, and what it sends them to.
struct Listener {
    sender: tokio::sync::broadcast::Sender<super::Changed>,
    task: tokio::task::JoinHandle<()>,
    _stop: tokio_util::sync::DropGuard,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or a
    /// `key=value` connection string) with default options, and creates or migrates the schema.
    ///
    /// TLS follows libpq's `sslmode` and `sslrootcert` in the URL: `prefer` (the default)
    /// encrypts when the server offers TLS, `require` always does, `verify-ca` also checks that
    /// the server's certificate comes from a CA of `sslrootcert` (a PEM file, or `system`),
    /// `verify-full` also that it was issued for the host name (with `hostaddr=` to connect to
    /// an address while checking the name), and `disable` never encrypts. Without
    /// `sslrootcert`, the verifying modes read `~/.postgresql/root.crt`.
    ///
    /// Must be called inside a tokio runtime, which then runs the store's connections.
    /// Fails with [`StoreError::Transient`] if the server cannot be reached, and with
    /// [`StoreError::Permanent`] for a bad URL, a schema of another application, or one written
    /// by a newer coercion.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect_with(url, PostgresOptions::default()).await
    }

    /// [`connect`](Self::connect) with `options`.
    pub async fn connect_with(
        url: &str,
        options: PostgresOptions,
    ) -> Result<PostgresStore, StoreError> {
        let (url, tls) = tls::split(url)?;
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| StoreError::permanent("postgres: bad connection URL").caused_by(e))?;
        let passwords = password::Sources::of_process();
        let password = password::fill(&mut config, &passwords)?;
        let schema = &options.schema;
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && !schema.starts_with(|c: char| c.is_ascii_digit())
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(StoreError::permanent(format!(
                "postgres: schema name {schema:?} must be lower-case letters, digits and `_`, not starting with a digit"
            )));
        }
        let store: Arc<str> = describe_config(&config, schema).into();
        config
            .options(format!("-c search_path={schema}"))
            .application_name("coercion")
            .connect_timeout(options.connect_timeout);
        let tls = tls::connector(&tls)?;
        let listener = (config.clone(), tls.clone());
        let manager = deadpool_postgres::Manager::from_config(
            config,
            tls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(options.pool_size + options.writers)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| {
                StoreError::permanent(format!("{store}: cannot build the pool")).caused_by(e)
            })?;
        {
            let mut conn = get(&pool, &store)
                .await
                .map_err(|e| password::explain(e, &password, &passwords))?;
            if options.migrate {
                schema::migrate(&mut conn, &store, schema).await?;
            } else {
                schema::check(&conn, &store, schema).await?;
            }
        }
        let counters = Arc::new(Counters::default());
        let shards = (0..options.writers)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let shard = Shard {
                    pool: pool.clone(),
                    store: store.clone(),
                    schema: schema.as_str().into(),
                    counters: counters.clone(),
                    max_group: options.max_group,
                    lease: options.lease,
                };
                tokio::spawn(shard.run(rx));
                tx
            })
            .collect();
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                store,
                read_slots: options.pool_size,
                pool,
                owner: Uuid::now_v7(),
                lease: options.lease,
                leases: Mutex::new(HashMap::new()),
                shards,
                counters,
                schema: schema.as_str().into(),
                listener,
                notices: parking_lot::Mutex::new(None),
            }),
        })
    }

    /// The id this store instance holds leases under (one per [`connect`](Self::connect)).
    pub fn owner_id(&self) -> Uuid {
        self.inner.owner
    }

    /// How many writes were refused because this instance had lost the plan's lease (or never
    /// held it while another process did).
    pub fn fenced_writes(&self) -> u64 {
        self.inner.counters.fenced_writes.load(Ordering::Relaxed)
    }

    /// How many transactions the writers committed; with group commit, fewer than writes.
    pub fn commits(&self) -> u64 {
        self.inner.counters.group.commits.load(Ordering::Relaxed)
    }

    /// The ids of the plans this instance holds a lease on: granted, not released, and not
    /// found lost (a write fenced off because another process took the plan over drops it).
    pub fn leased_plans(&self) -> Vec<PlanId> {
        self.inner
            .leases
            .lock()
            .iter()
            .filter(|(_, (_, lost))| !lost)
            .map(|(id, _)| *id)
            .collect()
    }

    fn fence(&self, id: PlanId) -> Fence {
        match self.inner.leases.lock().get(&id) {
            Some(&(epoch, _)) => Fence::Lease {
                owner: self.inner.owner,
                epoch,
            },
            None => Fence::Unleased,
        }
    }

    /// Queues a write now (so writes run in call order) and returns a future of its result.
    fn enqueue(
        &self,
        id: PlanId,
        make: impl FnOnce() -> Result<Write, StoreError>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let write = match make() {
            Ok(w) => w,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let shards = &self.inner.shards;
        let shard = &shards[(id.0.as_u128() % shards.len() as u128) as usize];
        let (reply, result) = oneshot::channel();
        let gone =
            StoreError::permanent(format!("{}: the writer task has stopped", self.inner.store));
        if shard.send(Request { write, reply }).is_err() {
            return Box::pin(async move { Err(gone) });
        }
        Box::pin(async move { result.await.unwrap_or(Err(gone)) })
    }

    fn lease_secs(&self) -> f64 {
        self.inner.lease.as_secs_f64()
    }

    async fn acquire_lease(&self, id: PlanId) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let conn = get(&self.inner.pool, store).await?;
        let err = |e: tokio_postgres::Error| pg_error(store, &format!("leasing plan {id}"), e);
        let stmt = conn
            .prepare_cached(
                "UPDATE plans SET lease_owner = $2, \
                 lease_epoch = CASE WHEN lease_owner = $2 AND lease_expires >= now() \
                   THEN lease_epoch ELSE lease_epoch + 1 END, \
                 lease_expires = now() + make_interval(secs => $3) \
                 WHERE id = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires IS NULL \
                 OR lease_expires < now()) RETURNING lease_epoch",
            )
            .await
            .map_err(err)?;
        let row = conn
            .query_opt(&stmt, &[&id.0, &self.inner.owner, &self.lease_secs()])
            .await
            .map_err(err)?;
        if let Some(row) = row {
            self.inner.leases.lock().insert(id, (row.get(0), false));
            return Ok(());
        }
        let row = conn
            .query_opt(
                "SELECT lease_owner, lease_expires::text, lease_epoch FROM plans WHERE id = $1",
                &[&id.0],
            )
            .await
            .map_err(err)?;
        match row {
            None => Err(StoreError::NotFound(id)),
            Some(r) => Err(StoreError::Locked(format!(
                "{store}: plan {id} is leased by process {} until {} (epoch {}); it runs there",
                r.get::<_, Option<Uuid>>(0)
                    .map(|o| o.to_string())
                    .unwrap_or_default(),
                r.get::<_, Option<String>>(1).unwrap_or_default(),
                r.get::<_, i64>(2)
            ))),
        }
    }

    async fn release_lease(&self, id: PlanId) -> Result<(), StoreError> {
        let Some((epoch, _)) = self.inner.leases.lock().remove(&id) else {
            return Ok(());
        };
        let store = &self.inner.store;
        let conn = get(&self.inner.pool, store).await?;
        let err = |e: tokio_postgres::Error| pg_error(store, &format!("releasing plan {id}"), e);
        let n = conn
            .execute(
                "UPDATE plans SET lease_owner = NULL, lease_expires = NULL, start_requested = FALSE \
                 WHERE id = $1 AND lease_owner = $2 AND lease_epoch = $3",
                &[&id.0, &self.inner.owner, &epoch],
            )
            .await
            .map_err(err)?;
        if n == 0 {
            tracing::debug!(plan = %id, "lease already taken over; nothing to release");
        }
        Ok(())
    }

    /// Claims up to `limit` runnable plans; with `plugins`, only plans that call no other
    /// plugin (plans of an older schema, whose plugins are not recorded, are claimed anyway).
    async fn claim(
        &self,
        limit: usize,
        plugins: Option<&[String]>,
    ) -> Result<Vec<PlanId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let store = &self.inner.store;
        let conn = get(&self.inner.pool, store).await?;
        let err = |e: tokio_postgres::Error| pg_error(store, "claiming runnable plans", e);
        let stmt = conn
            .prepare_cached(
                "WITH c AS ( \
                   SELECT id FROM plans \
                   WHERE (status = 'Running' OR (status = 'NotStarted' AND start_requested)) \
                     AND (lease_owner IS NULL OR lease_expires IS NULL OR lease_expires < now()) \
                     AND ($4::text[] IS NULL OR plugins IS NULL OR plugins <@ $4::text[]) \
                   ORDER BY status = 'Running' DESC, submit_time_ns NULLS LAST, id \
                   LIMIT $3 \
                   FOR UPDATE SKIP LOCKED) \
                 UPDATE plans p SET lease_owner = $1, lease_epoch = p.lease_epoch + 1, \
                   lease_expires = now() + make_interval(secs => $2) \
                 FROM c WHERE p.id = c.id \
                 RETURNING p.id, p.lease_epoch",
            )
            .await
            .map_err(err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = conn
            .query(
                &stmt,
                &[&self.inner.owner, &self.lease_secs(), &limit, &plugins],
            )
            .await
            .map_err(err)?;
        let mut leases = self.inner.leases.lock();
        Ok(rows
            .iter()
            .map(|r| {
                let id = PlanId(r.get(0));
                leases.insert(id, (r.get(1), false));
                id
            })
            .collect())
    }

    async fn mark_start_requested(&self, id: PlanId) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let conn = get(&self.inner.pool, store).await?;
        let err = |e: tokio_postgres::Error| {
            pg_error(store, &format!("requesting a start of plan {id}"), e)
        };
        let n = conn
            .execute(
                "UPDATE plans SET start_requested = TRUE WHERE id = $1 AND status = 'NotStarted'",
                &[&id.0],
            )
            .await
            .map_err(err)?;
        if n == 1 {
            return Ok(());
        }
        let row = conn
            .query_opt("SELECT status FROM plans WHERE id = $1", &[&id.0])
            .await
            .map_err(err)?;
        match row {
            None => Err(StoreError::NotFound(id)),
            Some(r) => Err(StoreError::permanent(format!(
                "{store}: plan {id} cannot be started: it is {}",
                r.get::<_, &str>(0)
            ))),
        }
    }
}

impl PostgresStore {
    async fn insert_control(&self, id: PlanId, request: &str) -> Result<i64, StoreError> {
        let store = &self.inner.store;
        let mut conn = get(&self.inner.pool, store).await?;
        let err = |e: tokio_postgres::Error| {
            pg_error(
                store,
                &format!("sending a control request for plan {id}"),
                e,
            )
        };
        let tx = conn.transaction().await.map_err(err)?;
        let status: String = match tx
            .query_opt("SELECT status FROM plans WHERE id = $1", &[&id.0])
            .await
            .map_err(err)?
        {
            None => return Err(StoreError::NotFound(id)),
            Some(row) => row.get(0),
        };
        if Status::from_str(&status).is_ok_and(Status::is_terminal) {
            return Err(StoreError::permanent(format!(
                "plan {id} has ended ({status}): only a plan that has not ended can be stopped, paused, resumed or decided"
            )));
        }
        let number: i64 = tx
            .query_one(
                "INSERT INTO control_requests (plan_id, request) VALUES ($1, $2) RETURNING id",
                &[&id.0, &request],
            )
            .await
            .map_err(err)?
            .get(0);
        tx.commit().await.map_err(err)?;
        self.tell_control(&conn, id).await;
        Ok(number)
    }

    /// Tells listeners that a control request of plan `id` was sent or answered, after its
    /// transaction committed (a notice that fails loses nothing: the workers and the client
    /// read again within a second).
    async fn tell_control(&self, conn: &deadpool_postgres::Object, id: PlanId) {
        let told = notify::control_payload(&self.inner.schema, id);
        if let Err(e) = conn
            .execute("SELECT pg_notify($1, $2)", &[&notify::CHANNEL, &told])
            .await
        {
            tracing::warn!(store = %self.inner.store, plan = %id, error = %e, "telling listeners of a control request failed");
        }
    }

    async fn select_pending_controls(
        &self,
        plans: &[PlanId],
    ) -> Result<Vec<StoredControl>, StoreError> {
        let store = &self.inner.store;
        let conn = get(&self.inner.pool, store).await?;
        let ids: Vec<Uuid> = plans.iter().map(|p| p.0).collect();
        // A request of a plan that ended is left a few seconds to the process that held it (a
        // stop ends the plan it asked for, and the answer follows).
        let rows = conn
            .query(
                "SELECT c.id, c.plan_id, c.request, c.requested_by, \
                   p.status IN ('Completed', 'Failed', 'Stopped') \
                 FROM control_requests c JOIN plans p ON p.id = c.plan_id \
                 WHERE c.answered_at IS NULL AND (c.plan_id = ANY($1) \
                   OR (p.status IN ('Completed', 'Failed', 'Stopped') \
                       AND c.requested_at < now() - interval '5 seconds')) \
                 ORDER BY c.id",
                &[&ids],
            )
            .await
            .map_err(|e| pg_error(store, "reading control requests", e))?;
        Ok(rows
            .iter()
            .map(|r| StoredControl {
                id: r.get(0),
                plan: PlanId(r.get(1)),
                request: r.get(2),
                requested_by: r.get(3),
                plan_ended: r.get(4),
            })
            .collect())
    }

    async fn record_answer(&self, request: &StoredControl, answer: &str) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let id = request.plan;
        let mut conn = get(&self.inner.pool, store).await?;
        let err = |e: tokio_postgres::Error| {
            pg_error(
                store,
                &format!("answering control request {} of plan {id}", request.id),
                e,
            )
        };
        let tx = conn.transaction().await.map_err(err)?;
        let answered = tx
            .execute(
                "UPDATE control_requests c SET answered_at = now(), answered_by = $3, answer = $2 \
                 FROM plans p WHERE c.id = $1 AND c.answered_at IS NULL AND p.id = c.plan_id \
                 AND ((p.lease_owner = $3 AND p.lease_expires > now()) \
                      OR p.status IN ('Completed', 'Failed', 'Stopped'))",
                &[&request.id, &answer, &self.inner.owner],
            )
            .await
            .map_err(err)?;
        if answered == 0 {
            return Err(StoreError::Locked(format!(
                "{store}: control request {} of plan {id} is answered already, or this process no longer holds the plan's lease",
                request.id
            )));
        }
        tx.commit().await.map_err(err)?;
        self.tell_control(&conn, id).await;
        Ok(())
    }

    async fn select_answer(&self, request: i64) -> Result<Option<String>, StoreError> {
        let store = &self.inner.store;
        let conn = get(&self.inner.pool, store).await?;
        let row = conn
            .query_opt(
                "SELECT answer FROM control_requests WHERE id = $1",
                &[&request],
            )
            .await
            .map_err(|e| pg_error(store, &format!("reading control request {request}"), e))?;
        match row {
            Some(r) => Ok(r.get(0)),
            None => Err(StoreError::permanent(format!(
                "{store}: there is no control request {request}"
            ))),
        }
    }
}

async fn get(
    pool: &deadpool_postgres::Pool,
    store: &str,
) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(store, "connecting", e),
        other => {
            StoreError::transient(format!("{store}: cannot get a connection")).caused_by(other)
        }
    })
}

/// `postgres://user@host:port/database (schema s)`, without the password.
fn describe_config(config: &tokio_postgres::Config, schema: &str) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or("");
    format!("postgres://{user}{host}:{port}/{db} (schema {schema})")
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("store", &self.inner.store)
            .field("owner", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

impl Store for PostgresStore {
    fn create<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Result<(), StoreError>> {
        self.enqueue(plan.id, || {
            Ok(Write::Create(Box::new(PreparedPlan::of(plan)?)))
        })
    }

    fn apply<'a>(
        &'a self,
        id: PlanId,
        changes: &'a [Change],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let fence = self.fence(id);
        let written = self.enqueue(id, || {
            Ok(Write::Apply {
                id,
                ops: changes
                    .iter()
                    .map(|c| Op::of(id, c))
                    .collect::<Result<_, _>>()?,
                fence,
            })
        });
        let inner = self.inner.clone();
        Box::pin(async move {
            let result = written.await;
            // Fenced off: the plan is another process's now; stop listing its lease here
            // (unless it was leased again meanwhile, at a new epoch), but keep fencing with it.
            if let (Err(StoreError::Locked(_)), Fence::Lease { epoch, .. }) = (&result, fence)
                && let Some(entry) = inner.leases.lock().get_mut(&id)
                && entry.0 == epoch
            {
                entry.1 = true;
            }
            result
        })
    }

    fn read(&self, id: PlanId) -> BoxFuture<'_, Result<Plan, StoreError>> {
        Box::pin(async move {
            let mut conn = get(&self.inner.pool, &self.inner.store).await?;
            reader::read_plan(&mut conn, &self.inner.store, id).await
        })
    }

    fn read_page(
        &self,
        id: PlanId,
        spec: crate::storage::PageSpec,
    ) -> BoxFuture<'_, Result<crate::storage::PlanPage, StoreError>> {
        Box::pin(async move {
            let mut conn = get(&self.inner.pool, &self.inner.store).await?;
            // A second connection if one is idle now, or can be opened within the readers'
            // share of the pool (never waited for: page reads holding one each must not wait
            // for each other's second; nor taken from the writers' room).
            let pool = &self.inner.pool;
            let now = deadpool_postgres::Timeouts {
                wait: Some(std::time::Duration::ZERO),
                ..pool.timeouts()
            };
            let status = pool.status();
            let second = if status.available > 0 || status.size < self.inner.read_slots {
                pool.timeout_get(&now).await.ok()
            } else {
                None
            };
            page::read_page(&mut conn, second, &self.inner.store, id, spec).await
        })
    }

    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> BoxFuture<'a, Result<Vec<PlanSummary>, StoreError>> {
        Box::pin(async move {
            let conn = get(&self.inner.pool, &self.inner.store).await?;
            reader::list_plans(&conn, &self.inner.store, filter).await
        })
    }

    fn count<'a>(&'a self, filter: &'a ListFilter) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let conn = get(&self.inner.pool, &self.inner.store).await?;
            reader::count_plans(&conn, &self.inner.store, filter).await
        })
    }

    fn delete(&self, id: PlanId) -> BoxFuture<'_, Result<(), StoreError>> {
        self.enqueue(id, || Ok(Write::Delete(id)))
    }

    fn describe(&self) -> String {
        self.inner.store.to_string()
    }

    fn shared(&self) -> Option<&dyn SharedStore> {
        Some(self)
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<super::Changed>> {
        // The listener runs on the runtime of the caller that starts it; when that runtime
        // has shut down (the task ended with it), the next caller starts it again on its own,
        // feeding the same channel: receivers from before hear nothing meanwhile, and are
        // told again from that call on.
        tokio::runtime::Handle::try_current().ok()?;
        let inner = &self.inner;
        let mut notices = inner.notices.lock();
        let sender = match notices.take() {
            Some(listener) if !listener.task.is_finished() => {
                let rx = listener.sender.subscribe();
                *notices = Some(listener);
                return Some(rx);
            }
            Some(stopped) => {
                tracing::debug!(store = %inner.store, "the listener for changed plans stopped with its runtime; listening again");
                stopped.sender.clone()
            }
            None => notify::channel(),
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = notify::start(
            inner.listener.0.clone(),
            inner.listener.1.clone(),
            inner.schema.clone(),
            inner.store.clone(),
            sender.clone(),
            cancel.clone(),
        );
        let rx = sender.subscribe();
        *notices = Some(Listener {
            sender,
            task,
            _stop: cancel.drop_guard(),
        });
        Some(rx)
    }
}

impl SharedStore for PostgresStore {
    fn acquire(&self, id: PlanId) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.acquire_lease(id))
    }

    fn release(&self, id: PlanId) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.release_lease(id))
    }

    fn lease(&self) -> Duration {
        self.inner.lease
    }

    fn lease_held(&self, id: PlanId) -> BoxFuture<'_, Result<Option<bool>, StoreError>> {
        Box::pin(async move {
            let store = &self.inner.store;
            let conn = get(&self.inner.pool, store).await?;
            let row = conn
                .query_opt(
                    "SELECT lease_owner IS NOT NULL AND lease_expires >= now() FROM plans WHERE id = $1",
                    &[&id.0],
                )
                .await
                .map_err(|e| pg_error(store, &format!("reading the lease of plan {id}"), e))?;
            match row {
                Some(r) => Ok(Some(r.get::<_, Option<bool>>(0).unwrap_or(false))),
                None => Err(StoreError::NotFound(id)),
            }
        })
    }

    fn lease_epoch(&self, id: PlanId) -> Option<u64> {
        let leases = self.inner.leases.lock();
        let &(epoch, _) = leases.get(&id)?;
        u64::try_from(epoch).ok()
    }

    fn claim_runnable(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PlanId>, StoreError>> {
        Box::pin(self.claim(limit, None))
    }

    fn claim_runnable_for<'a>(
        &'a self,
        limit: usize,
        plugins: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<PlanId>, StoreError>> {
        Box::pin(self.claim(limit, Some(plugins)))
    }

    fn request_start(&self, id: PlanId) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.mark_start_requested(id))
    }

    fn send_control<'a>(
        &'a self,
        id: PlanId,
        request: &'a str,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(self.insert_control(id, request))
    }

    fn pending_controls<'a>(
        &'a self,
        plans: &'a [PlanId],
    ) -> BoxFuture<'a, Result<Vec<StoredControl>, StoreError>> {
        Box::pin(self.select_pending_controls(plans))
    }

    fn answer_control<'a>(
        &'a self,
        request: &'a StoredControl,
        answer: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.record_answer(request, answer))
    }

    fn control_answer(&self, request: i64) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        Box::pin(self.select_answer(request))
    }
}

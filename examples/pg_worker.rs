//! A worker process of a PostgreSQL store: it claims plans that clients started (and plans whose
//! worker died) and runs them. Several of these share one database.
//!
//! ```text
//! cargo run --features postgres --example pg_worker -- --url postgres://user@host/db \
//!     [--schema public] [--id worker-1] [--lease-ms 30000] [--heartbeat-ms 5000] \
//!     [--poll-ms 1000] [--max-running 100] [--claim-batch 10]
//! ```
//!
//! Its one plugin, `pgtest/ledger`, records every attempt in the table `ledger` of the store's
//! schema (a row at the start of the attempt with the worker's id, its end time and whether it
//! succeeded at the end), sleeps, and fails its first `fail_first` attempts: the multi-process
//! tests (`tests/postgres_workers.rs`) read the ledger to prove that no action ran on two
//! workers at once and that no completed action ran again. The process prints `ready <id>
//! <owner>` once it claims plans, then every 200 ms `status fenced=<writes refused> leased=<n>`.

#![allow(dead_code)] // The tests include this file for its plugin and plans.

use std::time::Duration;

use coercion::prelude::*;
use coercion::storage::{PostgresOptions, PostgresStore};
use coercion::worker::WorkerOptions;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

/// What a ledger action does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LedgerReq {
    /// How long the attempt takes.
    pub sleep_ms: u64,
    /// How many first attempts fail.
    pub fail_first: u32,
}

/// What a successful ledger attempt returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LedgerResp {
    /// The worker that ran it.
    pub worker: String,
    /// Its row in the ledger.
    pub ledger_id: i64,
}

/// Records every attempt in `<schema>.ledger`.
#[coercion::plugin(name = "pgtest/ledger", manual)]
pub struct Ledger {
    url: String,
    schema: String,
    worker: String,
    client: OnceCell<tokio_postgres::Client>,
}

impl Ledger {
    /// A ledger plugin of worker `worker` writing to `schema` of the database at `url`.
    pub fn new(url: &str, schema: &str, worker: &str) -> Ledger {
        Ledger {
            url: url.to_owned(),
            schema: schema.to_owned(),
            worker: worker.to_owned(),
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&tokio_postgres::Client, PluginError> {
        self.client
            .get_or_try_init(|| connect(&self.url))
            .await
            .map_err(|e| PluginError::new(format!("ledger: {e}")))
    }
}

/// A client of the database at `url`, its connection driven by a task.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Creates the ledger table (and the schema) if missing.
pub async fn setup_ledger(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(4242); \
             CREATE SCHEMA IF NOT EXISTS {schema}; \
             CREATE TABLE IF NOT EXISTS {schema}.ledger ( \
               id BIGSERIAL PRIMARY KEY, plan_id UUID NOT NULL, action_id UUID NOT NULL, \
               attempt INTEGER NOT NULL, worker TEXT NOT NULL, \
               started TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), ended TIMESTAMPTZ, ok BOOLEAN); \
             COMMIT;"
        ))
        .await
}

impl Plugin for Ledger {
    type Request = LedgerReq;
    type Response = LedgerResp;

    async fn execute(&self, ctx: &Context, req: LedgerReq) -> Result<LedgerResp, PluginError> {
        let client = self.client().await?;
        let db = |e: tokio_postgres::Error| PluginError::new(format!("ledger: {e}"));
        let attempt = i32::try_from(ctx.attempt()).unwrap_or(i32::MAX);
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO {}.ledger (plan_id, action_id, attempt, worker) VALUES ($1, $2, $3, $4) RETURNING id",
                    self.schema
                ),
                &[&ctx.plan_id().0, &ctx.action_id(), &attempt, &self.worker],
            )
            .await
            .map_err(db)?;
        let id: i64 = row.get(0);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(req.sleep_ms)) => {}
            _ = ctx.cancellation().cancelled() => {}
        }
        let ok = ctx.attempt() > req.fail_first;
        client
            .execute(
                &format!(
                    "UPDATE {}.ledger SET ended = clock_timestamp(), ok = $2 WHERE id = $1",
                    self.schema
                ),
                &[&id, &ok],
            )
            .await
            .map_err(db)?;
        if ok {
            Ok(LedgerResp {
                worker: self.worker.clone(),
                ledger_id: id,
            })
        } else {
            Err(PluginError::new(format!(
                "planned failure of attempt {}",
                ctx.attempt()
            )))
        }
    }
}

/// A plan of ledger actions: one block of `sequences` sequences (`concurrency` at a time) of
/// `actions` actions each; `seed` varies sleeps and which actions fail first (and are retried).
pub fn ledger_plan(
    name: &str,
    sequences: usize,
    actions: usize,
    concurrency: usize,
    sleep_ms: u64,
    seed: u64,
) -> Plan {
    let mut rng = fastrand::Rng::with_seed(seed);
    Plan::builder(name)
        .block(
            Block::builder("block")
                .concurrency(concurrency)
                .sequences((0..sequences).map(|s| {
                    Sequence::builder(format!("seq-{s}")).actions(
                        (0..actions)
                            .map(|a| {
                                let fail_first = if sleep_ms > 0 && rng.u8(0..4) == 0 {
                                    rng.u32(1..3)
                                } else {
                                    0
                                };
                                let sleep = if sleep_ms > 0 {
                                    sleep_ms / 2 + rng.u64(0..=sleep_ms)
                                } else {
                                    0
                                };
                                ActionSpec::new::<Ledger>(
                                    format!("action-{a}"),
                                    LedgerReq {
                                        sleep_ms: sleep,
                                        fail_first,
                                    },
                                )
                                .retries(3)
                            })
                            .collect::<Vec<_>>(),
                    )
                })),
        )
        .build()
}

/// A plan of one sequence of `actions` ledger actions of `sleep_ms` each, run one after the
/// other, none failing.
pub fn sequential_plan(name: &str, actions: usize, sleep_ms: u64) -> Plan {
    Plan::builder(name)
        .block(
            Block::builder("block").sequence(
                Sequence::builder("seq").actions(
                    (0..actions)
                        .map(|a| {
                            ActionSpec::new::<Ledger>(
                                format!("action-{a}"),
                                LedgerReq {
                                    sleep_ms,
                                    fail_first: 0,
                                },
                            )
                        })
                        .collect::<Vec<_>>(),
                ),
            ),
        )
        .build()
}

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerArgs {
    /// The database.
    pub url: String,
    /// The store's schema.
    pub schema: String,
    /// The worker's name (in the ledger).
    pub id: String,
    /// Lease duration.
    pub lease: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Poll interval.
    pub poll: Duration,
    /// At most this many running plans.
    pub max_running: usize,
    /// At most this many plans claimed per poll.
    pub claim_batch: usize,
}

impl WorkerArgs {
    /// Parses `--url … --schema …` (see the module docs).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<WorkerArgs, String> {
        let mut out = WorkerArgs {
            url: std::env::var("COERCION_PG_URL").unwrap_or_default(),
            schema: "public".to_owned(),
            id: format!("worker-{}", std::process::id()),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            max_running: 100,
            claim_batch: 10,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            let ms = |v: String| {
                v.parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|e| format!("{e}"))
            };
            match flag.as_str() {
                "--url" => out.url = value()?,
                "--schema" => out.schema = value()?,
                "--id" => out.id = value()?,
                "--lease-ms" => out.lease = ms(value()?)?,
                "--heartbeat-ms" => out.heartbeat = ms(value()?)?,
                "--poll-ms" => out.poll = ms(value()?)?,
                "--max-running" => {
                    out.max_running = value()?.parse().map_err(|e| format!("{e}"))?
                }
                "--claim-batch" => {
                    out.claim_batch = value()?.parse().map_err(|e| format!("{e}"))?
                }
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if out.url.is_empty() {
            return Err("--url (or COERCION_PG_URL) is required".to_owned());
        }
        Ok(out)
    }

    /// The arguments that [`parse`](Self::parse) reads back.
    pub fn to_args(&self) -> Vec<String> {
        let ms = |d: Duration| d.as_millis().to_string();
        [
            ("--url", self.url.clone()),
            ("--schema", self.schema.clone()),
            ("--id", self.id.clone()),
            ("--lease-ms", ms(self.lease)),
            ("--heartbeat-ms", ms(self.heartbeat)),
            ("--poll-ms", ms(self.poll)),
            ("--max-running", self.max_running.to_string()),
            ("--claim-batch", self.claim_batch.to_string()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect()
    }
}

/// The store a worker or a client of `args` uses.
pub async fn open_store(args: &WorkerArgs) -> Result<PostgresStore, coercion::StoreError> {
    PostgresStore::connect_with(
        &args.url,
        PostgresOptions::default()
            .schema(&args.schema)
            .lease(args.lease),
    )
    .await
}

/// Runs a worker until the process is killed or gets Ctrl-C.
pub async fn run_worker(args: WorkerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let store = open_store(&args).await?;
    let ledger = connect(&args.url).await?;
    setup_ledger(&ledger, &args.schema).await?;
    let registry = Registry::new().with(Ledger::new(&args.url, &args.schema, &args.id))?;
    // The worker loop takes over plans whose worker died (their lease expired), within
    // max_running, before plans not started yet.
    let ws = Workstream::builder()
        .store(store.clone())
        .registry(registry)
        .heartbeat_interval(args.heartbeat)
        .build()
        .await?;
    let worker = ws.spawn_worker(
        WorkerOptions::default()
            .poll_interval(args.poll)
            .max_running(args.max_running)
            .claim_batch(args.claim_batch),
    )?;
    println!("ready {} {}", args.id, store.owner_id());
    let status = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            println!(
                "status fenced={} leased={}",
                store.fenced_writes(),
                store.leased_plans().len()
            );
        }
    };
    tokio::select! {
        _ = status => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    worker.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = match WorkerArgs::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pg_worker: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run_worker(args).await {
        eprintln!("pg_worker: {e}");
        std::process::exit(1);
    }
}

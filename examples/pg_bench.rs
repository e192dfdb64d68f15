//! The `durable` benchmark workload on PostgreSQL: 1 block, 1,000 sequences × 10 no-op actions,
//! concurrency 100, every state change committed (group-committed) before the next step.
//!
//! ```text
//! scripts/with-postgres.sh cargo run --release --features postgres --example pg_bench -- [--runs N] [--writers N]
//! ```
//!
//! Each run uses a fresh schema of the database at `COERCION_PG_URL` and prints one JSON line
//! `{"workload":"durable","store":"postgres","actions","wall_s","actions_per_s","peak_rss_bytes",...}`.

use std::time::Instant;

use coercion::prelude::*;
use coercion::storage::{PostgresOptions, PostgresStore};
use serde::{Deserialize, Serialize};

/// Does nothing: the engine's and the store's cost is what is measured.
#[coercion::plugin(name = "bench/noop")]
#[derive(Default)]
struct Noop;

#[derive(Serialize, Deserialize)]
struct NoopReq;

impl Plugin for Noop {
    type Request = NoopReq;
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: NoopReq) -> Result<(), PluginError> {
        Ok(())
    }
}

fn noop_plan(sequences: usize, actions: usize, concurrency: usize) -> Plan {
    Plan::builder("bench")
        .block(
            Block::builder("block")
                .concurrency(concurrency)
                .sequences((0..sequences).map(|s| {
                    Sequence::builder(format!("seq-{s}")).actions(
                        (0..actions)
                            .map(|a| ActionSpec::new::<Noop>(format!("action-{a}"), NoopReq)),
                    )
                })),
        )
        .build()
}

/// Peak resident set size of this process, from /proc (Linux).
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
        * 1024
}

async fn run(url: &str, writers: usize) -> Result<(usize, f64, u64), Box<dyn std::error::Error>> {
    let schema = format!("bench_{}", PlanId::new_v7().0.simple());
    let store = PostgresStore::connect_with(
        url,
        PostgresOptions::default().schema(&schema).writers(writers),
    )
    .await?;
    let registry = Registry::new().with(Noop)?;
    let ws = Workstream::builder()
        .store(store.clone())
        .registry(registry)
        .build()
        .await?;
    let plan = noop_plan(1_000, 10, 100);
    let actions = plan.action_count();
    let t = Instant::now();
    let done = ws.run(plan).await?;
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(done.status(), Status::Completed, "{done}");
    Ok((actions, wall, store.commits()))
}

fn main() {
    let mut runs = 1;
    let mut writers = 2;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut number = || args.next().and_then(|v| v.parse::<usize>().ok());
        match a.as_str() {
            "--runs" => runs = number().unwrap_or_else(|| usage("--runs takes a number")),
            "--writers" => writers = number().unwrap_or_else(|| usage("--writers takes a number")),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let url = std::env::var("COERCION_PG_URL").unwrap_or_else(|_| {
        usage("COERCION_PG_URL is not set (run through scripts/with-postgres.sh)")
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for _ in 0..runs {
        let (actions, wall, commits) = rt.block_on(run(&url, writers)).unwrap_or_else(|e| {
            eprintln!("pg_bench: {e}");
            std::process::exit(1)
        });
        println!(
            "{}",
            serde_json::json!({
                "workload": "durable", "store": "postgres", "actions": actions, "wall_s": wall,
                "actions_per_s": actions as f64 / wall, "peak_rss_bytes": peak_rss_bytes(),
                "writers": writers, "commits": commits,
            })
        );
    }
}

fn usage(message: &str) -> ! {
    eprintln!("pg_bench: {message}\nusage: pg_bench [--runs N] [--writers N]");
    std::process::exit(2)
}

//! The `durable` benchmark workload on PostgreSQL: 1 block, 1,000 sequences × 10 no-op actions,
//! concurrency 100, every state change committed (group-committed) before the next step.
//!
//! ```text
//! scripts/with-postgres.sh cargo run --release --features postgres --example pg_bench -- [--runs N] [--writers N]
//! ```
//!
//! Each run uses a fresh schema of the database at `COERCION_PG_URL` and prints one JSON line
//! `{"workload":"durable","store":"postgres","actions","wall_s","actions_per_s","peak_rss_bytes",...}`.
//!
//! `--workers 1,2,3` measures the same kind of work spread over worker processes instead: a
//! client-only process submits 30 plans (`--plans`) of 100 sequences × 10 no-op actions
//! (concurrency 10 each: 30,000 actions), starts as many processes of this program as asked
//! (`spawn_worker`, each running up to all the plans), starts every plan and times them from
//! the first start to the last plan ended. One JSON line per run,
//! `{"workload":"durable-workers","workers","plans","actions","wall_s","actions_per_s",...}`,
//! with `plans_per_worker`: how the plans were spread (from each plan's owner).
//!
//! `--page SEQUENCES` measures what the web UI's plan page reads: it submits a plan of
//! SEQUENCES × 10 no-op actions (not run), then a fresh process of this program reads its first
//! page (`Store::read_page`) three times and then the whole plan once, and prints
//! `{"workload":"page","actions","page_s":[…],"page_peak_rss_bytes","whole_s","whole_peak_rss_bytes"}`.

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coercion::prelude::*;
use coercion::storage::{PostgresOptions, PostgresStore};
use coercion::worker::WorkerOptions;
use coercion::{ListFilter, Store};
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

/// A worker process (this program with `--serve SCHEMA`): runs the plans it claims until its
/// standard input closes.
async fn serve(url: &str, schema: &str, writers: usize) -> Result<(), Box<dyn std::error::Error>> {
    let store = PostgresStore::connect_with(
        url,
        PostgresOptions::default().schema(schema).writers(writers),
    )
    .await?;
    let ws = Workstream::builder()
        .store(store)
        .registry(Registry::new().with(Noop)?)
        .build()
        .await?;
    let worker = ws.spawn_worker(
        WorkerOptions::default()
            .max_running(1_000)
            .poll_interval(Duration::from_millis(100)),
    )?;
    println!("ready");
    std::io::stdout().flush()?;
    // Until the benchmark closes our standard input (or dies).
    tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await?;
    worker.stop().await;
    Ok(())
}

/// One run of the multi-worker variant: `workers` processes share `plans` plans.
async fn run_workers(
    url: &str,
    workers: usize,
    plans: usize,
    writers: usize,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let schema = format!("bench_{}", PlanId::new_v7().0.simple());
    let store =
        PostgresStore::connect_with(url, PostgresOptions::default().schema(&schema)).await?;
    let ws = Workstream::builder()
        .store(store.clone())
        .registry(Registry::new().with(Noop)?)
        .client_only()
        .build()
        .await?;
    let mut ids = Vec::with_capacity(plans);
    let mut actions = 0;
    for _ in 0..plans {
        let plan = noop_plan(100, 10, 10);
        actions += plan.action_count();
        ids.push(ws.submit(plan).await?);
    }
    let exe = std::env::current_exe()?;
    let mut children: Vec<Child> = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut child = Command::new(&exe)
            .args(["--serve", &schema, "--writers", &writers.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err(format!("a worker did not start (said {line:?})").into());
        }
        children.push(child);
    }
    let t = Instant::now();
    for id in &ids {
        ws.start(*id).await?;
    }
    let filter = ListFilter::default();
    let ended = loop {
        let list = store.list(&filter).await?;
        if list.iter().all(|s| s.state.status.is_terminal()) && list.len() == plans {
            break list;
        }
        if t.elapsed() > Duration::from_secs(600) {
            return Err("the plans did not end within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let wall = t.elapsed().as_secs_f64();
    for mut child in children {
        drop(child.stdin.take());
        child.wait()?;
    }
    if let Some(s) = ended.iter().find(|s| s.state.status != Status::Completed) {
        return Err(format!("plan {} ended {}", s.id, s.state.status.as_str()).into());
    }
    let mut per_owner: std::collections::BTreeMap<String, usize> = Default::default();
    for s in &ended {
        let by = s.owner.as_ref().map_or("?", |o| o.by.as_str()).to_owned();
        *per_owner.entry(by).or_default() += 1;
    }
    let mut spread: Vec<usize> = per_owner.into_values().collect();
    // Workers that ran no plan.
    spread.resize(spread.len().max(workers), 0);
    Ok(serde_json::json!({
        "workload": "durable-workers", "store": "postgres", "workers": workers, "plans": plans,
        "actions": actions, "wall_s": wall, "actions_per_s": actions as f64 / wall,
        "plans_per_worker": spread, "writers": writers,
    }))
}

/// `--page`: submits a plan of `sequences` × 10 actions in a fresh schema; measures its reads
/// in a process of its own.
async fn page(url: &str, sequences: usize) -> Result<String, Box<dyn std::error::Error>> {
    let schema = format!("bench_{}", PlanId::new_v7().0.simple());
    let store =
        PostgresStore::connect_with(url, PostgresOptions::default().schema(&schema)).await?;
    let ws = Workstream::builder()
        .store(store.clone())
        .registry(Registry::new().with(Noop)?)
        .client_only()
        .build()
        .await?;
    let id = ws.submit(noop_plan(sequences, 10, 100)).await?;
    drop(ws);
    let out = Command::new(std::env::current_exe()?)
        .args(["--read-page", &schema, &id.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("the reading process failed: {}", out.status).into());
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// `--read-page SCHEMA ID`: the reads `--page` measures, in this fresh process.
async fn read_page(
    url: &str,
    schema: &str,
    id: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let store = PostgresStore::connect_with(url, PostgresOptions::default().schema(schema)).await?;
    let id: PlanId = id.parse()?;
    let mut page_s = Vec::new();
    let mut actions = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let page = store
            .read_page(id, coercion::storage::PageSpec::from(0))
            .await?;
        page_s.push(t.elapsed().as_secs_f64());
        actions = page.actions().total;
    }
    let page_peak = peak_rss_bytes();
    let t = Instant::now();
    let whole = store.read(id).await?;
    let whole_s = t.elapsed().as_secs_f64();
    assert_eq!(whole.action_count(), actions);
    Ok(serde_json::json!({
        "workload": "page", "store": "postgres", "actions": actions, "page_s": page_s,
        "page_peak_rss_bytes": page_peak, "whole_s": whole_s,
        "whole_peak_rss_bytes": peak_rss_bytes(),
    })
    .to_string())
}

fn main() {
    let mut runs = 1;
    let mut paged: Option<usize> = None;
    let mut reading: Option<(String, String)> = None;
    let mut writers = 2;
    let mut workers: Vec<usize> = Vec::new();
    let mut plans = 30;
    let mut serving: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut number = || args.next().and_then(|v| v.parse::<usize>().ok());
        match a.as_str() {
            "--runs" => runs = number().unwrap_or_else(|| usage("--runs takes a number")),
            "--writers" => writers = number().unwrap_or_else(|| usage("--writers takes a number")),
            "--plans" => {
                plans = number()
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| usage("--plans takes a number above 0"))
            }
            "--workers" => {
                workers = args
                    .next()
                    .and_then(|v| {
                        v.split(',')
                            .map(|n| n.parse::<usize>().ok().filter(|n| *n > 0))
                            .collect()
                    })
                    .unwrap_or_else(|| usage("--workers takes counts above 0, as 1,2,3"))
            }
            "--serve" => serving = args.next(),
            "--page" => {
                paged = Some(
                    number()
                        .filter(|n| *n > 0)
                        .unwrap_or_else(|| usage("--page takes a number of sequences above 0")),
                )
            }
            "--read-page" => {
                reading = args.next().zip(args.next());
            }
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
    let fail = |e: Box<dyn std::error::Error>| -> ! {
        eprintln!("pg_bench: {e}");
        std::process::exit(1)
    };
    if let Some((schema, id)) = reading {
        let line = rt
            .block_on(read_page(&url, &schema, &id))
            .unwrap_or_else(|e| fail(e));
        println!("{line}");
        return;
    }
    if let Some(sequences) = paged {
        for _ in 0..runs {
            let line = rt
                .block_on(page(&url, sequences))
                .unwrap_or_else(|e| fail(e));
            println!("{line}");
        }
        return;
    }
    if let Some(schema) = serving {
        rt.block_on(serve(&url, &schema, writers))
            .unwrap_or_else(|e| fail(e));
        return;
    }
    if !workers.is_empty() {
        for _ in 0..runs {
            for &n in &workers {
                let line = rt
                    .block_on(run_workers(&url, n, plans, writers))
                    .unwrap_or_else(|e| fail(e));
                println!("{line}");
            }
        }
        return;
    }
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
    eprintln!(
        "pg_bench: {message}\nusage: pg_bench [--runs N] [--writers N] [--workers N,N,... [--plans N] | --page SEQUENCES]"
    );
    std::process::exit(2)
}

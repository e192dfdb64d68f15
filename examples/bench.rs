//! Benchmarks that print numbers: one JSON line per run.
//!
//! ```text
//! cargo run --release --example bench -- engine [--json] [--runs N]
//! cargo run --release --example bench -- footprint [--json]
//! ```
//!
//! Workloads:
//! * `engine` — 1 block, 1,000 sequences × 10 no-op actions, concurrency 100, in memory.
//! * `footprint` — a 1,000,000-action plan (100,000 sequences × 10 no-op actions) held and run
//!   in memory; also prints `bytes_per_action` (peak RSS growth over the baseline per action).
//!
//! Each run prints `{"workload", "actions", "wall_s", "actions_per_s", "peak_rss_bytes", ...}`.

use std::time::Instant;

use coercion::prelude::*;
use serde::{Deserialize, Serialize};

/// Does nothing, as fast as possible: the engine's own cost is what is measured.
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
        .block(Block::builder("block").concurrency(concurrency).sequences((0..sequences).map(|s| {
            Sequence::builder(format!("seq-{s}"))
                .actions((0..actions).map(|a| ActionSpec::new::<Noop>(format!("action-{a}"), NoopReq)))
        })))
        .build()
}

/// Peak resident set size of this process, from /proc (Linux).
fn peak_rss_bytes() -> u64 {
    read_status_kib("VmHWM:") * 1024
}

fn current_rss_bytes() -> u64 {
    read_status_kib("VmRSS:") * 1024
}

fn read_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct Args {
    workload: String,
    json: bool,
    runs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let workload = args.next().ok_or("usage: bench <engine|footprint> [--json] [--runs N]")?;
    let mut out = Args { workload, json: false, runs: 1 };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => out.json = true,
            "--runs" => {
                out.runs = args.next().and_then(|v| v.parse().ok()).ok_or("--runs takes a number")?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(out)
}

async fn run_memory(plan: Plan) -> (usize, f64) {
    let registry = Registry::new().with(Noop).expect("one plugin");
    let ws = Workstream::in_memory(registry).await.expect("workstream");
    let actions = plan.action_count();
    let t = Instant::now();
    let done = ws.run(plan).await.expect("the plan runs");
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(done.status(), Status::Completed, "{done}");
    (actions, wall)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    for _ in 0..args.runs {
        let line = match args.workload.as_str() {
            "engine" => {
                let (actions, wall) = rt.block_on(run_memory(noop_plan(1_000, 10, 100)));
                serde_json::json!({
                    "workload": "engine", "store": "memory", "actions": actions, "wall_s": wall,
                    "actions_per_s": actions as f64 / wall, "peak_rss_bytes": peak_rss_bytes(),
                })
            }
            "footprint" => {
                let baseline = current_rss_bytes();
                let (actions, wall) = rt.block_on(run_memory(noop_plan(100_000, 10, 100)));
                let peak = peak_rss_bytes();
                serde_json::json!({
                    "workload": "footprint", "store": "memory", "actions": actions, "wall_s": wall,
                    "actions_per_s": actions as f64 / wall, "peak_rss_bytes": peak,
                    "bytes_per_action": (peak.saturating_sub(baseline)) as f64 / actions as f64,
                })
            }
            other => {
                eprintln!("bench: unknown workload {other:?} (engine, footprint)");
                std::process::exit(2);
            }
        };
        if args.json {
            println!("{line}");
        } else {
            println!("{}", serde_json::to_string_pretty(&line).expect("json"));
        }
    }
}

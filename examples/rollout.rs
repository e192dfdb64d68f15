//! The main job: a real rolling deploy on this machine, on the embedded SQLite store.
//!
//! ```text
//! cargo run --example rollout                      # 8 hosts, canary first, then the rest
//! cargo run --example rollout -- --fault-rate 0.3  # some hosts fail their health check
//! cargo run --example rollout -- --crash-after 3   # the process dies mid-run...
//! cargo run --example rollout                      # ...and the next run resumes the plan
//! ```
//!
//! Every "host" is a small HTTP service on a loopback port, started from this same binary. Per
//! host the plan writes the service's config, starts it, and waits until it answers its health
//! check; a canary block of one host goes first, then the rest with a concurrency limit and a
//! failure budget. Plan-level checks guard the whole rollout, and a deferred batch stops every
//! instance at the end, whatever happened. The plan is kept in `coercion.db` in the working
//! directory, so the CLI can show it afterwards.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use coercion::plugins::{
    Command, CommandReq, Condition, FileExists, FileExistsReq, FileKind, HttpCheck, HttpCheckReq,
    WaitForReq, WaitUntil, WriteFile, WriteFileReq,
};
use coercion::prelude::*;
use coercion::progress::Progress;
use futures_util::StreamExt as _;

/// A real rolling deploy on this machine: a canary host first, then the rest, a few at a time,
/// with a failure budget. Plans are kept in the SQLite file `--db`; run again after a crash to
/// resume.
#[derive(Parser, Debug)]
#[command(name = "rollout", args_conflicts_with_subcommands = true)]
struct Options {
    /// How many hosts to deploy to (the first one is the canary).
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = at_least::<2>)]
    hosts: usize,
    /// How many hosts of the second block are deployed at once.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = at_least::<1>)]
    concurrency: usize,
    /// The share of the second block's hosts that may fail, in percent (0-100).
    #[arg(long, default_value_t = 15, value_name = "PERCENT",
          value_parser = clap::value_parser!(u8).range(0..=100))]
    tolerance: u8,
    /// The probability that a host (never the canary) comes up broken (0..1).
    #[arg(long, default_value_t = 0.0, value_name = "0..1", value_parser = fraction)]
    fault_rate: f64,
    /// The seed of the random choice of broken hosts.
    #[arg(long, default_value_t = 1, value_name = "N")]
    seed: u64,
    /// Kill this process (SIGKILL) after that many hosts finished; run again to resume.
    #[arg(long, value_name = "SEQUENCES")]
    crash_after: Option<usize>,
    /// The SQLite file the plans are kept in.
    #[arg(long, default_value = "coercion.db", value_name = "PATH")]
    db: PathBuf,
    /// Where the hosts' configs, pid files and logs are written.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("coercion-rollout"), value_name = "PATH")]
    dir: PathBuf,
    #[command(subcommand)]
    instance: Option<Internal>,
}

/// What the plan starts: this same program as a host instance.
#[derive(Subcommand, Debug)]
enum Internal {
    /// A host instance (started by the plan, not by hand).
    #[command(name = "__instance", hide = true)]
    Instance(Instance),
}

#[derive(Args, Debug)]
struct Instance {
    #[arg(long)]
    port: u16,
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    pidfile: PathBuf,
}

/// A count of at least `MIN`.
fn at_least<const MIN: usize>(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= MIN => Ok(n),
        _ => Err(format!("{text:?} is not a whole number of at least {MIN}")),
    }
}

/// A probability, 0 to 1.
fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{text:?} is not a number from 0 to 1")),
    }
}

/// A free port on loopback, for a host instance.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The rollout plan: canary block, then the rest; per host write config → start → wait healthy.
fn rollout_plan(o: &Options, version: &str) -> Result<Plan, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut rng = fastrand::Rng::with_seed(o.seed);
    let hosts: Vec<(String, u16, bool)> = (0..o.hosts)
        .map(|i| {
            let port = free_port().map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
            // The canary is never faulty, so a fault shows up in the second block.
            let broken = i > 0 && rng.f64() < o.fault_rate;
            Ok((format!("host-{i:02}"), port, broken))
        })
        .collect::<Result<_, String>>()?;
    let dir = &o.dir;
    let quoted_exe = shell_quote(&exe)?;
    let host_sequence = |(name, port, broken): &(String, u16, bool)| -> Result<_, String> {
        let config = dir.join(format!("{name}.conf"));
        let pidfile = dir.join(format!("{name}.pid"));
        let log = dir.join(format!("{name}.log"));
        let start = format!(
            "{exe} __instance --port {port} --config {config} --pidfile {pidfile} >{log} 2>&1 &",
            exe = quoted_exe,
            config = shell_quote(&config)?,
            pidfile = shell_quote(&pidfile)?,
            log = shell_quote(&log)?,
        );
        let health = format!("http://127.0.0.1:{port}/health");
        Ok(Sequence::builder(name.clone())
            .descr(format!("deploy {version} to {name} on port {port}"))
            .action(
                ActionSpec::new::<WriteFile>(
                    "write config",
                    WriteFileReq::text(&config, format!("version={version}\nbroken={broken}\n"))
                        .mode(0o644),
                )
                .retries(1),
            )
            .action(ActionSpec::new::<Command>(
                "start instance",
                CommandReq::shell(start).keep_background(),
            ))
            .action(
                ActionSpec::new::<WaitUntil>(
                    "wait until healthy",
                    WaitForReq::new(Condition::Http(
                        HttpCheckReq::get(health).body_contains(format!("version={version}")),
                    ))
                    .interval(Duration::from_millis(50)),
                )
                .timeout(Duration::from_secs(3)),
            ))
    };
    let stop_all = format!(
        "for f in {dir}/*.pid; do [ -e \"$f\" ] && kill \"$(cat \"$f\")\" 2>/dev/null; rm -f \"$f\"; done; true",
        dir = shell_quote(dir)?
    );
    let canary_health = format!("http://127.0.0.1:{}/health", hosts[0].1);
    Ok(Plan::builder(format!("Roll out {version} to {} hosts", o.hosts))
        .descr("Writes each host's config, starts it and waits until it is healthy: a canary first, then the rest.")
        .pre_checks(
            Checks::builder()
                .action(CheckSpec::new::<FileExists>("release binary present", FileExistsReq::new(&exe).kind(FileKind::File)))
                .action(CheckSpec::new::<FileExists>("work directory present", FileExistsReq::new(dir).kind(FileKind::Dir))),
        )
        .block(
            Block::builder("canary")
                .descr("one host first: if it fails, nothing else is touched")
                .sequence(host_sequence(&hosts[0])?)
                .post_checks(Checks::builder().action(CheckSpec::new::<HttpCheck>(
                    "canary serves the new version",
                    HttpCheckReq::get(&canary_health).body_contains(format!("version={version}")),
                ))),
        )
        .block(
            Block::builder("rest")
                .descr("every other host, a few at a time")
                .concurrency(o.concurrency)
                .tolerated_failures(Tolerance::Percent(o.tolerance))
                .sequences(hosts[1..].iter().map(host_sequence).collect::<Result<Vec<_>, _>>()?),
        )
        .post_checks(Checks::builder().action(CheckSpec::new::<HttpCheck>(
            "canary still healthy",
            HttpCheckReq::get(&canary_health).body_contains(format!("version={version}")),
        )))
        .deferred(
            DeferredBatch::builder("stop every instance", When::Always)
                .descr("a demo leaves nothing running")
                .action(ActionSpec::new::<Command>("stop instances", CommandReq::shell(stop_all))),
        )
        .build())
}

/// `p` quoted for `sh`.
fn shell_quote(p: impl AsRef<Path>) -> Result<String, String> {
    let text = p
        .as_ref()
        .to_str()
        .ok_or_else(|| format!("{}: not UTF-8", p.as_ref().display()))?;
    shlex::try_quote(text)
        .map(|q| q.into_owned())
        .map_err(|e| format!("{text:?} cannot be quoted for the shell: {e}"))
}

/// Progress bars per block, fed by the plan's event stream.
async fn watch(
    ws: &Workstream,
    id: PlanId,
    crash_after: Option<usize>,
) -> Result<(), coercion::Error> {
    let mut events = ws.events(id).await?;
    // The stream starts with the plan as it is: the bars start from there.
    let Some(coercion::Event::Snapshot(plan)) = events.next().await else {
        return Ok(());
    };
    let progress = Progress::new(&plan);
    let mut finished = 0;
    while let Some(event) = events.next().await {
        for _ in progress.update(&event) {
            finished += 1;
            if crash_after == Some(finished) {
                progress.suspend(|| eprintln!("--crash-after {finished}: killing this process now (SIGKILL); run again to resume"));
                // Die like a real crash: no cleanup, no flush of anything but the store's commits.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
        }
    }
    progress.finish();
    Ok(())
}

/// A host instance: answers `GET /health` with `ok version=…` (500 when its config says broken).
fn run_instance(
    Instance {
        port,
        config,
        pidfile,
    }: Instance,
) -> Result<(), String> {
    let text =
        std::fs::read_to_string(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("")
            .to_owned()
    };
    let (version, broken) = (get("version="), get("broken=") == "true");
    let listener =
        TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("port {port}: {e}"))?;
    std::fs::write(&pidfile, std::process::id().to_string()).map_err(|e| e.to_string())?;
    // A watchdog, so an instance never outlives a demo that was killed and never resumed.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(600));
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        use std::io::{Read, Write};
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf);
        let (status, body) = if broken {
            (
                "500 Internal Server Error",
                format!("broken version={version}"),
            )
        } else {
            ("200 OK", format!("ok version={version}"))
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let mut options = Options::parse();
    if let Some(Internal::Instance(instance)) = options.instance.take() {
        if let Err(e) = run_instance(instance) {
            eprintln!("instance: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = run(options).await {
        eprintln!("rollout: {e}");
        std::process::exit(1);
    }
}

async fn run(o: Options) -> Result<(), String> {
    std::fs::create_dir_all(&o.dir)
        .map_err(|e| format!("cannot create {}: {e}", o.dir.display()))?;
    let db = std::path::absolute(&o.db).unwrap_or(o.db.clone());
    println!("plans are kept in {}", db.display());
    let registry = Registry::from_inventory().map_err(|e| e.to_string())?;
    // Opening the store resumes any plan a crashed run left behind.
    let ws = Workstream::open(&o.db, registry)
        .await
        .map_err(|e| e.to_string())?;
    let resumed = ws
        .list(&coercion::ListFilter::status(Status::Running))
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .next();
    let id = match resumed {
        Some(summary) => {
            println!(
                "resuming {:?} ({}), interrupted by a crash",
                summary.name, summary.id
            );
            summary.id
        }
        None => {
            let version = format!("v{}", chrono_like_stamp());
            let plan = rollout_plan(&o, &version)?;
            println!(
                "{} ({} hosts, concurrency {}, tolerance {}%)",
                plan.name(),
                o.hosts,
                o.concurrency,
                o.tolerance
            );
            // One write stores the plan already running: a crash right after leaves a plan
            // the next run resumes, never one that nobody starts.
            ws.submit_and_start(plan).await.map_err(|e| e.to_string())?
        }
    };
    watch(&ws, id, o.crash_after)
        .await
        .map_err(|e| e.to_string())?;
    let done = ws.wait(id).await.map_err(|e| e.to_string())?;
    println!();
    if done.status() == Status::Completed {
        // `Completed`, or `Completed with 2 failed` when hosts failed within the tolerance.
        println!("plan {} {}", done.id(), done.status_label());
    }
    if done.failure_counts().has_failures() || done.status() != Status::Completed {
        print!("{done}");
    }
    println!(
        "look at it:  cargo run -p coercion --features cli --bin coercion -- --db {} show {}",
        db.display(),
        done.id()
    );
    if done.status() != Status::Completed {
        std::process::exit(1);
    }
    Ok(())
}

/// Seconds since the epoch, as a version stamp.
fn chrono_like_stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

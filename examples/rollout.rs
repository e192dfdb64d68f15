//! The main job: a real rolling deploy on this machine, on the embedded SQLite store.
//!
//! ```text
//! cargo run --example rollout                      # 8 hosts, canary first, then the rest
//! cargo run --example rollout -- --fault-rate 0.3  # some hosts fail their health check
//! cargo run --example rollout -- --check --diff     # what a run would change, changing nothing
//! cargo run --example rollout -- --crash-after 3   # the process dies mid-run...
//! cargo run --example rollout                      # ...and the next run resumes the plan
//! scripts/ssh-hosts.sh --start                     # 20 real SSH hosts on 127.0.0.2…, prints DIR
//! cargo run --example rollout -- --inventory DIR/inventory.ini --ssh-config DIR/ssh_config
//! ```
//!
//! Every "host" is a small HTTP service on a loopback port, started from this same binary. Per
//! host the plan writes the service's config, starts it, and waits until it answers its health
//! check; a canary block of one host goes first, then rolling batches (`--serial`, Ansible's
//! `serial`) with a concurrency limit and a failure budget per batch.
//!
//! With `--inventory FILE` (an Ansible inventory, INI or YAML), the hosts are the inventory's,
//! reached over SSH (`--ssh-config FILE` is the `ssh -F` file; without it, `~/.ssh/config`). Per
//! host, this program and its config are uploaded to `coercion_dir/NAME` on the host (the host
//! variable `coercion_dir`, default `/tmp/coercion-rollout-ssh`), skipped when already there,
//! the instance is restarted listening on the host's address and port `http_port` (default
//! 18080), and this process waits until it answers its health check. Plan-level checks guard the whole rollout, and a deferred batch stops every
//! instance at the end, whatever happened. The plan is kept in `coercion.db` in the working
//! directory, so the CLI can show it afterwards.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use coercion::builder::{ChecksBuilder, SequenceBuilder};
use coercion::inventory::Inventory;
use coercion::plugins::ssh::{
    SshCheck, SshCommand, SshCommandReq, SshTarget, SshUpload, SshUploadReq,
};
use coercion::plugins::{
    Command, CommandReq, Condition, FileExists, FileExistsReq, FileKind, HttpCheck, HttpCheckReq,
    WaitForReq, WaitUntil, WriteFile, WriteFileReq,
};
use coercion::plugins::{Gate, GateReq};
use coercion::prelude::*;
use coercion::progress::Progress;
use coercion::rolling::{BatchSize, Rolling};
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
    /// An Ansible inventory (INI or YAML): deploy to its hosts over SSH instead of local ones.
    #[arg(long, value_name = "FILE", conflicts_with = "hosts")]
    inventory: Option<PathBuf>,
    /// The ssh_config file for the inventory's hosts (as `ssh -F FILE`).
    #[arg(long, value_name = "FILE", requires = "inventory")]
    ssh_config: Option<PathBuf>,
    /// Which of the inventory's hosts, as an Ansible host pattern (`web:&prod:!web-3`).
    #[arg(
        long,
        default_value = "all",
        value_name = "PATTERN",
        requires = "inventory"
    )]
    limit: String,
    /// The batch sizes, as Ansible's `serial`: counts, percentages and `rest`, the last one
    /// repeating until every host is placed.
    #[arg(
        long,
        default_value = "1,rest",
        value_name = "SIZES",
        value_delimiter = ','
    )]
    serial: Vec<BatchSize>,
    /// Leave the instances running at the end (by default a deferred batch stops them).
    #[arg(long)]
    keep_running: bool,
    /// How many hosts of a batch are deployed at once.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = at_least::<1>)]
    concurrency: usize,
    /// The share of a batch's hosts that may fail, in percent (0-100).
    #[arg(long, default_value_t = 15, value_name = "PERCENT",
          value_parser = clap::value_parser!(u8).range(0..=100))]
    tolerance: u8,
    /// The probability that a host (never the canary) comes up broken (0..1).
    #[arg(long, default_value_t = 0.0, value_name = "0..1", value_parser = fraction)]
    fault_rate: f64,
    /// The seed of the random choice of broken hosts.
    #[arg(long, default_value_t = 1, value_name = "N")]
    seed: u64,
    /// Show what the rollout would do and change nothing (as `ansible-playbook --check`): the
    /// pre-checks run, every step says whether it would change anything; nothing is stored.
    #[arg(long)]
    check: bool,
    /// With `--check`: show each change's diff (the hosts' config files).
    #[arg(long, requires = "check")]
    diff: bool,
    /// Wait for a person to approve the canary before the other batches: `coercion approve ID
    /// 'promote canary'` (or reject it, which rolls nothing further out).
    #[arg(long)]
    gate: bool,
    /// How long the gate waits for a decision before it fails the rollout.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = humantime::parse_duration, requires = "gate")]
    gate_timeout: Duration,
    /// The release to deploy (default: a timestamp). Deploying the same release again changes
    /// no config file.
    #[arg(long, value_name = "NAME")]
    release: Option<String>,
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
    /// The address to listen on: an IP address or a host name.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    #[arg(long)]
    port: u16,
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    pidfile: PathBuf,
}

/// The name of the canary's approval gate (`--gate`).
const GATE_NAME: &str = "promote canary";

/// The port an instance listens on over SSH, unless the host has `http_port`.
const DEFAULT_HTTP_PORT: u16 = 18080;
/// Where instances live on an SSH host, unless the host has `coercion_dir`.
const DEFAULT_REMOTE_DIR: &str = "/tmp/coercion-rollout-ssh";

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

/// One host of the rollout: its sequence, where its health is checked, how to clean it up.
struct HostPlan {
    sequence: SequenceBuilder,
    health: String,
    cleanup: Option<ActionSpec>,
}

/// The rollout plan: rolling batches (a canary first), per host deploy → start → wait healthy.
fn rollout_plan(o: &Options, version: &str) -> Result<Plan, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let (hosts, mut pre_checks, stop_all, over) = match &o.inventory {
        None => {
            let (hosts, stop_all) = local_hosts(o, &exe, version)?;
            let checks = Checks::builder().action(CheckSpec::new::<FileExists>(
                "work directory present",
                FileExistsReq::new(&o.dir).kind(FileKind::Dir),
            ));
            (hosts, checks, Some(stop_all), String::new())
        }
        Some(inventory) => {
            let (hosts, checks) = ssh_hosts(o, inventory, &exe, version)?;
            (hosts, checks, None, " over SSH".to_owned())
        }
    };
    pre_checks = pre_checks.action(CheckSpec::new::<FileExists>(
        "release binary present",
        FileExistsReq::new(&exe).kind(FileKind::File),
    ));
    let canary_health = hosts[0].health.clone();
    let mut plan = Plan::builder(format!("Roll out {version} to {} hosts{over}", hosts.len()))
        .descr("Deploys each host, starts it and waits until it is healthy: a canary first, then rolling batches.")
        .pre_checks(pre_checks);
    let mut cleanup = DeferredBatch::builder("stop every instance", When::Always)
        .descr("a demo leaves nothing running");
    if let Some(stop_all) = stop_all {
        cleanup = cleanup.action(stop_all);
    }
    let hosts_count = hosts.len();
    let mut sequences = Vec::with_capacity(hosts.len());
    for host in hosts {
        sequences.push(host.sequence);
        if let Some(action) = host.cleanup {
            cleanup = cleanup.action(action);
        }
    }
    let mut batches = Rolling::new("deploy", o.serial.clone())
        .descr("the same steps on every host, batch after batch; a failed batch stops the rest")
        .concurrency(o.concurrency)
        .tolerated_failures(Tolerance::Percent(o.tolerance))
        .sequences(sequences)
        .into_blocks();
    if o.gate && batches.len() < 2 {
        return Err(format!(
            "--gate holds the batches after the canary, but --serial {} makes one batch of {} hosts",
            o.serial
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            hosts_count
        ));
    }
    if o.gate
        && let Some(after_canary) = batches.get_mut(1)
    {
        // The batch after the canary waits for a person: a durable check of its own.
        let gate = CheckSpec::new::<Gate>(
            GATE_NAME,
            GateReq::new(format!(
                "The canary runs {version}: roll it out to the other hosts?"
            )),
        )
        .timeout(o.gate_timeout);
        *after_canary = after_canary
            .clone()
            .pre_checks(Checks::builder().action(gate));
    }
    plan = plan
        .blocks(batches)
        .post_checks(Checks::builder().action(CheckSpec::new::<HttpCheck>(
            "canary still healthy",
            HttpCheckReq::get(&canary_health).body_contains(format!("version={version}")),
        )));
    if !o.keep_running {
        plan = plan.deferred(cleanup);
    }
    Ok(plan.build())
}

/// Local hosts: instances of this program on loopback ports, configs in `--dir`.
fn local_hosts(
    o: &Options,
    exe: &Path,
    version: &str,
) -> Result<(Vec<HostPlan>, ActionSpec), String> {
    let mut rng = fastrand::Rng::with_seed(o.seed);
    let dir = &o.dir;
    let quoted_exe = shell_quote(exe)?;
    let hosts = (0..o.hosts)
        .map(|i| {
            let name = format!("host-{i:02}");
            let port = free_port().map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
            // The canary is never faulty, so a fault shows up in a later batch.
            let broken = i > 0 && rng.f64() < o.fault_rate;
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
            let sequence = Sequence::builder(name.clone())
                .descr(format!("deploy {version} to {name} on port {port}"))
                .action(
                    ActionSpec::new::<WriteFile>(
                        "write config",
                        WriteFileReq::text(&config, config_text(version, broken)).mode(0o644),
                    )
                    .retries(1),
                )
                .action(ActionSpec::new::<Command>(
                    "start instance",
                    CommandReq::shell(start).keep_background(),
                ))
                .action(wait_healthy(&health, version));
            Ok(HostPlan { sequence, health, cleanup: None })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let stop_all = format!(
        "for f in {dir}/*.pid; do [ -e \"$f\" ] && kill \"$(cat \"$f\")\" 2>/dev/null; rm -f \"$f\"; done; true",
        dir = shell_quote(dir)?
    );
    Ok((
        hosts,
        ActionSpec::new::<Command>("stop instances", CommandReq::shell(stop_all)),
    ))
}

/// The hosts of an Ansible inventory, reached over SSH: per host, this program and its config
/// are uploaded to a per-host directory, the instance is restarted there listening on the
/// host's address, and the health check reaches it from here.
fn ssh_hosts(
    o: &Options,
    inventory: &Path,
    exe: &Path,
    version: &str,
) -> Result<(Vec<HostPlan>, ChecksBuilder), String> {
    let inventory = Inventory::load(inventory).map_err(|e| e.to_string())?;
    let selected = inventory.select(&o.limit).map_err(|e| e.to_string())?;
    if selected.len() < 2 {
        return Err(format!(
            "{} host(s) of the inventory match {:?}; a rollout needs at least 2 (a canary and the rest)",
            selected.len(),
            o.limit
        ));
    }
    let mut rng = fastrand::Rng::with_seed(o.seed);
    let mut checks = Checks::builder();
    let mut hosts = Vec::with_capacity(selected.len());
    for (i, host) in selected.into_iter().enumerate() {
        let name = host.name();
        let target = SshTarget::from(host).config_opt(o.ssh_config.as_ref());
        let port: u16 = host
            .var("http_port")
            .map_err(|e| e.to_string())?
            .unwrap_or(DEFAULT_HTTP_PORT);
        let root: String = host
            .var("coercion_dir")
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| DEFAULT_REMOTE_DIR.to_owned());
        let dir = Path::new(&root).join(name);
        let broken = i > 0 && rng.f64() < o.fault_rate;
        let q = |p: &Path| shell_quote(p);
        let restart = format!(
            "cd {dir} || exit 1; if [ -f service.pid ]; then kill \"$(cat service.pid)\" 2>/dev/null; \
             for _ in $(seq 50); do kill -0 \"$(cat service.pid)\" 2>/dev/null || break; sleep 0.1; done; \
             rm -f service.pid; fi; \
             setsid ./service __instance --bind {address} --port {port} --config service.conf \
             --pidfile service.pid >service.log 2>&1 </dev/null &",
            dir = q(&dir)?,
            address = shell_quote(host.address())?,
        );
        let stop = format!(
            "if [ -f {dir}/service.pid ]; then kill \"$(cat {dir}/service.pid)\" 2>/dev/null; fi; rm -rf {dir}",
            dir = q(&dir)?,
        );
        // An IPv6 address goes in brackets in a URL.
        let health = match host.address().parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("http://[{v6}]:{port}/health"),
            Err(_) => format!("http://{}:{port}/health", host.address()),
        };
        checks = checks.action(CheckSpec::new::<SshCheck>(
            format!("{name} reachable"),
            SshCommandReq::shell(target.clone(), "command -v setsid >/dev/null"),
        ));
        let sequence = Sequence::builder(name)
            .descr(format!("deploy {version} to {name} ({})", host.address()))
            .action(
                ActionSpec::new::<SshUpload>(
                    "upload service",
                    SshUploadReq::local_file(target.clone(), dir.join("service"), exe)
                        .mode(0o755)
                        .create_dirs(),
                )
                .retries(2),
            )
            .action(
                ActionSpec::new::<SshUpload>(
                    "upload config",
                    SshUploadReq::text(
                        target.clone(),
                        dir.join("service.conf"),
                        config_text(version, broken),
                    )
                    .mode(0o644),
                )
                .retries(2),
            )
            .action(ActionSpec::new::<SshCommand>(
                "restart",
                SshCommandReq::shell(target.clone(), restart),
            ))
            .action(wait_healthy(&health, version));
        hosts.push(HostPlan {
            sequence,
            health,
            cleanup: Some(ActionSpec::new::<SshCommand>(
                format!("stop {name}"),
                SshCommandReq::shell(target, stop),
            )),
        });
    }
    Ok((hosts, checks))
}

/// An instance's config.
fn config_text(version: &str, broken: bool) -> String {
    format!("version={version}\nbroken={broken}\n")
}

/// Waits until the instance answers its health check with the new version.
fn wait_healthy(health: &str, version: &str) -> ActionSpec {
    ActionSpec::new::<WaitUntil>(
        "wait until healthy",
        WaitForReq::new(Condition::Http(
            HttpCheckReq::get(health).body_contains(format!("version={version}")),
        ))
        .interval(Duration::from_millis(50)),
    )
    .timeout(Duration::from_secs(5))
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
    db: &Path,
) -> Result<(), coercion::Error> {
    let mut events = ws.events(id).await?;
    // The stream starts with the plan as it is: the bars start from there.
    let Some(coercion::Event::Snapshot(plan)) = events.next().await else {
        return Ok(());
    };
    let progress = Progress::new(&plan);
    let ask = |name: &str| {
        progress.suspend(|| {
            eprintln!(
                "waiting for approval: {name}. Decide from another terminal:\n  \
                 cargo run -p coercion --features cli --bin coercion -- --db {} approve {id} {} [--comment TEXT]\n  \
                 (or `reject`)",
                shell_quote(db).unwrap_or_else(|e| e),
                shell_quote(name).unwrap_or_else(|e| e),
            )
        })
    };
    for gate in plan.waiting_gates() {
        ask(&gate.name);
    }
    let mut finished = 0;
    while let Some(event) = events.next().await {
        if let coercion::Event::Updated(updates) = &event {
            for u in updates.iter() {
                if matches!(u.what, coercion::UpdateKind::AttemptStarted { .. })
                    && u.path.to_string().ends_with(&format!("{GATE_NAME:?}"))
                {
                    ask(GATE_NAME);
                }
            }
        }
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
        bind,
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
        TcpListener::bind((bind.as_str(), port)).map_err(|e| format!("{bind} port {port}: {e}"))?;
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
    match run(options).await {
        Ok(true) => {}
        // The plan did not complete. `run` has closed the store by now (its workstream is
        // dropped when it returns): exiting from inside it would leave the WAL unmerged.
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("rollout: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs the rollout (or, with `--check`, previews it); `Ok(false)` if the plan did not
/// complete.
async fn run(o: Options) -> Result<bool, String> {
    coercion::rolling::check_serial(&o.serial).map_err(|e| format!("--serial: {e}"))?;
    std::fs::create_dir_all(&o.dir)
        .map_err(|e| format!("cannot create {}: {e}", o.dir.display()))?;
    let registry = Registry::from_inventory().map_err(|e| e.to_string())?;
    let version = o
        .release
        .clone()
        .unwrap_or_else(|| format!("v{}", chrono_like_stamp()));
    if o.check {
        return check(&o, registry, &version).await.map(|()| true);
    }
    let db = std::path::absolute(&o.db).unwrap_or(o.db.clone());
    println!("plans are kept in {}", db.display());
    // Opening the store resumes any plan a crashed run left behind.
    let ws = Workstream::open(&o.db, registry)
        .await
        .map_err(|e| e.to_string())?;
    // `coercion stop|pause|resume ID` and `coercion approve ID GATE` reach this process.
    let _control = coercion::control::listen(ws.clone(), &o.db)
        .await
        .map_err(|e| format!("cannot accept control requests: {e}"))?;
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
            let plan = rollout_plan(&o, &version)?;
            let serial: Vec<String> = o.serial.iter().map(ToString::to_string).collect();
            println!(
                "{} (serial {}, concurrency {}, tolerance {}% per batch)",
                plan.name(),
                serial.join(","),
                o.concurrency,
                o.tolerance
            );
            // One write stores the plan already running: a crash right after leaves a plan
            // the next run resumes, never one that nobody starts.
            ws.submit_and_start(plan).await.map_err(|e| e.to_string())?
        }
    };
    watch(&ws, id, o.crash_after, &db)
        .await
        .map_err(|e| e.to_string())?;
    let done = ws.wait(id).await.map_err(|e| e.to_string())?;
    println!();
    if done.status() == Status::Completed {
        // `Completed`, or `Completed with 2 failed` when hosts failed within the tolerance,
        // and `, resumed once` after a crash.
        println!("{}", coercion::progress::outcome(&done));
    }
    if done.failure_counts().has_failures() || done.status() != Status::Completed {
        print!("{done}");
        if done.status() != Status::Completed
            && let Some(resumed) = done.resumed_label()
        {
            println!("(the plan was {resumed})");
        }
    }
    println!(
        "look at it:  cargo run -p coercion --features cli --bin coercion -- --db {} show {}",
        db.display(),
        done.id()
    );
    Ok(done.status() == Status::Completed)
}

/// `--check`: the preview of the rollout, printed as a tree (diffs with `--diff`). No store
/// is opened, so nothing is stored and no crashed plan is resumed.
async fn check(o: &Options, registry: Registry, version: &str) -> Result<(), String> {
    use std::io::IsTerminal as _;
    let plan = rollout_plan(o, version)?;
    let ws = Workstream::in_memory(registry)
        .await
        .map_err(|e| e.to_string())?;
    let report = ws.preview(plan).await.map_err(|e| e.to_string())?;
    print!("{}", report.render(o.diff, std::io::stdout().is_terminal()));
    if report.summary().checks_failed > 0 {
        return Err("a check failed: a run would stop there".to_owned());
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

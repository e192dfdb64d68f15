//! The `coercion` command-line tool and its web UI (feature `cli`).
//!
//! The tool reads a store file (`--db`, default `coercion.db`) with
//! [`SqliteStore::open_read_only`](crate::storage::SqliteStore::open_read_only), so it works
//! while another process runs plans from the same file:
//!
//! | command | what it does |
//! | --- | --- |
//! | `coercion list [--status S] [--group G] [--name TEXT] [--limit N] [--offset N]` | plans, newest first |
//! | `coercion show ID [--json]` | the coloured tree of a plan: statuses, durations, attempts, last errors |
//! | `coercion export ID [-o FILE]` | the plan as JSON, secrets redacted |
//! | `coercion report ID -o FILE.html` | a self-contained HTML report |
//! | `coercion stop\|pause\|resume ID` | asks the process that runs the plan (see [`control`]) |
//! | `coercion serve [--addr 127.0.0.1:3030] [--allow-control]` | the web UI (see [`web`]) |
//!
//! Ids may be abbreviated to any unique prefix or suffix. The library side is usable on its own:
//! [`html::report`] renders a report from code, [`web::router`] embeds the web UI, and
//! [`control::listen`] lets the tool stop, pause and resume the plans a program runs.

mod db;
mod format;
mod text;

/// The control channel, which lives beside the workstream ([`crate::control`]): re-exported
/// here, where it was before.
pub use crate::control;
pub mod html;
pub mod web;

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use db::Db;

use crate::storage::{ListFilter, SqliteStore, Store};
use crate::workflow::Status;
use control::ControlOp;

/// A failure of a command, with a message for people that names the file or id concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliError(String);

impl CliError {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> CliError {
        CliError(message.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

/// Inspect, report on and control coercion plans kept in a SQLite store file or a PostgreSQL
/// database.
#[derive(Debug, Parser)]
#[command(name = "coercion", version, about, long_about = None)]
pub struct Cli {
    /// The store: a SQLite file, or a PostgreSQL database (`postgres://user@host/db`, TLS as
    /// libpq's `sslmode`/`sslrootcert` say); it may be in use by the processes that run the
    /// plans. Read-only but for `prune`, which deletes plans, and the control commands: over
    /// PostgreSQL, `stop`, `pause`, `resume`, `approve` and `reject` leave their request there
    /// for the process that holds the plan; over SQLite they go to that process's control
    /// socket, and `approve`/`reject` of a plan no process runs write the decision in the
    /// file.
    #[arg(
        long,
        global = true,
        value_name = "PATH|URL",
        env = "COERCION_DB",
        default_value = "coercion.db"
    )]
    pub db: PathBuf,

    /// The PostgreSQL schema that holds the store (with `--db postgres://…`).
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        env = "COERCION_PG_SCHEMA",
        default_value = "public"
    )]
    pub pg_schema: String,

    /// When to colour the output.
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The start of a command line that reaches the same store: `coercion`, with `--db` and
    /// `--pg-schema` when they are not the defaults (for the commands the output suggests).
    fn command_line(&self) -> String {
        let mut line = "coercion".to_owned();
        if self.db != std::path::Path::new("coercion.db") {
            let db = self.db.to_string_lossy();
            line.push_str(" --db ");
            line.push_str(&format::shell_word(&without_password(&db)));
        }
        if self.pg_schema != "public" {
            line.push_str(" --pg-schema ");
            line.push_str(&format::shell_word(&self.pg_schema));
        }
        line
    }
}

/// When to colour the terminal output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    /// When writing to a terminal and `NO_COLOR` is not set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The commands of the tool.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List plans, newest first.
    List {
        /// Only plans with this status (NotStarted, Running, Completed, Failed, Stopped);
        /// repeat or separate with commas for several.
        #[arg(long, value_delimiter = ',')]
        status: Vec<Status>,
        /// Only plans of this group (a UUID).
        #[arg(long, value_name = "UUID")]
        group: Option<uuid::Uuid>,
        /// Only plans whose name contains this text.
        #[arg(long)]
        name: Option<String>,
        /// Show at most this many plans (1 or more).
        #[arg(long, default_value_t = 50, value_parser = at_least_one)]
        limit: usize,
        /// Skip this many plans (the next page starts at offset + limit).
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Print JSON (one array of plan summaries) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a plan as a coloured tree: statuses, durations, attempts and last errors.
    Show {
        /// The plan's id, or a unique prefix or suffix of it.
        id: String,
        /// Print JSON (the summary and every object with its path) instead of a tree.
        #[arg(long)]
        json: bool,
        /// Show the page of each block's sequences that holds this one (0-based; pages of 200,
        /// from 0, 200, 400, …, as the web UI's), and the ones that run, failed or were
        /// stopped.
        #[arg(
            long,
            value_name = "SEQUENCE",
            conflicts_with_all = ["json", "all"],
            allow_negative_numbers = true,
            value_parser = sequence_number
        )]
        from: Option<usize>,
        /// Show every sequence (a large plan is read whole).
        #[arg(long)]
        all: bool,
    },
    /// Print a plan as JSON (the export format; secrets redacted).
    Export {
        /// The plan's id, or a unique prefix or suffix of it.
        id: String,
        /// Write to this file instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write a self-contained HTML report of a plan.
    Report {
        /// The plan's id, or a unique prefix or suffix of it.
        id: String,
        /// The HTML file to write (`-` for standard output).
        #[arg(short, long, value_name = "FILE.html")]
        output: PathBuf,
    },
    /// Write a consistent copy of the store to a new file, while plans may be running.
    Backup {
        /// The new file (it must not exist).
        #[arg(value_name = "DEST.db")]
        dest: PathBuf,
    },
    /// Delete the plans that ended (Completed, Failed, Stopped) longer ago than an age, with
    /// everything in them: the retention of a store that grows without end. A SQLite file is
    /// pruned only while no process runs plans from it (it has one writer); a PostgreSQL store at
    /// any time.
    Prune {
        /// Delete plans that ended longer ago than this (`30d`, `12h`, `90min`, `1w`).
        #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Only plans with this status (Completed, Failed, Stopped); all three by default.
        #[arg(long, value_delimiter = ',')]
        status: Vec<Status>,
        /// Only plans of this group (a UUID).
        #[arg(long, value_name = "UUID")]
        group: Option<uuid::Uuid>,
        /// Name the plans that would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop a running plan (asks the process that runs it).
    Stop {
        /// The plan's id, or a unique prefix or suffix of it.
        id: String,
    },
    /// Pause a running plan: no new sequence or action starts (asks the process that runs it).
    Pause {
        /// The plan's id, or a unique prefix or suffix of it.
        id: String,
    },
    /// Resume a paused plan (asks the process that runs it).
    Resume {
        /// The plan's id, or a unique prefix or suffix of it.
        id: String,
    },
    /// Run the failed work of an ended plan again, as a new plan in the same group (asks the
    /// process that runs plans from this store; it records who asked).
    Retry {
        /// The plan's id, or a unique prefix or suffix of it.
        id: String,
    },
    /// Approve a gate a plan waits at: asks the process that runs the plan; when none runs it,
    /// records the decision in the store, where the plan finds it when it resumes. You decide as
    /// your Unix user, which the gate's approvers must name.
    Approve {
        /// The plan's id, or a unique prefix or suffix of it.
        id: String,
        /// The gate's name (or key).
        gate: String,
        /// Why, recorded with the decision.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a gate a plan waits at (the gate fails, so its block fails and the plan's
    /// `OnFailure` batches run); reaches the plan as `approve` does.
    Reject {
        /// The plan's id, or a unique prefix or suffix of it.
        id: String,
        /// The gate's name (or key).
        gate: String,
        /// Why, recorded with the decision.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Serve the web UI: plan list, live plan pages, upload of exported plans.
    Serve {
        /// The address to listen on. Beyond loopback, every request must carry the server's
        /// token (printed at start unless given) and name an IP address or a `--host-name`.
        #[arg(long, default_value = "127.0.0.1:3030")]
        addr: SocketAddr,
        /// Show stop/pause/resume/retry buttons (they work when the process that runs plans
        /// listens for control requests).
        #[arg(long)]
        allow_control: bool,
        /// A file holding the token requests must carry (also on loopback). Without it, and
        /// without COERCION_SERVE_TOKEN, a server beyond loopback makes one up and prints it.
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
        /// A host name requests may name in `Host` when serving beyond loopback (repeatable);
        /// IP addresses and `localhost` are always accepted.
        #[arg(long = "host-name", value_name = "NAME")]
        host_names: Vec<String>,
    },
}

/// Parses the command line, runs the command and returns the exit code: 0 on success, 1 on
/// an error (printed to standard error as `coercion: …`), 2 on a usage error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.color {
        ColorWhen::Auto => {}
        ColorWhen::Always => anstream::ColorChoice::Always.write_global(),
        ColorWhen::Never => anstream::ColorChoice::Never.write_global(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coercion: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(anstream::stderr(), "coercion: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `url` without the password of its user, if it is a URL that has one
/// (`postgres://user:secret@host/db` → `postgres://user@host/db`): what the tool prints of a
/// store's address (the password comes from the environment or `~/.pgpass` instead).
fn without_password(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let rest = &url[scheme_end..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return url.into();
    };
    match authority[..at].find(':') {
        Some(colon) => format!(
            "{}{}{}",
            &url[..scheme_end],
            &authority[..colon],
            &rest[at..]
        )
        .into(),
        None => url.into(),
    }
}

/// `--limit`'s value: a count of one or more (a list of none would say that no plan matches).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("0 lists nothing: give 1 or more".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("`{text}` is not a count: {e}")),
    }
}

/// `--from`'s value: a sequence number, said plainly when it is not one.
fn sequence_number(text: &str) -> Result<usize, String> {
    text.parse().map_err(|e: std::num::ParseIntError| {
        format!(
            "`{text}` is not a sequence number (0, 1, 2, … up to {}): {e}",
            usize::MAX
        )
    })
}

/// Writes `text` to standard output (colours stripped when it is not a terminal); a closed
/// pipe (`coercion list | head`) is not an error.
fn print(text: &str) -> Result<(), CliError> {
    let mut out = anstream::stdout();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::new(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text)
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
}

/// The labels of the plans among `plans` whose plain status does not say enough, by id: the
/// completed plans that completed with failures ([`crate::workflow::Plan::status_label`]) and
/// the running plans that wait for a person at a gate (`Running, waiting for approval: NAME`).
/// A summary carries neither, so a page of each completed or running plan is read (no
/// sequence of its own, only those that run, failed or were stopped: a waiting gate runs, the
/// counts are the whole plan's); one that cannot be read (deleted meanwhile) keeps its plain
/// status. Faces show these labels in amber.
pub(crate) async fn attention_labels(
    db: &Db,
    plans: &[crate::storage::PlanSummary],
) -> std::collections::HashMap<crate::workflow::PlanId, String> {
    let mut labels = std::collections::HashMap::new();
    for s in plans
        .iter()
        .filter(|s| matches!(s.state.status, Status::Completed | Status::Running))
    {
        if s.state.status == Status::Running && db.plan_has_process(s.id).await == Some(false) {
            labels.insert(
                s.id,
                "Running, but no process runs it (its process stopped)".to_owned(),
            );
            continue;
        }
        let spec = crate::storage::PageSpec {
            from: 0,
            len: 0,
            attention: crate::storage::PageSpec::ATTENTION,
        };
        let Ok(page) = db.store().read_page(s.id, spec).await else {
            continue;
        };
        if page.is_completed_with_failures() {
            labels.insert(s.id, page.status_label());
        }
        let gates: Vec<String> = page
            .plan()
            .waiting_gates()
            .into_iter()
            .map(|g| g.name)
            .collect();
        if !gates.is_empty() {
            labels.insert(
                s.id,
                format!("Running, waiting for approval: {}", gates.join(", ")),
            );
        }
    }
    labels
}

/// `coercion prune`: deletes (or, dry, names) the plans that ended before `now - older_than`.
async fn prune_command(
    cli: &Cli,
    older_than: std::time::Duration,
    status: &[Status],
    group: Option<uuid::Uuid>,
    dry_run: bool,
) -> Result<(), CliError> {
    if let Some(s) = status.iter().find(|s| !s.is_terminal()) {
        return Err(CliError::new(format!(
            "--status {s}: prune deletes only plans that ended (Completed, Failed, Stopped)"
        )));
    }
    let now = chrono::Utc::now();
    let cut = chrono::TimeDelta::from_std(older_than)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .ok_or_else(|| {
            CliError::new(format!(
                "--older-than {}: too long ago for a date",
                humantime::format_duration(older_than)
            ))
        })?;
    let db = if dry_run {
        Db::connect(&cli.db, &cli.pg_schema).await?
    } else {
        Db::connect_for_writes(&cli.db, &cli.pg_schema).await?
    };
    let filter = ListFilter {
        statuses: status.to_vec(),
        group_id: group,
        ..ListFilter::default()
    };
    let (pruned, failed) = match crate::storage::prune(db.store(), &filter, cut, dry_run).await {
        Ok(pruned) => (pruned, None),
        Err(e) => (e.deleted, Some(e.error)),
    };
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut out = String::new();
    for p in &pruned {
        out.push_str(&format!(
            "{verb} {}  {}  ended {}  {}\n",
            p.id,
            p.state.status,
            format::opt_time(p.state.end),
            format::clean(&p.name)
        ));
    }
    if let Some(e) = failed {
        // What was deleted stays deleted: say so before the error.
        print(&out)?;
        let e = db::store_error(db.label(), e);
        return Err(CliError::new(format!(
            "pruning stopped after deleting {} plan(s): {e}",
            pruned.len()
        )));
    }
    out.push_str(&format!(
        "{verb} {} plan(s) of {} that ended before {}\n",
        pruned.len(),
        db.label(),
        format::time(cut)
    ));
    print(&out)
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let now = chrono::Utc::now();
    let command_line = cli.command_line();
    match cli.command {
        Command::List {
            status,
            group,
            name,
            limit,
            offset,
            json,
        } => {
            let db = Db::connect(&cli.db, &cli.pg_schema).await?;
            let filter = ListFilter {
                statuses: status,
                group_id: group,
                name_contains: name,
                offset,
                limit: Some(limit.saturating_add(1)),
                ..ListFilter::default()
            };
            let mut plans = db
                .store()
                .list(&filter)
                .await
                .map_err(|e| db::store_error(db.label(), e))?;
            let more = plans.len() > limit;
            plans.truncate(limit);
            if json {
                let text = serde_json::to_string_pretty(&plans).expect("summaries serialize");
                return print(&format!("{text}\n"));
            }
            if plans.is_empty() {
                return print(&format!("no plans match in {}\n", db.label()));
            }
            let labels = attention_labels(&db, &plans).await;
            let mut out = text::list(&plans, &labels, now);
            if more {
                out.push_str(&format!(
                    "… more plans: add --offset {} for the next page\n",
                    offset + limit
                ));
            }
            print(&out)
        }
        Command::Show {
            id,
            json,
            from,
            all,
        } => {
            use crate::storage::{PageSpec, PlanPage};
            let db = Db::connect(&cli.db, &cli.pg_schema).await?;
            let id = db.resolve(&id).await?;
            let page = if json || all {
                PlanPage::whole(db.read_id(id).await?)
            } else {
                db.read_page(id, PageSpec::holding(from.unwrap_or(0)))
                    .await?
            }
            .into_display();
            let plan = page.plan();
            let retried_by = crate::storage::retried_by(db.store(), plan)
                .await
                .map_err(|e| db::store_error(db.label(), e))?;
            // A Running plan: whether a process runs plans from the store at all, and if one
            // listens, what keeps it from running this one.
            let mut live = text::Liveness::default();
            if plan.status() == Status::Running {
                if db.plan_has_process(plan.id()).await == Some(false) {
                    live.stranded = Some(match db.path() {
                        Some(_) => text::STRANDED,
                        None => text::STRANDED_SHARED,
                    });
                } else if let Some(file) = db.path()
                    && let Ok(control::Outcome::Inspected {
                        missing_plugins, ..
                    }) = control::request(file, ControlOp::Inspect, plan.id()).await
                {
                    live.missing_plugins = missing_plugins;
                }
            }
            if json {
                print(&format!(
                    "{}\n",
                    text::tree_json(plan, retried_by, &live, now)
                ))
            } else {
                print(&text::tree(&page, retried_by, &live, now, &command_line))
            }
        }
        Command::Export { id, output } => {
            let db = Db::connect(&cli.db, &cli.pg_schema).await?;
            let plan = db.read(&id).await?.clone_for_display();
            let json = format!("{}\n", plan.to_json());
            match output {
                Some(path) => {
                    write_file(&path, &json)?;
                    print(&format!("wrote plan {} to {}\n", plan.id(), path.display()))
                }
                None => print(&json),
            }
        }
        Command::Report { id, output } => {
            let db = Db::connect(&cli.db, &cli.pg_schema).await?;
            let plan = db.read(&id).await?;
            let html = html::report(&plan);
            if output.as_os_str() == "-" {
                return print(&html);
            }
            write_file(&output, &html)?;
            print(&format!(
                "wrote the report of plan {} ({}) to {}\n",
                plan.id(),
                plan.status(),
                output.display()
            ))
        }
        Command::Backup { dest } => {
            let db = Db::connect(&cli.db, &cli.pg_schema).await?;
            let store = SqliteStore::open_read_only(db.file_for("backup")?)
                .map_err(|e| db::store_error(db.label(), e))?;
            store.backup(&dest).await.map_err(|e| {
                CliError::new(format!(
                    "backup of {} failed: {}",
                    cli.db.display(),
                    crate::storage::Chain(&e)
                ))
            })?;
            let plans = SqliteStore::open_read_only(&dest)
                .map_err(|e| db::store_error(&dest, e))?
                .list(&ListFilter::default())
                .await
                .map_err(|e| db::store_error(&dest, e))?
                .len();
            print(&format!(
                "wrote a consistent copy of {} ({plans} plan(s)) to {}\n",
                cli.db.display(),
                dest.display()
            ))
        }
        Command::Prune {
            older_than,
            ref status,
            group,
            dry_run,
        } => prune_command(&cli, older_than, status, group, dry_run).await,
        Command::Stop { ref id } => control_command(&cli, ControlOp::Stop, id).await,
        Command::Pause { ref id } => control_command(&cli, ControlOp::Pause, id).await,
        Command::Resume { ref id } => control_command(&cli, ControlOp::Resume, id).await,
        Command::Retry { ref id } => control_command(&cli, ControlOp::Retry, id).await,
        Command::Approve {
            ref id,
            ref gate,
            ref comment,
        } => gate_command(&cli, true, id, gate, comment.clone()).await,
        Command::Reject {
            ref id,
            ref gate,
            ref comment,
        } => gate_command(&cli, false, id, gate, comment.clone()).await,
        Command::Serve {
            addr,
            allow_control,
            token_file,
            host_names,
        } => {
            let db = Db::connect(&cli.db, &cli.pg_schema).await?;
            let given = match (&token_file, std::env::var("COERCION_SERVE_TOKEN")) {
                (Some(file), _) => {
                    let text = std::fs::read_to_string(file).map_err(|e| {
                        CliError::new(format!(
                            "cannot read the token file {}: {e}",
                            file.display()
                        ))
                    })?;
                    Some(text.trim().to_owned())
                }
                (None, Ok(token)) => Some(token.trim().to_owned()),
                (None, Err(_)) => None,
            };
            if let Some(t) = &given
                && (t.len() < 16 || !t.chars().all(|c| c.is_ascii_graphic() && !";,".contains(c)))
            {
                return Err(CliError::new(
                    "the server's token must have at least 16 characters, each a visible ASCII \
                     character other than `;` and `,`"
                        .to_owned(),
                ));
            }
            let made_up = given.is_none() && !addr.ip().is_loopback();
            let token = given.or_else(|| {
                made_up.then(|| {
                    format!(
                        "{}{}",
                        uuid::Uuid::new_v4().simple(),
                        uuid::Uuid::new_v4().simple()
                    )
                })
            });
            let options = web::WebOptions {
                addr,
                allow_control,
                token: token.clone(),
                host_names,
                ..web::WebOptions::default()
            };
            let path = db.label().to_owned();
            web::serve(db, options, |bound| {
                let mode = if allow_control {
                    "stop/pause/resume/retry allowed"
                } else {
                    "read-only"
                };
                let access = match (&token, made_up) {
                    (Some(t), true) => format!("?token={t}"),
                    _ => String::new(),
                };
                let auth = if token.is_some() {
                    "; requests must carry the token"
                } else {
                    ""
                };
                let _ = print(&format!(
                    "coercion web UI on http://{bound}/{access} ({mode}{auth}; store: {path})\n"
                ));
            })
            .await
            .map_err(|e| CliError::new(format!("cannot serve on {addr}: {e}")))
        }
    }
}

/// `approve` / `reject`: through the control socket of the process that runs the plan, or,
/// when none listens, written into the store file (its writer lock proves no process runs it).
async fn gate_command(
    cli: &Cli,
    approve: bool,
    id: &str,
    gate: &str,
    comment: Option<String>,
) -> Result<(), CliError> {
    let verb = if approve { "approve" } else { "reject" };
    let db = Db::connect(&cli.db, &cli.pg_schema).await?;
    let route = match db.store().shared() {
        Some(shared) => Route::Database(shared),
        None => Route::Socket(db.file_for(&format!("`{verb}`"))?),
    };
    let plan = db.read(id).await?;
    let id = plan.id();
    if plan.status() != Status::Running {
        return Err(CliError::new(format!(
            "plan {id} is {}: only a running plan waits at a gate",
            plan.status()
        )));
    }
    if let Some(c) = &comment
        && c.chars().count() > crate::plugins::gate::MAX_COMMENT
    {
        return Err(CliError::new(format!(
            "--comment has {} characters; a decision keeps at most {}",
            c.chars().count(),
            crate::plugins::gate::MAX_COMMENT
        )));
    }
    let done = if approve { "approved" } else { "rejected" };
    let req = control::ControlRequest::decide(approve, id, gate, comment.clone());
    let path = match route {
        Route::Socket(path) => path.to_path_buf(),
        Route::Database(shared) => {
            return if through_database(shared, &req).await? {
                print(&format!("plan {id}: gate {gate:?} {done}\n"))
            } else {
                print(&not_answered_yet(id, req.op))
            };
        }
    };
    match control::send(&path, &req).await {
        Ok(_) => print(&format!("plan {id}: gate {gate:?} {done}\n")),
        Err(control::ControlError::NoListener { .. }) => {
            drop(db);
            let store = SqliteStore::open(&path).map_err(|e| {
                let why = if matches!(e, crate::StoreError::Locked(_)) {
                    "a process holds the store (it runs its plans) but does not accept control \
                     requests from you: it does not call coercion::control::listen, or it runs as \
                     another user (the control socket is private to its user)"
                } else {
                    "and the store cannot be opened to record the decision"
                };
                CliError::new(format!(
                    "cannot {verb} gate {gate:?} of plan {id}: no process listens for your control \
                     requests on {}; {why}: {}",
                    path.display(),
                    crate::storage::Chain(&e)
                ))
            })?;
            let by = control::current_user();
            crate::plugins::record_decision(&store, id, gate, approve, &by, comment)
                .await
                .map_err(|e| CliError::new(e.to_string()))?;
            print(&format!(
                "plan {id}: gate {gate:?} {done}, recorded in {} (no process runs the plan now: \
                 the gate takes this decision when a process resumes it)\n",
                path.display()
            ))
        }
        Err(e) => Err(CliError::new(e.to_string())),
    }
}

/// Where a control request goes: the socket beside a SQLite file, or a shared store.
enum Route<'a> {
    Socket(&'a std::path::Path),
    Database(&'a dyn crate::storage::SharedStore),
}

/// How long `stop`, `pause`, `resume`, `approve` and `reject` wait for the answer of the
/// process that holds a plan of a shared store.
const SHARED_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends `req` through the shared store `store` and waits for its answer; `Ok(false)` when
/// none came in time (the request stays, and is carried out when a process holds the plan).
async fn through_database(
    store: &dyn crate::storage::SharedStore,
    req: &control::ControlRequest,
) -> Result<bool, CliError> {
    match control::send_shared(store, req, SHARED_ANSWER_WAIT).await {
        Ok(answer) => Ok(answer.is_some()),
        Err(e) => Err(CliError::new(e.to_string())),
    }
}

/// What to say when a request sent through the database was not answered in time.
fn not_answered_yet(id: crate::PlanId, op: ControlOp) -> String {
    format!(
        "plan {id}: the {op} request is recorded in the database, but no process holding the plan \
         answered within {}: the worker (Workstream::spawn_worker) that holds the plan's lease \
         carries it out — or, if that worker died, the worker that takes the plan over\n",
        crate::report::human_duration(SHARED_ANSWER_WAIT)
    )
}

async fn control_command(cli: &Cli, op: ControlOp, id: &str) -> Result<(), CliError> {
    let db = Db::connect(&cli.db, &cli.pg_schema).await?;
    let route = match db.store().shared().filter(|_| op != ControlOp::Retry) {
        Some(shared) => Route::Database(shared),
        None => Route::Socket(db.file_for(&format!(
            "`{op}` (through the control socket of the process that runs the plans)"
        ))?),
    };
    let plan = db.read(id).await?;
    let id = plan.id();
    match (op, plan.status()) {
        (ControlOp::Retry, s) if !s.is_terminal() => {
            return Err(CliError::new(format!(
                "plan {id} has not ended ({s}); only an ended plan can be retried"
            )));
        }
        (ControlOp::Retry, _) => {}
        (_, Status::NotStarted) => {
            return Err(CliError::new(format!(
                "plan {id} has not started; there is nothing to {op}"
            )));
        }
        (_, s) if s.is_terminal() => {
            return Err(CliError::new(format!(
                "plan {id} has already ended ({s}); there is nothing to {op}"
            )));
        }
        _ => {}
    }
    let outcome = match route {
        Route::Socket(path) => control::request(path, op, id)
            .await
            .map_err(|e| CliError::new(e.to_string()))?,
        Route::Database(shared) => {
            if !through_database(shared, &control::ControlRequest::new(op, id)).await? {
                return print(&not_answered_yet(id, op));
            }
            control::Outcome::Done
        }
    };
    let done = match (op, outcome) {
        (_, control::Outcome::Retried(new)) => {
            format!(
                "is retried as plan {new}: its failed work runs again ({} show {new})",
                cli.command_line()
            )
        }
        (ControlOp::Stop, _) => {
            "is stopping (in-flight actions get their grace period; deferred work still runs)"
                .to_owned()
        }
        (ControlOp::Pause, _) => {
            "is paused: no new sequence or action starts until it is resumed".to_owned()
        }
        (_, _) => "is resumed".to_owned(),
    };
    print(&format!("plan {id} {done}\n"))
}

#[cfg(test)]
mod tests {
    use super::without_password;

    /// The command lines the tool suggests never print a password given in `--db`.
    #[test]
    fn a_store_address_is_shown_without_its_password() {
        for (given, shown) in [
            (
                "postgres://ops:s3cr@t@db.example:5432/plans",
                "postgres://ops@db.example:5432/plans",
            ),
            (
                "postgresql://ops:pw@db/plans?sslmode=require",
                "postgresql://ops@db/plans?sslmode=require",
            ),
            ("postgres://ops@db/plans", "postgres://ops@db/plans"),
            ("postgres://db/plans", "postgres://db/plans"),
            ("postgres://db/pl@ns:x", "postgres://db/pl@ns:x"),
            ("/var/lib/plans:1@x.db", "/var/lib/plans:1@x.db"),
        ] {
            assert_eq!(without_password(given), shown, "{given}");
        }
    }
}

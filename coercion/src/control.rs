//! Stop, pause, resume and retry plans from outside the process that runs them: a small typed
//! protocol ([`ControlRequest`] → [`Outcome`]), carried today over a Unix socket named after the
//! store file.
//!
//! Only the process that runs a plan can stop, pause or resume it ([`Workstream::stop`] and
//! friends act on the plans running in that process), and a retry runs in a process that has
//! the plan's plugins. A program that wants the `coercion` CLI and web UI to control its plans
//! calls [`listen`] once with its workstream and the store file; `coercion
//! stop|pause|resume|retry ID` and the web UI's buttons (`serve --allow-control`) then send
//! their request to the store's socket (see [`socket_path`]): `/tmp/coercion-<uid>/<hash>.sock`,
//! in a directory only its owner may enter (mode 0700), named by a hash of the store file's
//! canonical path — short whatever the store's directory, the same for every path that leads to
//! the file, and different for every other store. Without a listening process they fail with a
//! message that says so.
//!
//! ```no_run
//! # async fn demo(ws: coercion::Workstream) -> std::io::Result<()> {
//! // In the program that runs plans from coercion.db (feature `control`, on by default; the
//! // `cli` feature is not needed):
//! let _control = coercion::control::listen(ws, "coercion.db").await?;
//! # Ok(()) }
//! ```
//!
//! # The protocol
//! One JSON line each way. A request is a [`ControlRequest`]:
//! `{"op":"retry","plan":"<uuid>","via":"the web UI for 127.0.0.1:50412"}` (`via` is optional:
//! what the sender acts for, which the receiver records but cannot check). The answer is
//! `{"ok":true}`, `{"ok":true,"plan":"<uuid of the new plan>"}` after a retry, or
//! `{"error":"…"}`.
//!
//! [`handle`] carries a request out on a workstream, whatever brought it; the transport only
//! has to say who sent it, as it can prove it. On the Unix socket that is the peer's Unix user,
//! from the kernel (`SO_PEERCRED`): `alice (uid 1000)`. A retry records it in the new plan's
//! [`RetryOf::requested_by`](crate::RetryOf::requested_by); every request is logged with it.

use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::workflow::PlanId;
use crate::workstream::{Error, Workstream};

/// What an operator asks of a running plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlOp {
    /// [`Workstream::stop`].
    Stop,
    /// [`Workstream::pause`].
    Pause,
    /// [`Workstream::resume`].
    Resume,
    /// [`Workstream::retry`]: run the failed work of an ended plan again, as a new plan.
    Retry,
    /// Ask what the process knows of the plan: whether it runs it, and which plugins it lacks
    /// to run it ([`Workstream::plans_missing_plugins`]). Changes nothing.
    Inspect,
    /// [`Workstream::decide`]: approve the gate [`ControlRequest::gate`], as the sender.
    Approve,
    /// [`Workstream::decide`]: reject the gate [`ControlRequest::gate`], as the sender.
    Reject,
}

impl ControlOp {
    /// `stop`, `pause` or `resume`.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlOp::Stop => "stop",
            ControlOp::Pause => "pause",
            ControlOp::Resume => "resume",
            ControlOp::Retry => "retry",
            ControlOp::Inspect => "inspect",
            ControlOp::Approve => "approve",
            ControlOp::Reject => "reject",
        }
    }
}

impl fmt::Display for ControlOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request of the control protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ControlRequest {
    /// What to do.
    pub op: ControlOp,
    /// To which plan.
    pub plan: PlanId,
    /// What the sender acts for, when it relays someone else's request (the web UI says which
    /// client asked). Recorded beside the identity the transport proves, never instead of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// For `approve` and `reject`: the gate's name (or key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// For `approve` and `reject`: what the person says, recorded with the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl ControlRequest {
    /// `op` on plan `plan`, sent on the sender's own behalf.
    pub fn new(op: ControlOp, plan: PlanId) -> ControlRequest {
        ControlRequest {
            op,
            plan,
            via: None,
            gate: None,
            comment: None,
        }
    }

    /// `approve` (or `reject`) the gate named `gate` of plan `plan`, with an optional comment.
    pub fn decide(
        approve: bool,
        plan: PlanId,
        gate: impl Into<String>,
        comment: Option<String>,
    ) -> ControlRequest {
        let op = if approve {
            ControlOp::Approve
        } else {
            ControlOp::Reject
        };
        ControlRequest {
            gate: Some(gate.into()),
            comment,
            ..ControlRequest::new(op, plan)
        }
    }

    /// The same request, relayed for `via` (say, `the web UI for 10.0.0.7:50412`).
    pub fn via(mut self, via: impl Into<String>) -> ControlRequest {
        self.via = Some(via.into());
        self
    }
}

/// What a request achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Stop, pause or resume was carried out (a stop has begun: the plan ends later).
    Done,
    /// The retry runs as this new plan.
    Retried(PlanId),
    /// What the process knows of the plan ([`ControlOp::Inspect`]).
    Inspected {
        /// The process runs the plan now.
        running_here: bool,
        /// The plugins the process lacks to run it (found at its start-up; the plan is left
        /// as it is until a process that has them opens the store).
        missing_plugins: Vec<String>,
    },
}

#[derive(Default, Serialize, Deserialize)]
struct Reply {
    #[serde(default)]
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<PlanId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    running_here: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    missing_plugins: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Reply {
    fn ok() -> Reply {
        Reply {
            ok: true,
            ..Reply::default()
        }
    }

    /// The answer to a request, as sent back.
    fn of(answer: Result<Outcome, String>) -> Reply {
        match answer {
            Ok(Outcome::Done) => Reply::ok(),
            Ok(Outcome::Retried(new)) => Reply {
                plan: Some(new),
                ..Reply::ok()
            },
            Ok(Outcome::Inspected {
                running_here,
                missing_plugins,
            }) => Reply {
                running_here: Some(running_here),
                missing_plugins,
                ..Reply::ok()
            },
            Err(e) => Reply {
                error: Some(e),
                ..Reply::default()
            },
        }
    }

    /// What the answer to an `op` request says; `Err` names what is wrong with a malformed one.
    fn outcome(self, op: ControlOp) -> Result<Result<Outcome, String>, &'static str> {
        match (self.ok, self.error) {
            (true, _) => match (op, self.plan) {
                (ControlOp::Retry, Some(new)) => Ok(Ok(Outcome::Retried(new))),
                (ControlOp::Retry, None) => Err("a retry without the new plan's id"),
                (ControlOp::Inspect, _) => Ok(Ok(Outcome::Inspected {
                    running_here: self.running_here.unwrap_or(false),
                    missing_plugins: self.missing_plugins,
                })),
                _ => Ok(Ok(Outcome::Done)),
            },
            (false, Some(e)) => Ok(Err(e)),
            (false, None) => Ok(Err("the process refused the request".to_owned())),
        }
    }
}

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No process listens for control requests on this store file.
    #[error(
        "no process accepts control requests (stop, pause, resume, retry, approve, reject) for {}: these act only in the process that runs plans from this store, and no such process listens for you ({reason}). A program enables this with coercion::control::listen(workstream, store file); the socket is private to the user that runs it",
        .db.display()
    )]
    NoListener {
        /// The store file.
        db: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The process that runs plans refused the request (for instance, the plan does not run
    /// there).
    #[error("{0}")]
    Refused(String),
    /// The exchange with the process failed.
    #[error("control request to the process running plans from {}: {source}", .db.display())]
    Io {
        /// The store file.
        db: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

/// The control socket of the store file `db`: `/tmp/coercion-<uid>/<hash>.sock`, where
/// `<hash>` is the first 128 bits (hex) of the SHA-256 of the file's canonical path (the path
/// with every link resolved, so `./coercion.db`, an absolute path and a link to the file name one
/// socket). The directory is the user's own, whatever `TMPDIR` says, so a program and the CLI
/// agree on it; a Unix socket's path is limited to about 100 bytes, which a store in a deep
/// directory would exceed if the socket sat beside it.
pub fn socket_path(db: &Path) -> PathBuf {
    control_dir().join(socket_name(&canonical_store_path(db)))
}

/// The directory of the user's control sockets.
fn control_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    PathBuf::from(format!("/tmp/coercion-{uid}"))
}

/// `db` with every link resolved; when the file does not exist yet, its directory's canonical
/// path joined with its name.
fn canonical_store_path(db: &Path) -> PathBuf {
    if let Ok(path) = std::fs::canonicalize(db) {
        return path;
    }
    let absolute = std::path::absolute(db).unwrap_or_else(|_| db.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|dir| dir.join(name))
            .unwrap_or(absolute),
        _ => absolute,
    }
}

fn socket_name(canonical: &Path) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_bytes());
    let mut name = String::with_capacity(37);
    for byte in &digest[..16] {
        let _ = write!(name, "{byte:02x}");
    }
    name.push_str(".sock");
    name
}

/// Creates the user's control directory (mode 0700) if needed, and refuses one that another
/// user could enter or replace: not a directory (a link, say), owned by someone else, or open to
/// the group or others.
fn private_control_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = control_dir();
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create the control directory {}: {e}", dir.display()),
            ));
        }
    }
    check_private(&dir)?;
    Ok(dir)
}

/// Refuses a control directory that another user could enter or replace.
fn check_private(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: as in `control_dir`.
    let uid = unsafe { libc::geteuid() };
    let problem = if !meta.file_type().is_dir() {
        Some("it is not a directory")
    } else if meta.uid() != uid {
        Some("it belongs to another user")
    } else if meta.mode() & 0o077 != 0 {
        Some("other users may enter it (its mode is not 0700)")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing the control directory {}: {problem}; remove it and try again",
                dir.display()
            ),
        )),
        None => Ok(()),
    }
}

/// Sends `op` for plan `id` to the process that listens beside the store file `db`, and
/// waits (at most 30 s) for its answer.
pub async fn request(db: &Path, op: ControlOp, id: PlanId) -> Result<Outcome, ControlError> {
    send(db, &ControlRequest::new(op, id)).await
}

/// Sends `req` to the process that listens beside the store file `db`, and waits (at most
/// 30 s) for its answer.
pub async fn send(db: &Path, req: &ControlRequest) -> Result<Outcome, ControlError> {
    let socket = socket_path(db);
    match check_private(&control_dir()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ControlError::Io {
                db: db.to_path_buf(),
                source,
            });
        }
    }
    let mut stream = match UnixStream::connect(&socket).await {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ControlError::NoListener {
                db: db.to_path_buf(),
                reason: format!("{} does not exist", socket.display()),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ControlError::NoListener {
                db: db.to_path_buf(),
                reason: format!(
                    "nobody listens on {}; the process that created it has ended",
                    socket.display()
                ),
            });
        }
        Err(source) => {
            return Err(ControlError::Io {
                db: db.to_path_buf(),
                source,
            });
        }
    };
    let io_err = |source| ControlError::Io {
        db: db.to_path_buf(),
        source,
    };
    let exchange = async {
        let mut line = serde_json::to_string(req).expect("requests serialize");
        line.push('\n');
        stream.write_all(line.as_bytes()).await?;
        let mut reply = String::new();
        BufReader::new(&mut stream).read_line(&mut reply).await?;
        Ok::<_, io::Error>(reply)
    };
    let reply = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| {
            io_err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer within 30 s",
            ))
        })?
        .map_err(io_err)?;
    let reply: Reply = serde_json::from_str(&reply).map_err(|e| {
        io_err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad answer: {e}"),
        ))
    })?;
    match reply.outcome(req.op) {
        Ok(answer) => answer.map_err(ControlError::Refused),
        Err(bad) => Err(io_err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad answer: {bad}"),
        ))),
    }
}

/// Sends `req` through a store shared by several processes (PostgreSQL), from any machine: the
/// store keeps it until the process holding the plan's lease carries it out — at once, told by
/// a notice, or the worker that takes the plan over if that process died — and records its
/// answer. Waits up to `wait` for the answer: `Ok(None)` when none came by then (the request
/// stays and is carried out later). Who asked is who the store says (PostgreSQL: the client's
/// role); `via` is recorded beside it. Refused for a plan that has ended; `retry` and `inspect`
/// are not sent this way (a retry is [`Workstream::retry`] on a client of the store).
pub async fn send_shared(
    store: &dyn crate::storage::SharedStore,
    req: &ControlRequest,
    wait: Duration,
) -> Result<Option<Outcome>, ControlError> {
    if matches!(req.op, ControlOp::Retry | ControlOp::Inspect) {
        return Err(ControlError::Refused(format!(
            "`{}` is not sent through the database: a retry is Workstream::retry on a client of the store",
            req.op
        )));
    }
    let mut told = store.changes();
    let request = serde_json::to_string(req).expect("requests serialize");
    let number = store
        .send_control(req.plan, &request)
        .await
        .map_err(|e| ControlError::Refused(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let answer = store
            .control_answer(number)
            .await
            .map_err(|e| ControlError::Refused(e.to_string()))?;
        if let Some(answer) = answer {
            let reply: Reply = serde_json::from_str(&answer).map_err(|e| {
                ControlError::Refused(format!("control request {number}: bad answer: {e}"))
            })?;
            return match reply.outcome(req.op) {
                Ok(answer) => answer.map(Some).map_err(ControlError::Refused),
                Err(bad) => Err(ControlError::Refused(format!(
                    "control request {number}: bad answer: {bad}"
                ))),
            };
        }
        // Told when it is answered; read again every half second in case a notice is lost.
        let next = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        match &mut told {
            Some(rx) => loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    notice = rx.recv() => match notice {
                        Ok(changed) if !changed.concerns(req.plan) => {}
                        _ => break,
                    },
                }
            },
            None => tokio::time::sleep_until(next).await,
        }
    }
}

/// Carries out the requests kept by a shared store ([`send_shared`]) for the plans `ws` runs,
/// oldest first, and records each answer (as the holder of the plan's lease). Returns how many
/// were answered. A workstream that runs plans over a shared store calls it itself, when told
/// of a request and every second while plans run in it (a worker also right after it took plans
/// over); one call at a time per workstream.
pub async fn answer_shared(ws: &Workstream, store: &dyn crate::storage::SharedStore) -> usize {
    let _one_at_a_time = ws.answering().await;
    let running = ws.running_ids();
    let pending = match store.pending_controls(&running).await {
        Ok(pending) => pending,
        Err(e) => {
            tracing::warn!(error = %crate::storage::Chain(&e), "reading control requests failed; reading them again later");
            return 0;
        }
    };
    let mut answered = 0;
    for request in pending {
        let running_here = ws.is_running_here(request.plan);
        if !running_here && !request.plan_ended {
            continue;
        }
        let answer = match serde_json::from_str::<ControlRequest>(&request.request) {
            Ok(req) if !running_here => Err(format!(
                "plan {} ended before a process carried the {} request out",
                request.plan, req.op
            )),
            Ok(req) if req.plan != request.plan => Err(format!(
                "the request names plan {}, not {}",
                req.plan, request.plan
            )),
            Ok(req) => {
                handle(
                    ws,
                    &req,
                    // Database roles are named apart from Unix users: a gate's approvers
                    // name `pg:alice` for the role alice.
                    &format!("pg:{} (database role)", request.requested_by),
                )
                .await
            }
            Err(e) => Err(format!("not a control request: {e}")),
        };
        let answer = serde_json::to_string(&Reply::of(answer)).expect("replies serialize");
        match store.answer_control(&request, &answer).await {
            Ok(()) => answered += 1,
            // Another process answered first (a request of an ended plan, which any process
            // that runs plans answers), or the lease moved on: nothing is lost.
            Err(e @ crate::storage::StoreError::Locked(_)) => {
                tracing::debug!(plan = %request.plan, request = request.id, error = %crate::storage::Chain(&e), "another process answers this control request");
            }
            Err(e) => {
                tracing::warn!(plan = %request.plan, request = request.id, error = %crate::storage::Chain(&e), "could not record the answer to a control request");
            }
        }
    }
    answered
}

/// Accepts control requests for the plans `workstream` runs, on the store file `db`'s socket
/// ([`socket_path`]), until the returned guard is dropped (which also removes the socket).
///
/// The socket is served by a thread of its own, so a request is answered even while the
/// runtime that runs plans is held up by a plugin that blocks its thread: the request is handed
/// to that runtime, and when it has not been carried out within a moment while the
/// [watchdog](crate::Workstream::blocked_actions) sees blocked actions, the answer is `busy`,
/// naming them (the request still runs once the runtime is free).
///
/// Fails if another live process already listens there, or the socket cannot be created (the
/// control directory is refused when another user could enter or replace it). Must be called
/// inside the tokio runtime that runs the workstream's plans.
pub async fn listen(workstream: Workstream, db: impl AsRef<Path>) -> io::Result<ControlListener> {
    let dir = private_control_dir()?;
    let path = dir.join(socket_name(&canonical_store_path(db.as_ref())));
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{}: another process already accepts control requests here",
                    path.display()
                ),
            ));
        }
        // Left behind by a process that ended.
        std::fs::remove_file(&path)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    let plans = tokio::runtime::Handle::current();
    let (shutdown, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("coercion-control".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "the control socket's thread has no runtime; control requests are not served");
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match UnixListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "the control socket cannot be served");
                        return;
                    }
                };
                loop {
                    let stream = tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => {
                                // Out of file descriptors, say: try again a little later.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        },
                    };
                    let (ws, plans) = (workstream.clone(), plans.clone());
                    tokio::spawn(async move {
                        let _ = serve_one(ws, plans, stream).await;
                    });
                }
            });
        })?;
    Ok(ControlListener {
        path,
        shutdown: Some(shutdown),
        thread: Some(thread),
    })
}

/// How long a request may wait for the runtime that runs plans before a blocked one is
/// reported as `busy`, and at most in all.
const BUSY_AFTER: Duration = Duration::from_millis(250);
const ANSWER_WITHIN: Duration = Duration::from_secs(25);

async fn serve_one(
    ws: Workstream,
    plans: tokio::runtime::Handle,
    mut stream: UnixStream,
) -> io::Result<()> {
    let peer = match stream.peer_cred() {
        Ok(cred) => unix_user(cred.uid()),
        Err(e) => {
            tracing::warn!(error = %e, "control request refused: the sender's user is unknown");
            return Ok(());
        }
    };
    let (read, mut write) = stream.split();
    let mut line = String::new();
    // A request is a few dozen bytes (a decision's comment, a few hundred): refuse to buffer
    // more than a little.
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, 16 * 1024));
    reader.read_line(&mut line).await?;
    let answer = match serde_json::from_str::<ControlRequest>(&line) {
        Err(e) => Err(format!("bad control request: {e}")),
        Ok(req) => {
            // Carried out on the runtime that runs plans (a retry starts its plan there).
            let op = req.op;
            let ws2 = ws.clone();
            // Set once the runtime that runs plans has picked the request up: from then on it
            // is being carried out, and only its end is awaited.
            let started_on_runtime = Arc::new(AtomicBool::new(false));
            let picked_up = started_on_runtime.clone();
            let mut job = plans.spawn(async move {
                picked_up.store(true, Ordering::SeqCst);
                handle(&ws2, &req, &peer).await
            });
            let started = tokio::time::Instant::now();
            loop {
                match tokio::time::timeout(BUSY_AFTER, &mut job).await {
                    Ok(Ok(answer)) => break answer,
                    Ok(Err(e)) => break Err(format!("the request failed: {e}")),
                    Err(_) => {
                        let blocked = ws.blocked_actions();
                        if !blocked.is_empty() && !started_on_runtime.load(Ordering::SeqCst) {
                            let what: Vec<String> =
                                blocked.iter().map(ToString::to_string).collect();
                            break Err(format!(
                                "busy: the runtime that runs plans is blocked ({}); the {op} \
                                 request is queued and is carried out when it is free",
                                what.join("; ")
                            ));
                        }
                        if started.elapsed() >= ANSWER_WITHIN {
                            break Err(format!(
                                "the {op} request was not carried out within {}; it is still queued",
                                crate::report::human_duration(ANSWER_WITHIN)
                            ));
                        }
                    }
                }
            }
        }
    };
    let mut out = serde_json::to_string(&Reply::of(answer)).expect("replies serialize");
    out.push('\n');
    write.write_all(out.as_bytes()).await
}

/// Carries out `req` on `ws` for `sender` (who sent it, as the transport proved it), whatever
/// transport brought it; the error is the message for the sender. Logged with the sender.
pub async fn handle(
    ws: &Workstream,
    req: &ControlRequest,
    sender: &str,
) -> Result<Outcome, String> {
    let by = match &req.via {
        Some(via) => format!("{sender}, {}", via_text(via)),
        None => sender.to_owned(),
    };
    if req.op == ControlOp::Inspect {
        tracing::debug!(plan = %req.plan, by = %by, "control request: inspect");
    } else {
        tracing::info!(op = %req.op, plan = %req.plan, by = %by, "control request");
    }
    let result = match req.op {
        ControlOp::Stop => ws.stop(req.plan).await.map(|()| Outcome::Done),
        ControlOp::Pause => ws.pause(req.plan).await.map(|()| Outcome::Done),
        ControlOp::Resume => ws.resume(req.plan).await.map(|()| Outcome::Done),
        ControlOp::Retry => ws.retry(req.plan, by).await.map(Outcome::Retried),
        ControlOp::Approve | ControlOp::Reject => {
            let Some(gate) = &req.gate else {
                return Err(format!("`{}` needs the gate's name", req.op));
            };
            // The approvers are checked against the sender the transport proved; what it
            // relays for is recorded with it. A relay (the web UI) cannot prove who its client
            // is: it may not decide a gate that names its approvers.
            if req.via.is_some() {
                let plan = ws.read(req.plan).await.map_err(|e| e.to_string())?;
                if let Ok((_, gate_req)) = crate::plugins::gate::waiting_gate(&plan, gate)
                    && !gate_req.approvers.is_empty()
                {
                    return Err(format!(
                        "gate {gate:?} names its approvers ({}), and a request relayed for someone \
                         else cannot prove who they are: decide with `coercion approve` or \
                         `coercion reject` as your own user",
                        gate_req.approvers.join(", ")
                    ));
                }
            }
            let by = match &req.via {
                Some(via) => format!("{sender}, {}", via_text(via)),
                None => sender.to_owned(),
            };
            ws.decide(
                req.plan,
                gate,
                req.op == ControlOp::Approve,
                &by,
                req.comment.clone(),
            )
            .await
            .map(|_| Outcome::Done)
        }
        ControlOp::Inspect => Ok(Outcome::Inspected {
            running_here: ws.is_running_here(req.plan),
            missing_plugins: ws
                .plans_missing_plugins()
                .into_iter()
                .find(|(id, _)| *id == req.plan)
                .map(|(_, names)| names)
                .unwrap_or_default(),
        }),
    };
    result.map_err(|e| match e {
        Error::NotRunning(id) => {
            format!("plan {id} is not running in the process that runs plans from this store")
        }
        e => e.to_string(),
    })
}

/// What a relayed request says it acts for, as text: at most 200 characters, control
/// characters dropped (it is recorded and shown, and the sender chose it).
fn via_text(via: &str) -> String {
    let clean: String = via.chars().filter(|c| !c.is_control()).take(200).collect();
    format!("via {clean}")
}

/// The user this process runs as, as the control socket would name it: `alice (uid 1000)`.
pub fn current_user() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unix_user(unsafe { libc::geteuid() })
}

/// `alice (uid 1000)`, or `uid 1000` for a user without a name.
fn unix_user(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// The name of Unix user `uid` in the password database.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: `passwd` is plain data (pointers and integers) for which all-zero is valid; it
    // is only read after getpwuid_r filled it.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and `buf.len()` is the buffer's size;
    // getpwuid_r writes the strings `entry` points to into `buf`, which outlives their use.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success `pw_name` is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Keeps the control socket open; dropping it closes and removes the socket.
#[derive(Debug)]
pub struct ControlListener {
    path: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlListener {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // The thread ends at once: its accept loop waits on the shutdown signal too. Requests
        // in flight end with it.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

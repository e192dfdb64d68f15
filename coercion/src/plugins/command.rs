//! `coercion/command` and `coercion/command-check`: run a program in its own process group.

use crate::report::human_duration;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::time::Instant;

use super::{codes, non_zero, tail};
use crate::plugin::{Context, Plugin, PluginError, ValidationError};

/// How long the output pipes may stay open after the command is over (held by a process that
/// left the process group, or by a background process with `keep_background`).
const DRAIN_GRACE: Duration = Duration::from_millis(250);
/// How much of stderr (or stdout) an error message quotes.
const MESSAGE_TAIL: usize = 1024;

pub(super) fn default_success_codes() -> Vec<i32> {
    vec![0]
}

pub(super) fn default_output_limit() -> usize {
    64 * 1024
}

pub(super) fn is_false(b: &bool) -> bool {
    !*b
}

/// The request of [`Command`] and [`CommandCheck`]: what to run and how to judge it.
///
/// Only `program` is required. In JSON:
///
/// ```json
/// { "program": "systemctl", "args": ["restart", "web"], "env": { "LANG": "C" },
///   "timeout": "30s", "success_codes": [0, 3] }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandReq {
    /// The program: a path, or a name looked up in `PATH`. It is not run through a shell; see
    /// [`CommandReq::shell`] for that.
    pub program: String,
    /// The arguments, passed as they are (no splitting, no expansion).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables for the command, on top of the inherited environment (or instead
    /// of it, with `clear_env`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Start from an empty environment instead of the workstream's own.
    #[serde(default, skip_serializing_if = "is_false")]
    pub clear_env: bool,
    /// The working directory; the workstream's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Text written to the command's standard input, which is then closed. Without it, the
    /// command reads from `/dev/null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// The exit codes that mean success. Default `[0]`.
    #[serde(default = "default_success_codes")]
    pub success_codes: Vec<i32>,
    /// Whether a failure (an exit code outside `success_codes`, or death by a signal) is
    /// permanent, so no further attempt is made. Default `false`: the plugin's retry policy
    /// applies.
    #[serde(default, skip_serializing_if = "is_false")]
    pub permanent_failure: bool,
    /// How long the command may run, within the attempt's own timeout. When it expires, the
    /// command's process group is killed and the attempt fails (retryably).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// How many bytes of stdout, and of stderr, to keep: the last ones. Default 64 KiB each.
    #[serde(default = "default_output_limit")]
    pub output_limit: usize,
    /// Let processes the command started in the background outlive it, e.g. to start a
    /// service (`server > server.log 2>&1 &`; redirect their output, or the plugin waits a
    /// moment for the pipes to close, then stops capturing). By default everything left in the
    /// command's process group is killed when the command exits, so an action leaves nothing
    /// running behind.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_background: bool,
    /// Run only when this path does not exist (as Ansible's `creates`): a command that makes
    /// the path is then run once, and a preview can tell whether it would run. Relative to
    /// `cwd` when that is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creates: Option<PathBuf>,
    /// Run only when this path exists (as Ansible's `removes`). Relative to `cwd` when that is
    /// given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removes: Option<PathBuf>,
}

impl Default for CommandReq {
    /// An empty program (which `validate` refuses) with every default.
    fn default() -> Self {
        CommandReq {
            program: String::new(),
            args: Vec::new(),
            env: BTreeMap::new(),
            clear_env: false,
            cwd: None,
            stdin: None,
            success_codes: default_success_codes(),
            permanent_failure: false,
            timeout: None,
            output_limit: default_output_limit(),
            keep_background: false,
            creates: None,
            removes: None,
        }
    }
}

impl CommandReq {
    /// Runs `program` with no arguments.
    pub fn new(program: impl Into<String>) -> CommandReq {
        CommandReq {
            program: program.into(),
            ..CommandReq::default()
        }
    }

    /// Runs `script` with `sh -c`.
    pub fn shell(script: impl Into<String>) -> CommandReq {
        CommandReq::new("sh").arg("-c").arg(script)
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> CommandReq {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> CommandReq {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> CommandReq {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> CommandReq {
        self.cwd = Some(cwd.into());
        self
    }

    /// Sets the text written to standard input.
    pub fn stdin(mut self, text: impl Into<String>) -> CommandReq {
        self.stdin = Some(text.into());
        self
    }

    /// Sets the command's own timeout.
    pub fn timeout(mut self, timeout: Duration) -> CommandReq {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the exit codes that mean success.
    pub fn success_codes(mut self, codes: impl IntoIterator<Item = i32>) -> CommandReq {
        self.success_codes = codes.into_iter().collect();
        self
    }

    /// Makes failures permanent.
    pub fn permanent_failure(mut self) -> CommandReq {
        self.permanent_failure = true;
        self
    }

    /// Sets how many bytes of each output stream are kept.
    pub fn output_limit(mut self, bytes: usize) -> CommandReq {
        self.output_limit = bytes;
        self
    }

    /// Lets background processes outlive the command.
    pub fn keep_background(mut self) -> CommandReq {
        self.keep_background = true;
        self
    }

    /// Runs the command only when `path` does not exist (see [`creates`](Self::creates)).
    pub fn creates(mut self, path: impl Into<PathBuf>) -> CommandReq {
        self.creates = Some(path.into());
        self
    }

    /// Runs the command only when `path` exists (see [`removes`](Self::removes)).
    pub fn removes(mut self, path: impl Into<PathBuf>) -> CommandReq {
        self.removes = Some(path.into());
        self
    }

    /// Why the command would not run (`creates` exists, `removes` is missing), if so.
    async fn skipped(&self) -> Option<String> {
        let at = |p: &PathBuf| match &self.cwd {
            Some(cwd) if p.is_relative() => cwd.join(p),
            _ => p.clone(),
        };
        if let Some(p) = &self.creates
            && tokio::fs::symlink_metadata(at(p)).await.is_ok()
        {
            return Some(format!("{} exists (`creates`)", p.display()));
        }
        if let Some(p) = &self.removes
            && tokio::fs::symlink_metadata(at(p)).await.is_err()
        {
            return Some(format!("{} does not exist (`removes`)", p.display()));
        }
        None
    }

    /// The command line, shortened, for messages.
    pub(super) fn display(&self) -> String {
        let mut line = self.program.clone();
        for arg in &self.args {
            line.push(' ');
            line.push_str(arg);
        }
        if line.len() > 120 {
            line = format!("{}…", super::head(&line, 119));
        }
        line
    }
}

/// What a command produced. Output that is not UTF-8 is converted lossily.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResp {
    /// The exit code, one of the request's `success_codes`.
    pub exit_code: i32,
    /// The end of standard output (at most `output_limit` bytes).
    pub stdout: String,
    /// The end of standard error (at most `output_limit` bytes).
    pub stderr: String,
    /// Whether stdout or stderr was longer than `output_limit` and lost its beginning.
    pub truncated: bool,
    /// How long the command ran.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Why the command did not run (`creates` exists, `removes` is missing); the exit code is
    /// then 0 and the output empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Runs a program (an action plugin, registered as `coercion/command`).
///
/// The program runs in its own process group with the request's arguments, environment,
/// working directory and standard input; the end of its stdout and stderr is captured. It
/// succeeds when the program exits with one of `success_codes`.
///
/// Nothing outlives the attempt: the whole process group is killed (`SIGKILL`) when the
/// command's `timeout` expires, when the plan is stopped (`Context::cancelled`), when the
/// engine drops the attempt (its timeout), and — unless `keep_background` — when the program
/// exits leaving background processes; the program itself is always reaped.
///
/// Errors ([`codes`](super::codes)): `EXIT_CODE` (the message has the code and the tail of
/// stderr), `SIGNALLED`, `TIMED_OUT` (retryable), `CANCELLED` (permanent), `SPAWN` (program
/// or `cwd` missing: permanent). `validate` refuses an empty `program`, an empty
/// `success_codes`, a zero `timeout`, NUL bytes, and environment names that are empty or
/// contain `=`.
///
/// ```
/// # use coercion::plugins::CommandReq;
/// # use std::time::Duration;
/// let req = CommandReq::new("systemctl").args(["restart", "web"]).timeout(Duration::from_secs(30));
/// ```
#[crate::plugin(preview, name = "coercion/command")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Command;

impl Plugin for Command {
    type Request = CommandReq;
    type Response = CommandResp;

    async fn execute(&self, ctx: &Context, req: CommandReq) -> Result<CommandResp, PluginError> {
        run(ctx, &req).await
    }

    fn validate(&self, req: &CommandReq) -> Result<(), ValidationError> {
        validate(req, "")
    }
}

/// A command's effect cannot be known without running it: the preview names the exact program
/// and arguments that would run, or says why it would not (`creates`, `removes`).
impl crate::Previews for Command {
    async fn preview(
        &self,
        _ctx: &Context,
        req: &CommandReq,
    ) -> Result<crate::Preview, PluginError> {
        if let Some(why) = req.skipped().await {
            return Ok(crate::Preview::no_change(format!("would not run: {why}")));
        }
        let mut argv = vec![req.program.as_str()];
        argv.extend(req.args.iter().map(String::as_str));
        let cwd = req
            .cwd
            .as_ref()
            .map(|d| format!(" in {}", d.display()))
            .unwrap_or_default();
        Ok(crate::Preview::would_change(format!(
            "would run {argv:?}{cwd}"
        )))
    }
}

/// Runs a program as a check (registered as `coercion/command-check`): exactly
/// [`Command`], for check sections. The program should not change anything.
///
/// ```
/// # use coercion::plugins::CommandReq;
/// let req = CommandReq::new("systemctl").args(["is-active", "--quiet", "web"]);
/// ```
#[crate::plugin(check, name = "coercion/command-check")]
#[derive(Clone, Copy, Debug, Default)]
pub struct CommandCheck;

impl Plugin for CommandCheck {
    type Request = CommandReq;
    type Response = CommandResp;

    async fn execute(&self, ctx: &Context, req: CommandReq) -> Result<CommandResp, PluginError> {
        run(ctx, &req).await
    }

    fn validate(&self, req: &CommandReq) -> Result<(), ValidationError> {
        validate(req, "")
    }
}

/// Checks a command request; field names in messages start with `prefix`.
pub(super) fn validate(req: &CommandReq, prefix: &str) -> Result<(), ValidationError> {
    let refuse =
        |field: &str, what: &str| Err(ValidationError::new(format!("`{prefix}{field}` {what}")));
    if req.program.trim().is_empty() {
        return refuse("program", "must not be empty");
    }
    if req.program.contains('\0') {
        return refuse("program", "contains a NUL byte");
    }
    if let Some(i) = req.args.iter().position(|a| a.contains('\0')) {
        return refuse(&format!("args[{i}]"), "contains a NUL byte");
    }
    for (key, value) in &req.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return refuse(
                "env",
                &format!("has an invalid variable name {key:?} (empty, or with `=` or NUL)"),
            );
        }
        if value.contains('\0') {
            return refuse(&format!("env.{key}"), "contains a NUL byte");
        }
    }
    if let Some(cwd) = &req.cwd
        && cwd.as_os_str().is_empty()
    {
        return refuse(
            "cwd",
            "must not be empty when given (leave it out to use the current directory)",
        );
    }
    if req.success_codes.is_empty() {
        return refuse("success_codes", "must list at least one exit code");
    }
    for (field, path) in [("creates", &req.creates), ("removes", &req.removes)] {
        if let Some(p) = path
            && (p.as_os_str().is_empty() || p.as_os_str().as_encoded_bytes().contains(&0))
        {
            return refuse(field, "must not be empty or contain a NUL byte");
        }
    }
    non_zero(&format!("{prefix}timeout"), req.timeout)
}

/// How a run ended.
enum Outcome {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

/// Runs the command of `req` for one attempt (also used by `coercion/wait-for`).
pub(super) async fn run(ctx: &Context, req: &CommandReq) -> Result<CommandResp, PluginError> {
    let shown = req.display();
    if let Some(why) = req.skipped().await {
        return Ok(CommandResp {
            exit_code: 0,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            duration: Duration::ZERO,
            skipped: Some(why),
        });
    }
    if let Some(cwd) = &req.cwd
        && !tokio::fs::metadata(cwd).await.is_ok_and(|m| m.is_dir())
    {
        return Err(PluginError::permanent(format!(
            "cannot start `{shown}`: the working directory {} does not exist or is not a directory",
            cwd.display()
        ))
        .with_code(codes::SPAWN));
    }

    let started = Instant::now();
    let mut command = tokio::process::Command::new(&req.program);
    command
        .args(&req.args)
        .stdin(if req.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if req.clear_env {
        command.env_clear();
    }
    command.envs(&req.env);
    if let Some(cwd) = &req.cwd {
        command.current_dir(cwd);
    }
    let mut child = command.spawn().map_err(|e| {
        let permanent = matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
        );
        PluginError::new(format!("cannot start `{shown}`: {e}"))
            .set_permanent(permanent)
            .with_code(codes::SPAWN)
    })?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut group = ProcessGroup::new(child);

    let mut out = Capture::new(req.output_limit);
    let mut err = Capture::new(req.output_limit);
    let deadline = req.timeout.map(|t| started + t);
    let outcome = {
        let mut io = pin!(async {
            tokio::join!(
                feed(stdin, req.stdin.as_deref()),
                read_into(stdout, &mut out),
                read_into(stderr, &mut err)
            );
        });
        let mut io_done = false;
        let outcome = loop {
            tokio::select! {
                biased;
                () = &mut io, if !io_done => io_done = true,
                status = group.child().wait() => break Outcome::Exited(status),
                () = sleep_until(deadline) => break Outcome::TimedOut,
                () = ctx.cancelled() => break Outcome::Cancelled,
            }
        };
        match outcome {
            Outcome::Exited(Ok(_)) if req.keep_background => group.mark_reaped(),
            Outcome::Exited(Ok(_)) => {
                group.kill();
                group.mark_reaped();
            }
            _ => {
                group.kill();
                let _ = group.child().wait().await;
                group.mark_reaped();
            }
        }
        if !io_done {
            let _ = tokio::time::timeout(DRAIN_GRACE, &mut io).await;
        }
        outcome
    };

    let duration = started.elapsed();
    let (stdout, out_truncated) = out.into_text();
    let (stderr, err_truncated) = err.into_text();
    let quoted = quote_output(&stdout, &stderr);
    let status = match outcome {
        Outcome::Exited(Ok(status)) => status,
        Outcome::Exited(Err(e)) => {
            return Err(PluginError::new(format!("waiting for `{shown}` failed"))
                .with_code(codes::IO)
                .caused_by(&e));
        }
        Outcome::TimedOut => {
            return Err(PluginError::new(format!(
                "`{shown}` did not finish within {}; its process group was killed{quoted}",
                human_duration(req.timeout.unwrap_or_default())
            ))
            .with_code(codes::TIMED_OUT));
        }
        Outcome::Cancelled => {
            return Err(PluginError::permanent(format!(
                "`{shown}` was stopped with the plan after {}; its process group was killed{quoted}",
                human_duration(duration)
            ))
            .with_code(codes::CANCELLED));
        }
    };
    match status.code() {
        Some(code) if req.success_codes.contains(&code) => Ok(CommandResp {
            exit_code: code,
            stdout,
            stderr,
            truncated: out_truncated || err_truncated,
            duration,
            skipped: None,
        }),
        Some(code) => {
            let expected = if req.success_codes.len() == 1 {
                req.success_codes[0].to_string()
            } else {
                format!("one of {:?}", req.success_codes)
            };
            Err(PluginError::new(format!(
                "`{shown}` exited with code {code} (expected {expected}){quoted}"
            ))
            .with_code(codes::EXIT_CODE)
            .set_permanent(req.permanent_failure))
        }
        None => {
            let signal = status
                .signal()
                .map_or_else(|| "?".to_owned(), |s| s.to_string());
            Err(
                PluginError::new(format!("`{shown}` was killed by signal {signal}{quoted}"))
                    .with_code(codes::SIGNALLED)
                    .set_permanent(req.permanent_failure),
            )
        }
    }
}

/// `"; stderr: …"` with the end of stderr, or of stdout when stderr is empty.
pub(super) fn quote_output(stdout: &str, stderr: &str) -> String {
    if !stderr.trim().is_empty() {
        format!("; stderr: {}", tail(stderr, MESSAGE_TAIL))
    } else if !stdout.trim().is_empty() {
        format!("; stdout: {}", tail(stdout, MESSAGE_TAIL))
    } else {
        String::new()
    }
}

pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes `text` to the child's stdin, then closes it. A child that exits without reading
/// everything is not an error.
async fn feed(stdin: Option<ChildStdin>, text: Option<&str>) {
    if let (Some(mut stdin), Some(text)) = (stdin, text) {
        let _ = stdin.write_all(text.as_bytes()).await;
        let _ = stdin.shutdown().await;
    }
}

pub(super) async fn read_into(pipe: Option<impl AsyncRead + Unpin>, capture: &mut Capture) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => capture.push(&chunk[..n]),
        }
    }
}

/// The last `limit` bytes of an output stream.
pub(super) struct Capture {
    bytes: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Capture {
    pub(super) fn new(limit: usize) -> Capture {
        Capture {
            bytes: Vec::new(),
            limit,
            truncated: false,
        }
    }

    pub(super) fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        // Compact only when twice over the limit, so each byte is moved O(1) times.
        if self.bytes.len()
            > self
                .limit
                .saturating_mul(2)
                .max(self.limit.saturating_add(4096))
        {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.bytes.len() > self.limit {
            let excess = self.bytes.len() - self.limit;
            self.bytes.drain(..excess);
            self.truncated = true;
        }
    }

    /// The kept bytes as text, and whether anything was dropped.
    pub(super) fn into_text(mut self) -> (String, bool) {
        self.trim();
        let mut start = 0;
        if self.truncated {
            // Do not start in the middle of a UTF-8 sequence.
            while start < self.bytes.len().min(3) && self.bytes[start] & 0b1100_0000 == 0b1000_0000
            {
                start += 1;
            }
        }
        (
            String::from_utf8_lossy(&self.bytes[start..]).into_owned(),
            self.truncated,
        )
    }
}

/// A child that leads its own process group. Until the child is reaped, dropping this kills
/// the whole group with `SIGKILL` and reaps the child in the background, so an abandoned
/// attempt (its future dropped by the engine) leaves neither orphans nor zombies.
struct ProcessGroup {
    child: Option<Child>,
    pgid: Option<libc::pid_t>,
    reaped: bool,
}

impl ProcessGroup {
    fn new(child: Child) -> ProcessGroup {
        let pgid = child.id().and_then(|id| libc::pid_t::try_from(id).ok());
        ProcessGroup {
            child: Some(child),
            pgid,
            reaped: false,
        }
    }

    fn child(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("the child is only taken on drop")
    }

    /// Sends `SIGKILL` to every process of the group (those still in it).
    fn kill(&self) {
        if let Some(pgid) = self.pgid.filter(|&p| p > 0) {
            // SAFETY: killpg has no memory-safety preconditions; `pgid` is the id of the group
            // our child leads (never 0 or negative, which would mean our own group or all).
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }

    fn mark_reaped(&mut self) {
        self.reaped = true;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        self.kill();
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = child.wait().await;
                });
            }
            // Outside a runtime, tokio's orphan queue reaps the dropped child.
            Err(_) => drop(child),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::plugins::test_support::TempDir;

    fn ctx() -> Context {
        Context::detached(Duration::from_secs(30))
    }

    fn is_gone(pid: i32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        !alive && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }

    fn state_of(pid: i32) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|_| "gone".into())
    }

    /// Waits (up to 10 s, a correctness bound, not a performance one) until every pid is gone:
    /// neither running nor a zombie.
    async fn assert_gone(pids: &[i32]) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !pids.iter().all(|&p| is_gone(p)) {
            if std::time::Instant::now() > until {
                let states: Vec<String> = pids
                    .iter()
                    .map(|&p| format!("{p}: {}", state_of(p)))
                    .collect();
                panic!("processes left behind: {states:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pids_in(file: &Path) -> Vec<i32> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// A shell that writes its own pid and a background `sleep`'s pid to `file`, then sleeps.
    fn sleepers(file: &Path) -> CommandReq {
        CommandReq::shell(format!(
            "echo $$ > {0}; sleep 30 & echo $! >> {0}; sleep 30",
            file.display()
        ))
    }

    /// Polls `fut` until `file` lists two pids; panics if `fut` finishes first.
    async fn until_started<
        F: std::future::Future<Output = Result<CommandResp, PluginError>> + Unpin,
    >(
        fut: &mut F,
        file: &Path,
    ) -> Vec<i32> {
        loop {
            tokio::select! {
                r = &mut *fut => panic!("the command finished early: {r:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {
                    let pids = pids_in(file);
                    if pids.len() == 2 {
                        return pids;
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn captures_stdout_and_stderr() {
        let resp = Command
            .execute(&ctx(), CommandReq::shell("echo out; echo err >&2"))
            .await
            .unwrap();
        assert_eq!(resp.exit_code, 0);
        assert_eq!(resp.stdout, "out\n");
        assert_eq!(resp.stderr, "err\n");
        assert!(!resp.truncated);
    }

    #[tokio::test]
    async fn passes_arguments_verbatim() {
        let req = CommandReq::new("printf").args(["%s|", "a b", "$HOME", "*"]);
        let resp = Command.execute(&ctx(), req).await.unwrap();
        assert_eq!(resp.stdout, "a b|$HOME|*|");
    }

    #[tokio::test]
    async fn sets_environment_and_can_clear_it() {
        let resp = Command
            .execute(&ctx(), CommandReq::shell("echo \"$FOO\"").env("FOO", "bar"))
            .await
            .unwrap();
        assert_eq!(resp.stdout, "bar\n");

        let mut req = CommandReq::new("/usr/bin/env").env("ONLY", "this");
        req.clear_env = true;
        let resp = Command.execute(&ctx(), req).await.unwrap();
        assert_eq!(resp.stdout, "ONLY=this\n");
    }

    #[tokio::test]
    async fn runs_in_cwd() {
        let dir = TempDir::new("cwd");
        let resp = Command
            .execute(&ctx(), CommandReq::new("pwd").cwd(dir.path()))
            .await
            .unwrap();
        assert_eq!(
            Path::new(resp.stdout.trim()).canonicalize().unwrap(),
            dir.path().canonicalize().unwrap()
        );
    }

    #[tokio::test]
    async fn missing_cwd_is_a_permanent_spawn_error() {
        let err = Command
            .execute(&ctx(), CommandReq::new("true").cwd("/no/such/dir"))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::SPAWN);
        assert!(err.permanent);
        assert!(err.message.contains("/no/such/dir"), "{}", err.message);
    }

    #[tokio::test]
    async fn missing_program_is_a_permanent_spawn_error() {
        let err = Command
            .execute(&ctx(), CommandReq::new("/no/such/program").arg("x"))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::SPAWN);
        assert!(err.permanent);
        assert!(
            err.message.contains("cannot start `/no/such/program x`"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn feeds_stdin() {
        let resp = Command
            .execute(&ctx(), CommandReq::new("cat").stdin("hello\nworld"))
            .await
            .unwrap();
        assert_eq!(resp.stdout, "hello\nworld");
    }

    #[tokio::test]
    async fn without_stdin_reads_dev_null() {
        // `cat` would hang on an inherited terminal or pipe; /dev/null ends it at once.
        let resp = Command
            .execute(&ctx(), CommandReq::new("cat"))
            .await
            .unwrap();
        assert_eq!(resp.stdout, "");
    }

    #[tokio::test]
    async fn large_stdin_and_output_do_not_deadlock_and_keep_the_tail() {
        let input: String = (0..200_000).map(|i| format!("{i}\n")).collect();
        let resp = Command
            .execute(
                &ctx(),
                CommandReq::new("cat")
                    .stdin(input.clone())
                    .output_limit(1000),
            )
            .await
            .unwrap();
        assert!(resp.truncated);
        assert_eq!(resp.stdout.len(), 1000);
        assert!(input.ends_with(&resp.stdout));
        assert!(resp.stdout.ends_with("199999\n"));
    }

    #[tokio::test]
    async fn truncates_stderr_too_and_says_so() {
        let resp = Command
            .execute(&ctx(), CommandReq::shell("seq 1 5000 >&2").output_limit(10))
            .await
            .unwrap();
        assert!(resp.truncated);
        assert_eq!(resp.stderr, "4999\n5000\n");
        assert_eq!(resp.stdout, "");

        let resp = Command
            .execute(&ctx(), CommandReq::shell("seq 1 3").output_limit(6))
            .await
            .unwrap();
        assert!(!resp.truncated, "exactly at the limit is not truncated");
        assert_eq!(resp.stdout, "1\n2\n3\n");
    }

    #[test]
    fn capture_does_not_start_inside_a_character() {
        let mut capture = Capture::new(3);
        capture.push("aaé€".as_bytes()); // € is 3 bytes: the last 3 bytes are exactly it
        assert_eq!(capture.into_text(), ("€".to_owned(), true));
        let mut capture = Capture::new(4);
        capture.push("aé€".as_bytes()); // the last 4 bytes start inside é
        assert_eq!(capture.into_text(), ("€".to_owned(), true));
    }

    #[tokio::test]
    async fn failing_exit_code_names_the_code_and_quotes_stderr() {
        let req = CommandReq::shell("echo all good >&1; echo disk full >&2; exit 3");
        let err = Command.execute(&ctx(), req.clone()).await.unwrap_err();
        assert_eq!(err.code, codes::EXIT_CODE);
        assert!(!err.permanent);
        assert!(
            err.message.contains("exited with code 3 (expected 0)"),
            "{}",
            err.message
        );
        assert!(
            err.message.ends_with("stderr: disk full"),
            "{}",
            err.message
        );

        let err = Command
            .execute(&ctx(), req.clone().permanent_failure())
            .await
            .unwrap_err();
        assert!(err.permanent);

        let resp = Command
            .execute(&ctx(), req.success_codes([0, 3]))
            .await
            .unwrap();
        assert_eq!(resp.exit_code, 3);
    }

    #[tokio::test]
    async fn zero_is_a_failure_when_not_listed() {
        let err = Command
            .execute(&ctx(), CommandReq::shell("echo fine").success_codes([1, 2]))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::EXIT_CODE);
        assert!(
            err.message
                .contains("exited with code 0 (expected one of [1, 2]); stdout: fine"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn death_by_signal_is_reported() {
        let err = Command
            .execute(&ctx(), CommandReq::shell("kill -TERM $$"))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::SIGNALLED);
        assert!(
            err.message.contains("killed by signal 15"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = TempDir::new("timeout");
        let pidfile = dir.join("pids");
        let req = sleepers(&pidfile).timeout(Duration::from_millis(500));
        let err = Command.execute(&ctx(), req).await.unwrap_err();
        assert_eq!(err.code, codes::TIMED_OUT);
        assert!(!err.permanent);
        assert!(
            err.message
                .contains("did not finish within 500ms; its process group was killed"),
            "{}",
            err.message
        );
        let pids = pids_in(&pidfile);
        assert_eq!(pids.len(), 2, "the shell wrote its pids before the timeout");
        assert_gone(&pids).await;
    }

    #[tokio::test]
    async fn dropping_the_attempt_kills_the_whole_group() {
        let dir = TempDir::new("drop");
        let pidfile = dir.join("pids");
        let ctx = ctx();
        let mut fut = Box::pin(Command.execute(&ctx, sleepers(&pidfile)));
        let pids = until_started(&mut fut, &pidfile).await;
        assert!(
            pids.iter().all(|&p| !is_gone(p)),
            "both processes run before the drop"
        );
        drop(fut);
        assert_gone(&pids).await;
    }

    #[tokio::test]
    async fn cancellation_kills_the_whole_group() {
        let dir = TempDir::new("cancel");
        let pidfile = dir.join("pids");
        let token = CancellationToken::new();
        let ctx = ctx().with_cancellation(token.clone());
        let mut fut = Box::pin(CommandCheck.execute(&ctx, sleepers(&pidfile)));
        let pids = until_started(&mut fut, &pidfile).await;
        token.cancel();
        let err = fut.await.unwrap_err();
        assert_eq!(err.code, codes::CANCELLED);
        assert!(err.permanent);
        assert!(
            err.message.contains("was stopped with the plan"),
            "{}",
            err.message
        );
        assert_gone(&pids).await;
    }

    #[tokio::test]
    async fn background_processes_are_killed_when_the_command_exits() {
        let resp = Command
            .execute(&ctx(), CommandReq::shell("sleep 30 & echo $!"))
            .await
            .unwrap();
        let pid: i32 = resp.stdout.trim().parse().unwrap();
        assert_gone(&[pid]).await;
    }

    #[tokio::test]
    async fn keep_background_lets_a_service_outlive_the_command() {
        let req = CommandReq::shell("sleep 30 > /dev/null 2>&1 & echo $!").keep_background();
        let resp = Command.execute(&ctx(), req).await.unwrap();
        let pid: i32 = resp.stdout.trim().parse().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let alive = !is_gone(pid);
        // SAFETY: plain kill of the process the test started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        assert!(alive, "the background process was killed");
        assert_gone(&[pid]).await;
    }

    #[tokio::test]
    async fn check_variant_shares_the_implementation() {
        let resp = CommandCheck
            .execute(&ctx(), CommandReq::new("true"))
            .await
            .unwrap();
        assert_eq!(resp.exit_code, 0);
        let err = CommandCheck
            .execute(&ctx(), CommandReq::new("false"))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::EXIT_CODE);
    }

    #[test]
    fn validate_refuses_requests_that_cannot_work() {
        let refused = |req: CommandReq| Command.validate(&req).unwrap_err().message;
        assert!(Command.validate(&CommandReq::new("true")).is_ok());
        assert!(CommandCheck.validate(&CommandReq::new("true")).is_ok());
        assert_eq!(
            refused(CommandReq::new("  ")),
            "`program` must not be empty"
        );
        assert_eq!(
            refused(CommandReq::new("a\0b")),
            "`program` contains a NUL byte"
        );
        assert_eq!(
            refused(CommandReq::new("echo").args(["ok", "x\0"])),
            "`args[1]` contains a NUL byte"
        );
        assert!(
            refused(CommandReq::new("env").env("A=B", "c"))
                .starts_with("`env` has an invalid variable name \"A=B\"")
        );
        assert!(
            refused(CommandReq::new("env").env("", "c"))
                .starts_with("`env` has an invalid variable name")
        );
        assert_eq!(
            refused(CommandReq::new("true").cwd(""))
                .split(" (")
                .next()
                .unwrap(),
            "`cwd` must not be empty when given"
        );
        assert_eq!(
            refused(CommandReq::new("true").success_codes([])),
            "`success_codes` must list at least one exit code"
        );
        assert_eq!(
            refused(CommandReq::new("true").timeout(Duration::ZERO)),
            "`timeout` must be greater than zero"
        );
        assert_eq!(
            validate(&CommandReq::new(""), "condition.command.")
                .unwrap_err()
                .message,
            "`condition.command.program` must not be empty"
        );
    }

    #[test]
    fn json_has_defaults_and_refuses_unknown_fields() {
        let req: CommandReq =
            serde_json::from_str(r#"{"program": "true", "timeout": "1s 500ms"}"#).unwrap();
        assert_eq!(req.success_codes, vec![0]);
        assert_eq!(req.output_limit, 64 * 1024);
        assert_eq!(req.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(
            req,
            CommandReq::new("true").timeout(Duration::from_millis(1500))
        );
        let back: CommandReq = serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(back, req);
        let err = serde_json::from_str::<CommandReq>(r#"{"program": "true", "succes_codes": [1]}"#)
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `succes_codes`"),
            "{err}"
        );
    }
}

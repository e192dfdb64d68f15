//! Remote hosts over SSH: `coercion/ssh-command`, `coercion/ssh-check` and `coercion/ssh-upload`
//! (feature `ssh`).
//!
//! Every request names its host with an [`SshTarget`]. The plugins share one process-wide pool
//! of connections: one authenticated, multiplexed OpenSSH connection (a `ControlMaster`) per
//! (user, host, port, config file), opened lazily by the first action that needs it, shared by
//! concurrent actions, and opened again when it breaks. Commands are channels over the master's
//! mux socket (no `ssh` process per command). [`connect_all`] opens connections ahead of time,
//! in parallel, e.g. for the next batch of a rollout.
//!
//! The user's OpenSSH setup applies as it does for `ssh`: `~/.ssh/config` (or
//! [`SshTarget::config`]), the agent, identity files, jump hosts, and `known_hosts` with strict
//! host key checking (a host whose key is unknown or changed is refused; there is no
//! "accept new keys" mode). Authentication must not need a prompt (`BatchMode`).
//!
//! Remote commands run in their own process group (`setsid`), which is killed (`TERM`, then
//! `KILL` a second later) when the request's `timeout` expires, when the plan is stopped, and
//! when the engine abandons the attempt. The remote side needs a POSIX `sh`, `kill`, and for
//! uploads coreutils (`sha256sum`, `stat`, `mktemp`, `sync`); `sudo` for `become_user`.
//!
//! Errors carry the host in their message and a code from [`codes`]:
//! `SSH_UNREACHABLE` (retryable), `SSH_AUTH` and `SSH_HOST_KEY` (permanent), `SSH_CONNECTION`
//! (the connection broke during a command; retryable), and the codes of the local command
//! plugin (`EXIT_CODE`, `SIGNALLED`, `TIMED_OUT`, `CANCELLED`, `IO`).
//!
//! ```no_run
//! use std::time::Duration;
//! use coercion::plugins::ssh::{SshCommand, SshCommandReq, SshTarget, SshUpload, SshUploadReq};
//! use coercion::prelude::*;
//!
//! let web1 = SshTarget::new("web-1.example.com").user("deploy");
//! let seq = Sequence::builder("web-1")
//!     .action(ActionSpec::new::<SshUpload>(
//!         "config",
//!         SshUploadReq::text(web1.clone(), "/srv/web/config.toml", "port = 8080\n").mode(0o640),
//!     ))
//!     .action(ActionSpec::new::<SshCommand>(
//!         "restart",
//!         SshCommandReq::new(web1, "systemctl")
//!             .args(["restart", "web"])
//!             .become_user("root")
//!             .timeout(Duration::from_secs(30)),
//!     ));
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::ExitStatus;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::command::{
    Capture, default_output_limit, default_success_codes, is_false, quote_output, read_into,
    sleep_until,
};
use super::write_file::{MAX_MODE, base64_bytes};
use super::{codes, non_zero, tail};
use crate::plugin::{Context, Plugin, PluginError, ValidationError};
use crate::report::human_duration;
use crate::secret::Secret;

/// How long opening a connection may take before the host counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the master asks a silent server whether it is alive (3 missed answers end it).
const SERVER_ALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// How long an idle master connection stays up (no channel open) before OpenSSH closes it; the
/// pool opens it again when next needed.
const IDLE_PERSIST_SECS: usize = 300;
/// How long a killed group gets between `TERM` and `KILL`.
const KILL_GRACE_TENTHS: u32 = 10;
/// How long a timed-out or stopped command may take to report its process group id.
const PGID_WAIT: Duration = Duration::from_secs(5);
/// How long to wait for output after the remote command exited.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How much of stderr an error message quotes.
const MESSAGE_TAIL: usize = 1024;

/// The host a request is for, as `ssh` would be told: `ssh [-F config] [-p port] [-l user] host`.
///
/// `host` may be an alias of the ssh config (`Host web-*` blocks apply: `HostName`, `User`,
/// `Port`, `IdentityFile`, `ProxyJump`, …); `port` and `user` override the config. In JSON:
/// `{ "host": "10.0.0.7", "port": 2222, "user": "deploy", "config": "/etc/deploy/ssh_config" }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshTarget {
    /// A host name, address or ssh config alias.
    pub host: String,
    /// The port; the config's (or 22) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The login user; the config's (or the local user) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// An ssh config file used instead of `~/.ssh/config` (`ssh -F`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
}

/// An inventory host as Ansible would reach it: `ansible_host` (or the name), `ansible_port`,
/// `ansible_user`; the rest from the ssh config.
#[cfg(feature = "inventory")]
#[cfg_attr(docsrs, doc(cfg(feature = "inventory")))]
impl From<&crate::inventory::Host> for SshTarget {
    fn from(host: &crate::inventory::Host) -> SshTarget {
        SshTarget {
            host: host.address().to_owned(),
            port: host.port(),
            user: host.user().map(str::to_owned),
            config: None,
        }
    }
}

impl SshTarget {
    /// The host `host`, everything else from the ssh config.
    pub fn new(host: impl Into<String>) -> SshTarget {
        SshTarget {
            host: host.into(),
            ..SshTarget::default()
        }
    }

    /// Sets the port.
    pub fn port(mut self, port: u16) -> SshTarget {
        self.port = Some(port);
        self
    }

    /// Sets the login user.
    pub fn user(mut self, user: impl Into<String>) -> SshTarget {
        self.user = Some(user.into());
        self
    }

    /// Uses `path` instead of `~/.ssh/config`.
    pub fn config(mut self, path: impl Into<PathBuf>) -> SshTarget {
        self.config = Some(path.into());
        self
    }

    /// The config file, if `path` is `Some` (a command-line option passed along).
    pub fn config_opt(self, path: Option<impl Into<PathBuf>>) -> SshTarget {
        match path {
            Some(path) => self.config(path),
            None => self,
        }
    }

    fn validate(&self, prefix: &str) -> Result<(), ValidationError> {
        let refuse = |field: &str, what: &str| {
            Err(ValidationError::new(format!(
                "`{prefix}target.{field}` {what}"
            )))
        };
        if self.host.trim().is_empty() {
            return refuse("host", "must not be empty");
        }
        if self.host.starts_with('-') || self.host.chars().any(|c| c.is_whitespace() || c == '\0') {
            return refuse(
                "host",
                "must be a host name, address or ssh config alias (no spaces, no leading `-`)",
            );
        }
        if self.port == Some(0) {
            return refuse("port", "must not be 0");
        }
        if let Some(user) = &self.user
            && (user.is_empty() || user.starts_with('-') || user.contains(['@', '\0', ' ']))
        {
            return refuse(
                "user",
                "must be a user name (not empty, no `@`, spaces or leading `-`)",
            );
        }
        if let Some(config) = &self.config
            && config.as_os_str().is_empty()
        {
            return refuse("config", "must not be empty when given");
        }
        Ok(())
    }
}

impl fmt::Display for SshTarget {
    /// `user@host:port`, with what is given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and responses

/// The request of [`SshCommand`] and [`SshCheck`]: the local [`CommandReq`](super::CommandReq)'s
/// shape, on a remote host.
///
/// In JSON:
///
/// ```json
/// { "target": { "host": "web-1" }, "program": "systemctl", "args": ["restart", "web"],
///   "become_user": "root", "timeout": "30s" }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshCommandReq {
    /// The host.
    pub target: SshTarget,
    /// The program: a path, or a name looked up in the remote `PATH`. Each word is quoted for
    /// the remote shell; see [`SshCommandReq::shell`] for a script.
    pub program: String,
    /// The arguments, passed as they are (no splitting, no expansion).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables for the command (set by the remote shell, since sshd accepts none;
    /// they are visible in the remote `ps` output: put secrets in `secret_stdin`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The remote working directory; the login directory when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Text written to the command's standard input, which is then closed. Without it (and
    /// without `secret_stdin`), the command reads an empty input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// A secret the command reads as the first line of its standard input (then comes `stdin`,
    /// if any): the secret, a newline, the rest. It never appears in an argv, an environment or
    /// a log on either side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_stdin: Option<Secret<String>>,
    /// Run as this user, through `sudo -n -u USER --` (no password prompt: sudo must allow it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub become_user: Option<String>,
    /// The exit codes that mean success. Default `[0]`.
    #[serde(default = "default_success_codes")]
    pub success_codes: Vec<i32>,
    /// Whether a failing exit code is permanent (no further attempt). Default `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub permanent_failure: bool,
    /// How long the command may run, within the attempt's own timeout. When it expires, the
    /// remote process group is killed and the attempt fails (retryably).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// How many bytes of stdout, and of stderr, to keep: the last ones. Default 64 KiB each.
    #[serde(default = "default_output_limit")]
    pub output_limit: usize,
    /// Run only when this remote path does not exist (as Ansible's `creates`), relative to
    /// `cwd` when that is given: a command that makes the path runs once, and a preview can
    /// tell whether it would run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creates: Option<PathBuf>,
    /// Run only when this remote path exists (as Ansible's `removes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removes: Option<PathBuf>,
}

impl SshCommandReq {
    /// Runs `program` with no arguments on `target`.
    pub fn new(target: SshTarget, program: impl Into<String>) -> SshCommandReq {
        SshCommandReq {
            target,
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            stdin: None,
            secret_stdin: None,
            become_user: None,
            success_codes: default_success_codes(),
            permanent_failure: false,
            timeout: None,
            output_limit: default_output_limit(),
            creates: None,
            removes: None,
        }
    }

    /// Runs the command only when the remote `path` does not exist (see
    /// [`creates`](Self::creates)).
    pub fn creates(mut self, path: impl Into<PathBuf>) -> SshCommandReq {
        self.creates = Some(path.into());
        self
    }

    /// Runs the command only when the remote `path` exists (see [`removes`](Self::removes)).
    pub fn removes(mut self, path: impl Into<PathBuf>) -> SshCommandReq {
        self.removes = Some(path.into());
        self
    }

    /// Runs `script` with `sh -c` on `target`.
    pub fn shell(target: SshTarget, script: impl Into<String>) -> SshCommandReq {
        SshCommandReq::new(target, "sh").arg("-c").arg(script)
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> SshCommandReq {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> SshCommandReq {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> SshCommandReq {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the remote working directory.
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> SshCommandReq {
        self.cwd = Some(cwd.into());
        self
    }

    /// Sets the text written to standard input.
    pub fn stdin(mut self, text: impl Into<String>) -> SshCommandReq {
        self.stdin = Some(text.into());
        self
    }

    /// Sets the secret written first to standard input.
    pub fn secret_stdin(mut self, secret: Secret<String>) -> SshCommandReq {
        self.secret_stdin = Some(secret);
        self
    }

    /// Runs the command as `user` (`sudo -n -u user --`).
    pub fn become_user(mut self, user: impl Into<String>) -> SshCommandReq {
        self.become_user = Some(user.into());
        self
    }

    /// Sets the command's own timeout.
    pub fn timeout(mut self, timeout: Duration) -> SshCommandReq {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the exit codes that mean success.
    pub fn success_codes(mut self, codes: impl IntoIterator<Item = i32>) -> SshCommandReq {
        self.success_codes = codes.into_iter().collect();
        self
    }

    /// Makes failures permanent.
    pub fn permanent_failure(mut self) -> SshCommandReq {
        self.permanent_failure = true;
        self
    }

    /// Sets how many bytes of each output stream are kept.
    pub fn output_limit(mut self, bytes: usize) -> SshCommandReq {
        self.output_limit = bytes;
        self
    }

    /// The command line, shortened, for messages.
    fn display(&self) -> String {
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

    fn validate(&self) -> Result<(), ValidationError> {
        self.target.validate("")?;
        let refuse =
            |field: &str, what: &str| Err(ValidationError::new(format!("`{field}` {what}")));
        if self.program.trim().is_empty() {
            return refuse("program", "must not be empty");
        }
        if self.program.contains('\0') {
            return refuse("program", "contains a NUL byte");
        }
        if let Some(i) = self.args.iter().position(|a| a.contains('\0')) {
            return refuse(&format!("args[{i}]"), "contains a NUL byte");
        }
        for (key, value) in &self.env {
            if !is_shell_name(key) {
                return refuse(
                    "env",
                    &format!(
                        "has an invalid variable name {key:?} (letters, digits and `_`, not starting with a digit)"
                    ),
                );
            }
            if value.contains('\0') {
                return refuse(&format!("env.{key}"), "contains a NUL byte");
            }
        }
        if let Some(cwd) = &self.cwd
            && (cwd.as_os_str().is_empty() || cwd.to_string_lossy().contains('\0'))
        {
            return refuse("cwd", "must be a path when given (not empty, no NUL byte)");
        }
        for (field, path) in [("creates", &self.creates), ("removes", &self.removes)] {
            if let Some(p) = path
                && (p.as_os_str().is_empty() || p.to_string_lossy().contains('\0'))
            {
                return refuse(field, "must be a path when given (not empty, no NUL byte)");
            }
        }
        validate_become(self.become_user.as_deref())?;
        if self.success_codes.is_empty() {
            return refuse("success_codes", "must list at least one exit code");
        }
        non_zero("timeout", self.timeout)
    }
}

/// What a remote command produced. Output that is not UTF-8 is converted lossily.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshCommandResp {
    /// The host, as the request's target names it (`user@host:port`).
    pub host: String,
    /// The exit code, one of the request's `success_codes`.
    pub exit_code: i32,
    /// The end of standard output (at most `output_limit` bytes).
    pub stdout: String,
    /// The end of standard error (at most `output_limit` bytes).
    pub stderr: String,
    /// Whether stdout or stderr was longer than `output_limit` and lost its beginning.
    pub truncated: bool,
    /// How long the command ran, connecting included.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Why the command did not run (`creates` exists, `removes` is missing on the host); the
    /// exit code is then 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// What [`SshUpload`] sends. In JSON: `{ "text": "port = 8080\n" }`, `{ "base64": "AP8=" }` or
/// `{ "local_file": "target/release/web" }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadContents {
    /// UTF-8 text, sent as it is.
    Text(String),
    /// Any bytes; base64 in JSON.
    #[serde(rename = "base64", with = "base64_bytes")]
    Bytes(Vec<u8>),
    /// A file on this machine, read when the attempt runs.
    LocalFile(PathBuf),
}

/// The request of [`SshUpload`]. In JSON (`mode` is a string of octal digits):
///
/// ```json
/// { "target": { "host": "web-1" }, "path": "/srv/web/config.toml",
///   "contents": { "text": "port = 8080\n" }, "mode": "0640", "owner": "web" }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshUploadReq {
    /// The host.
    pub target: SshTarget,
    /// The remote file, an absolute path. Its directory must exist, unless `create_dirs`.
    pub path: PathBuf,
    /// What to write.
    pub contents: UploadContents,
    /// Permission bits (`0o640`), applied exactly. When absent, an existing file keeps its mode
    /// and a new one gets `0o666` minus the remote umask.
    #[serde(
        default,
        with = "super::write_file::octal_mode",
        skip_serializing_if = "Option::is_none"
    )]
    pub mode: Option<u32>,
    /// The file's owner (a name or a numeric id; changing it usually needs `become_user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The file's group (a name or a numeric id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Write as this user, through `sudo -n -u USER --`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub become_user: Option<String>,
    /// Create the file's missing parent directories first (`mkdir -p`, with the remote umask).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_dirs: bool,
    /// How long the upload may take, within the attempt's own timeout.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

impl SshUploadReq {
    /// Uploads `contents` to `path` on `target`.
    pub fn new(target: SshTarget, path: impl Into<PathBuf>, contents: UploadContents) -> Self {
        SshUploadReq {
            target,
            path: path.into(),
            contents,
            mode: None,
            owner: None,
            group: None,
            become_user: None,
            create_dirs: false,
            timeout: None,
        }
    }

    /// Uploads `text`.
    pub fn text(target: SshTarget, path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self::new(target, path, UploadContents::Text(text.into()))
    }

    /// Uploads `bytes`.
    pub fn bytes(target: SshTarget, path: impl Into<PathBuf>, bytes: impl Into<Vec<u8>>) -> Self {
        Self::new(target, path, UploadContents::Bytes(bytes.into()))
    }

    /// Uploads the local file `local`.
    pub fn local_file(
        target: SshTarget,
        path: impl Into<PathBuf>,
        local: impl Into<PathBuf>,
    ) -> Self {
        Self::new(target, path, UploadContents::LocalFile(local.into()))
    }

    /// Sets the permission bits.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Sets the owner.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sets the group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Writes as `user` (`sudo -n -u user --`).
    pub fn become_user(mut self, user: impl Into<String>) -> Self {
        self.become_user = Some(user.into());
        self
    }

    /// Creates the file's missing parent directories first.
    pub fn create_dirs(mut self) -> Self {
        self.create_dirs = true;
        self
    }

    /// Sets the upload's own timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn validate(&self) -> Result<(), ValidationError> {
        self.target.validate("")?;
        let refuse =
            |field: &str, what: &str| Err(ValidationError::new(format!("`{field}` {what}")));
        let text = self.path.to_string_lossy();
        if !self.path.is_absolute() {
            return refuse(
                "path",
                &format!("must be an absolute remote path, not {text:?}"),
            );
        }
        if text.contains('\0') || text.ends_with('/') || self.path.file_name().is_none() {
            return refuse("path", &format!("must name a file, not {text:?}"));
        }
        if let UploadContents::LocalFile(local) = &self.contents
            && local.as_os_str().is_empty()
        {
            return refuse("contents.local_file", "must not be empty");
        }
        if let Some(mode) = self.mode.filter(|m| *m > MAX_MODE) {
            return refuse(
                "mode",
                &format!("{mode:#o} is not a permission mode (at most 0o7777)"),
            );
        }
        for (field, value) in [("owner", &self.owner), ("group", &self.group)] {
            if let Some(value) = value
                && (value.is_empty() || value.contains([':', '\0', ' ']) || value.starts_with('-'))
            {
                return refuse(
                    field,
                    "must be a name or numeric id (no `:`, spaces or leading `-`)",
                );
            }
        }
        validate_become(self.become_user.as_deref())?;
        non_zero("timeout", self.timeout)
    }
}

/// What [`SshUpload`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshUploadResp {
    /// The host, as the request's target names it.
    pub host: String,
    /// The remote file.
    pub path: PathBuf,
    /// `false` when the file already had these contents (and the requested mode, owner and
    /// group), so nothing was sent or written.
    pub changed: bool,
    /// The contents' SHA-256, lower-case hex.
    pub sha256: String,
    /// The contents' size.
    pub bytes: u64,
    /// How long the upload took, connecting included.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn validate_become(user: Option<&str>) -> Result<(), ValidationError> {
    match user {
        Some(user) if user.is_empty() || user.starts_with('-') || user.contains(['\0', ' ']) => {
            Err(ValidationError::new(
                "`become_user` must be a user name (not empty, no spaces or leading `-`)",
            ))
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Plugins

/// Runs a command on a remote host (an action plugin, registered as `coercion/ssh-command`).
///
/// The command runs in its own remote process group, with the request's arguments (each quoted
/// for the remote shell), environment, working directory, standard input and user; the end of
/// its stdout and stderr is captured. It succeeds when the command exits with one of
/// `success_codes`. A timeout, a stop, or the engine abandoning the attempt kills the remote
/// group. Background processes the command starts keep running after it exits (redirect their
/// output, or the channel stays open until a short grace ends).
///
/// Errors: see the [module](self). `validate` refuses an empty host or program, port 0, an
/// invalid environment name, an empty `success_codes`, a zero timeout and NUL bytes.
#[crate::plugin(preview, name = "coercion/ssh-command")]
#[derive(Clone, Copy, Debug, Default)]
pub struct SshCommand;

impl Plugin for SshCommand {
    type Request = SshCommandReq;
    type Response = SshCommandResp;

    async fn execute(
        &self,
        ctx: &Context,
        req: SshCommandReq,
    ) -> Result<SshCommandResp, PluginError> {
        run_command(ctx, &req).await
    }

    fn validate(&self, req: &SshCommandReq) -> Result<(), ValidationError> {
        req.validate()
    }
}

/// A remote command's effect cannot be known without running it: the preview names the host,
/// the user and the exact program and arguments that would run there.
impl crate::Previews for SshCommand {
    async fn preview(
        &self,
        ctx: &Context,
        req: &SshCommandReq,
    ) -> Result<crate::Preview, PluginError> {
        if req.creates.is_some() || req.removes.is_some() {
            let script = format!("{}{}echo run", cd_script(req), skip_script(req));
            let run = run_remote(
                ctx,
                &req.target,
                req.become_user.as_deref(),
                &script,
                None,
                req.timeout,
                4096,
            )
            .await?;
            let host = req.target.to_string();
            if let Some(e) = not_exited(
                &run.ended,
                "the `creates`/`removes` check",
                &host,
                req.timeout,
                run.started,
                &quote_output(&run.stdout, &run.stderr),
            ) {
                return Err(e);
            }
            if let Some(why) = run.stdout.trim().strip_prefix(SKIPPED) {
                return Ok(crate::Preview::no_change(format!(
                    "would not run on {host}: {}",
                    why.trim()
                )));
            }
        }
        let mut argv = vec![req.program.as_str()];
        argv.extend(req.args.iter().map(String::as_str));
        let user = req
            .become_user
            .as_ref()
            .map(|u| format!(" as {u}"))
            .unwrap_or_default();
        Ok(crate::Preview::would_change(format!(
            "would run on {}{user}: {argv:?}",
            req.target
        )))
    }
}

/// Runs a side-effect-free command on a remote host as a check (registered as
/// `coercion/ssh-check`): exactly [`SshCommand`], passing on its exit code.
#[crate::plugin(check, name = "coercion/ssh-check")]
#[derive(Clone, Copy, Debug, Default)]
pub struct SshCheck;

impl Plugin for SshCheck {
    type Request = SshCommandReq;
    type Response = SshCommandResp;

    async fn execute(
        &self,
        ctx: &Context,
        req: SshCommandReq,
    ) -> Result<SshCommandResp, PluginError> {
        run_command(ctx, &req).await
    }

    fn validate(&self, req: &SshCommandReq) -> Result<(), ValidationError> {
        req.validate()
    }
}

/// Uploads a file to a remote host atomically (an action plugin, registered as
/// `coercion/ssh-upload`).
///
/// The contents travel on the channel's standard input (never in an argv) into a temporary file
/// beside the target, which gets the mode, owner and group, is synced, checked against the
/// SHA-256 computed here, and renamed over the target. When the remote file already has that
/// SHA-256 (and the requested mode, owner and group), nothing is written: `changed: false`.
///
/// `validate` refuses a relative or directory path, a mode above `0o7777`, bad owner/group
/// names, and everything [`SshCommand`] refuses in the target.
#[crate::plugin(preview, name = "coercion/ssh-upload")]
#[derive(Clone, Copy, Debug, Default)]
pub struct SshUpload;

impl Plugin for SshUpload {
    type Request = SshUploadReq;
    type Response = SshUploadResp;

    async fn execute(
        &self,
        ctx: &Context,
        req: SshUploadReq,
    ) -> Result<SshUploadResp, PluginError> {
        run_upload(ctx, &req).await
    }

    fn validate(&self, req: &SshUploadReq) -> Result<(), ValidationError> {
        req.validate()
    }
}

/// The preview reads the remote file (its SHA-256, mode, owner and group; its text when it is
/// small) without writing anything, and compares: no change, or the change with a unified diff
/// when both sides are UTF-8 text of at most 64 KiB.
impl crate::Previews for SshUpload {
    async fn preview(
        &self,
        ctx: &Context,
        req: &SshUploadReq,
    ) -> Result<crate::Preview, PluginError> {
        preview_upload(ctx, req).await
    }
}

// ---------------------------------------------------------------------------------------------
// The connection pool

/// One slot per (user, host, port, config): the open connection, if any. The async mutex makes
/// concurrent first users wait for one connection instead of opening several.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Session>>>>;

static POOL: LazyLock<parking_lot::Mutex<HashMap<SshTarget, Slot>>> =
    LazyLock::new(Default::default);

fn slot(target: &SshTarget) -> Slot {
    POOL.lock().entry(target.clone()).or_default().clone()
}

/// How many commands and uploads run at once over one connection. sshd refuses channels beyond
/// its `MaxSessions` (10 by default); the two left free are for the kills of timed-out
/// commands, which do not wait here.
const MAX_CHANNELS_PER_CONNECTION: usize = 8;

static CHANNELS: LazyLock<parking_lot::Mutex<HashMap<SshTarget, Arc<Semaphore>>>> =
    LazyLock::new(Default::default);

/// The channel budget of `target`'s connection.
fn channels(target: &SshTarget) -> Arc<Semaphore> {
    CHANNELS
        .lock()
        .entry(target.clone())
        .or_insert_with(|| Arc::new(Semaphore::new(MAX_CHANNELS_PER_CONNECTION)))
        .clone()
}

/// The pooled connection to `target`, opened now if there is none.
async fn session(target: &SshTarget) -> Result<Arc<Session>, PluginError> {
    close_pool_at_exit();
    let slot = slot(target);
    let mut open = slot.lock().await;
    if let Some(session) = &*open {
        return Ok(session.clone());
    }
    let session = Arc::new(connect(target).await?);
    *open = Some(session.clone());
    Ok(session)
}

/// Makes the process close its master connections when it exits (`atexit`), instead of leaving
/// them to OpenSSH's idle timeout: each pooled session, dropped, asks its master to exit and
/// removes its control directory. Connections still in use by a running attempt are left alone.
fn close_pool_at_exit() {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    extern "C" fn close_pool() {
        let Some(mut pool) = POOL.try_lock() else {
            return;
        };
        for (_, slot) in pool.drain() {
            if let Ok(mut open) = slot.try_lock() {
                drop(open.take());
            }
        }
    }
    REGISTER.call_once(|| {
        // SAFETY: `close_pool` is a plain function taking nothing and never unwinding (it only
        // takes locks without waiting and drops sessions); atexit only records it.
        unsafe {
            libc::atexit(close_pool);
        }
    });
}

/// Forgets `broken` (if it is still the pooled connection to `target`), so the next user opens
/// a new one.
async fn forget(target: &SshTarget, broken: &Arc<Session>) {
    let slot = slot(target);
    let mut open = slot.lock().await;
    if open.as_ref().is_some_and(|s| Arc::ptr_eq(s, broken)) {
        *open = None;
        tracing::debug!(host = %target, "ssh: connection dropped from the pool");
    }
}

/// Opens connections to `targets` ahead of time, at most `parallel` at once, into the pool the
/// SSH plugins use, so the first action on each host does not wait for the handshake (a rollout
/// can warm the next batch while the current one runs). Returns each target with the outcome,
/// in the given order; a target already connected succeeds at once.
pub async fn connect_all(
    targets: impl IntoIterator<Item = SshTarget>,
    parallel: usize,
) -> Vec<(SshTarget, Result<(), PluginError>)> {
    let limit = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let connecting = targets.into_iter().map(|target| {
        let limit = limit.clone();
        async move {
            let _permit = limit
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let outcome = match target.validate("") {
                Ok(()) => session(&target).await.map(drop),
                Err(e) => Err(PluginError::permanent(e.message)),
            };
            (target, outcome)
        }
    });
    futures_util::future::join_all(connecting).await
}

/// A short private directory for the control sockets (`sun_path` holds 108 bytes, and OpenSSH
/// adds a random suffix while binding): `/tmp/coercion-ssh-<uid>`, mode 0700, whatever `TMPDIR`
/// says.
fn control_dir() -> Result<PathBuf, PluginError> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let dir = PathBuf::from(format!("/tmp/coercion-ssh-{uid}"));
    let failed = |what: String| {
        PluginError::permanent(format!("ssh control directory {}: {what}", dir.display()))
            .with_code(codes::IO)
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(failed(format!("cannot create it: {e}"))),
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| failed(e.to_string()))?;
    if !meta.file_type().is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(failed(
            "refused: it must be a directory of ours with mode 0700".to_owned(),
        ));
    }
    Ok(dir)
}

async fn connect(target: &SshTarget) -> Result<Session, PluginError> {
    let started = Instant::now();
    let mut builder = SessionBuilder::default();
    builder
        .known_hosts_check(KnownHosts::Strict)
        .control_directory(control_dir()?)
        .control_persist(ControlPersist::IdleFor(
            IDLE_PERSIST_SECS.try_into().expect("not zero"),
        ))
        .connect_timeout(CONNECT_TIMEOUT)
        // A host that vanishes (no RST) is noticed in ~45 s instead of when TCP gives up.
        .server_alive_interval(SERVER_ALIVE_INTERVAL);
    if let Some(port) = target.port {
        builder.port(port);
    }
    if let Some(user) = &target.user {
        builder.user(user.clone());
    }
    if let Some(config) = &target.config {
        builder.config_file(config);
    }
    match builder.connect_mux(&target.host).await {
        Ok(session) => {
            tracing::debug!(host = %target, elapsed = ?started.elapsed(), "ssh: connected");
            Ok(session)
        }
        Err(e) => {
            let error = connect_error(target, &e);
            tracing::debug!(host = %target, error = %error.message, "ssh: connection failed");
            Err(error)
        }
    }
}

/// The error of a failed connection, from what OpenSSH said.
fn connect_error(target: &SshTarget, e: &openssh::Error) -> PluginError {
    if let openssh::Error::Connect(io) = e
        && io.kind() == std::io::ErrorKind::NotFound
    {
        return PluginError::permanent(format!(
            "cannot connect to {target}: the OpenSSH client `ssh` is not installed here ({io})"
        ))
        .with_code(codes::IO);
    }
    let said = match e {
        openssh::Error::Connect(io) | openssh::Error::Master(io) => io.to_string(),
        other => PluginError::from_error(other).chain(),
    };
    classify_connect_failure(target, &said)
}

/// Sorts OpenSSH's complaint into the errors a user acts on differently.
fn classify_connect_failure(target: &SshTarget, said: &str) -> PluginError {
    let said = said.trim();
    let last_lines = tail(said, MESSAGE_TAIL);
    if said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || said.contains("Host key verification failed")
        || said.contains("host key is known for")
        || said.contains("Host key for")
    {
        let offending = said
            .lines()
            .find_map(|l| l.trim().strip_prefix("Offending "))
            .and_then(|rest| rest.split_once(" key in "))
            .map(|(_, place)| place.trim().to_owned());
        let what = match offending {
            Some(place) => format!(
                "the host key of {target} does not match the one pinned in known_hosts ({place}); \
                 if the host was reinstalled, update that line"
            ),
            None if said.contains("No ") && said.contains("host key is known for") => format!(
                "no host key of {target} is known (strict host key checking): add it to known_hosts"
            ),
            None => format!("host key verification of {target} failed"),
        };
        return PluginError::permanent(format!("{what}; ssh said: {last_lines}"))
            .with_code(codes::SSH_HOST_KEY);
    }
    if said.contains("Permission denied (") || said.contains("Too many authentication failures") {
        return PluginError::permanent(format!(
            "authentication to {target} was refused (check the user, the identity files and the \
             agent); ssh said: {last_lines}"
        ))
        .with_code(codes::SSH_AUTH);
    }
    PluginError::new(format!("cannot reach {target}: {last_lines}"))
        .with_code(codes::SSH_UNREACHABLE)
}

// ---------------------------------------------------------------------------------------------
// Running a remote command

/// Quotes `word` for a POSIX shell.
fn quote(word: &str) -> String {
    shlex::try_quote(word).map_or_else(|_| String::from("''"), |q| q.into_owned())
}

/// The wrapper every remote command runs under: it makes the command the leader of a new
/// process group (`setsid`; sshd already starts the shell as a session leader, which suffices
/// where `setsid` is missing) and reports the group's id as the first line of stdout, so a
/// timeout or stop can kill the whole group.
fn remote_line(become_user: Option<&str>, inner: &str) -> String {
    const OUTER: &str = "if command -v setsid >/dev/null 2>&1; then exec setsid -w sh -c \"$1\" sh; \
         else exec sh -c \"$1\" sh; fi";
    let script = format!("echo {PGID_MARKER}$$; {inner}");
    let mut line = String::new();
    if let Some(user) = become_user {
        line.push_str(&format!("sudo -n -u {} -- ", quote(user)));
    }
    line.push_str(&format!("sh -c {} sh {}", quote(OUTER), quote(&script)));
    line
}

/// The inner script of a command request: cd, exports, exec.
fn command_script(req: &SshCommandReq) -> String {
    let mut script = cd_script(req);
    script.push_str(&skip_script(req));
    for (key, value) in &req.env {
        script.push_str(&format!("export {key}={}; ", quote(value)));
    }
    script.push_str("exec ");
    script.push_str(&quote(&req.program));
    for arg in &req.args {
        script.push(' ');
        script.push_str(&quote(arg));
    }
    script
}

/// `cd -- CWD || exit 1; ` when the request has a working directory.
fn cd_script(req: &SshCommandReq) -> String {
    match &req.cwd {
        Some(cwd) => format!("cd -- {} || exit 1; ", quote(&cwd.to_string_lossy())),
        None => String::new(),
    }
}

/// What a remote command prints, alone on its first line, when `creates`/`removes` say it
/// does not run.
const SKIPPED: &str = "coercion-skipped:";

/// The checks of `creates` and `removes`: print [`SKIPPED`] and the reason, exit 0.
fn skip_script(req: &SshCommandReq) -> String {
    let mut script = String::new();
    if let Some(p) = &req.creates {
        let p = p.to_string_lossy();
        script.push_str(&format!(
            "if [ -e {q} ] || [ -L {q} ]; then printf '%s\\n' {why}; exit 0; fi; ",
            q = quote(&p),
            why = quote(&format!("{SKIPPED} {p} exists (`creates`)")),
        ));
    }
    if let Some(p) = &req.removes {
        let p = p.to_string_lossy();
        script.push_str(&format!(
            "if [ ! -e {q} ] && [ ! -L {q} ]; then printf '%s\\n' {why}; exit 0; fi; ",
            q = quote(&p),
            why = quote(&format!("{SKIPPED} {p} does not exist (`removes`)")),
        ));
    }
    script
}

/// How a remote run ended.
enum Ended {
    Exited(ExitStatus),
    /// The remote process died without an exit code (a signal), or the connection broke.
    Terminated,
    Lost(String),
    TimedOut,
    Cancelled,
}

/// What one remote run produced.
struct RemoteOutput {
    ended: Ended,
    stdout: String,
    stderr: String,
    truncated: bool,
    started: Instant,
}

/// Kills the remote process group when dropped armed (the engine abandoned the attempt).
struct GroupGuard {
    session: Arc<Session>,
    become_user: Option<String>,
    pgid: watch::Receiver<Option<u32>>,
    armed: bool,
    host: String,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(pgid) = *self.pgid.borrow() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let session = self.session.clone();
            let become_user = self.become_user.take();
            let host = std::mem::take(&mut self.host);
            runtime.spawn(async move {
                kill_group(&session, become_user.as_deref(), pgid, &host).await;
            });
        }
    }
}

/// Sends `TERM` to the remote group `pgid`, then `KILL` if it is still there a second later,
/// over a new channel of `session`.
async fn kill_group(session: &Arc<Session>, become_user: Option<&str>, pgid: u32, host: &str) {
    let script = format!(
        "kill -s TERM -- -{pgid} 2>/dev/null || exit 0; i=0; \
         while [ $i -lt {KILL_GRACE_TENTHS} ] && kill -0 -{pgid} 2>/dev/null; do sleep 0.1; i=$((i+1)); done; \
         kill -s KILL -- -{pgid} 2>/dev/null; exit 0"
    );
    let mut line = String::new();
    if let Some(user) = become_user {
        line.push_str(&format!("sudo -n -u {} -- ", quote(user)));
    }
    line.push_str(&format!("sh -c {}", quote(&script)));
    let kill = async {
        Session::to_raw_command(session.clone(), line)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
    };
    match tokio::time::timeout(Duration::from_secs(10), kill).await {
        Ok(Ok(_)) => tracing::debug!(host, pgid, "ssh: remote process group killed"),
        Ok(Err(e)) => {
            tracing::warn!(host, pgid, error = %e, "ssh: could not kill the remote process group")
        }
        Err(_) => tracing::warn!(
            host,
            pgid,
            "ssh: killing the remote process group timed out"
        ),
    }
}

/// What the wrapper prints before the process group id, so a login shell's own output (an rc
/// file that prints a number) is never taken for it.
const PGID_MARKER: &str = "coercion-pgid:";

/// Reads the group id line, then the rest of stdout into `capture`. Lines before it (printed
/// by the login shell's rc files) are kept as output; after 64 such lines, or at a line that
/// long, nothing more is looked for.
async fn read_stdout(
    pipe: Option<impl AsyncRead + Unpin>,
    pgid: &watch::Sender<Option<u32>>,
    capture: &mut Capture,
) {
    let Some(mut pipe) = pipe else { return };
    let mut byte = [0u8; 1];
    'lines: for _ in 0..64 {
        let mut line = Vec::new();
        loop {
            match pipe.read(&mut byte).await {
                Ok(0) | Err(_) => {
                    capture.push(&line);
                    return;
                }
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) if line.len() < 4096 => line.push(byte[0]),
                Ok(_) => {
                    capture.push(&line);
                    break 'lines;
                }
            }
        }
        let id = line
            .strip_prefix(PGID_MARKER.as_bytes())
            .and_then(|id| std::str::from_utf8(id).ok())
            .and_then(|id| id.trim().parse().ok());
        if let Some(id) = id {
            let _ = pgid.send(Some(id));
            break;
        }
        line.push(b'\n');
        capture.push(&line);
    }
    read_into(Some(pipe), capture).await;
}

/// Starts `inner` on `target` (connecting, or reconnecting once when the pooled connection turns
/// out to be broken), feeds it `stdin`, and waits for it within `timeout` and the plan's stop.
async fn run_remote(
    ctx: &Context,
    target: &SshTarget,
    become_user: Option<&str>,
    inner: &str,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    output_limit: usize,
) -> Result<RemoteOutput, PluginError> {
    let started = Instant::now();
    let deadline = timeout.map(|t| started + t);
    let line = remote_line(become_user, inner);
    let host = target.to_string();

    // Wait for a free channel on this host's connection (more concurrent actions on one host
    // than sshd's MaxSessions would otherwise be refused), within the deadline and the stop.
    let channels = channels(target);
    let _channel = tokio::select! {
        permit = channels.acquire_owned() => permit.expect("the semaphore is never closed"),
        () = sleep_until(deadline) => {
            return Err(PluginError::new(format!(
                "{host}: no free channel within {} ({MAX_CHANNELS_PER_CONNECTION} commands already run on its connection)",
                human_duration(timeout.unwrap_or_default())
            ))
            .with_code(codes::TIMED_OUT));
        }
        () = ctx.cancelled() => {
            return Err(PluginError::permanent(format!("stopped with the plan while waiting for a channel to {host}"))
                .with_code(codes::CANCELLED));
        }
    };

    let mut reconnected = false;
    let (session, mut child) = loop {
        let session = tokio::select! {
            session = session(target) => session?,
            () = sleep_until(deadline) => {
                return Err(PluginError::new(format!(
                    "connecting to {host} took longer than {}",
                    human_duration(timeout.unwrap_or_default())
                ))
                .with_code(codes::TIMED_OUT));
            }
            () = ctx.cancelled() => {
                return Err(PluginError::permanent(format!("stopped with the plan while connecting to {host}"))
                    .with_code(codes::CANCELLED));
            }
        };
        let spawned = Session::to_raw_command(session.clone(), &line)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await;
        match spawned {
            Ok(child) => break (session, child),
            Err(e) if session.check().await.is_ok() => {
                // The connection is fine but refused another channel: sshd's MaxSessions (10 by
                // default) is reached by concurrent actions on this host. Keep the connection.
                return Err(PluginError::new(format!(
                    "{host} refused another channel on a working connection (sshd's MaxSessions \
                     reached by concurrent actions on this host?)"
                ))
                .with_code(codes::SSH_CONNECTION)
                .caused_by(&e));
            }
            Err(e) => {
                forget(target, &session).await;
                if reconnected {
                    return Err(PluginError::new(format!(
                        "cannot open a channel to {host} (the connection broke)"
                    ))
                    .with_code(codes::SSH_CONNECTION)
                    .caused_by(&e));
                }
                tracing::debug!(host, error = %e, "ssh: pooled connection broken, reconnecting");
                reconnected = true;
            }
        }
    };

    let (pgid_tx, pgid_rx) = watch::channel(None);
    let mut guard = GroupGuard {
        session: session.clone(),
        become_user: become_user.map(str::to_owned),
        pgid: pgid_rx.clone(),
        armed: true,
        host: host.clone(),
    };
    let child_stdin = child.stdin().take();
    let child_stdout = child.stdout().take();
    let child_stderr = child.stderr().take();
    let mut out = Capture::new(output_limit);
    let mut err = Capture::new(output_limit);
    let ended = {
        let mut io = pin!(async {
            tokio::join!(
                async {
                    if let (Some(mut pipe), Some(bytes)) = (child_stdin, stdin.as_deref()) {
                        let _ = pipe.write_all(bytes).await;
                        let _ = pipe.shutdown().await;
                    }
                },
                read_stdout(child_stdout, &pgid_tx, &mut out),
                read_into(child_stderr, &mut err),
            );
        });
        let mut wait = pin!(child.wait());
        let mut io_done = false;
        let ended = loop {
            tokio::select! {
                biased;
                () = &mut io, if !io_done => io_done = true,
                status = &mut wait => break match status {
                    Ok(status) => Ended::Exited(status),
                    Err(openssh::Error::RemoteProcessTerminated) => Ended::Terminated,
                    Err(e) => Ended::Lost(PluginError::from_error(&e).chain()),
                },
                () = sleep_until(deadline) => break Ended::TimedOut,
                () = ctx.cancelled() => break Ended::Cancelled,
            }
        };
        if matches!(ended, Ended::TimedOut | Ended::Cancelled) {
            // The group id may still be on its way: keep reading stdout while waiting for it.
            let mut pgid_rx = pgid_rx.clone();
            let give_up = tokio::time::sleep(PGID_WAIT);
            let mut give_up = pin!(give_up);
            let pgid = loop {
                if let Some(id) = *pgid_rx.borrow_and_update() {
                    break Some(id);
                }
                if io_done {
                    break None;
                }
                tokio::select! {
                    () = &mut io => io_done = true,
                    _ = pgid_rx.changed() => {}
                    () = &mut give_up => break None,
                }
            };
            match pgid {
                Some(pgid) => kill_group(&session, become_user, pgid, &host).await,
                None => tracing::warn!(
                    host,
                    "ssh: the remote process group id never came; nothing killed"
                ),
            }
        }
        if !io_done {
            let _ = tokio::time::timeout(DRAIN_GRACE, &mut io).await;
        }
        ended
    };
    guard.armed = false;
    drop(guard);
    let ended = match ended {
        Ended::Terminated if session.check().await.is_err() => {
            forget(target, &session).await;
            Ended::Lost("the connection was closed".to_owned())
        }
        Ended::Lost(why) => {
            forget(target, &session).await;
            Ended::Lost(why)
        }
        other => other,
    };
    let (stdout, out_truncated) = out.into_text();
    let (stderr, err_truncated) = err.into_text();
    Ok(RemoteOutput {
        ended,
        stdout,
        stderr,
        truncated: out_truncated || err_truncated,
        started,
    })
}

/// The end of a run that did not exit: the error to return, naming `what` and the host.
fn not_exited(
    ended: &Ended,
    what: &str,
    host: &str,
    timeout: Option<Duration>,
    started: Instant,
    quoted: &str,
) -> Option<PluginError> {
    Some(match ended {
        Ended::Exited(_) => return None,
        Ended::Terminated => {
            PluginError::new(format!("{what} on {host} was killed by a signal{quoted}"))
                .with_code(codes::SIGNALLED)
        }
        Ended::Lost(why) => PluginError::new(format!(
            "the connection to {host} broke while {what} ran: {why}{quoted}"
        ))
        .with_code(codes::SSH_CONNECTION),
        Ended::TimedOut => PluginError::new(format!(
            "{what} on {host} did not finish within {}; its remote process group was killed{quoted}",
            human_duration(timeout.unwrap_or_default())
        ))
        .with_code(codes::TIMED_OUT),
        Ended::Cancelled => PluginError::permanent(format!(
            "{what} on {host} was stopped with the plan after {}; its remote process group was killed{quoted}",
            human_duration(started.elapsed())
        ))
        .with_code(codes::CANCELLED),
    })
}

async fn run_command(ctx: &Context, req: &SshCommandReq) -> Result<SshCommandResp, PluginError> {
    let shown = req.display();
    let host = req.target.to_string();
    tracing::debug!(host, command = %shown, become_user = ?req.become_user, "ssh: running");
    let stdin = match (&req.secret_stdin, &req.stdin) {
        (None, None) => None,
        (secret, text) => {
            let mut bytes = Vec::new();
            if let Some(secret) = secret {
                bytes.extend_from_slice(secret.expose().as_bytes());
                bytes.push(b'\n');
            }
            if let Some(text) = text {
                bytes.extend_from_slice(text.as_bytes());
            }
            Some(bytes)
        }
    };
    let run = run_remote(
        ctx,
        &req.target,
        req.become_user.as_deref(),
        &command_script(req),
        stdin,
        req.timeout,
        req.output_limit,
    )
    .await?;
    let quoted = quote_output(&run.stdout, &run.stderr);
    let what = format!("`{shown}`");
    if let Some(e) = not_exited(&run.ended, &what, &host, req.timeout, run.started, &quoted) {
        let permanent =
            e.permanent || (req.permanent_failure && matches!(run.ended, Ended::Terminated));
        return Err(e.set_permanent(permanent));
    }
    let Ended::Exited(status) = run.ended else {
        unreachable!("not_exited handled the rest")
    };
    let code = status.code().unwrap_or(-1);
    if req.success_codes.contains(&code) {
        // The `creates`/`removes` checks answer alone, before the command would print.
        let skipped = (req.creates.is_some() || req.removes.is_some())
            .then(|| run.stdout.strip_prefix(SKIPPED))
            .flatten()
            .map(|why| why.trim().to_owned());
        return Ok(SshCommandResp {
            host,
            exit_code: code,
            stdout: if skipped.is_some() {
                String::new()
            } else {
                run.stdout
            },
            stderr: run.stderr,
            truncated: run.truncated,
            duration: run.started.elapsed(),
            skipped,
        });
    }
    let expected = if req.success_codes.len() == 1 {
        req.success_codes[0].to_string()
    } else {
        format!("one of {:?}", req.success_codes)
    };
    let hint = if req.become_user.is_some() && run.stderr.contains("sudo:") {
        " (sudo refused: the login user must be allowed `sudo -n -u USER` without a password)"
    } else {
        ""
    };
    Err(PluginError::new(format!(
        "`{shown}` on {host} exited with code {code} (expected {expected}){hint}{quoted}"
    ))
    .with_code(codes::EXIT_CODE)
    .set_permanent(req.permanent_failure))
}

/// The remote half of an upload: compare, then receive into a temporary file, check, sync and
/// rename. Prints `unchanged` or `changed`; exit code 3 when the received bytes do not match.
fn upload_script(req: &SshUploadReq, sha256: &str) -> String {
    let path = quote(&req.path.to_string_lossy());
    let mode = req.mode.map(|m| format!("{m:o}")).unwrap_or_default();
    let owner = quote(req.owner.as_deref().unwrap_or(""));
    let group = quote(req.group.as_deref().unwrap_or(""));
    let mkdirs = u8::from(req.create_dirs);
    format!(
        r#"p={path}; want={sha256}; mode={mode}; owner={owner}; group={group}; mkdirs={mkdirs}
ok=0
if [ -f "$p" ]; then
  have=$(sha256sum < "$p" | cut -c1-64) || exit 1
  st=$(stat -c '%a %U %u %G %g' -- "$p") || exit 1
  set -- $st
  ok=1
  [ "$have" = "$want" ] || ok=0
  [ -z "$mode" ] || [ "$1" = "$mode" ] || ok=0
  [ -z "$owner" ] || [ "$2" = "$owner" ] || [ "$3" = "$owner" ] || ok=0
  [ -z "$group" ] || [ "$4" = "$group" ] || [ "$5" = "$group" ] || ok=0
fi
if [ "$ok" = 1 ]; then echo unchanged; exit 0; fi
if [ -d "$p" ]; then echo "$p is a directory" >&2; exit 1; fi
dir=$(dirname -- "$p"); base=$(basename -- "$p")
if [ "$mkdirs" = 1 ]; then mkdir -p -- "$dir" || exit 1; fi
tmp=$(mktemp "$dir/.$base.coercion-XXXXXX") || exit 1
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 143' TERM HUP INT
cat > "$tmp" || exit 1
got=$(sha256sum < "$tmp" | cut -c1-64)
if [ "$got" != "$want" ]; then echo "received contents with sha256 $got, expected $want" >&2; exit 3; fi
if [ -n "$mode" ]; then chmod "$mode" -- "$tmp"
elif [ -e "$p" ]; then chmod --reference="$p" -- "$tmp"
else m=$(umask); chmod "$(printf '%o' $(( 0666 & ~m )))" -- "$tmp"; fi || exit 1
if [ -n "$owner$group" ]; then chown -- "$owner${{group:+:$group}}" "$tmp" || exit 1; fi
sync -- "$tmp" || exit 1
mv -f -- "$tmp" "$p" || exit 1
trap - EXIT
sync -- "$dir" 2>/dev/null
echo changed"#
    )
}

/// The largest remote file a preview reads whole, to diff it.
const PREVIEW_TEXT_LIMIT: usize = 64 * 1024;

/// The remote half of an upload's preview: prints `dir`, `missing`, or `present SHA MODE USER
/// UID GROUP GID SIZE` followed by the contents when they are at most the limit. Writes nothing.
fn probe_script(req: &SshUploadReq) -> String {
    let path = quote(&req.path.to_string_lossy());
    format!(
        r#"p={path}
if [ -d "$p" ]; then echo dir; exit 0; fi
if [ ! -e "$p" ]; then echo missing; exit 0; fi
have=$(sha256sum < "$p" | cut -c1-64) || exit 1
st=$(stat -c '%a %U %u %G %g %s' -- "$p") || exit 1
echo "present $have $st"
set -- $st
if [ "$6" -le {PREVIEW_TEXT_LIMIT} ]; then cat -- "$p" || exit 1; fi"#
    )
}

async fn preview_upload(ctx: &Context, req: &SshUploadReq) -> Result<crate::Preview, PluginError> {
    use crate::Preview;
    let host = req.target.to_string();
    let remote = req.path.display().to_string();
    let (bytes, sha256) = upload_bytes(req).await?;
    let run = run_remote(
        ctx,
        &req.target,
        req.become_user.as_deref(),
        &probe_script(req),
        None,
        req.timeout,
        PREVIEW_TEXT_LIMIT + 4096,
    )
    .await?;
    let quoted = quote_output("", &run.stderr);
    let what = format!("reading {remote} for a preview");
    if let Some(e) = not_exited(&run.ended, &what, &host, req.timeout, run.started, &quoted) {
        return Err(e);
    }
    let (head, contents) = run.stdout.split_once('\n').unwrap_or((&run.stdout, ""));
    let fields: Vec<&str> = head.split_whitespace().collect();
    let shown = format!("{host}:{remote}");
    let new_text = std::str::from_utf8(&bytes).ok();
    match fields.as_slice() {
        ["dir"] => Ok(Preview::cannot_tell(format!(
            "{shown} is a directory: an upload would fail"
        ))),
        ["missing"] => {
            let diff = new_text
                .map(|new| crate::preview::unified_diff("", new, "/dev/null", &shown))
                .unwrap_or_default();
            Ok(Preview::would_change(format!(
                "would create {shown} ({} bytes, sha256 {})",
                bytes.len(),
                &sha256[..12]
            ))
            .with_diff(diff))
        }
        ["present", have, mode, user, uid, group, gid, size] => {
            let mut what = Vec::new();
            if *have != sha256 {
                what.push(format!(
                    "{size} → {} bytes, sha256 {} → {}",
                    bytes.len(),
                    &have[..have.len().min(12)],
                    &sha256[..12]
                ));
            }
            if let Some(m) = req.mode.map(|m| format!("{m:o}"))
                && m != *mode
            {
                what.push(format!("mode {mode} → {m}"));
            }
            if let Some(o) = &req.owner
                && o != user
                && o != uid
            {
                what.push(format!("owner {user} → {o}"));
            }
            if let Some(g) = &req.group
                && g != group
                && g != gid
            {
                what.push(format!("group {group} → {g}"));
            }
            if what.is_empty() {
                return Ok(Preview::no_change(format!(
                    "{shown} already holds these {} bytes (sha256 {})",
                    bytes.len(),
                    &sha256[..12]
                )));
            }
            let small = size
                .parse::<usize>()
                .is_ok_and(|n| n <= PREVIEW_TEXT_LIMIT && n == contents.len());
            let diff = match new_text {
                Some(new) if small && *have != sha256 => {
                    crate::preview::unified_diff(contents, new, &shown, &shown)
                }
                _ => String::new(),
            };
            Ok(
                Preview::would_change(format!("would replace {shown} ({})", what.join(", ")))
                    .with_diff(diff),
            )
        }
        _ => Ok(Preview::cannot_tell(format!(
            "unexpected answer from {host} while reading {remote}: {head:?}"
        ))),
    }
}

/// The bytes an upload sends, and their SHA-256 in hex.
async fn upload_bytes(req: &SshUploadReq) -> Result<(Vec<u8>, String), PluginError> {
    let host = req.target.to_string();
    let remote = req.path.display().to_string();
    let bytes = match &req.contents {
        UploadContents::Text(text) => text.as_bytes().to_vec(),
        UploadContents::Bytes(bytes) => bytes.clone(),
        UploadContents::LocalFile(local) => tokio::fs::read(local).await.map_err(|e| {
            PluginError::new(format!(
                "cannot read {} to upload it to {host}:{remote}: {e}",
                local.display()
            ))
            .set_permanent(e.kind() == std::io::ErrorKind::NotFound)
            .with_code(codes::IO)
        })?,
    };
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((bytes, sha256))
}

async fn run_upload(ctx: &Context, req: &SshUploadReq) -> Result<SshUploadResp, PluginError> {
    let host = req.target.to_string();
    let remote = req.path.display().to_string();
    let (bytes, sha256) = upload_bytes(req).await?;
    tracing::debug!(host, path = %remote, bytes = bytes.len(), sha256, "ssh: uploading");
    let size = bytes.len() as u64;
    let run = run_remote(
        ctx,
        &req.target,
        req.become_user.as_deref(),
        &upload_script(req, &sha256),
        Some(bytes),
        req.timeout,
        64 * 1024,
    )
    .await?;
    let quoted = quote_output("", &run.stderr);
    let what = format!("the upload to {remote}");
    if let Some(e) = not_exited(&run.ended, &what, &host, req.timeout, run.started, &quoted) {
        return Err(e);
    }
    let Ended::Exited(status) = run.ended else {
        unreachable!("not_exited handled the rest")
    };
    let outcome = run.stdout.trim();
    if status.success() && (outcome == "changed" || outcome == "unchanged") {
        return Ok(SshUploadResp {
            host,
            path: req.path.clone(),
            changed: outcome == "changed",
            sha256,
            bytes: size,
            duration: run.started.elapsed(),
        });
    }
    let code = status.code().unwrap_or(-1);
    Err(PluginError::new(format!(
        "uploading to {host}:{remote} failed (exit code {code}){}",
        if run.stderr.trim().is_empty() {
            quote_output(&run.stdout, "")
        } else {
            quoted
        }
    ))
    .with_code(codes::EXIT_CODE))
}

/// The pooled connection's control socket for `target`, if one is open (for tests and
/// diagnostics).
#[doc(hidden)]
pub async fn control_socket(target: &SshTarget) -> Option<PathBuf> {
    let slot = slot(target);
    let open = slot.lock().await;
    open.as_ref().map(|s| Path::to_path_buf(s.control_socket()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let t = SshTarget::new("web-1");
        let msg = |r: Result<(), ValidationError>| r.unwrap_err().message;
        assert_eq!(
            msg(SshCommandReq::new(SshTarget::new(""), "true").validate()),
            "`target.host` must not be empty"
        );
        assert_eq!(
            msg(SshCommandReq::new(t.clone().port(0), "true").validate()),
            "`target.port` must not be 0"
        );
        assert_eq!(
            msg(SshCommandReq::new(t.clone(), " ").validate()),
            "`program` must not be empty"
        );
        assert!(
            msg(SshCommandReq::new(t.clone(), "x")
                .env("A-B", "1")
                .validate())
            .starts_with("`env`")
        );
        assert!(
            msg(SshUploadReq::text(t.clone(), "etc/x", "").validate())
                .starts_with("`path` must be an absolute")
        );
        assert!(
            msg(SshUploadReq::text(t.clone(), "/etc/x", "")
                .mode(0o10000)
                .validate())
            .starts_with("`mode`")
        );
        assert!(
            SshUploadReq::text(t.clone(), "/etc/x", "")
                .mode(0o640)
                .validate()
                .is_ok()
        );
        assert!(SshCommandReq::shell(t, "echo hi").validate().is_ok());
    }

    #[test]
    fn requests_round_trip_and_refuse_unknown_fields() {
        let req = SshCommandReq::new(SshTarget::new("h").port(2222).user("u"), "echo")
            .arg("a b")
            .timeout(Duration::from_secs(3));
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(
            json["target"],
            serde_json::json!({"host": "h", "port": 2222, "user": "u"})
        );
        assert_eq!(serde_json::from_value::<SshCommandReq>(json).unwrap(), req);
        assert!(serde_json::from_str::<SshTarget>(r#"{"host":"h","prot":22}"#).is_err());
        let up: SshUploadReq = serde_json::from_str(
            r#"{"target":{"host":"h"},"path":"/x","contents":{"local_file":"a"},"mode":"0640"}"#,
        )
        .unwrap();
        assert_eq!(up.mode, Some(0o640));
        assert_eq!(up.contents, UploadContents::LocalFile("a".into()));
    }

    #[test]
    fn every_word_is_quoted_for_the_remote_shell() {
        let req = SshCommandReq::new(SshTarget::new("h"), "printf")
            .args(["%s\n", "$(rm -rf /)", "it's"])
            .env("LANG", "C; reboot")
            .cwd("/srv/my app");
        let script = command_script(&req);
        assert_eq!(
            shlex::split(&script.replace(';', " ;")).unwrap()[..3],
            ["cd", "--", "/srv/my app"]
        );
        assert!(script.contains("export LANG='C; reboot'"));
        assert!(
            script.ends_with(
                r#"exec printf '%s
' '$(rm -rf /)' "it's""#
            ),
            "{script}"
        );
        let line = remote_line(Some("app"), &script);
        assert!(line.starts_with("sudo -n -u app -- sh -c "));
    }

    #[test]
    fn control_sockets_fit_in_sun_path() {
        // The longest uid, the crate's temporary directory, OpenSSH's random suffix while binding.
        let longest = "/tmp/coercion-ssh-4294967295/.ssh-connectionXXXXXX/master.XXXXXXXXXXXXXXXX";
        assert!(longest.len() < 104, "{}", longest.len());
        let dir = control_dir().unwrap();
        assert!(dir.starts_with("/tmp"));
        assert!(dir.as_os_str().len() <= "/tmp/coercion-ssh-4294967295".len());
    }

    #[test]
    fn connection_failures_are_told_apart() {
        let t = SshTarget::new("10.0.0.7").port(2222);
        let mismatch = "@@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
            Offending ED25519 key in /home/me/.ssh/known_hosts:3\n\
            Host key for [10.0.0.7]:2222 has changed and you have requested strict checking.\n\
            Host key verification failed.";
        let e = classify_connect_failure(&t, mismatch);
        assert_eq!(e.code, codes::SSH_HOST_KEY);
        assert!(e.permanent);
        assert!(
            e.message.contains("/home/me/.ssh/known_hosts:3"),
            "{}",
            e.message
        );
        assert!(e.message.contains("10.0.0.7:2222"));
        let e = classify_connect_failure(&t, "me@10.0.0.7: Permission denied (publickey).");
        assert_eq!((e.code, e.permanent), (codes::SSH_AUTH, true));
        let e = classify_connect_failure(
            &t,
            "ssh: connect to host 10.0.0.7 port 2222: Connection refused",
        );
        assert_eq!((e.code, e.permanent), (codes::SSH_UNREACHABLE, false));
    }
}

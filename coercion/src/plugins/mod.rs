//! Built-in plugins, so that plans do real work out of the box.
//!
//! | Plugin | Kind | Type | Does |
//! |---|---|---|---|
//! | `coercion/command` | action | [`Command`] | runs a program, captures its output, applies exit-code rules |
//! | `coercion/command-check` | check | [`CommandCheck`] | the same, as a check |
//! | `coercion/http-check` | check | [`HttpCheck`] | sends an HTTP request, expects a status and a body substring (feature `http`, default) |
//! | `coercion/webhook` | action | [`Webhook`] | POSTs a JSON document (a Slack-compatible `{"text": …}` with [`WebhookReq::slack`]), retrying a busy receiver (feature `http`, default) |
//! | `coercion/tcp-check` | check | [`TcpCheck`] | connects to a TCP port |
//! | `coercion/file-exists` | check | [`FileExists`] | a path exists, of a kind, containing a text |
//! | `coercion/write-file` | action | [`WriteFile`] | writes a file atomically, with a mode |
//! | `coercion/sleep` | action | [`Sleep`] | waits for a duration, or until the plan is stopped |
//! | `coercion/wait-for` | check | [`WaitFor`] | polls one of the conditions above until it holds or the attempt's deadline (its `http` condition with feature `http`) |
//! | `coercion/wait-until` | action | [`WaitUntil`] | the same, as a step of a sequence (wait until a restarted host is healthy) |
//! | `coercion/ssh-command` | action | [`ssh::SshCommand`] | runs a command on a remote host over a pooled SSH connection (feature `ssh`) |
//! | `coercion/ssh-check` | check | [`ssh::SshCheck`] | the same, as a check (feature `ssh`) |
//! | `coercion/ssh-upload` | action | [`ssh::SshUpload`] | uploads a file to a remote host atomically, skipped when identical (feature `ssh`) |
//!
//! Every plugin is registered with the inventory, so
//! [`Registry::from_inventory`](crate::Registry::from_inventory) knows them all. Requests are
//! plain serde structs with defaults for everything optional; in JSON, durations are written the
//! `humantime` way (`"1s"`, `"250ms"`, `"2m 30s"`). Unknown fields are refused, so a typo in a
//! stored request is reported at submit time instead of being ignored. Each plugin's `validate`
//! refuses requests that cannot work, naming the field.
//!
//! Errors carry a code from [`codes`] so programs can tell failures apart without parsing
//! messages.
//!
//! ```
//! use std::time::Duration;
//! use coercion::plugins::{Command, CommandReq, Condition, HttpCheckReq, WaitFor, WaitForReq};
//! use coercion::prelude::*;
//!
//! let plan = Plan::builder("Deploy")
//!     .block(Block::builder("web").sequences([Sequence::builder("web-1")
//!         .action(ActionSpec::new::<Command>("restart", CommandReq::new("true")))]))
//!     .post_checks(Checks::builder().action(CheckSpec::new::<WaitFor>(
//!         "healthy",
//!         WaitForReq::new(Condition::Http(HttpCheckReq::get("http://127.0.0.1:8080/health")))
//!             .interval(Duration::from_millis(200)),
//!     )))
//!     .build();
//! coercion::workflow::validate_plan(&plan, &Registry::from_inventory().unwrap()).unwrap();
//! ```

mod command;
mod file_exists;
pub(crate) mod gate;
#[cfg(feature = "http")]
mod http;
mod sleep;
#[cfg(feature = "ssh")]
#[cfg_attr(docsrs, doc(cfg(feature = "ssh")))]
pub mod ssh;
mod tcp;
mod wait_for;
#[cfg(feature = "http")]
mod webhook;
mod write_file;

pub use command::{Command, CommandCheck, CommandReq, CommandResp};
pub use file_exists::{FileExists, FileExistsReq, FileExistsResp, FileKind};
pub use gate::{GATE, Gate, GateReq, GateResp, record_decision};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use http::{ExpectedStatus, HttpCheck, HttpCheckReq, HttpCheckResp};
pub use sleep::{Sleep, SleepReq, SleepResp};
pub use tcp::{TcpCheck, TcpCheckReq, TcpCheckResp};
pub use wait_for::{Condition, ConditionResp, WaitFor, WaitForReq, WaitForResp, WaitUntil};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use webhook::{Webhook, WebhookReq, WebhookResp};
pub use write_file::{FileContents, WriteFile, WriteFileReq, WriteFileResp};

use crate::plugin::ValidationError;

/// The codes the built-in plugins put into [`PluginError::code`](crate::PluginError::code).
pub mod codes {
    /// A command exited with a code that is not one of its success codes.
    pub const EXIT_CODE: u32 = 1;
    /// A command was killed by a signal it did not get from us.
    pub const SIGNALLED: u32 = 2;
    /// A command, request or connection exceeded its own timeout.
    pub const TIMED_OUT: u32 = 3;
    /// The plan was stopped (`Context::cancelled` fired) while the plugin worked.
    pub const CANCELLED: u32 = 4;
    /// A command could not be started.
    pub const SPAWN: u32 = 5;
    /// Reading, writing or inspecting a file failed.
    pub const IO: u32 = 6;
    /// An HTTP request could not be sent or its answer not read.
    pub const HTTP_REQUEST: u32 = 10;
    /// An HTTP answer had an unexpected status.
    pub const HTTP_STATUS: u32 = 11;
    /// An HTTP answer's body lacked the expected text.
    pub const HTTP_BODY: u32 = 12;
    /// A TCP connection could not be opened.
    pub const CONNECT: u32 = 20;
    /// A path does not exist.
    pub const NOT_FOUND: u32 = 30;
    /// A path exists but is not of the expected kind.
    pub const WRONG_KIND: u32 = 31;
    /// A file exists but does not contain the expected text.
    pub const MISSING_TEXT: u32 = 32;
    /// `coercion/wait-for`: the condition did not hold before the deadline.
    pub const CONDITION_NOT_MET: u32 = 40;
    /// SSH: the host could not be reached (connection refused or timed out, name unknown, …).
    pub const SSH_UNREACHABLE: u32 = 50;
    /// SSH: the host refused to authenticate us (key, agent, user).
    pub const SSH_AUTH: u32 = 51;
    /// SSH: the host's key is not the one pinned in `known_hosts`, or none is pinned.
    pub const SSH_HOST_KEY: u32 = 52;
    /// SSH: the connection broke while a command ran, or no channel could be opened on it.
    pub const SSH_CONNECTION: u32 = 53;
    /// `coercion/gate`: a person rejected the gate.
    pub const REJECTED: u32 = 60;
    /// `coercion/gate`: nobody decided before the gate's timeout.
    pub const NOT_DECIDED: u32 = 61;
}

/// Refuses a zero duration in field `field`.
fn non_zero(field: &str, d: Option<std::time::Duration>) -> Result<(), ValidationError> {
    match d {
        Some(d) if d.is_zero() => Err(ValidationError::new(format!(
            "`{field}` must be greater than zero"
        ))),
        _ => Ok(()),
    }
}

/// At most `max` bytes of the end of `text`, cut at a character boundary, with leading
/// and trailing whitespace removed: the part of an output worth putting in an error message.
fn tail(text: &str, max: usize) -> &str {
    let text = text.trim();
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim_start()
}

/// At most `max` bytes of the start of `text`, cut at a character boundary.
fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Helpers shared by the plugins' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use parking_lot::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    /// A directory under the system's temp dir, removed with everything in it on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "coercion-plugins-{tag}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        pub(crate) fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// One request the test server received.
    #[derive(Clone, Debug)]
    pub(crate) struct SeenRequest {
        pub(crate) method: String,
        pub(crate) target: String,
        /// Header names lower-cased.
        pub(crate) headers: Vec<(String, String)>,
        pub(crate) body: String,
    }

    /// What the test server answers.
    #[derive(Clone, Debug)]
    pub(crate) struct Reply {
        pub(crate) status: u16,
        pub(crate) headers: Vec<(String, String)>,
        pub(crate) body: String,
    }

    impl Reply {
        pub(crate) fn new(status: u16, body: impl Into<String>) -> Reply {
            Reply {
                status,
                headers: Vec::new(),
                body: body.into(),
            }
        }

        pub(crate) fn header(mut self, name: &str, value: &str) -> Reply {
            self.headers.push((name.to_owned(), value.to_owned()));
            self
        }
    }

    pub(crate) type Answer = dyn Fn(&SeenRequest) -> Reply + Send + Sync;

    /// A tiny HTTP/1.1 server on 127.0.0.1: every request is answered by `answer` and the
    /// connection closed.
    pub(crate) struct TestServer {
        pub(crate) port: u16,
        pub(crate) seen: Arc<Mutex<Vec<SeenRequest>>>,
        task: JoinHandle<()>,
    }

    impl TestServer {
        pub(crate) async fn start(
            answer: impl Fn(&SeenRequest) -> Reply + Send + Sync + 'static,
        ) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            Self::serve(listener, Arc::new(answer))
        }

        /// Serves on an already bound listener (to start listening late on a known port).
        pub(crate) fn serve(listener: TcpListener, answer: Arc<Answer>) -> Self {
            let port = listener.local_addr().unwrap().port();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            let task = tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    let answer = answer.clone();
                    let log = log.clone();
                    tokio::spawn(async move {
                        let Some(req) = read_request(&mut stream).await else {
                            return;
                        };
                        let reply = answer(&req);
                        log.lock().push(req);
                        let mut head = format!(
                            "HTTP/1.1 {} Whatever\r\ncontent-length: {}\r\ncontent-type: text/plain\r\nconnection: close\r\n",
                            reply.status,
                            reply.body.len()
                        );
                        for (name, value) in &reply.headers {
                            head.push_str(&format!("{name}: {value}\r\n"));
                        }
                        head.push_str("\r\n");
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(reply.body.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    });
                }
            });
            TestServer { port, seen, task }
        }

        pub(crate) fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<SeenRequest> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next()?.split(' ');
        let method = request_line.next()?.to_owned();
        let target = request_line.next()?.to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Some(SeenRequest {
            method,
            target,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// A port on 127.0.0.1 that nothing listens on (bound, then released).
    pub(crate) async fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_and_head_cut_at_char_boundaries() {
        assert_eq!(tail("  short \n", 100), "short");
        assert_eq!(tail("abcdef", 3), "def");
        // "é" is two bytes: cutting inside it moves to the next boundary.
        assert_eq!(tail("aébc", 3), "bc");
        assert_eq!(head("abcdef", 3), "abc");
        assert_eq!(head("aébc", 2), "a");
    }

    #[test]
    fn zero_durations_are_refused_by_name() {
        assert!(non_zero("timeout", None).is_ok());
        assert!(non_zero("timeout", Some(std::time::Duration::from_millis(1))).is_ok());
        let e = non_zero("timeout", Some(std::time::Duration::ZERO)).unwrap_err();
        assert_eq!(e.message, "`timeout` must be greater than zero");
    }
}

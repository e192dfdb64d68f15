//! `coercion/wait-for`: poll a condition until it holds or the attempt's deadline.

use crate::report::human_duration;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{
    CommandReq, CommandResp, FileExistsReq, FileExistsResp, TcpCheckReq, TcpCheckResp, codes,
    command, file_exists, non_zero, tcp,
};
#[cfg(feature = "http")]
use super::{HttpCheckReq, HttpCheckResp, http};
use crate::plugin::{Context, InitError, Plugin, PluginError, ValidationError};

/// The longest time kept free before the attempt's deadline, so that the plugin reports its own
/// failure (with the last observation) before the engine abandons the attempt.
const MAX_DEADLINE_MARGIN: Duration = Duration::from_millis(200);

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

/// What [`WaitFor`] waits for: the request of one of the other built-in checks. In JSON, an
/// object with one key: `{ "http": { … } }`, `{ "tcp": { … } }`, `{ "file": { … } }` or
/// `{ "command": { … } }`. `http` needs coercion's `http` feature (default).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Condition {
    /// An HTTP answer as [`HttpCheck`](super::HttpCheck) expects it.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    Http(HttpCheckReq),
    /// A TCP port accepting connections, as [`TcpCheck`](super::TcpCheck) checks it.
    Tcp(TcpCheckReq),
    /// A path as [`FileExists`](super::FileExists) expects it.
    File(FileExistsReq),
    /// A command that succeeds, as [`CommandCheck`](super::CommandCheck) runs it.
    Command(CommandReq),
}

/// What the successful poll observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConditionResp {
    /// The HTTP answer.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    Http(HttpCheckResp),
    /// The connection.
    Tcp(TcpCheckResp),
    /// The path.
    File(FileExistsResp),
    /// The command's result.
    Command(CommandResp),
}

/// The request of [`WaitFor`]. In JSON:
///
/// ```json
/// { "condition": { "http": { "url": "http://127.0.0.1:8080/health" } },
///   "interval": "500ms", "timeout": "1m" }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitForReq {
    /// What must hold.
    pub condition: Condition,
    /// The pause between the start of one poll and the start of the next. Default 1 s.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long to wait at most; the attempt's own deadline always applies, this can only
    /// shorten it.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

impl WaitForReq {
    /// Waits for `condition`, polling every second until the attempt's deadline.
    pub fn new(condition: Condition) -> WaitForReq {
        WaitForReq {
            condition,
            interval: default_interval(),
            timeout: None,
        }
    }

    /// Sets the polling interval.
    pub fn interval(mut self, interval: Duration) -> WaitForReq {
        self.interval = interval;
        self
    }

    /// Sets the plugin's own timeout.
    pub fn timeout(mut self, timeout: Duration) -> WaitForReq {
        self.timeout = Some(timeout);
        self
    }
}

/// How the wait ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitForResp {
    /// How many polls it took (the last one succeeded).
    pub polls: u32,
    /// How long it waited.
    #[serde(with = "humantime_serde")]
    pub waited: Duration,
    /// What the successful poll observed.
    pub observed: ConditionResp,
}

/// Waits for a condition (a check plugin, registered as `coercion/wait-for`): polls it every
/// `interval` until it holds, taking direct control of the retries inside one attempt, up to
/// the attempt's deadline (`Context::deadline`) or the request's `timeout`, whichever is
/// sooner. A poll that hangs is cut off at that deadline (a command's process group is killed).
///
/// Errors ([`codes`](super::codes)): `CONDITION_NOT_MET` (retryable) when the deadline comes
/// first — returned a little before the attempt's deadline, with the poll count and the last
/// observed failure in the message; a permanent error of a poll (a program that cannot start)
/// ends the wait at once, keeping its code; `CANCELLED` (permanent) when the plan is stopped.
/// `validate` refuses a zero `interval` or `timeout`, and whatever the condition's own plugin
/// refuses (as `condition.http.url`, …).
///
/// ```
/// # use coercion::plugins::{Condition, TcpCheckReq, WaitForReq};
/// # use std::time::Duration;
/// let req = WaitForReq::new(Condition::Tcp(TcpCheckReq::new("127.0.0.1", 5432)))
///     .interval(Duration::from_millis(250))
///     .timeout(Duration::from_secs(60));
/// ```
#[crate::plugin(check, name = "coercion/wait-for")]
#[derive(Debug, Default)]
pub struct WaitFor {
    #[cfg(feature = "http")]
    clients: http::Clients,
}

impl WaitFor {
    async fn poll(
        &self,
        ctx: &Context,
        condition: &Condition,
    ) -> Result<ConditionResp, PluginError> {
        match condition {
            #[cfg(feature = "http")]
            Condition::Http(req) => http::probe(&self.clients, req)
                .await
                .map(ConditionResp::Http),
            Condition::Tcp(req) => tcp::probe(req).await.map(ConditionResp::Tcp),
            Condition::File(req) => file_exists::probe(req).await.map(ConditionResp::File),
            Condition::Command(req) => command::run(ctx, req).await.map(ConditionResp::Command),
        }
    }
}

impl Plugin for WaitFor {
    type Request = WaitForReq;
    type Response = WaitForResp;

    async fn execute(&self, ctx: &Context, req: WaitForReq) -> Result<WaitForResp, PluginError> {
        let started = Instant::now();
        let margin = (ctx.remaining() / 10).min(MAX_DEADLINE_MARGIN);
        let mut end = ctx
            .deadline()
            .checked_sub(margin)
            .unwrap_or(started)
            .max(started);
        if let Some(timeout) = req.timeout {
            end = end.min(started + timeout);
        }
        let cancelled = |polls: u32| {
            PluginError::permanent(format!(
                "stopped with the plan while waiting ({polls} polls in {:?})",
                started.elapsed()
            ))
            .with_code(codes::CANCELLED)
        };

        let mut polls = 0;
        let mut last_failure: Option<PluginError> = None;
        let mut cut_off = false;
        loop {
            polls += 1;
            let poll_started = Instant::now();
            let outcome = tokio::select! {
                biased;
                () = ctx.cancelled() => return Err(cancelled(polls)),
                outcome = tokio::time::timeout_at(end, self.poll(ctx, &req.condition)) => outcome,
            };
            match outcome {
                Ok(Ok(observed)) => {
                    return Ok(WaitForResp {
                        polls,
                        waited: started.elapsed(),
                        observed,
                    });
                }
                Ok(Err(e)) if e.permanent => {
                    return Err(PluginError::permanent(format!(
                        "gave up waiting after {polls} polls: {}",
                        e.chain()
                    ))
                    .with_code(e.code));
                }
                Ok(Err(e)) => last_failure = Some(e),
                Err(_elapsed) => {
                    cut_off = true;
                    break;
                }
            }
            // A preview judges the world as it is: one look, no waiting.
            if ctx.is_preview() {
                break;
            }
            let next = poll_started + req.interval;
            if next >= end {
                break;
            }
            tokio::select! {
                biased;
                () = ctx.cancelled() => return Err(cancelled(polls)),
                () = tokio::time::sleep_until(next) => {}
            }
        }

        let last = match (&last_failure, cut_off) {
            (Some(failure), false) => failure.chain(),
            (Some(failure), true) => {
                format!(
                    "{}; the poll after it did not finish before the deadline",
                    failure.chain()
                )
            }
            (None, _) => "the poll did not finish before the deadline".to_owned(),
        };
        Err(PluginError::new(format!(
            "the condition did not hold within {} ({polls} polls, every {}); last failure: {last}",
            human_duration(started.elapsed()),
            human_duration(req.interval)
        ))
        .with_code(codes::CONDITION_NOT_MET))
    }

    fn validate(&self, req: &WaitForReq) -> Result<(), ValidationError> {
        non_zero("interval", Some(req.interval))?;
        non_zero("timeout", req.timeout)?;
        match &req.condition {
            #[cfg(feature = "http")]
            Condition::Http(r) => http::validate(r, "condition.http."),
            Condition::Tcp(r) => tcp::validate(r, "condition.tcp."),
            Condition::File(r) => file_exists::validate(r, "condition.file."),
            Condition::Command(r) => command::validate(r, "condition.command."),
        }
    }

    fn init(&self) -> Result<(), InitError> {
        #[cfg(feature = "http")]
        self.clients
            .check()
            .map_err(|e| InitError::new(e.chain()))?;
        Ok(())
    }
}

/// The action variant of [`WaitFor`], registered as `coercion/wait-until`: a sequence step that
/// waits until a condition holds — a host answering its health check after a restart — with the
/// same request and response. Waiting has no side effect; it is an action only so that it can
/// stand between the steps of a sequence.
#[crate::plugin(preview, name = "coercion/wait-until")]
#[derive(Debug, Default)]
pub struct WaitUntil {
    inner: WaitFor,
}

/// Waiting changes nothing: the preview says what it would wait for.
impl crate::Previews for WaitUntil {
    async fn preview(
        &self,
        _ctx: &Context,
        req: &WaitForReq,
    ) -> Result<crate::Preview, PluginError> {
        let what = match &req.condition {
            #[cfg(feature = "http")]
            Condition::Http(r) => format!("{} {} answers as expected", r.method, r.url),
            Condition::Tcp(r) => format!("{}:{} accepts connections", r.host, r.port),
            Condition::File(r) => format!("{} is as expected", r.path.display()),
            Condition::Command(r) => format!("`{}` succeeds", r.display()),
        };
        let within = req
            .timeout
            .map(|t| format!(", for at most {}", human_duration(t)))
            .unwrap_or_default();
        Ok(crate::Preview::no_change(format!(
            "would wait until {what} (polling every {}{within})",
            human_duration(req.interval)
        )))
    }
}

impl Plugin for WaitUntil {
    type Request = WaitForReq;
    type Response = WaitForResp;

    async fn execute(&self, ctx: &Context, req: WaitForReq) -> Result<WaitForResp, PluginError> {
        self.inner.execute(ctx, req).await
    }

    fn validate(&self, req: &WaitForReq) -> Result<(), ValidationError> {
        Plugin::validate(&self.inner, req)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::plugins::test_support::{Reply, TempDir, TestServer, closed_port};
    use crate::plugins::{ExpectedStatus, FileKind};

    fn every(condition: Condition, interval_ms: u64) -> WaitForReq {
        WaitForReq::new(condition).interval(Duration::from_millis(interval_ms))
    }

    #[tokio::test]
    async fn waits_until_a_file_appears() {
        let dir = TempDir::new("wait-file");
        let path = dir.join("ready");
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                tokio::fs::write(path, "ready").await.unwrap();
            })
        };
        let ctx = Context::detached(Duration::from_secs(30));
        let req = every(
            Condition::File(FileExistsReq::new(&path).contains("ready")),
            50,
        );
        let resp = WaitFor::default().execute(&ctx, req).await.unwrap();
        assert!(resp.polls > 1, "the file was not there at first: {resp:?}");
        assert_eq!(
            resp.observed,
            ConditionResp::File(FileExistsResp {
                kind: FileKind::File,
                size: 5
            })
        );
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn waits_until_a_port_opens() {
        let port = closed_port().await;
        let opener = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            let _ = listener.accept().await;
        });
        let ctx = Context::detached(Duration::from_secs(30));
        let resp = WaitFor::default()
            .execute(
                &ctx,
                every(Condition::Tcp(TcpCheckReq::new("127.0.0.1", port)), 50),
            )
            .await;
        let resp = resp.unwrap();
        assert!(resp.polls > 1, "{resp:?}");
        assert_eq!(
            resp.observed,
            ConditionResp::Tcp(TcpCheckResp {
                address: format!("127.0.0.1:{port}")
            })
        );
        opener.await.unwrap();
    }

    #[tokio::test]
    async fn waits_until_the_service_is_healthy() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let server = TestServer::start(move |_| {
            if counter.fetch_add(1, Ordering::SeqCst) < 3 {
                Reply::new(503, "starting")
            } else {
                Reply::new(200, "up")
            }
        })
        .await;
        let ctx = Context::detached(Duration::from_secs(30));
        let req = every(
            Condition::Http(HttpCheckReq::get(server.url("/health")).body_contains("up")),
            20,
        );
        let resp = WaitFor::default().execute(&ctx, req).await.unwrap();
        assert_eq!(resp.polls, 4);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let ConditionResp::Http(answer) = resp.observed else {
            panic!("not an HTTP answer: {resp:?}")
        };
        assert_eq!((answer.status, answer.body.as_str()), (200, "up"));
    }

    #[tokio::test]
    async fn waits_until_a_command_succeeds() {
        let dir = TempDir::new("wait-cmd");
        let counter = dir.join("n");
        let script = format!(
            "n=$(cat {0} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {0}; echo try $n; [ $n -ge 3 ]",
            counter.display()
        );
        let ctx = Context::detached(Duration::from_secs(30));
        let resp = WaitFor::default()
            .execute(
                &ctx,
                every(Condition::Command(CommandReq::shell(script)), 20),
            )
            .await;
        let resp = resp.unwrap();
        assert_eq!(resp.polls, 3);
        let ConditionResp::Command(out) = resp.observed else {
            panic!("not a command result")
        };
        assert_eq!(out.stdout, "try 3\n");
    }

    #[tokio::test(start_paused = true)]
    async fn fails_at_the_attempt_deadline_with_the_last_failure() {
        let dir = TempDir::new("wait-deadline");
        let path = dir.join("never");
        let ctx = Context::detached(Duration::from_secs(10));
        let started = Instant::now();
        let req = every(Condition::File(FileExistsReq::new(&path)), 1000);
        let err = WaitFor::default().execute(&ctx, req).await.unwrap_err();
        // Polls at 0 s, 1 s, … 9 s; the next would come after the deadline less its margin.
        assert_eq!(started.elapsed(), Duration::from_secs(9));
        assert!(Instant::now() < ctx.deadline());
        assert_eq!(err.code, codes::CONDITION_NOT_MET);
        assert!(!err.permanent);
        assert_eq!(
            err.message,
            format!(
                "the condition did not hold within 9s (10 polls, every 1s); last failure: {} does not exist",
                path.display()
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn its_own_timeout_shortens_the_wait() {
        let dir = TempDir::new("wait-timeout");
        let path = dir.join("f");
        std::fs::write(&path, "starting").unwrap();
        let ctx = Context::detached(Duration::from_secs(3600));
        let started = Instant::now();
        let condition = Condition::File(FileExistsReq::new(&path).contains("ready"));
        let err = WaitFor::default()
            .execute(&ctx, every(condition, 1000).timeout(Duration::from_secs(3)))
            .await;
        let err = err.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(
            err.message,
            format!(
                "the condition did not hold within 2s (3 polls, every 1s); last failure: {} does not contain \"ready\"",
                path.display()
            )
        );
    }

    #[tokio::test]
    async fn a_hung_poll_is_cut_off_before_the_deadline() {
        let dir = TempDir::new("wait-hung");
        let pidfile = dir.join("pid");
        let ctx = Context::detached(Duration::from_secs(1));
        let script = format!("echo $$ > {}; sleep 30", pidfile.display());
        let err = WaitFor::default()
            .execute(
                &ctx,
                every(Condition::Command(CommandReq::shell(script)), 50),
            )
            .await;
        let err = err.unwrap_err();
        assert!(
            Instant::now() < ctx.deadline(),
            "the plugin answered before the engine's deadline"
        );
        assert_eq!(err.code, codes::CONDITION_NOT_MET);
        assert!(
            err.message
                .ends_with("last failure: the poll did not finish before the deadline"),
            "{}",
            err.message
        );
        // The cut-off command was killed.
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(10);
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 {
            assert!(
                std::time::Instant::now() < until,
                "the hung command {pid} was left running"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_permanent_failure_ends_the_wait_at_once() {
        let ctx = Context::detached(Duration::from_secs(30));
        let req = every(Condition::Command(CommandReq::new("/no/such/program")), 10);
        let err = WaitFor::default().execute(&ctx, req).await.unwrap_err();
        assert!(err.permanent);
        assert_eq!(err.code, codes::SPAWN);
        assert!(
            err.message
                .starts_with("gave up waiting after 1 polls: cannot start `/no/such/program`"),
            "{}",
            err.message
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_the_plan_is_stopped() {
        let dir = TempDir::new("wait-cancel");
        let token = CancellationToken::new();
        let ctx = Context::detached(Duration::from_secs(3600)).with_cancellation(token.clone());
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            token.cancel();
        });
        let req = every(Condition::File(FileExistsReq::new(dir.join("never"))), 1000);
        let err = WaitFor::default().execute(&ctx, req).await.unwrap_err();
        assert_eq!(err.code, codes::CANCELLED);
        assert!(err.permanent);
        assert_eq!(
            err.message,
            "stopped with the plan while waiting (3 polls in 2.5s)"
        );
        stopper.await.unwrap();
    }

    #[test]
    fn validate_refuses_requests_that_cannot_work() {
        let plugin = WaitFor::default();
        let refused = |req: WaitForReq| plugin.validate(&req).unwrap_err().message;
        let tcp = Condition::Tcp(TcpCheckReq::new("db", 5432));
        assert!(plugin.validate(&WaitForReq::new(tcp.clone())).is_ok());
        assert_eq!(
            refused(WaitForReq::new(tcp.clone()).interval(Duration::ZERO)),
            "`interval` must be greater than zero"
        );
        assert_eq!(
            refused(WaitForReq::new(tcp).timeout(Duration::ZERO)),
            "`timeout` must be greater than zero"
        );
        assert_eq!(
            refused(WaitForReq::new(Condition::Tcp(TcpCheckReq::new("db", 0)))),
            "`condition.tcp.port` must not be 0"
        );
        assert!(
            refused(WaitForReq::new(Condition::Http(HttpCheckReq::get(
                "localhost"
            ))))
            .starts_with("`condition.http.url` \"localhost\" is not a valid URL")
        );
        let http = HttpCheckReq::get("http://h/").expect_status(ExpectedStatus::AnyOf(vec![]));
        assert_eq!(
            refused(WaitForReq::new(Condition::Http(http))),
            "`condition.http.expect_status` must list at least one status"
        );
        assert_eq!(
            refused(WaitForReq::new(Condition::File(FileExistsReq::new("")))),
            "`condition.file.path` must not be empty"
        );
        assert_eq!(
            refused(WaitForReq::new(Condition::Command(
                CommandReq::new("true").timeout(Duration::ZERO)
            ))),
            "`condition.command.timeout` must be greater than zero"
        );
    }

    #[test]
    fn json_form() {
        let req: WaitForReq = serde_json::from_str(
            r#"{"condition": {"tcp": {"host": "db", "port": 5432}}, "interval": "500ms"}"#,
        )
        .unwrap();
        assert_eq!(
            req,
            every(Condition::Tcp(TcpCheckReq::new("db", 5432)), 500)
        );
        assert_eq!(
            serde_json::from_str::<WaitForReq>(&serde_json::to_string(&req).unwrap()).unwrap(),
            req
        );
        assert!(serde_json::from_str::<WaitForReq>(r#"{"condition": {"ping": {}}}"#).is_err());
    }
}

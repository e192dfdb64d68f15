//! `coercion/tcp-check`: a TCP port accepts connections.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use super::{codes, non_zero};
use crate::plugin::{Context, Plugin, PluginError, ValidationError};

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The request of [`TcpCheck`]. In JSON:
///
/// ```json
/// { "host": "db.internal", "port": 5432, "timeout": "2s" }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheckReq {
    /// A host name or an IP address.
    pub host: String,
    /// The port (not 0).
    pub port: u16,
    /// How long resolving and connecting may take. Default 5 s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl TcpCheckReq {
    /// Connects to `host:port` with the default timeout.
    pub fn new(host: impl Into<String>, port: u16) -> TcpCheckReq {
        TcpCheckReq {
            host: host.into(),
            port,
            timeout: default_timeout(),
        }
    }

    /// Sets the connect timeout.
    pub fn timeout(mut self, timeout: Duration) -> TcpCheckReq {
        self.timeout = timeout;
        self
    }
}

/// Where the connection went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpCheckResp {
    /// The address connected to (`ip:port`).
    pub address: String,
}

/// A TCP port check (a check plugin, registered as `coercion/tcp-check`): resolves `host`,
/// opens a connection to `port` and closes it at once.
///
/// Errors ([`codes`](super::codes)): `CONNECT` (resolution failed, connection refused or
/// unreachable: the message names the address and the cause) and `TIMED_OUT`, both retryable.
/// `validate` refuses an empty `host`, port 0 and a zero `timeout`.
///
/// ```
/// # use coercion::plugins::TcpCheckReq;
/// let req = TcpCheckReq::new("127.0.0.1", 5432);
/// ```
#[crate::plugin(check, name = "coercion/tcp-check")]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpCheck;

impl Plugin for TcpCheck {
    type Request = TcpCheckReq;
    type Response = TcpCheckResp;

    async fn execute(&self, _ctx: &Context, req: TcpCheckReq) -> Result<TcpCheckResp, PluginError> {
        probe(&req).await
    }

    fn validate(&self, req: &TcpCheckReq) -> Result<(), ValidationError> {
        validate(req, "")
    }
}

/// Checks a TCP request; field names in messages start with `prefix`.
pub(super) fn validate(req: &TcpCheckReq, prefix: &str) -> Result<(), ValidationError> {
    if req.host.trim().is_empty() {
        return Err(ValidationError::new(format!(
            "`{prefix}host` must not be empty"
        )));
    }
    if req.port == 0 {
        return Err(ValidationError::new(format!(
            "`{prefix}port` must not be 0"
        )));
    }
    non_zero(&format!("{prefix}timeout"), Some(req.timeout))
}

/// Connects once (also used by `coercion/wait-for`).
pub(super) async fn probe(req: &TcpCheckReq) -> Result<TcpCheckResp, PluginError> {
    let target = if req.host.contains(':') {
        format!("[{}]:{}", req.host, req.port)
    } else {
        format!("{}:{}", req.host, req.port)
    };
    match tokio::time::timeout(
        req.timeout,
        TcpStream::connect((req.host.as_str(), req.port)),
    )
    .await
    {
        Ok(Ok(stream)) => {
            let address = stream.peer_addr().map_or(target, |a| a.to_string());
            Ok(TcpCheckResp { address })
        }
        Ok(Err(e)) => {
            Err(PluginError::new(format!("cannot connect to {target}: {e}"))
                .with_code(codes::CONNECT))
        }
        Err(_) => Err(PluginError::new(format!(
            "cannot connect to {target}: no answer within {}",
            crate::report::human_duration(req.timeout)
        ))
        .with_code(codes::TIMED_OUT)),
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;
    use crate::plugins::test_support::closed_port;

    fn ctx() -> Context {
        Context::detached(Duration::from_secs(30))
    }

    #[tokio::test]
    async fn connects_to_an_open_port() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let resp = TcpCheck
            .execute(&ctx(), TcpCheckReq::new("127.0.0.1", port))
            .await
            .unwrap();
        assert_eq!(resp.address, format!("127.0.0.1:{port}"));
        let resp = TcpCheck
            .execute(&ctx(), TcpCheckReq::new("localhost", port))
            .await;
        // `localhost` may resolve to ::1 first; the check must still find the IPv4 listener.
        assert_eq!(resp.unwrap().address, format!("127.0.0.1:{port}"));
    }

    #[tokio::test]
    async fn closed_port_fails_with_the_cause() {
        let port = closed_port().await;
        let err = TcpCheck
            .execute(&ctx(), TcpCheckReq::new("127.0.0.1", port))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::CONNECT);
        assert!(!err.permanent);
        assert!(
            err.message
                .starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
            "{}",
            err.message
        );
        assert!(
            err.message.to_lowercase().contains("refused"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn unknown_host_fails() {
        let err = TcpCheck
            .execute(&ctx(), TcpCheckReq::new("no-such-host.invalid", 80))
            .await
            .unwrap_err();
        assert!(
            err.code == codes::CONNECT || err.code == codes::TIMED_OUT,
            "{err:?}"
        );
        assert!(
            err.message
                .starts_with("cannot connect to no-such-host.invalid:80: "),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn connect_timeout_is_applied() {
        // A listener with a backlog of 0 queues one connection that nobody accepts; the kernel
        // then drops further SYNs, so the next connection attempt hangs.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let _queued = TcpStream::connect(addr).await.unwrap();
        let req = TcpCheckReq::new("127.0.0.1", addr.port()).timeout(Duration::from_millis(300));
        let err = TcpCheck.execute(&ctx(), req).await.unwrap_err();
        assert_eq!(err.code, codes::TIMED_OUT);
        assert!(!err.permanent);
        assert_eq!(
            err.message,
            format!("cannot connect to {addr}: no answer within 300ms")
        );
    }

    #[test]
    fn validate_refuses_requests_that_cannot_work() {
        assert!(TcpCheck.validate(&TcpCheckReq::new("db", 5432)).is_ok());
        let refused = |req: TcpCheckReq| TcpCheck.validate(&req).unwrap_err().message;
        assert_eq!(
            refused(TcpCheckReq::new(" ", 5432)),
            "`host` must not be empty"
        );
        assert_eq!(refused(TcpCheckReq::new("db", 0)), "`port` must not be 0");
        assert_eq!(
            refused(TcpCheckReq::new("db", 1).timeout(Duration::ZERO)),
            "`timeout` must be greater than zero"
        );
    }

    #[test]
    fn json_defaults() {
        let req: TcpCheckReq = serde_json::from_str(r#"{"host": "db", "port": 5432}"#).unwrap();
        assert_eq!(req, TcpCheckReq::new("db", 5432));
        assert!(serde_json::from_str::<TcpCheckReq>(r#"{"host": "db", "port": 70000}"#).is_err());
    }
}

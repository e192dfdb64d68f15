//! `coercion/http-check`: send an HTTP request, expect a status and a body substring.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};

use super::{codes, head, non_zero};
use crate::plugin::{Context, InitError, Plugin, PluginError, ValidationError};

/// How much of a body an error message quotes.
const MESSAGE_BODY: usize = 512;

fn default_method() -> String {
    "GET".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_body_limit() -> usize {
    64 * 1024
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The statuses an [`HttpCheckReq`] accepts. In JSON: `200`, `[200, 204]` or
/// `{ "min": 200, "max": 299 }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExpectedStatus {
    /// Exactly this status.
    Code(u16),
    /// Any of these statuses.
    AnyOf(Vec<u16>),
    /// Any status in `min..=max`.
    Range {
        /// The lowest accepted status.
        min: u16,
        /// The highest accepted status.
        max: u16,
    },
}

impl Default for ExpectedStatus {
    /// `200`.
    fn default() -> Self {
        ExpectedStatus::Code(200)
    }
}

impl ExpectedStatus {
    /// Any 2xx status.
    pub const fn success() -> ExpectedStatus {
        ExpectedStatus::Range { min: 200, max: 299 }
    }

    /// Whether `status` is accepted.
    pub fn matches(&self, status: u16) -> bool {
        match self {
            ExpectedStatus::Code(code) => *code == status,
            ExpectedStatus::AnyOf(codes) => codes.contains(&status),
            ExpectedStatus::Range { min, max } => (*min..=*max).contains(&status),
        }
    }

    fn validate(&self, field: &str) -> Result<(), ValidationError> {
        let valid = |code: &u16| (100..=599).contains(code);
        let refuse = |what: String| Err(ValidationError::new(format!("`{field}` {what}")));
        match self {
            ExpectedStatus::Code(code) if !valid(code) => {
                refuse(format!("{code} is not an HTTP status (100-599)"))
            }
            ExpectedStatus::AnyOf(codes) if codes.is_empty() => {
                refuse("must list at least one status".into())
            }
            ExpectedStatus::AnyOf(codes) => match codes.iter().find(|c| !valid(c)) {
                Some(code) => refuse(format!("{code} is not an HTTP status (100-599)")),
                None => Ok(()),
            },
            ExpectedStatus::Range { min, max } if !valid(min) || !valid(max) || min > max => {
                refuse(format!(
                    "{min}-{max} is not a range of HTTP statuses (100-599, min ≤ max)"
                ))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for ExpectedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedStatus::Code(code) => write!(f, "{code}"),
            ExpectedStatus::AnyOf(codes) => write!(f, "one of {codes:?}"),
            ExpectedStatus::Range { min, max } => write!(f, "{min}-{max}"),
        }
    }
}

/// The request of [`HttpCheck`]. Only `url` is required. In JSON:
///
/// ```json
/// { "url": "http://10.0.0.7:8080/health", "expect_status": [200, 204],
///   "body_contains": "\"status\":\"up\"", "timeout": "2s" }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheckReq {
    /// The HTTP method. Default `GET`.
    #[serde(default = "default_method")]
    pub method: String,
    /// The URL: `http://…`, or `https://…` when coercion is built with its `tls` feature.
    pub url: String,
    /// Request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The statuses that pass. Default `200`.
    #[serde(default)]
    pub expect_status: ExpectedStatus,
    /// Text the body must contain (searched in the first `body_limit` bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// How long the whole exchange may take. Default 10 s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Follow redirects (up to 10). Default `false`: the first answer's status is checked.
    #[serde(default, skip_serializing_if = "is_false")]
    pub follow_redirects: bool,
    /// How many bytes of the body are read, searched and returned. Default 64 KiB.
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
}

impl Default for HttpCheckReq {
    /// An empty URL (which `validate` refuses) with every default.
    fn default() -> Self {
        HttpCheckReq {
            method: default_method(),
            url: String::new(),
            headers: BTreeMap::new(),
            body: None,
            expect_status: ExpectedStatus::default(),
            body_contains: None,
            timeout: default_timeout(),
            follow_redirects: false,
            body_limit: default_body_limit(),
        }
    }
}

impl HttpCheckReq {
    /// `GET url`, expecting 200.
    pub fn get(url: impl Into<String>) -> HttpCheckReq {
        HttpCheckReq {
            url: url.into(),
            ..HttpCheckReq::default()
        }
    }

    /// Sets the method.
    pub fn method(mut self, method: impl Into<String>) -> HttpCheckReq {
        self.method = method.into();
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> HttpCheckReq {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<String>) -> HttpCheckReq {
        self.body = Some(body.into());
        self
    }

    /// Sets the accepted statuses.
    pub fn expect_status(mut self, expected: ExpectedStatus) -> HttpCheckReq {
        self.expect_status = expected;
        self
    }

    /// Requires the body to contain `text`.
    pub fn body_contains(mut self, text: impl Into<String>) -> HttpCheckReq {
        self.body_contains = Some(text.into());
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> HttpCheckReq {
        self.timeout = timeout;
        self
    }
}

/// What the server answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCheckResp {
    /// The status.
    pub status: u16,
    /// The start of the body (at most `body_limit` bytes; not UTF-8 is converted lossily).
    pub body: String,
    /// Whether the body was longer than `body_limit`.
    pub truncated: bool,
}

/// An HTTP check (a check plugin, registered as `coercion/http-check`): sends one request and
/// passes when the status is one of `expect_status` and the body contains `body_contains`.
///
/// Plain `http://` works out of the box. **`https://` needs coercion's `tls` feature**
/// (`coercion = { version = "…", features = ["tls"] }`, which enables reqwest's rustls);
/// without it `validate` refuses https URLs. Connections are not pooled, so a restarted
/// service is never probed through a stale connection.
///
/// Errors ([`codes`](super::codes)): `HTTP_STATUS` (the message has the status and the start
/// of the body), `HTTP_BODY`, `HTTP_REQUEST` (connection refused, reset, …), `TIMED_OUT`; all
/// retryable. `validate` refuses a bad method, URL, header or status, a scheme other than http
/// and https, a zero `timeout` and an empty `body_contains`.
///
/// ```
/// # use coercion::plugins::{ExpectedStatus, HttpCheckReq};
/// let req = HttpCheckReq::get("http://127.0.0.1:8080/health")
///     .expect_status(ExpectedStatus::success())
///     .body_contains("ok");
/// ```
#[crate::plugin(check, name = "coercion/http-check")]
#[derive(Debug, Default)]
pub struct HttpCheck {
    clients: Clients,
}

impl Plugin for HttpCheck {
    type Request = HttpCheckReq;
    type Response = HttpCheckResp;

    async fn execute(
        &self,
        _ctx: &Context,
        req: HttpCheckReq,
    ) -> Result<HttpCheckResp, PluginError> {
        probe(&self.clients, &req).await
    }

    fn validate(&self, req: &HttpCheckReq) -> Result<(), ValidationError> {
        validate(req, "")
    }

    fn init(&self) -> Result<(), InitError> {
        self.clients.check().map_err(|e| InitError::new(e.chain()))
    }
}

/// The HTTP clients of a plugin instance, built on first use: one that follows redirects and
/// one that does not.
#[derive(Debug, Default)]
pub(super) struct Clients {
    direct: OnceLock<reqwest::Client>,
    following: OnceLock<reqwest::Client>,
}

impl Clients {
    /// Builds the client, to find out early whether that works.
    pub(super) fn check(&self) -> Result<(), PluginError> {
        self.get(false).map(|_| ())
    }

    fn get(&self, follow_redirects: bool) -> Result<&reqwest::Client, PluginError> {
        let (cell, policy) = if follow_redirects {
            (&self.following, reqwest::redirect::Policy::limited(10))
        } else {
            (&self.direct, reqwest::redirect::Policy::none())
        };
        if let Some(client) = cell.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .redirect(policy)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| {
                PluginError::permanent("cannot build the HTTP client")
                    .with_code(codes::HTTP_REQUEST)
                    .caused_by(&e)
            })?;
        Ok(cell.get_or_init(|| client))
    }
}

/// Checks an HTTP request; field names in messages start with `prefix`.
pub(super) fn validate(req: &HttpCheckReq, prefix: &str) -> Result<(), ValidationError> {
    let refuse =
        |field: &str, what: String| Err(ValidationError::new(format!("`{prefix}{field}` {what}")));
    if req.method.is_empty() || Method::from_bytes(req.method.as_bytes()).is_err() {
        return refuse("method", format!("{:?} is not an HTTP method", req.method));
    }
    let url = match Url::parse(&req.url) {
        Ok(url) => url,
        Err(e) => return refuse("url", format!("{:?} is not a valid URL: {e}", req.url)),
    };
    match url.scheme() {
        "http" => {}
        "https" if cfg!(feature = "tls") => {}
        "https" => {
            return refuse(
                "url",
                format!(
                    "{:?} uses https, but coercion was built without its `tls` feature; enable it \
                     (`coercion = {{ features = [\"tls\"] }}`) to check https URLs",
                    req.url
                ),
            );
        }
        other => {
            return refuse(
                "url",
                format!(
                    "{:?} has scheme {other:?}; only http and https are supported",
                    req.url
                ),
            );
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return refuse("url", format!("{:?} has no host", req.url));
    }
    for (name, value) in &req.headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return refuse("headers", format!("has an invalid header name {name:?}"));
        }
        if HeaderValue::from_str(value).is_err() {
            return refuse(
                &format!("headers.{name}"),
                "is not a valid header value".into(),
            );
        }
    }
    req.expect_status
        .validate(&format!("{prefix}expect_status"))?;
    if let Some(text) = &req.body_contains {
        if text.is_empty() {
            return refuse("body_contains", "must not be empty when given".into());
        }
        if req.body_limit < text.len() {
            return refuse(
                "body_limit",
                format!("({}) is shorter than `body_contains`", req.body_limit),
            );
        }
    }
    non_zero(&format!("{prefix}timeout"), Some(req.timeout))
}

/// Sends the request of `req` and judges the answer (also used by `coercion/wait-for`).
pub(super) async fn probe(
    clients: &Clients,
    req: &HttpCheckReq,
) -> Result<HttpCheckResp, PluginError> {
    let shown = format!("{} {}", req.method, req.url);
    let client = clients.get(req.follow_redirects)?;
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| PluginError::permanent(format!("{:?} is not an HTTP method", req.method)))?;
    let mut builder = client.request(method, &req.url).timeout(req.timeout);
    for (name, value) in &req.headers {
        builder = builder.header(name, value);
    }
    if let Some(body) = &req.body {
        builder = builder.body(body.clone());
    }
    let mut answer = builder
        .send()
        .await
        .map_err(|e| transport_error(&shown, req.timeout, &e))?;
    let status = answer.status().as_u16();

    let mut body = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = answer
        .chunk()
        .await
        .map_err(|e| transport_error(&shown, req.timeout, &e))?
    {
        let room = req.body_limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let quoted = if body.trim().is_empty() {
        String::new()
    } else {
        format!("; body: {}", head(body.trim(), MESSAGE_BODY))
    };

    if !req.expect_status.matches(status) {
        return Err(PluginError::new(format!(
            "{shown} answered {status}, expected {}{quoted}",
            req.expect_status
        ))
        .with_code(codes::HTTP_STATUS));
    }
    if let Some(text) = &req.body_contains
        && !body.contains(text.as_str())
    {
        let searched = if truncated {
            format!(" (its first {} bytes)", req.body_limit)
        } else {
            String::new()
        };
        return Err(PluginError::new(format!(
            "{shown} answered {status} but the body{searched} does not contain {text:?}{quoted}"
        ))
        .with_code(codes::HTTP_BODY));
    }
    Ok(HttpCheckResp {
        status,
        body,
        truncated,
    })
}

/// A failure to exchange the request: one message with the innermost causes, which say what
/// actually happened ("Connection refused").
fn transport_error(shown: &str, timeout: Duration, err: &reqwest::Error) -> PluginError {
    if err.is_timeout() {
        return PluginError::new(format!(
            "{shown}: no answer within {}",
            crate::report::human_duration(timeout)
        ))
        .with_code(codes::TIMED_OUT);
    }
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let detail = if causes.is_empty() {
        err.to_string()
    } else {
        causes.join(": ")
    };
    PluginError::new(format!("{shown} failed: {detail}")).with_code(codes::HTTP_REQUEST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_support::{Reply, TestServer, closed_port};

    fn ctx() -> Context {
        Context::detached(Duration::from_secs(30))
    }

    #[tokio::test]
    async fn passes_on_the_expected_status_and_returns_the_body() {
        let server = TestServer::start(|_| Reply::new(200, "all ok")).await;
        let resp = HttpCheck::default()
            .execute(&ctx(), HttpCheckReq::get(server.url("/health")))
            .await
            .unwrap();
        assert_eq!(
            resp,
            HttpCheckResp {
                status: 200,
                body: "all ok".into(),
                truncated: false
            }
        );
        let seen = server.seen.lock().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("GET", "/health")
        );
    }

    #[tokio::test]
    async fn sends_method_headers_and_body() {
        let server = TestServer::start(|_| Reply::new(201, "")).await;
        let req = HttpCheckReq::get(server.url("/deploy?x=1"))
            .method("POST")
            .header("X-Token", "s3cret")
            .body("{\"v\":2}")
            .expect_status(ExpectedStatus::Code(201));
        HttpCheck::default().execute(&ctx(), req).await.unwrap();
        let seen = server.seen.lock()[0].clone();
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.target, "/deploy?x=1");
        assert!(
            seen.headers.contains(&("x-token".into(), "s3cret".into())),
            "{:?}",
            seen.headers
        );
        assert_eq!(seen.body, "{\"v\":2}");
    }

    #[tokio::test]
    async fn unexpected_status_fails_with_status_and_body() {
        let server = TestServer::start(|_| Reply::new(503, "overloaded, try later")).await;
        let url = server.url("/health");
        let err = HttpCheck::default()
            .execute(&ctx(), HttpCheckReq::get(&url))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::HTTP_STATUS);
        assert!(!err.permanent);
        assert_eq!(
            err.message,
            format!("GET {url} answered 503, expected 200; body: overloaded, try later")
        );
    }

    #[tokio::test]
    async fn accepts_sets_and_ranges_of_statuses() {
        let server = TestServer::start(|r| Reply::new(r.target[1..].parse().unwrap(), "")).await;
        let check = HttpCheck::default();
        let run = |status: u16, expected: ExpectedStatus| {
            let req = HttpCheckReq::get(server.url(&format!("/{status}"))).expect_status(expected);
            let check = &check;
            async move {
                check
                    .execute(&ctx(), req)
                    .await
                    .map(|r| r.status)
                    .map_err(|e| e.code)
            }
        };
        assert_eq!(
            run(204, ExpectedStatus::AnyOf(vec![200, 204])).await,
            Ok(204)
        );
        assert_eq!(
            run(202, ExpectedStatus::AnyOf(vec![200, 204])).await,
            Err(codes::HTTP_STATUS)
        );
        assert_eq!(run(299, ExpectedStatus::success()).await, Ok(299));
        assert_eq!(
            run(300, ExpectedStatus::success()).await,
            Err(codes::HTTP_STATUS)
        );
        assert_eq!(run(404, ExpectedStatus::Code(404)).await, Ok(404));
    }

    #[tokio::test]
    async fn body_substring_is_required() {
        let server = TestServer::start(|_| Reply::new(200, "{\"status\":\"starting\"}")).await;
        let url = server.url("/");
        let check = HttpCheck::default();
        check
            .execute(&ctx(), HttpCheckReq::get(&url).body_contains("\"status\""))
            .await
            .unwrap();
        let err = check
            .execute(&ctx(), HttpCheckReq::get(&url).body_contains("\"up\""))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::HTTP_BODY);
        assert_eq!(
            err.message,
            format!(
                "GET {url} answered 200 but the body does not contain \"\\\"up\\\"\"; body: {{\"status\":\"starting\"}}"
            )
        );
    }

    #[tokio::test]
    async fn body_is_truncated_to_the_limit() {
        let server = TestServer::start(|_| Reply::new(200, "0123456789".repeat(10))).await;
        let mut req = HttpCheckReq::get(server.url("/")).body_contains("234");
        req.body_limit = 5;
        let resp = HttpCheck::default()
            .execute(&ctx(), req.clone())
            .await
            .unwrap();
        assert_eq!(resp.body, "01234");
        assert!(resp.truncated);

        req.body_contains = Some("789".into());
        let err = HttpCheck::default().execute(&ctx(), req).await.unwrap_err();
        assert_eq!(err.code, codes::HTTP_BODY);
        assert!(
            err.message
                .contains("the body (its first 5 bytes) does not contain"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn redirects_are_followed_only_when_asked() {
        let server = TestServer::start(|r| match r.target.as_str() {
            "/old" => Reply::new(302, "").header("location", "/new"),
            _ => Reply::new(200, "new place"),
        })
        .await;
        let check = HttpCheck::default();
        let err = check
            .execute(&ctx(), HttpCheckReq::get(server.url("/old")))
            .await
            .unwrap_err();
        assert!(
            err.message.contains("answered 302, expected 200"),
            "{}",
            err.message
        );
        let mut req = HttpCheckReq::get(server.url("/old"));
        req.follow_redirects = true;
        let resp = check.execute(&ctx(), req).await.unwrap();
        assert_eq!(resp.body, "new place");
    }

    #[tokio::test]
    async fn connection_refused_is_a_retryable_request_error() {
        let url = format!("http://127.0.0.1:{}/health", closed_port().await);
        let err = HttpCheck::default()
            .execute(&ctx(), HttpCheckReq::get(&url))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::HTTP_REQUEST);
        assert!(!err.permanent);
        assert!(
            err.message.starts_with(&format!("GET {url} failed: ")),
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
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let _hold = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                conns.push(conn);
            }
        });
        let req = HttpCheckReq::get(&url).timeout(Duration::from_millis(300));
        let err = HttpCheck::default().execute(&ctx(), req).await.unwrap_err();
        assert_eq!(err.code, codes::TIMED_OUT);
        assert_eq!(err.message, format!("GET {url}: no answer within 300ms"));
    }

    #[test]
    fn init_builds_the_client() {
        assert!(HttpCheck::default().init().is_ok());
    }

    #[test]
    fn validate_refuses_requests_that_cannot_work() {
        let refused = |req: HttpCheckReq| HttpCheck::default().validate(&req).unwrap_err().message;
        let ok = HttpCheckReq::get("http://localhost:8080/health");
        assert!(HttpCheck::default().validate(&ok).is_ok());
        assert!(refused(HttpCheckReq::get("")).starts_with("`url` \"\" is not a valid URL"));
        assert!(refused(HttpCheckReq::get("localhost:8080")).contains("only http and https"));
        assert!(refused(HttpCheckReq::get("ftp://host/x")).contains("has scheme \"ftp\""));
        assert!(
            refused(ok.clone().method("GE T"))
                .starts_with("`method` \"GE T\" is not an HTTP method")
        );
        assert!(refused(ok.clone().method("")).starts_with("`method`"));
        assert!(
            refused(ok.clone().header("bad name", "v"))
                .starts_with("`headers` has an invalid header name")
        );
        assert_eq!(
            refused(ok.clone().header("x", "a\nb")),
            "`headers.x` is not a valid header value"
        );
        assert!(
            refused(ok.clone().expect_status(ExpectedStatus::Code(42)))
                .starts_with("`expect_status` 42")
        );
        assert!(
            refused(ok.clone().expect_status(ExpectedStatus::AnyOf(vec![])))
                .contains("at least one")
        );
        assert!(
            refused(
                ok.clone()
                    .expect_status(ExpectedStatus::AnyOf(vec![200, 1000]))
            )
            .contains("1000")
        );
        assert!(
            refused(
                ok.clone()
                    .expect_status(ExpectedStatus::Range { min: 300, max: 200 })
            )
            .starts_with("`expect_status` 300-200 is not a range")
        );
        assert_eq!(
            refused(ok.clone().timeout(Duration::ZERO)),
            "`timeout` must be greater than zero"
        );
        assert_eq!(
            refused(ok.clone().body_contains("")),
            "`body_contains` must not be empty when given"
        );
        let mut small = ok.clone().body_contains("healthy");
        small.body_limit = 3;
        assert!(refused(small).starts_with("`body_limit` (3) is shorter"));
        assert!(
            validate(&HttpCheckReq::get("nope"), "condition.http.")
                .unwrap_err()
                .message
                .starts_with("`condition.http.url`")
        );
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn https_needs_the_tls_feature() {
        let err = HttpCheck::default()
            .validate(&HttpCheckReq::get("https://example.com/"))
            .unwrap_err();
        assert!(
            err.message.contains("built without its `tls` feature"),
            "{}",
            err.message
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn https_is_accepted_with_the_tls_feature() {
        assert!(
            HttpCheck::default()
                .validate(&HttpCheckReq::get("https://example.com/"))
                .is_ok()
        );
    }

    #[test]
    fn expected_status_json_forms() {
        let parse = |s: &str| serde_json::from_str::<ExpectedStatus>(s).unwrap();
        assert_eq!(parse("204"), ExpectedStatus::Code(204));
        assert_eq!(parse("[200, 204]"), ExpectedStatus::AnyOf(vec![200, 204]));
        assert_eq!(
            parse(r#"{"min": 200, "max": 299}"#),
            ExpectedStatus::success()
        );
        let req: HttpCheckReq =
            serde_json::from_str(r#"{"url": "http://h/", "timeout": "2s"}"#).unwrap();
        assert_eq!(
            req,
            HttpCheckReq::get("http://h/").timeout(Duration::from_secs(2))
        );
        assert_eq!(
            serde_json::from_str::<HttpCheckReq>(&serde_json::to_string(&req).unwrap()).unwrap(),
            req
        );
    }
}

//! `coercion/webhook`: POST a JSON document to a URL — a chat channel, an incident tool — with
//! retries.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::codes;
use super::http::{Clients, ExpectedStatus, HttpCheckReq, probe, validate};
use crate::plugin::{Context, InitError, Plugin, PluginError, ValidationError};
#[cfg(feature = "secrets")]
use crate::secret::Secret;

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The request of [`Webhook`]: where to POST, and the JSON to send. In JSON:
///
/// ```json
/// { "url": "http://hooks.internal/deploys", "body": { "text": "web: canary promoted" } }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookReq {
    /// The URL: `http://…`, or `https://…` with coercion's `tls` feature. Empty when
    /// `secret_url` is given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// The URL, when it is a credential (a Slack incoming webhook's is): encrypted at rest,
    /// never in errors, exports or logs.
    #[cfg(feature = "secrets")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_url: Option<Secret<String>>,
    /// The JSON sent (`Content-Type: application/json`).
    pub body: serde_json::Value,
    /// Further request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How long one exchange may take. Default 10 s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl WebhookReq {
    /// POSTs `body` to `url`.
    pub fn json(url: impl Into<String>, body: serde_json::Value) -> WebhookReq {
        WebhookReq {
            url: url.into(),
            #[cfg(feature = "secrets")]
            secret_url: None,
            body,
            headers: BTreeMap::new(),
            timeout: default_timeout(),
        }
    }

    /// POSTs `{"text": text}` to `url`: the body Slack's incoming webhooks (and Mattermost's,
    /// Rocket.Chat's, …) take.
    pub fn slack(url: impl Into<String>, text: impl Into<String>) -> WebhookReq {
        WebhookReq::json(url, serde_json::json!({ "text": text.into() }))
    }

    /// Sends to a URL kept secret instead of `url`.
    #[cfg(feature = "secrets")]
    pub fn secret_url(mut self, url: Secret<String>) -> WebhookReq {
        self.url = String::new();
        self.secret_url = Some(url);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> WebhookReq {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the timeout of one exchange.
    pub fn timeout(mut self, timeout: Duration) -> WebhookReq {
        self.timeout = timeout;
        self
    }

    /// The URL to send to, and whether it is secret.
    fn target(&self) -> (&str, bool) {
        #[cfg(feature = "secrets")]
        if let Some(secret) = &self.secret_url {
            return (secret.expose(), true);
        }
        (&self.url, false)
    }

    /// The exchange as the HTTP plugins send it (any status: [`Webhook`] judges it).
    fn http(&self) -> HttpCheckReq {
        let mut headers = self.headers.clone();
        headers.insert("content-type".to_owned(), "application/json".to_owned());
        HttpCheckReq {
            method: "POST".to_owned(),
            url: self.target().0.to_owned(),
            headers,
            body: Some(self.body.to_string()),
            expect_status: ExpectedStatus::Range { min: 100, max: 599 },
            timeout: self.timeout,
            body_limit: 4096,
            ..HttpCheckReq::default()
        }
    }
}

/// What the receiver answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookResp {
    /// The status (2xx).
    pub status: u16,
}

/// A webhook (an action plugin, registered as `coercion/webhook`): POSTs a JSON document and
/// succeeds on a 2xx answer. A 5xx, 408 or 429 answer, a refused connection or a timeout is
/// retried (the action's `retries`, with this plugin's backoff); any other answer — the
/// receiver refused the document — fails at once. A secret URL never appears in errors.
///
/// Put it in a deferred batch to tell a channel how a plan ended, or in a sequence to announce
/// a step; [`WorkstreamBuilder::on_plan_end`](crate::WorkstreamBuilder::on_plan_end) with
/// [`Webhook::send`] tells it about every plan a workstream runs.
///
/// ```
/// use coercion::plugins::{Webhook, WebhookReq};
/// use coercion::prelude::*;
///
/// let plan = Plan::builder("deploy web")
///     .block(Block::builder("web").sequence(Sequence::builder("web-1").action(
///         ActionSpec::new::<coercion::plugins::Command>("restart", coercion::plugins::CommandReq::new("true")),
///     )))
///     .deferred(DeferredBatch::builder("tell the channel", When::OnFailure).action(
///         ActionSpec::new::<Webhook>(
///             "post",
///             WebhookReq::slack("http://chat.internal/hooks/ops", "deploy web failed"),
///         )
///         .retries(3),
///     ))
///     .build();
/// coercion::workflow::validate_plan(&plan, &Registry::from_inventory().unwrap()).unwrap();
/// ```
#[crate::plugin(preview, name = "coercion/webhook")]
#[derive(Debug, Default)]
pub struct Webhook {
    clients: Clients,
}

impl Webhook {
    /// Sends `req` once, as an attempt of the plugin would (for code outside plans, such as a
    /// [`on_plan_end`](crate::WorkstreamBuilder::on_plan_end) hook).
    pub async fn send(&self, req: &WebhookReq) -> Result<WebhookResp, PluginError> {
        let (url, secret) = req.target();
        // Every form the URL may take in a message: as given, escaped, as parsed.
        let forms: Vec<String> = if secret && !url.is_empty() {
            let escaped = format!("{url:?}");
            let mut forms = vec![url.to_owned(), escaped.trim_matches('"').to_owned()];
            if let Ok(parsed) = reqwest::Url::parse(url) {
                forms.push(parsed.to_string());
                forms.push(parsed.as_str().trim_end_matches('/').to_owned());
            }
            forms.retain(|f| !f.is_empty());
            forms
        } else {
            Vec::new()
        };
        let hide = |mut e: PluginError| {
            for form in &forms {
                e.message = e.message.replace(form.as_str(), "<secret URL>");
            }
            e
        };
        let answer = probe(&self.clients, &req.http()).await.map_err(hide)?;
        let status = answer.status;
        if (200..300).contains(&status) {
            return Ok(WebhookResp { status });
        }
        let shown = if secret { "<secret URL>" } else { url };
        let body = answer.body.trim();
        let quoted = if body.is_empty() {
            String::new()
        } else {
            format!("; body: {}", super::head(body, 512))
        };
        let error = PluginError::new(format!("POST {shown} answered {status}{quoted}"))
            .with_code(codes::HTTP_STATUS);
        let retryable = status >= 500 || status == 408 || status == 429;
        Err(hide(if retryable {
            error
        } else {
            PluginError {
                permanent: true,
                ..error
            }
        }))
    }
}

/// A webhook's effect is the message it sends: the preview names where it would go (a
/// `secret_url` is not shown).
impl crate::Previews for Webhook {
    async fn preview(
        &self,
        _ctx: &Context,
        req: &WebhookReq,
    ) -> Result<crate::Preview, PluginError> {
        let (url, secret) = req.target();
        let to = if secret { "the secret URL" } else { url };
        Ok(crate::Preview::would_change(format!(
            "would POST {} bytes to {to}",
            serde_json::to_vec(&req.body).map(|b| b.len()).unwrap_or(0)
        )))
    }
}

impl Plugin for Webhook {
    type Request = WebhookReq;
    type Response = WebhookResp;

    async fn execute(&self, _ctx: &Context, req: WebhookReq) -> Result<WebhookResp, PluginError> {
        self.send(&req).await
    }

    fn validate(&self, req: &WebhookReq) -> Result<(), ValidationError> {
        let (url, secret) = req.target();
        if url.is_empty() {
            return Err(ValidationError::new(if cfg!(feature = "secrets") {
                "`url` or `secret_url` is required"
            } else {
                "`url` is required"
            }));
        }
        #[cfg(feature = "secrets")]
        if secret && !req.url.is_empty() {
            return Err(ValidationError::new("give `url` or `secret_url`, not both"));
        }
        if !secret {
            return validate(&req.http(), "");
        }
        // A secret URL is never quoted, not even escaped: its own problems get a fixed
        // message, the rest is checked with a stand-in.
        let mut alone = HttpCheckReq::get(url.to_owned());
        alone.method = "POST".to_owned();
        if validate(&alone, "").is_err() {
            return Err(ValidationError::new(
                "`secret_url` is not a URL this plugin can send to: an http:// URL with a host \
                 (https:// with coercion's `tls` feature), without spaces or line breaks; \
                 its value is not shown",
            ));
        }
        let mut stand_in = req.http();
        stand_in.url = "http://secret-url.invalid/".to_owned();
        validate(&stand_in, "")
    }

    fn init(&self) -> Result<(), InitError> {
        self.clients.check().map_err(|e| InitError::new(e.chain()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_support::{Reply, TestServer, closed_port};

    #[tokio::test]
    async fn posts_the_json_and_passes_on_2xx() {
        let server = TestServer::start(|_| Reply::new(204, "")).await;
        let url = format!("http://127.0.0.1:{}/hooks/ops", server.port);
        let req = WebhookReq::slack(&url, "deploy web: Completed").header("x-team", "ops");
        Webhook::default().validate(&req).unwrap();
        let resp = Webhook::default().send(&req).await.unwrap();
        assert_eq!(resp.status, 204);
        let seen = server.seen.lock().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].target, "/hooks/ops");
        let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
        assert_eq!(body, serde_json::json!({ "text": "deploy web: Completed" }));
        let header = |name: &str| {
            seen[0]
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(header("x-team").as_deref(), Some("ops"));
    }

    #[tokio::test]
    async fn a_refused_document_fails_at_once_a_busy_receiver_is_retried() {
        let server = TestServer::start(|req| {
            if req.target == "/busy" {
                Reply::new(503, "try later")
            } else {
                Reply::new(400, "invalid_payload")
            }
        })
        .await;
        let url = |path: &str| format!("http://127.0.0.1:{}{path}", server.port);
        let refused = Webhook::default()
            .send(&WebhookReq::slack(url("/hook"), "x"))
            .await
            .unwrap_err();
        assert!(refused.permanent, "{refused}");
        assert_eq!(refused.code, codes::HTTP_STATUS);
        assert!(
            refused.message.contains("answered 400") && refused.message.contains("invalid_payload"),
            "{refused}"
        );
        let busy = Webhook::default()
            .send(&WebhookReq::slack(url("/busy"), "x"))
            .await
            .unwrap_err();
        assert!(!busy.permanent, "{busy}");
        let down = Webhook::default()
            .send(&WebhookReq::slack(
                format!("http://127.0.0.1:{}/", closed_port().await),
                "x",
            ))
            .await
            .unwrap_err();
        assert!(
            !down.permanent && down.code == codes::HTTP_REQUEST,
            "{down}"
        );
    }

    #[cfg(feature = "secrets")]
    #[tokio::test]
    async fn a_secret_url_never_appears_in_errors() {
        let server = TestServer::start(|_| Reply::new(404, "no such hook")).await;
        let url = format!(
            "http://127.0.0.1:{}/services/T000/B000/XXXXSECRET",
            server.port
        );
        let req = WebhookReq::slack("", "x").secret_url(Secret::new(url.clone()));
        Webhook::default().validate(&req).unwrap();
        let err = Webhook::default().send(&req).await.unwrap_err();
        assert!(!err.to_string().contains("XXXXSECRET"), "{err}");
        assert!(
            err.message.contains("POST <secret URL> answered 404"),
            "{err}"
        );
        // A line break read from a file with the secret: the URL parser drops it, and the
        // error must not show the URL either way.
        let down = format!("http://127.0.0.1:{}/XXXXSECRET\n", closed_port().await);
        let err = Webhook::default()
            .send(&WebhookReq::slack("", "x").secret_url(Secret::new(down)))
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("XXXXSECRET"), "{err}");
        for bad in [
            "ftp://XXXXSECRET/",
            "not a url XXXXSECRET",
            "http://[XXXXSECRET/",
        ] {
            let req = WebhookReq::slack("", "x").secret_url(Secret::new(bad.into()));
            let refused = Webhook::default().validate(&req).unwrap_err();
            assert!(
                !refused.message.contains("XSECRET") && refused.message.contains("`secret_url`"),
                "{refused}"
            );
        }
        let both = WebhookReq::slack("http://a/", "x").secret_url(Secret::new(url));
        let mut both = both;
        both.url = "http://a/".into();
        assert!(Webhook::default().validate(&both).is_err());
    }

    #[test]
    fn validate_names_the_field() {
        let err = Webhook::default()
            .validate(&WebhookReq::slack("", "x"))
            .unwrap_err();
        assert!(err.message.contains("`url`"), "{err}");
        let err = Webhook::default()
            .validate(&WebhookReq::slack("http://h/", "x").header("bad name", "v"))
            .unwrap_err();
        assert!(err.message.contains("header"), "{err}");
    }
}

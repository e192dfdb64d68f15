//! The web UI of `coercion serve`: a plan list, a live plan page and an upload page, over a
//! store file opened read-only.
//!
//! * `GET /` lists plans (filters by status, name and group; 50 a page, newest first).
//! * `GET /plans/{id}` shows one plan (the same tree as the HTML report); while the plan runs
//!   the page updates itself from `GET /plans/{id}/events`, server-sent events fed by polling
//!   the store, so plans run by another process show up live.
//! * `GET /plans/{id}/export` and `GET /plans/{id}/report` download the plan's JSON (secrets
//!   redacted) and its HTML report.
//! * `GET /upload` renders an exported plan JSON dropped (or chosen) by the user; malformed or
//!   oversized files get a clear message.
//! * `GET /metrics` says what the store holds for Prometheus: plans by status, the running
//!   plans' actions by status, the oldest running plan's age and the stalest heartbeat
//!   ([`crate::metrics::StoreFacts`]).
//! * `POST /plans/{id}/gates/approve|reject` (a form: `gate`, `comment`) the same way;
//! * `POST /plans/{id}/stop|pause|resume|retry` only with `allow_control`, through
//!   [`control`]; a retry answers with a redirect to the new plan, and is recorded as asked by
//!   the server's Unix user "via the web UI for" the client's address. Over a shared store
//!   (PostgreSQL) the requests go through the database ([`control::send_shared`]; asked by the
//!   server's database role) to the process that holds the plan; retry is for SQLite files.
//!
//! Every page is sent with a Content-Security-Policy that allows only this server's own script
//! and style sheet, requests whose `Host` is not this server are refused (DNS rebinding), and
//! control requests from other origins are refused (CSRF).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use maud::{Markup, html};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::{broadcast, watch};

use super::control::{self, ControlOp};
use super::db::{Db, store_error};
use super::format;
use super::html::{self as views, APP_JS, CSS};
use crate::storage::{ListFilter, PageSpec, PlanPage};
use crate::workflow::{Plan, PlanId, Status};

/// The largest exported plan the upload page accepts.
pub const UPLOAD_LIMIT: usize = 8 * 1024 * 1024;

/// Plans on one page of the list.
const PAGE_SIZE: usize = 50;

/// How the web UI behaves.
#[derive(Clone, Debug)]
pub struct WebOptions {
    /// Show stop/pause/resume buttons and accept their requests.
    pub allow_control: bool,
    /// How often a live plan page polls the store (default 300 ms). Over a store that tells
    /// of changed plans ([`Store::changes`](crate::storage::Store::changes): PostgreSQL), a
    /// page reads its plan when told it changed instead, at most once per `poll_interval`.
    pub poll_interval: Duration,
    /// Over a store that tells of changed plans, a watched plan is read at the latest after
    /// this long without a notice (default 10 s), in case notices were lost.
    pub notice_fallback: Duration,
    /// The address the server listens on; requests must name it (or a loopback name when it
    /// is a loopback address) in their `Host` header.
    pub addr: SocketAddr,
    /// When set, every request must carry this token: `Authorization: Bearer <token>`, the
    /// cookie that `/?token=<token>` sets, or that query itself. Required off loopback.
    pub token: Option<String>,
    /// Host names besides IP addresses and `localhost` that requests may name in `Host` when
    /// the server listens beyond loopback (a DNS-rebinding page names its own domain).
    pub host_names: Vec<String>,
    /// At most this many connections are served at once; more are closed at once (default
    /// 256), so slow or idle clients cannot take every descriptor and task.
    pub max_connections: usize,
    /// A client must send a request's headers within this time, or its connection is closed
    /// (default 10 s).
    pub header_read_timeout: Duration,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            allow_control: false,
            poll_interval: Duration::from_millis(300),
            notice_fallback: Duration::from_secs(10),
            addr: SocketAddr::from(([127, 0, 0, 1], 3030)),
            token: None,
            host_names: Vec::new(),
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone)]
struct App {
    db: Db,
    options: WebOptions,
    store_label: String,
    /// One store poll per watched page of a plan, whatever the number of viewers.
    watched: Arc<Mutex<HashMap<Watched, watch::Receiver<Snapshot>>>>,
    /// The last events rendered for each watched plan: viewers in step (the same plan before
    /// and after, the same page, the same second) render each event once.
    rendered: Arc<Mutex<HashMap<PlanId, Vec<Rendered>>>>,
}

/// An event rendered for the viewers of a plan: from `before` (`None`: the whole page) to
/// `after`, for the page `spec`, in second `second`.
struct Rendered {
    before: Option<Arc<PlanPage>>,
    after: Arc<PlanPage>,
    spec: PageSpec,
    second: i64,
    data: Arc<str>,
}

/// At most this many plans keep rendered events (the oldest are dropped first).
const RENDERED_PLANS: usize = 64;

/// A watched page of a plan as last read (ready to show), or why it could not be read; `None`
/// before the first read.
type Snapshot = Option<Arc<Result<Arc<PlanPage>, String>>>;

/// A page of a plan that viewers watch.
type Watched = (PlanId, PageSpec);

/// Takes a watched page's entry out of [`App::watched`] if its poller ends by a panic.
struct Unwatch {
    app: App,
    key: Watched,
    armed: bool,
}

impl Drop for Unwatch {
    fn drop(&mut self) {
        if self.armed {
            self.app.watched.lock().remove(&self.key);
        }
    }
}

impl App {
    /// Whether `plan` is Running while no process runs plans from the store (a SQLite file
    /// whose writer's lock nobody holds): its process stopped.
    fn stranded(&self, plan: &Plan) -> bool {
        plan.status() == Status::Running && self.db.runs_plans_now() == Some(false)
    }

    /// The event data for `after` (the change from `before`, or the whole page), rendered by
    /// `render` unless a viewer in step rendered it already.
    fn rendered(
        &self,
        id: PlanId,
        before: Option<&Arc<PlanPage>>,
        after: &Arc<PlanPage>,
        second: i64,
        render: impl FnOnce() -> String,
    ) -> Arc<str> {
        // A plan's last event is rendered for each viewer: nothing to keep once it ended.
        if after.plan().status().is_terminal() {
            return render().into();
        }
        let same = |r: &Rendered| {
            Arc::ptr_eq(&r.after, after)
                && after.spec().is_none_or(|s| s == r.spec)
                && r.second == second
                && match (&r.before, before) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                }
        };
        if let Some(hit) = self
            .rendered
            .lock()
            .get(&id)
            .and_then(|all| all.iter().find(|r| same(r)))
        {
            return hit.data.clone();
        }
        let data: Arc<str> = render().into();
        let mut cache = self.rendered.lock();
        if cache.len() >= RENDERED_PLANS && !cache.contains_key(&id) {
            cache.clear();
        }
        let entries = cache.entry(id).or_default();
        if entries.len() >= 8 {
            entries.remove(0);
        }
        entries.push(Rendered {
            before: before.cloned(),
            after: after.clone(),
            spec: after.spec().unwrap_or(PageSpec::from(0)),
            second,
            data: data.clone(),
        });
        data
    }

    /// The page `spec` of plan `id` as the store holds it, kept up to date by one poller
    /// shared by every viewer of that page: it reads the store every `poll_interval` (or, over
    /// a store that tells of changes, when told the plan changed) while anyone watches and the
    /// plan runs, and stops when the last viewer leaves or the plan ended.
    fn watch(&self, id: PlanId, spec: PageSpec) -> watch::Receiver<Snapshot> {
        let key = (id, spec);
        let mut watched = self.watched.lock();
        if let Some(rx) = watched.get(&key) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        watched.insert(key, rx.clone());
        let app = self.clone();
        tokio::spawn(async move {
            let mut unwatch = Unwatch {
                app,
                key,
                armed: true,
            };
            let app = unwatch.app.clone();
            // The page last sent, to tell changes (a comparison, not a serialization: cheap
            // for large plans).
            let mut sent: Option<Arc<PlanPage>> = None;
            let mut notices = app.db.store().changes();
            loop {
                let last_read = tokio::time::Instant::now();
                let read = app
                    .db
                    .read_page(id, spec)
                    .await
                    .map(|p| Arc::new(p.into_display()));
                // A read that takes long (a page of a very large plan) is repeated at most a
                // quarter of the time: a live viewer costs the server a bounded share of a core.
                let gap = app
                    .options
                    .poll_interval
                    .max(last_read.elapsed().saturating_mul(4));
                let over =
                    read.as_ref().is_ok_and(|p| p.plan().status().is_terminal()) || read.is_err();
                let changed = match (&read, &sent) {
                    (Ok(now), Some(before)) => now != before,
                    _ => true,
                };
                if changed {
                    sent = read.as_ref().ok().cloned();
                    tx.send_replace(Some(Arc::new(read.map_err(|e| e.to_string()))));
                }
                // Under the lock `watch` hands out receivers with: no viewer joins between this
                // count and the entry's removal.
                let leave = |over: bool| {
                    let mut watched = app.watched.lock();
                    let leave = over || tx.receiver_count() <= 1;
                    if leave {
                        watched.remove(&key);
                        app.rendered.lock().remove(&id);
                    }
                    leave
                };
                if leave(over) {
                    unwatch.armed = false;
                    return;
                }
                let Some(rx) = &mut notices else {
                    tokio::time::sleep_until(last_read + gap).await;
                    continue;
                };
                // Told of changes: wait for one of this plan (or a lost notice), checking every
                // second whether anyone still watches; then keep reads `poll_interval` apart.
                let fallback = tokio::time::sleep(app.options.notice_fallback);
                tokio::pin!(fallback);
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = &mut fallback => break,
                        _ = tick.tick() => if leave(false) {
                            unwatch.armed = false;
                            return;
                        },
                        notice = rx.recv() => match notice {
                            Ok(changed) if !changed.concerns(id) => {}
                            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                            Err(broadcast::error::RecvError::Closed) => {
                                notices = None;
                                break;
                            }
                        },
                    }
                }
                tokio::time::sleep_until(last_read + gap).await;
            }
        });
        rx
    }
}

/// The web UI's routes over `db`.
pub fn router(db: Db, options: WebOptions) -> Router {
    let store_label = db.label().to_owned();
    let app = App {
        db,
        options,
        store_label,
        watched: Arc::default(),
        rendered: Arc::default(),
    };
    Router::new()
        .route("/", get(list_page))
        .route("/plans/{id}", get(plan_page))
        .route("/plans/{id}/events", get(plan_events))
        .route("/plans/{id}/export", get(export_plan))
        .route("/plans/{id}/report", get(report_plan))
        .route("/plans/{id}/{op}", post(control_plan))
        .route("/plans/{id}/gates/{op}", post(gate_plan))
        .route("/metrics", get(metrics_page))
        .route(
            "/upload",
            get(upload_page)
                .post(upload_plan)
                .layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
        )
        .route(
            "/assets/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }),
        )
        .route(
            "/assets/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        )
        .fallback(|| async {
            error_page(
                StatusCode::NOT_FOUND,
                "-",
                "There is no page at this address.",
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Binds `options.addr` and serves the web UI over `db` until the process ends. Calls
/// `ready` with the bound address (useful with port 0) once it accepts connections.
pub async fn serve(
    db: Db,
    options: WebOptions,
    ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(options.addr).await?;
    let addr = listener.local_addr()?;
    let options = WebOptions { addr, ..options };
    ready(addr);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(
        options
            .max_connections
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let header_read_timeout = options.header_read_timeout;
    let app = router(db, options);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of descriptors, say: try again a little later.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the limit: closed at once, before anything is read.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        // The client's address, for handlers that record who asked (a retry).
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                hyper::service::Service::call(&service, req)
            });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

/// The cookie that carries the server's token once a browser has opened `/?token=…`.
const TOKEN_COOKIE: &str = "coercion_token";

/// Security headers on every response; refuses requests for another host name and, when the
/// server has a token, requests without it.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    if !host_allowed(req.headers(), app.options.addr, &app.options.host_names) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this server answers only requests addressed to it (see `coercion serve --host-name`)\n",
        )
            .into_response();
    }
    if let Some(token) = &app.options.token {
        match token_check(&req, token) {
            TokenCheck::Carried => {}
            TokenCheck::InQuery => {
                // Keep it in a cookie, and take it out of the address bar and the history.
                let path = req.uri().path().to_owned();
                let mut resp = Redirect::to(&path).into_response();
                if let Ok(cookie) = HeaderValue::from_str(&format!(
                    "{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
                )) {
                    resp.headers_mut().insert(header::SET_COOKIE, cookie);
                }
                return resp;
            }
            TokenCheck::Missing => {
                return (
                    StatusCode::UNAUTHORIZED,
                    "this server requires its token: open the address it printed when it started \
                     (…/?token=…), or send `Authorization: Bearer <token>`\n",
                )
                    .into_response();
            }
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

enum TokenCheck {
    Carried,
    InQuery,
    Missing,
}

/// Whether `req` carries `token` (compared through SHA-256 digests, so the time taken says
/// nothing about how much of a guess was right).
fn token_check(req: &Request, token: &str) -> TokenCheck {
    use sha2::Digest as _;
    let digest = |s: &str| sha2::Sha256::digest(s.as_bytes());
    let expected = digest(token);
    let is_token = |s: &str| digest(s) == expected;
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='));
    if bearer.is_some_and(is_token) || cookie.into_iter().any(is_token) {
        return TokenCheck::Carried;
    }
    let in_query = req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.strip_prefix("token="))
        .any(is_token);
    if in_query && req.method() == axum::http::Method::GET {
        TokenCheck::InQuery
    } else {
        TokenCheck::Missing
    }
}

/// Whether the `Host` header names this server (protects against DNS rebinding, where a page of
/// the attacker's domain resolves that domain to this server): on loopback, a loopback name;
/// beyond it, an IP address (a rebinding page cannot name one), `localhost`, or one of the
/// `host_names` the server was told.
fn host_allowed(headers: &HeaderMap, addr: SocketAddr, host_names: &[String]) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return true; // HTTP/1.0 without Host: not a browser.
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let v6 = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .and_then(|n| n.parse::<std::net::Ipv6Addr>().ok());
    let v4 = name.parse::<std::net::Ipv4Addr>().ok();
    if addr.ip().is_loopback() {
        return name == "localhost"
            || v4.is_some_and(|ip| ip.is_loopback())
            || v6.is_some_and(|ip| ip.is_loopback());
    }
    name.eq_ignore_ascii_case("localhost")
        || v4.is_some()
        || v6.is_some()
        || host_names.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether a state-changing request comes from one of this server's own pages.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => {
            let origin = origin.to_str().unwrap_or("");
            let host = host.to_str().unwrap_or("");
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host)
        }
        // Not a browser (no Origin): curl and scripts may post.
        (None, _) => true,
        (Some(_), None) => false,
    }
}

fn html_response(status: StatusCode, body: String) -> Response {
    (status, Html(body)).into_response()
}

fn error_page(status: StatusCode, store: &str, message: &str) -> Response {
    let body = html! {
        div.notice.error { (message) }
        p { a href="/" { "Back to the plan list" } }
    };
    html_response(status, views::page("Error", store, body))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    page: usize,
}

/// What the store holds, for Prometheus ([`crate::metrics::StoreFacts`]).
async fn metrics_page(State(app): State<App>) -> Response {
    match crate::metrics::StoreFacts::read(app.db.store()).await {
        Ok(facts) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::metrics::render_store(&facts),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", store_error(app.db.label(), e)),
        )
            .into_response(),
    }
}

async fn list_page(
    State(app): State<App>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = match query(&app, q) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let mut problems = Vec::new();
    let mut filter = ListFilter {
        offset: q.page * PAGE_SIZE,
        limit: Some(PAGE_SIZE + 1),
        ..ListFilter::default()
    };
    if !q.status.is_empty() {
        match q.status.parse::<Status>() {
            Ok(s) => filter.statuses = vec![s],
            Err(e) => problems.push(e),
        }
    }
    if !q.name.is_empty() {
        filter.name_contains = Some(q.name.clone());
    }
    if !q.group.is_empty() {
        match q.group.trim().parse::<uuid::Uuid>() {
            Ok(g) => filter.group_id = Some(g),
            Err(e) => problems.push(format!("`{}` is not a group id: {e}", q.group)),
        }
    }
    let mut plans = match app.db.store().list(&filter).await {
        Ok(p) => p,
        Err(e) => {
            let msg = store_error(app.db.label(), e).to_string();
            return error_page(StatusCode::SERVICE_UNAVAILABLE, &app.store_label, &msg);
        }
    };
    let more = plans.len() > PAGE_SIZE;
    plans.truncate(PAGE_SIZE);
    let labels = super::attention_labels(&app.db, &plans).await;
    let now = chrono::Utc::now();
    let page_link = |page: usize| {
        let mut url = format!("/?page={page}");
        for (k, v) in [
            ("status", &q.status),
            ("name", &q.name),
            ("group", &q.group),
        ] {
            if !v.is_empty() {
                url.push_str(&format!("&{k}={}", urlencode(v)));
            }
        }
        url
    };
    let statuses = [
        Status::NotStarted,
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::Stopped,
    ];
    let body = html! {
        section {
            h1 { "Plans" }
            @for p in &problems { div.notice.error { (p) } }
            form.filters method="get" action="/" {
                label { "Status"
                    select name="status" {
                        option value="" { "any" }
                        @for s in statuses {
                            option value=(s.as_str()) selected[q.status == s.as_str()] { (s.as_str()) }
                        }
                    }
                }
                label { "Name contains" input type="text" name="name" value=(q.name); }
                label { "Group id" input type="text" name="group" value=(q.group) size="38"; }
                button type="submit" { "Filter" }
                a.button href="/" { "Clear" }
            }
            @if plans.is_empty() {
                p.muted { "No plan matches." }
            } @else {
                table.plans {
                    thead { tr { th { "Status" } th { "Name" } th { "Submitted" } th { "Duration" } th { "Id" } } }
                    tbody {
                        @for s in &plans {
                            tr data-plan=(s.id) {
                                td { @match labels.get(&s.id) {
                                        Some(label) => (views::label_badge(s.state.status, true, label)),
                                        None => (views::label_badge(s.state.status, false, s.state.status.as_str())),
                                    }
                                    @if s.reason != crate::workflow::Reason::None { " " span.muted { (s.reason) } }
                                    @if let Some(resumed) = s.resumed_label() { " " span.badge.paused.resumed { (resumed) } } }
                                td.name { a href={ "/plans/" (s.id) } { bdi { (s.name) } }
                                    @if !s.descr.is_empty() { div.muted { (s.descr) } } }
                                td { (format::opt_time(s.submit_time)) }
                                td { (format::state_duration_text(s.state, now).unwrap_or_else(|| "-".into())) }
                                td.mono { (s.id) }
                            }
                        }
                    }
                }
            }
            div.pager {
                @if q.page > 0 { a.button href=(page_link(q.page - 1)) { "← Newer" } }
                span.muted { "Page " (q.page + 1) }
                @if more { a.button href=(page_link(q.page + 1)) { "Older →" } }
            }
        }
    };
    html_response(StatusCode::OK, views::page("Plans", &app.store_label, body))
}

/// The bytes a query value keeps as they are: RFC 3986's unreserved characters.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` encoded for a URL query value.
fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, QUERY_VALUE).to_string()
}

/// Resolves `id` (maybe abbreviated) or answers with an error page.
async fn resolve(app: &App, id: &str) -> Result<PlanId, Response> {
    app.db
        .resolve(id)
        .await
        .map_err(|e| error_page(StatusCode::NOT_FOUND, &app.store_label, &e.to_string()))
}

async fn read(app: &App, id: PlanId) -> Result<Plan, Response> {
    app.db
        .read_id(id)
        .await
        .map_err(|e| error_page(StatusCode::NOT_FOUND, &app.store_label, &e.to_string()))
}

/// Which page of a large plan's sequences to show.
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    /// The first sequence of the page, in every block.
    #[serde(default)]
    from: usize,
}

impl PageQuery {
    /// The page holding sequence `from` (the pages the links name).
    fn spec(&self) -> PageSpec {
        PageSpec::holding(self.from)
    }
}

/// The start of a command line that reaches this server's store: `coercion --db FILE` for a
/// SQLite file; `coercion` for PostgreSQL (its URL may hold a password: not shown).
fn command_line(app: &App) -> String {
    match app.db.path() {
        Some(path) => format!(
            "coercion --db {}",
            format::shell_word(&path.to_string_lossy())
        ),
        None => "coercion".to_owned(),
    }
}

/// A query string, or the error page that says what is wrong with it.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response the handler returns, as from `resolve` and `read_page`"
)]
fn query<T>(app: &App, query: Result<Query<T>, QueryRejection>) -> Result<T, Response> {
    query.map(|Query(q)| q).map_err(|e| {
        error_page(
            StatusCode::BAD_REQUEST,
            &app.store_label,
            &format!("The address's query is not valid: {}", e.body_text()),
        )
    })
}

/// At most this many pages of one plan are followed live at once (each costs a store read
/// per interval); a viewer of one more gets an error.
const LIVE_PAGES_PER_PLAN: usize = 16;

async fn plan_page(
    State(app): State<App>,
    Path(id): Path<String>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let page = match query(&app, page) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let plan_id = match resolve(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    if plan_id.to_string() != id {
        // The same page of the plan, under its whole id.
        let from = page.spec().from;
        let query = if from > 0 {
            format!("?from={from}")
        } else {
            String::new()
        };
        return Redirect::to(&format!("/plans/{plan_id}{query}")).into_response();
    }
    let page = match read_page(&app, plan_id, page.spec()).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let retried_by = match retried_by(&app, page.plan()).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    html_response(StatusCode::OK, plan_view(&app, &page, retried_by, None))
}

/// The page `spec` of plan `id`, its secrets redacted, or an error page.
async fn read_page(app: &App, id: PlanId, spec: PageSpec) -> Result<PlanPage, Response> {
    app.db
        .read_page(id, spec)
        .await
        .map(PlanPage::into_display)
        .map_err(|e| error_page(StatusCode::NOT_FOUND, &app.store_label, &e.to_string()))
}

/// The plan that retries `plan`, or an error page.
async fn retried_by(app: &App, plan: &Plan) -> Result<Option<PlanId>, Response> {
    crate::storage::retried_by(app.db.store(), plan)
        .await
        .map_err(|e| {
            error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                &app.store_label,
                &crate::storage::Chain(&e).to_string(),
            )
        })
}

fn plan_view(
    app: &App,
    page: &PlanPage,
    retried_by: Option<PlanId>,
    notice: Option<Result<String, String>>,
) -> String {
    let plan = page.plan();
    let id = plan.id();
    let live = !plan.status().is_terminal();
    // Only ended plans with failed work that nobody retried yet: a second retry would run the
    // same work twice (the process refuses it anyway). A page without every sequence's actions
    // cannot build the retry: any failure, or a plan that did not complete, has work to retry.
    let retryable = !live
        && retried_by.is_none()
        && if page.is_whole() {
            plan.clone_retry_failed().is_some()
        } else {
            plan.status() != Status::Completed || page.failure_counts().has_failures()
        };
    let body = html! {
        div.toolbar {
            a.button href="/" { "← Plans" }
            a.button href={ "/plans/" (id) "/export" } { "Export JSON" }
            a.button href={ "/plans/" (id) "/report" } { "HTML report" }
            @if can_control(app) && live {
                @let pause_or_resume = if plan.is_paused() { ControlOp::Resume } else { ControlOp::Pause };
                @for op in [pause_or_resume, ControlOp::Stop] {
                    form method="post" action={ "/plans/" (id) "/" (op.as_str()) } {
                        button type="submit" class=[(op == ControlOp::Stop).then_some("danger")] { (title_case(op.as_str())) }
                    }
                }
            }
            @if app.options.allow_control && app.db.path().is_some() && retryable {
                form method="post" action={ "/plans/" (id) "/retry" } {
                    button #retry type="submit" title="Run the failed work again, as a new plan in the same group" { "Retry failed work" }
                }
            }
            span #live-state .live { @if live { "connecting…" } @else { "finished" } }
        }
        @if plan.retry_of().is_some() || retried_by.is_some() {
            nav.lineage {
                @if let Some(r) = plan.retry_of() {
                    a #retry-of href={ "/plans/" (r.plan) } { "← The plan this one retries" }
                }
                @if let Some(newer) = retried_by {
                    a #retried-by href={ "/plans/" (newer) } { "Retried by plan " span.mono { (newer) } " →" }
                }
            }
        }
        @for gate in plan.waiting_gates() {
            section.gate {
                @let message = plan.action(gate.loc)
                    .and_then(|a| a.request_json().decode::<crate::plugins::GateReq>().ok())
                    .map(|r| r.message)
                    .unwrap_or_default();
                p { strong { "Waiting for approval: " bdi { (gate.name) } } ", since " (format::time(gate.since)) }
                @if !message.is_empty() { p.descr { (message) } }
                @if can_control(app) {
                    form.gate-form method="post" action={ "/plans/" (id) "/gates/approve" } {
                        input type="hidden" name="gate" value=(gate.name);
                        input type="text" name="comment" placeholder="Comment (recorded with the decision)" maxlength="2000";
                        button.approve type="submit" { "Approve" }
                        button.danger.reject type="submit" formaction={ "/plans/" (id) "/gates/reject" } { "Reject" }
                    }
                } @else {
                    p.muted { "Decide with " code { (command_line(app)) " approve " (id) " " (format::shell_word(&gate.name)) } " or " code { (command_line(app)) " reject …" } "." }
                }
            }
        }
        @match &notice {
            Some(Ok(m)) => div.notice.ok { (m) },
            Some(Err(m)) => div.notice.error { (m) },
            None => {},
        }
        div #live data-events=[live.then(|| match page.spec().map_or(0, |s| s.from) {
            0 => format!("/plans/{id}/events"),
            from => format!("/plans/{id}/events?from={from}"),
        })] {
            (views::plan_body(page, chrono::Utc::now(), app.stranded(plan)))
        }
    };
    views::page(plan.name(), &app.store_label, body)
}

fn title_case(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

async fn plan_events(
    State(app): State<App>,
    Path(id): Path<String>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let page = match query(&app, page) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let id = match resolve(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let spec = page.spec();
    let pages = {
        let watched = app.watched.lock();
        (!watched.contains_key(&(id, spec)))
            .then(|| watched.keys().filter(|(plan, _)| *plan == id).count())
    };
    if pages.is_some_and(|n| n >= LIVE_PAGES_PER_PLAN) {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &app.store_label,
            &format!(
                "{LIVE_PAGES_PER_PLAN} pages of this plan are followed live already; open one of them, or try again later."
            ),
        );
    }
    Sse::new(plan_feed(app, id, spec))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The live feed of a plan: a `plan` event at once (the rendered page body and the status),
/// then only what changed — a `patch` event whenever the stored plan changed (and every second
/// while it runs, so running durations tick): the page's head, and the nodes whose state or
/// attempts changed or that run ([`views::node_patches`]) — and an `end` event after the plan
/// finished. Every viewer of a plan is fed from the one poller of [`App::watch`].
fn plan_feed(
    app: App,
    id: PlanId,
    spec: PageSpec,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let rx = app.watch(id, spec);
    // The page as this viewer shows it; `None` before the first event.
    let state: (App, watch::Receiver<Snapshot>, Option<Arc<PlanPage>>, bool) =
        (app, rx, None, false);
    futures_util::stream::unfold(state, move |(app, mut rx, shown, ended)| async move {
        if ended {
            return None;
        }
        if let Some(page) = &shown
            && page.plan().status().is_terminal()
        {
            let ev = Event::default().event("end").data("end");
            return Some((Ok(ev), (app, rx, shown, true)));
        }
        if shown.is_none() {
            // The first read.
            let _ = rx.wait_for(Option::is_some).await;
        } else {
            // A change, or a second gone by (running durations tick).
            let waited = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
            if let Ok(Err(_)) = waited {
                // The poller is gone without a last word (it panicked): watch anew.
                tokio::time::sleep(Duration::from_secs(1)).await;
                rx = app.watch(id, spec);
                let _ = rx.wait_for(Option::is_some).await;
            }
        }
        let snapshot = rx.borrow_and_update().clone();
        let page = match snapshot.as_deref() {
            Some(Ok(page)) => page.clone(),
            Some(Err(e)) => {
                let ev = Event::default().event("failure").data(e.clone());
                return Some((Ok(ev), (app, rx, shown, true)));
            }
            // The poller ended without reading (cannot happen: it reads once first).
            None => return None,
        };
        let now = chrono::Utc::now();
        let status = page.plan().status().as_str();
        let second = now.timestamp();
        let stranded = app.stranded(page.plan());
        let full = || {
            let data = app.rendered(id, None, &page, second, || {
                let html = views::plan_body(&page, now, stranded).into_string();
                serde_json::json!({ "html": html, "status": status }).to_string()
            });
            Event::default().event("plan").data(&*data)
        };
        let ev = match &shown {
            None => full(),
            // A sequence off the page started, failed or stopped: it joins the page, which is
            // rendered again.
            Some(before) if views::window_moved(before, &page) => full(),
            Some(before) => {
                let data = app.rendered(id, Some(before), &page, second, || {
                    serde_json::json!({
                        "head": views::plan_head(&page, now, stranded).into_string(),
                        "nodes": views::node_patches(before, &page, now),
                        "status": status,
                    })
                    .to_string()
                });
                Event::default().event("patch").data(&*data)
            }
        };
        Some((Ok(ev), (app, rx, Some(page), false)))
    })
}

fn attachment(content_type: &'static str, name: String, body: String) -> Response {
    let disposition = format!("attachment; filename=\"{name}\"");
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        body,
    )
        .into_response()
}

async fn export_plan(State(app): State<App>, Path(id): Path<String>) -> Response {
    let id = match resolve(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    match read(&app, id).await {
        Ok(plan) => attachment(
            "application/json",
            format!("plan-{id}.json"),
            plan.clone_for_display().to_json(),
        ),
        Err(r) => r,
    }
}

async fn report_plan(State(app): State<App>, Path(id): Path<String>) -> Response {
    let id = match resolve(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    match read(&app, id).await {
        Ok(plan) => attachment(
            "text/html; charset=utf-8",
            format!("plan-{id}.html"),
            views::report(&plan),
        ),
        Err(r) => r,
    }
}

async fn control_plan(
    State(app): State<App>,
    Path((id, op)): Path<(String, String)>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
) -> Response {
    let op = match op.as_str() {
        "stop" => ControlOp::Stop,
        "pause" => ControlOp::Pause,
        "resume" => ControlOp::Resume,
        "retry" => ControlOp::Retry,
        _ => {
            return error_page(
                StatusCode::NOT_FOUND,
                &app.store_label,
                "There is no such operation.",
            );
        }
    };
    send_control(&app, &id, &headers, &extensions, op, |id| {
        control::ControlRequest::new(op, id)
    })
    .await
}

/// A gate's decision from the plan page's form.
#[derive(Deserialize)]
struct GateForm {
    gate: String,
    #[serde(default)]
    comment: String,
}

async fn gate_plan(
    State(app): State<App>,
    Path((id, op)): Path<(String, String)>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    form: Result<axum::extract::Form<GateForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Some(refused) = control_refused(&app, &headers) {
        return refused;
    }
    let form = match form {
        Ok(axum::extract::Form(form)) => form,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &app.store_label,
                &format!("A gate's decision needs the form's `gate` field: {e}"),
            );
        }
    };
    let approve = match op.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return error_page(
                StatusCode::NOT_FOUND,
                &app.store_label,
                "There is no such operation.",
            );
        }
    };
    let op = if approve {
        ControlOp::Approve
    } else {
        ControlOp::Reject
    };
    let comment = Some(form.comment)
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.chars().take(crate::plugins::gate::MAX_COMMENT).collect());
    let gate: String = form.gate.chars().take(1000).collect();
    send_control(&app, &id, &headers, &extensions, op, |id| {
        control::ControlRequest::decide(approve, id, gate, comment)
    })
    .await
}

/// Whether this server offers stop, pause, resume and gate decisions: it allows control, and
/// its store is a file whose process listens, or a shared store (the requests go through it).
fn can_control(app: &App) -> bool {
    app.options.allow_control && (app.db.path().is_some() || app.db.store().shared().is_some())
}

/// The refusal of a control request, unless this server allows control and the request comes
/// from its own pages.
fn control_refused(app: &App, headers: &HeaderMap) -> Option<Response> {
    if !app.options.allow_control {
        return Some(error_page(
            StatusCode::FORBIDDEN,
            &app.store_label,
            "This server is read-only: start it with `coercion serve --allow-control` to stop, pause, resume, retry plans or decide their gates.",
        ));
    }
    if !same_origin(headers) {
        return Some(error_page(
            StatusCode::FORBIDDEN,
            &app.store_label,
            "Control requests must come from this server's own pages.",
        ));
    }
    None
}

/// How long a control request sent through a shared store waits for its answer.
const SHARED_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Sends the control request `make(id)` for the plan `id` names to the process that runs it,
/// when this server allows control and the request comes from its own pages; answers with the
/// plan's page and what happened.
async fn send_control(
    app: &App,
    id: &str,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
    op: ControlOp,
    make: impl FnOnce(PlanId) -> control::ControlRequest,
) -> Response {
    if let Some(refused) = control_refused(app, headers) {
        return refused;
    }
    let id = match resolve(app, id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let client = extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "an unknown client".to_owned());
    let request = make(id).via(format!("the web UI for {client}"));
    let result = match (app.db.path(), app.db.store().shared()) {
        (Some(file), _) => control::send(file, &request)
            .await
            .map_err(|e| e.to_string()),
        (None, Some(shared)) if op != ControlOp::Retry => {
            match control::send_shared(shared, &request, SHARED_ANSWER_WAIT).await {
                Ok(Some(outcome)) => Ok(outcome),
                Ok(None) => Err(format!(
                    "The request is recorded in the database, but no process holding the plan answered within {}: it is carried out by the process that holds the plan's lease, or by the worker that takes the plan over.",
                    crate::report::human_duration(SHARED_ANSWER_WAIT)
                )),
                Err(e) => Err(e.to_string()),
            }
        }
        (None, Some(_)) => Err(format!(
            "Retry reaches plans of SQLite store files only; {} is not one (a retry is Workstream::retry on a client of the store).",
            app.store_label
        )),
        (None, None) => Err(format!(
            "Control requests reach plans of a SQLite store file (through its process's socket) or of a shared store (through it); {} is neither.",
            app.store_label
        )),
    };
    if let Ok(control::Outcome::Retried(new)) = result {
        return Redirect::to(&format!("/plans/{new}")).into_response();
    }
    let page = match read_page(app, id, PageSpec::from(0)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let retried_by = match retried_by(app, page.plan()).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (status, notice) = match result {
        Ok(_) => (
            StatusCode::OK,
            Ok(match (op, &request.gate) {
                (ControlOp::Approve, Some(g)) => {
                    format!("Approved gate \u{201c}{g}\u{201d}: the plan goes on.")
                }
                (ControlOp::Reject, Some(g)) => {
                    format!("Rejected gate \u{201c}{g}\u{201d}: its block fails.")
                }
                _ => format!("Asked the process running this plan to {op} it."),
            }),
        ),
        Err(e) => (StatusCode::CONFLICT, Err(e)),
    };
    html_response(status, plan_view(app, &page, retried_by, Some(notice)))
}

async fn upload_page(State(app): State<App>) -> Response {
    let limit = format!("{} MiB", UPLOAD_LIMIT / (1024 * 1024));
    let body = html! {
        section {
            h1 { "Open an exported plan" }
            p.muted { "Drop a plan exported with " code { "coercion export" } " (or " code { "Plan::to_json" }
                ") to see it as a tree. The file is rendered by this server and kept nowhere." }
            div #dropzone .dropzone data-limit=(limit) {
                p { "Drop a plan JSON file here, or " }
                input #plan-file type="file" accept=".json,application/json";
                p.muted { "Up to " (limit) "." }
            }
        }
        div #upload-result {}
    };
    html_response(
        StatusCode::OK,
        views::page("Open an exported plan", &app.store_label, body),
    )
}

async fn upload_plan(headers: HeaderMap, body: Bytes) -> Response {
    let fail = |msg: String| -> Response {
        let m: Markup = html! { div.notice.error { (msg) } };
        (StatusCode::BAD_REQUEST, Html(m.into_string())).into_response()
    };
    // Another site's page must not make this server render what it sends.
    if !same_origin(&headers) {
        let m: Markup =
            html! { div.notice.error { "Uploads must come from this server's own upload page." } };
        return (StatusCode::FORBIDDEN, Html(m.into_string())).into_response();
    }
    if body.is_empty() {
        return fail("The file is empty: it is not an exported coercion plan.".to_owned());
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return fail(
            "This file is not text (not UTF-8), so it is not an exported coercion plan.".to_owned(),
        );
    };
    let plan = match Plan::from_json(text) {
        Ok(p) => p.into_display(),
        Err(e) => {
            return fail(format!(
                "This file is not an exported coercion plan: {}",
                e.0
            ));
        }
    };
    let m: Markup = html! {
        div.notice.ok { "Showing the uploaded plan " strong { bdi { (plan.name()) } } " (" (plan.id()) ")." }
        div.uploaded { (views::plan_body(&PlanPage::whole(plan), chrono::Utc::now(), false)) }
    };
    (StatusCode::OK, Html(m.into_string())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn loopback_servers_answer_only_loopback_host_names() {
        let local = SocketAddr::from(([127, 0, 0, 1], 3030));
        let allowed = |host: &'static str| host_allowed(&headers(&[("host", host)]), local, &[]);
        assert!(allowed("127.0.0.1:3030"));
        assert!(allowed("localhost:3030"));
        assert!(allowed("[::1]:3030"));
        assert!(!allowed("evil.example:3030"));
        assert!(!allowed("evil.example"));
        assert!(!allowed("127.0.0.1.evil.example"));
        assert!(!allowed("10.1.2.3:3030"));
    }

    #[test]
    fn servers_beyond_loopback_answer_ip_addresses_and_the_names_they_were_told() {
        let any = SocketAddr::from(([0, 0, 0, 0], 3030));
        let names = vec!["ops.internal".to_owned()];
        let allowed = |host: &'static str| host_allowed(&headers(&[("host", host)]), any, &names);
        assert!(allowed("ops.internal:3030"));
        assert!(allowed("OPS.internal"));
        assert!(allowed("192.0.2.10:3030"));
        assert!(allowed("[2001:db8::1]:3030"));
        assert!(allowed("localhost:3030"));
        assert!(
            !allowed("evil.example:3030"),
            "a rebinding page's own domain"
        );
        assert!(!allowed("ops.internal.evil.example"));
    }

    #[test]
    fn control_requests_from_other_sites_are_refused() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:3030"),
            ("host", "127.0.0.1:3030")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:3030")
        ])));
        assert!(same_origin(&headers(&[("host", "127.0.0.1:3030")])));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(urlencode("a b&c=<d>"), "a%20b%26c%3D%3Cd%3E");
    }
}

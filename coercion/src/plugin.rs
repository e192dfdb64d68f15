//! Plugins: the typed [`Plugin`] trait, its kind markers, errors, the [`Context`] an attempt
//! runs in, and the [`RetryPolicy`] between attempts.
//!
//! A plugin is a struct annotated with `#[plugin]` (an action plugin, for sequences and deferred
//! batches) or `#[plugin(check)]` (a side-effect-free check plugin, for check sections), with an
//! `impl Plugin`. The attribute implements [`PluginMeta`] and exactly one of the sealed markers
//! [`ActionPlugin`] / [`CheckPlugin`], and registers a constructor with the inventory that
//! [`Registry::from_inventory`](crate::Registry::from_inventory) collects.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::workflow::{Json, Loc, ObjectPath, PlanId};

/// Something that can name the object at a location (the engine's live plan).
pub(crate) trait PathSource: Send + Sync {
    fn path(&self, loc: Loc) -> ObjectPath;
}

/// Where a gate finds the decisions people took (the engine's live plan).
pub(crate) trait GateSource: Send + Sync {
    /// The last decision taken at the gate at `loc`.
    fn decision(&self, loc: Loc) -> Option<crate::workflow::Decision>;
    /// Changes (the value is a count) when a decision was recorded.
    fn decided(&self) -> tokio::sync::watch::Receiver<u64>;
    /// The gate at `loc` starts waiting for a person: tells the workstream's gate hooks.
    fn waiting(&self, loc: Loc);
    /// The gate at `loc` stops waiting (timed out, stopped): no decision is taken after this;
    /// returns the one taken just before, if any.
    fn close(&self, loc: Loc) -> BoxFuture<'_, Option<crate::workflow::Decision>>;
}

/// Whether a plugin may be used in check sections or in sequences and deferred batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PluginKind {
    /// Side-effect free; used in `bypass_checks`, `pre_checks`, `cont_checks`, `post_checks`
    /// and `deferred_checks`.
    Check,
    /// Does work; used in sequences and deferred batches.
    Action,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Check => "check",
            PluginKind::Action => "action",
        })
    }
}

/// A typed operation that actions call: an RPC-like request/response with its own retry policy.
///
/// Implement it for a struct marked `#[plugin]` or `#[plugin(check)]`. `execute` may be written
/// as an `async fn`; its future must be `Send`.
///
/// ```
/// use coercion::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct ResizeReq {
///     pub pool: String,
///     pub size: u32,
/// }
///
/// #[derive(Serialize, Deserialize)]
/// pub struct ResizeResp {
///     pub was: u32,
/// }
///
/// /// Resizes a worker pool (here, pretends to).
/// #[coercion::plugin(name = "example.com/resize")]
/// #[derive(Default)]
/// pub struct Resize;
///
/// impl Plugin for Resize {
///     type Request = ResizeReq;
///     type Response = ResizeResp;
///
///     async fn execute(&self, ctx: &Context, req: ResizeReq) -> Result<ResizeResp, PluginError> {
///         if ctx.is_cancelled() {
///             // The plan was stopped: do not start the work.
///             return Err(PluginError::permanent("stopped before resizing"));
///         }
///         Ok(ResizeResp { was: req.size / 2 })
///     }
///
///     // Refuses the plan at submit, naming the action.
///     fn validate(&self, req: &ResizeReq) -> Result<(), ValidationError> {
///         if req.size == 0 {
///             return Err(ValidationError::new("size must be at least 1"));
///         }
///         Ok(())
///     }
///
///     fn retry_policy(&self) -> RetryPolicy {
///         RetryPolicy { initial: std::time::Duration::from_secs(1), ..RetryPolicy::default() }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ws = Workstream::in_memory(Registry::from_inventory()?).await?;
/// let resize = |size| {
///     Plan::builder("resize")
///         .block(Block::builder("pools").sequence(Sequence::builder("web").action(
///             ActionSpec::new::<Resize>("resize", ResizeReq { pool: "web".into(), size }),
///         )))
///         .build()
/// };
/// let done = ws.run(resize(8)).await?;
/// let action = &done.blocks()[0].sequences()[0].actions()[0];
/// assert_eq!(action.response::<Resize>()?.was, 4);
/// assert!(ws.submit(resize(0)).await.is_err(), "size 0 is refused at submit");
/// # Ok(()) }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a coercion plugin",
    label = "not a plugin",
    note = "implement `coercion::Plugin` for `{Self}` and mark the struct with `#[coercion::plugin]` or `#[coercion::plugin(check)]`"
)]
pub trait Plugin: Send + Sync + 'static {
    /// What an action sends to the plugin. Stored as JSON in the plan.
    type Request: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What the plugin answers. Stored as JSON in the action's attempt.
    type Response: Serialize + DeserializeOwned + Send + 'static;

    /// Runs one attempt. It is cancelled (its future dropped) when the attempt's timeout
    /// expires; `ctx.cancelled()` fires first when the plan is stopped, giving a grace period.
    fn execute(
        &self,
        ctx: &Context,
        req: Self::Request,
    ) -> impl Future<Output = Result<Self::Response, PluginError>> + Send;

    /// Checks a request when its plan is submitted; a problem here rejects the whole plan.
    fn validate(&self, _req: &Self::Request) -> Result<(), ValidationError> {
        Ok(())
    }

    /// The pause between attempts. Validated when the plugin is registered.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::fast()
    }

    /// Checks that the environment suits the plugin (a binary installed, a socket reachable).
    /// Runs for every registered plugin when a `Workstream` starts; a failure stops start-up.
    fn init(&self) -> Result<(), InitError> {
        Ok(())
    }
}

/// What `#[plugin]` knows about a plugin type. Generated by the attribute; do not implement it
/// by hand.
pub trait PluginMeta: Plugin {
    /// The registered name (`#[plugin(name = "...")]`, or the type's module path and name).
    const NAME: &'static str;
    /// Check or action.
    const KIND: PluginKind;
    /// `false` for `#[plugin(not_idempotent)]`: an attempt interrupted by a crash is failed
    /// instead of run again.
    const IDEMPOTENT: bool = true;
    /// `true` for `#[plugin(preview)]`: the plugin implements [`Previews`](crate::Previews).
    const PREVIEWS: bool = false;

    /// Decodes `req` and calls [`Previews::preview`](crate::Previews::preview); `None` for a
    /// plugin that does not preview. Generated by `#[plugin(preview)]`; do not implement it.
    #[doc(hidden)]
    fn __preview<'a>(
        &'a self,
        _ctx: &'a Context,
        _req: &'a Json,
    ) -> Option<BoxFuture<'a, Result<crate::Preview, PluginError>>> {
        None
    }
}

/// A plugin that may be used in check sections. Implemented by `#[plugin(check)]` only.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a check plugin, so it cannot be used in checks",
    label = "not a check plugin",
    note = "checks may only use plugins declared with `#[plugin(check)]`; action plugins belong in a `sequence {{ ... }}` or a deferred `batch {{ ... }}`",
    note = "if `{Self}` implements `coercion::Plugin` but its struct is not marked `#[coercion::plugin(check)]`, add the attribute: it declares the plugin's kind and registers it"
)]
pub trait CheckPlugin: PluginMeta + crate::__private::Sealed {}

/// A plugin that may be used in sequences and deferred batches. Implemented by `#[plugin]` only.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an action plugin, so it cannot be used in a sequence",
    label = "not an action plugin",
    note = "sequences and deferred batches may only use plugins declared with `#[plugin]`; check plugins (`#[plugin(check)]`) belong in `bypass_checks`, `pre_checks`, `cont_checks`, `post_checks` or `deferred_checks`",
    note = "if `{Self}` implements `coercion::Plugin` but its struct is not marked `#[coercion::plugin]`, add the attribute: it declares the plugin's kind and registers it"
)]
pub trait ActionPlugin: PluginMeta + crate::__private::Sealed {}

/// Error codes the engine itself puts into [`PluginError::code`]. Plugin-defined codes should
/// stay below [`codes::ENGINE_BASE`].
pub mod codes {
    /// The first code reserved for the engine.
    pub const ENGINE_BASE: u32 = 0xC0E0_0000;
    /// The attempt exceeded the action's timeout.
    pub const TIMEOUT: u32 = ENGINE_BASE + 1;
    /// The plugin panicked.
    pub const PANIC: u32 = ENGINE_BASE + 2;
    /// The plan was stopped while the attempt ran.
    pub const CANCELLED: u32 = ENGINE_BASE + 3;
    /// The stored request did not decode into the plugin's request type.
    pub const BAD_REQUEST: u32 = ENGINE_BASE + 4;
    /// The plugin's response did not serialize.
    pub const BAD_RESPONSE: u32 = ENGINE_BASE + 5;
    /// The plugin is not in the workstream's registry.
    pub const NOT_REGISTERED: u32 = ENGINE_BASE + 6;
    /// The attempt was interrupted: the process running it ended (a crash, a kill, a lost
    /// lease) before it did. Retryable, and not counted against the retries, unless the plugin
    /// is marked `not_idempotent`: then it is permanent and fails the action.
    pub const INTERRUPTED: u32 = ENGINE_BASE + 7;
    /// A secret in the request could not be decrypted.
    pub const SECRET: u32 = ENGINE_BASE + 8;
    /// The engine itself failed while the attempt ran (see [`Reason::Internal`]).
    ///
    /// [`Reason::Internal`]: crate::Reason::Internal
    pub const INTERNAL: u32 = ENGINE_BASE + 9;
}

/// A plugin's failure: a message, a plugin-defined code, whether retrying is pointless, and the
/// chain of causes. Serializable: it is stored in the attempt that produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct PluginError {
    /// Plugin-defined; `0` when unspecified. Codes from [`codes`] come from the engine.
    #[serde(default)]
    pub code: u32,
    /// What went wrong, for people.
    pub message: String,
    /// `true` stops the retries: another attempt cannot succeed.
    #[serde(default)]
    pub permanent: bool,
    /// What caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Box<PluginError>>,
}

impl PluginError {
    /// A retryable error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        PluginError {
            code: 0,
            message: message.into(),
            permanent: false,
            source: None,
        }
    }

    /// A permanent error with `message`: no further attempt is made.
    pub fn permanent(message: impl Into<String>) -> Self {
        PluginError {
            permanent: true,
            ..PluginError::new(message)
        }
    }

    /// Sets the plugin-defined code.
    pub fn with_code(mut self, code: u32) -> Self {
        self.code = code;
        self
    }

    /// Marks the error permanent (or not).
    pub fn set_permanent(mut self, permanent: bool) -> Self {
        self.permanent = permanent;
        self
    }

    /// Records `cause` and its own chain of sources as this error's cause.
    pub fn caused_by(mut self, cause: &(dyn std::error::Error + 'static)) -> Self {
        self.source = Some(Box::new(PluginError::from_error(cause)));
        self
    }

    /// Converts any error (with its chain of sources) into a retryable plugin error. A
    /// `PluginError` in the chain is kept as it is, code and all.
    pub fn from_error(err: &(dyn std::error::Error + 'static)) -> Self {
        if let Some(plugin_error) = err.downcast_ref::<PluginError>() {
            return PluginError {
                permanent: false,
                ..plugin_error.clone()
            };
        }
        let mut e = PluginError::new(err.to_string());
        if let Some(src) = err.source() {
            e.source = Some(Box::new(PluginError::from_error(src)));
        }
        e
    }

    /// The message followed by every cause: `a: b: c`.
    pub fn chain(&self) -> String {
        let mut out = self.message.clone();
        let mut cur = self.source.as_deref();
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.message);
            cur = e.source.as_deref();
        }
        out
    }

    pub(crate) fn engine(code: u32, message: impl Into<String>, permanent: bool) -> Self {
        PluginError {
            code,
            message: message.into(),
            permanent,
            source: None,
        }
    }
}

/// An I/O error as a retryable plugin error, its chain of sources kept: `?` on `std::io` calls
/// in [`Plugin::execute`].
impl From<std::io::Error> for PluginError {
    fn from(err: std::io::Error) -> PluginError {
        PluginError::from_error(&err)
    }
}

/// Says what a plugin was doing when an error happened: `.context("reading the config")?` turns
/// any `Result<T, E: Error>` into a `Result<T, PluginError>` whose message is the context and
/// whose cause is the error, with its chain. The new error is retryable unless the cause is a
/// permanent [`PluginError`].
///
/// ```
/// use coercion::plugin::ErrorContext;
/// use coercion::PluginError;
///
/// fn read_config(path: &str) -> Result<String, PluginError> {
///     std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
/// }
///
/// let err = read_config("/nonexistent/coercion.toml").unwrap_err();
/// assert_eq!(err.message, "reading /nonexistent/coercion.toml");
/// assert!(err.chain().starts_with("reading /nonexistent/coercion.toml: "));
/// ```
pub trait ErrorContext<T> {
    /// Wraps the error in a [`PluginError`] saying `context`.
    fn context(self, context: impl Into<String>) -> Result<T, PluginError>;

    /// Wraps the error in a [`PluginError`] saying what `context()` returns, called only on
    /// failure.
    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T, PluginError>;
}

impl<T, E: std::error::Error + 'static> ErrorContext<T> for Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T, PluginError> {
        self.with_context(|| context)
    }

    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T, PluginError> {
        self.map_err(|err| {
            let cause: &(dyn std::error::Error + 'static) = &err;
            let permanent = cause
                .downcast_ref::<PluginError>()
                .is_some_and(|p| p.permanent);
            PluginError::new(context())
                .set_permanent(permanent)
                .caused_by(cause)
        })
    }
}

/// A request that `Plugin::validate` refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// What is wrong with the request, for people.
    pub message: String,
}

impl ValidationError {
    /// A validation error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        ValidationError {
            message: message.into(),
        }
    }
}

/// `Plugin::init` found the environment unsuitable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InitError {
    /// What is missing, for people.
    pub message: String,
}

impl InitError {
    /// An init error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        InitError {
            message: message.into(),
        }
    }
}

/// What one attempt of a plugin knows about where it runs.
#[derive(Clone)]
pub struct Context {
    pub(crate) plan_id: PlanId,
    pub(crate) action_id: Uuid,
    pub(crate) loc: Loc,
    pub(crate) paths: Option<Arc<dyn PathSource>>,
    pub(crate) gates: Option<Arc<dyn GateSource>>,
    pub(crate) keys: Option<Arc<crate::secret::KeyRing>>,
    pub(crate) attempt: u32,
    pub(crate) deadline: Instant,
    pub(crate) cancel: CancellationToken,
    pub(crate) span: tracing::Span,
    pub(crate) preview: bool,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("plan_id", &self.plan_id)
            .field("action_id", &self.action_id)
            .field("loc", &self.loc)
            .field("attempt", &self.attempt)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for calling a plugin outside a plan, e.g. in a plugin's own unit tests:
    /// attempt 1, the given timeout, nil ids, a fresh cancellation token.
    pub fn detached(timeout: Duration) -> Context {
        Context {
            plan_id: PlanId::NIL,
            action_id: Uuid::nil(),
            loc: Loc::Plan,
            paths: None,
            gates: None,
            keys: None,
            attempt: 1,
            deadline: crate::engine::deadline_in(timeout),
            cancel: CancellationToken::new(),
            span: tracing::Span::none(),
            preview: false,
        }
    }

    /// `true` while a check runs for a preview ([`Workstream::preview`]): it judges the world
    /// as it is, once. A check that polls (as `coercion/wait-for` does) looks once and
    /// answers.
    ///
    /// [`Workstream::preview`]: crate::Workstream::preview
    pub fn is_preview(&self) -> bool {
        self.preview
    }

    /// The id of the plan the action belongs to.
    pub fn plan_id(&self) -> PlanId {
        self.plan_id
    }
    /// The id of the action.
    pub fn action_id(&self) -> Uuid {
        self.action_id
    }
    /// Where the action is in its plan (built on demand).
    pub fn path(&self) -> ObjectPath {
        self.paths
            .as_ref()
            .map(|p| p.path(self.loc))
            .unwrap_or_default()
    }

    /// Where the action is, by indices.
    pub fn loc(&self) -> Loc {
        self.loc
    }
    /// The attempt number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// When this attempt times out. A plugin that waits for a condition may loop until then
    /// (taking direct control of its retries); the engine drops its future at the deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
    /// Fires when the plan is stopped: finish or abandon the work quickly.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }
    /// Whether the plan was stopped.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
    /// Completes when the plan is stopped.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
    /// The `tracing` span of the action; events a plugin emits inside it are attributed to it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Replaces the cancellation token (tests and the engine).
    pub fn with_cancellation(mut self, token: CancellationToken) -> Context {
        self.cancel = token;
        self
    }
}

/// A retry policy whose parameters are out of range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid retry policy: {0}")]
pub struct RetryPolicyError(pub String);

/// Exponential backoff between the attempts of an action: the first pause is `initial`,
/// each next one `multiplier` times longer, capped at `max_interval`, each randomized by
/// ±`randomization` (0.5 = ±50 %). Built on the `backon` crate; this type is ours so the crate
/// behind it can change without touching plugins.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// The first pause.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Growth factor between pauses (> 1).
    pub multiplier: f32,
    /// Randomization factor in [0, 1]: each pause is drawn in `[d·(1−r), d·(1+r)]`.
    pub randomization: f32,
    /// The longest pause (before randomization).
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
}

impl RetryPolicy {
    /// Go's `Fast`: 100 ms, ×2, ±50 %, at most 60 s.
    pub const fn fast() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            randomization: 0.5,
            max_interval: Duration::from_secs(60),
        }
    }

    /// Go's `Seconds`: 1 s, ×2, ±50 %, at most 60 s.
    pub const fn seconds() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            randomization: 0.5,
            max_interval: Duration::from_secs(60),
        }
    }

    /// Go's `ThirtySeconds`: 30 s, ×1.1, ±20 %, at most 5 min.
    pub const fn thirty_seconds() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(30),
            multiplier: 1.1,
            randomization: 0.2,
            max_interval: Duration::from_secs(300),
        }
    }

    /// A custom policy, validated.
    pub fn new(
        initial: Duration,
        multiplier: f32,
        randomization: f32,
        max_interval: Duration,
    ) -> Result<RetryPolicy, RetryPolicyError> {
        let p = RetryPolicy {
            initial,
            multiplier,
            randomization,
            max_interval,
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks the parameters: `initial > 0`, `multiplier > 1`, `randomization` in [0, 1],
    /// `max_interval ≥ initial`.
    pub fn validate(&self) -> Result<(), RetryPolicyError> {
        if self.initial.is_zero() {
            return Err(RetryPolicyError(
                "initial interval must be greater than zero".into(),
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier > 1.0) {
            return Err(RetryPolicyError(format!(
                "multiplier must be greater than 1, got {}",
                self.multiplier
            )));
        }
        if !(0.0..=1.0).contains(&self.randomization) {
            return Err(RetryPolicyError(format!(
                "randomization factor must be within [0, 1], got {}",
                self.randomization
            )));
        }
        if self.max_interval < self.initial {
            return Err(RetryPolicyError(format!(
                "max interval {:?} is shorter than the initial interval {:?}",
                self.max_interval, self.initial
            )));
        }
        Ok(())
    }

    /// The pauses before attempts 2, 3, …: an endless iterator.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        use backon::BackoffBuilder as _;
        let r = self.randomization;
        backon::ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_factor(self.multiplier)
            .with_max_delay(self.max_interval)
            .without_max_times()
            .build()
            .map(move |d| {
                if r == 0.0 {
                    d
                } else {
                    let f = 1.0 + r as f64 * (fastrand::f64() * 2.0 - 1.0);
                    d.mul_f64(f)
                }
            })
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::fast()
    }
}

/// Decodes a stored request of plugin `P` with the keys of `ctx`: a secret that does not
/// decrypt and a request of another shape are told apart by their codes.
pub(crate) fn decode_request<P: Plugin>(
    ctx: &Context,
    req: &Json,
) -> Result<P::Request, PluginError> {
    crate::secret::decode_request::<P::Request>(req, ctx.keys.as_deref()).map_err(|e| {
        if e.is_secret() {
            PluginError::engine(codes::SECRET, e.to_string(), true)
        } else {
            PluginError::engine(
                codes::BAD_REQUEST,
                format!(
                    "the stored request does not decode into `{}`: {e}",
                    std::any::type_name::<P::Request>()
                ),
                true,
            )
        }
    })
}

/// A boxed future of an erased plugin call.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe view of a plugin that the registry and the engine use: requests and
/// responses as JSON. Implemented for every `P: PluginMeta`.
pub trait DynPlugin: Send + Sync + 'static {
    /// The registered name.
    fn name(&self) -> &'static str;
    /// Check or action.
    fn kind(&self) -> PluginKind;
    /// The Rust type behind the plugin.
    fn type_name(&self) -> &'static str;
    /// Whether an interrupted attempt may run again after a crash.
    fn idempotent(&self) -> bool;
    /// The plugin's retry policy.
    fn retry_policy(&self) -> RetryPolicy;
    /// The plugin's environment check.
    fn init(&self) -> Result<(), InitError>;
    /// Decodes `req` and runs `Plugin::validate` on it.
    fn validate_json(&self, req: &Json) -> Result<(), ValidationError>;
    /// Decodes `req`, runs one attempt and encodes the response.
    fn execute_json<'a>(
        &'a self,
        ctx: &'a Context,
        req: &'a Json,
    ) -> BoxFuture<'a, Result<Json, PluginError>>;
    /// Whether the plugin previews (`#[plugin(preview)]`).
    fn previews(&self) -> bool;
    /// Decodes `req` and asks the plugin what an attempt would do; `None` when it does not
    /// preview.
    fn preview_json<'a>(
        &'a self,
        ctx: &'a Context,
        req: &'a Json,
    ) -> Option<BoxFuture<'a, Result<crate::Preview, PluginError>>>;
    /// The plugin as `Any`, for typed access to a configured instance.
    fn as_any(&self) -> &dyn Any;
}

impl<P: PluginMeta> DynPlugin for P {
    fn name(&self) -> &'static str {
        P::NAME
    }
    fn kind(&self) -> PluginKind {
        P::KIND
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<P>()
    }
    fn idempotent(&self) -> bool {
        P::IDEMPOTENT
    }
    fn retry_policy(&self) -> RetryPolicy {
        Plugin::retry_policy(self)
    }
    fn init(&self) -> Result<(), InitError> {
        Plugin::init(self)
    }
    fn validate_json(&self, req: &Json) -> Result<(), ValidationError> {
        let req: P::Request = crate::secret::decode_request(req, None).map_err(|e| {
            ValidationError::new(format!(
                "the request does not decode into `{}`: {e}",
                std::any::type_name::<P::Request>()
            ))
        })?;
        Plugin::validate(self, &req)
    }
    fn execute_json<'a>(
        &'a self,
        ctx: &'a Context,
        req: &'a Json,
    ) -> BoxFuture<'a, Result<Json, PluginError>> {
        Box::pin(async move {
            let req = decode_request::<P>(ctx, req)?;
            let resp = Plugin::execute(self, ctx, req).await?;
            let encoded = Json::encode(&resp).map_err(|e| {
                PluginError::engine(
                    codes::BAD_RESPONSE,
                    format!("the plugin's response does not serialize: {e}"),
                    true,
                )
            })?;
            // Its secrets were sealed under the process key: under the workstream's key now,
            // as everything it stores.
            #[cfg(feature = "secrets")]
            if let Some(ring) = &ctx.keys {
                return Ok(crate::secret::seal_for_store(encoded, ring));
            }
            Ok(encoded)
        })
    }
    fn previews(&self) -> bool {
        P::PREVIEWS
    }
    fn preview_json<'a>(
        &'a self,
        ctx: &'a Context,
        req: &'a Json,
    ) -> Option<BoxFuture<'a, Result<crate::Preview, PluginError>>> {
        PluginMeta::__preview(self, ctx, req)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

//! The plugin side of the public API: `#[plugin]` and the `Registry`, `RetryPolicy`,
//! `PluginError`.

use std::time::Duration;

use coercion::plugin::{PluginKind, PluginMeta};
use coercion::plugins::Command;
use coercion::registry::{Origin, RegistryError};
use coercion::testing::{FakeAction, FakeCheck};
use coercion::workflow::Json;
use coercion::{Context, InitError, Plugin, PluginError, Registry, RetryPolicy};

// ---- plugins of this test binary --------------------------------------------------------------

/// Auto-registered, with the default name (module path and type name).
#[coercion::plugin]
#[derive(Default)]
pub struct Unnamed;

impl Plugin for Unnamed {
    type Request = ();
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
        Ok(())
    }
}

mod nested {
    use super::*;

    /// An auto-registered check plugin in a module, not idempotent.
    #[coercion::plugin(check, not_idempotent)]
    #[derive(Default)]
    pub struct Probe;

    impl Plugin for Probe {
        type Request = ();
        type Response = ();
        async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
            Ok(())
        }
    }
}

/// Built by the registry through a named constructor: it has no `Default`.
#[coercion::plugin(name = "test.registry/configured", new = Configured::from_env)]
pub struct Configured {
    port: u16,
}

impl Configured {
    fn from_env() -> Configured {
        Configured { port: 8443 }
    }
}

impl Plugin for Configured {
    type Request = ();
    type Response = u16;
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<u16, PluginError> {
        Ok(self.port)
    }
}

/// Registered by hand only, with its configuration.
#[coercion::plugin(name = "test.registry/greeter", manual)]
pub struct Greeter {
    greeting: String,
}

impl Plugin for Greeter {
    type Request = String;
    type Response = String;
    async fn execute(&self, _ctx: &Context, who: String) -> Result<String, PluginError> {
        Ok(format!("{}, {who}", self.greeting))
    }
}

/// Two manual plugins claiming one name.
#[coercion::plugin(name = "dup/x", manual)]
#[derive(Default)]
pub struct DupOne;

#[coercion::plugin(name = "dup/x", check, manual)]
#[derive(Default)]
pub struct DupTwo;

impl Plugin for DupOne {
    type Request = ();
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
        Ok(())
    }
}

impl Plugin for DupTwo {
    type Request = ();
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
        Ok(())
    }
}

/// A plugin whose environment check fails.
#[coercion::plugin(name = "test.registry/needs-ssh", manual)]
#[derive(Default)]
pub struct NeedsSsh;

impl Plugin for NeedsSsh {
    type Request = ();
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
        Ok(())
    }
    fn init(&self) -> Result<(), InitError> {
        Err(InitError::new("`ssh` is not on the PATH"))
    }
}

/// A plugin with a configurable retry policy, to feed `Registry` bad ones.
#[coercion::plugin(name = "test.registry/retrying", manual)]
pub struct Retrying(RetryPolicy);

impl Plugin for Retrying {
    type Request = ();
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
        Ok(())
    }
    fn retry_policy(&self) -> RetryPolicy {
        self.0
    }
}

/// `PluginMeta` written by hand (which the docs advise against) with a blank name.
pub struct Blank;

impl Plugin for Blank {
    type Request = ();
    type Response = ();
    async fn execute(&self, _ctx: &Context, _req: ()) -> Result<(), PluginError> {
        Ok(())
    }
}

impl PluginMeta for Blank {
    const NAME: &'static str = " ";
    const KIND: PluginKind = PluginKind::Action;
}

// ---- the registry -----------------------------------------------------------------------------

#[test]
fn from_inventory_finds_the_linked_plugins_with_their_kinds() {
    let registry = Registry::from_inventory().unwrap();
    assert_eq!(
        registry.kind_of("coercion/command"),
        Some(PluginKind::Action)
    );
    assert_eq!(
        registry.kind_of("coercion/command-check"),
        Some(PluginKind::Check)
    );
    assert_eq!(
        registry.kind_of("registry::Unnamed"),
        Some(PluginKind::Action)
    );
    assert_eq!(
        registry.kind_of("registry::nested::Probe"),
        Some(PluginKind::Check)
    );
    assert_eq!(
        registry.kind_of("test.registry/configured"),
        Some(PluginKind::Action)
    );
    assert!(registry.instance::<Command>().is_some());
    // The test kit's fakes are only in registries that ask for them.
    assert!(registry.instance::<FakeAction>().is_none());
    assert!(!registry.contains("coercion.testing/check"));

    let command = registry
        .iter()
        .find(|(name, _)| *name == "coercion/command")
        .unwrap()
        .1;
    let Origin::Inventory { file, line } = *command.origin() else {
        panic!("{:?}", command.origin())
    };
    assert!(file.ends_with("command.rs"), "{file}");
    assert!(line > 0);
    assert_eq!(
        command.plugin().type_name(),
        "coercion::plugins::command::Command"
    );
}

#[test]
fn the_test_registry_adds_the_fakes_to_the_inventory() {
    let registry = coercion::testing::registry();
    assert_eq!(
        registry.kind_of("coercion.testing/action"),
        Some(PluginKind::Action)
    );
    assert_eq!(
        registry.kind_of("coercion.testing/check"),
        Some(PluginKind::Check)
    );
    assert!(registry.instance::<FakeAction>().is_some());
    assert!(registry.contains("coercion/command"));
    assert!(registry.contains("registry::Unnamed"));
    assert!(matches!(
        registry.iter().find(|(name, _)| *name == "coercion.testing/action").unwrap().1.origin(),
        Origin::Explicit { file, .. } if file.ends_with("testing.rs")
    ));
}

#[test]
fn manual_plugins_are_not_in_the_inventory() {
    let registry = Registry::from_inventory().unwrap();
    for name in [
        "test.registry/greeter",
        "dup/x",
        "test.registry/needs-ssh",
        "test.registry/retrying",
    ] {
        assert!(
            !registry.contains(name),
            "{name} was registered automatically"
        );
    }
}

#[test]
fn the_default_name_is_the_module_path_and_type_name() {
    assert_eq!(Unnamed::NAME, "registry::Unnamed");
    assert_eq!(nested::Probe::NAME, "registry::nested::Probe");
    assert_eq!(Configured::NAME, "test.registry/configured");
    assert_eq!(FakeCheck::NAME, "coercion.testing/check");
}

#[test]
fn the_attribute_records_kind_and_idempotence() {
    assert_eq!(Unnamed::KIND, PluginKind::Action);
    const { assert!(Unnamed::IDEMPOTENT) };
    assert_eq!(nested::Probe::KIND, PluginKind::Check);
    const { assert!(!nested::Probe::IDEMPOTENT) };
    let registry = Registry::from_inventory().unwrap();
    assert!(
        !registry
            .get("registry::nested::Probe")
            .unwrap()
            .idempotent()
    );
    assert!(registry.get("registry::Unnamed").unwrap().idempotent());
}

#[tokio::test]
async fn a_named_constructor_builds_the_registered_instance() {
    let registry = Registry::from_inventory().unwrap();
    assert_eq!(registry.instance::<Configured>().unwrap().port, 8443);
    let ctx = Context::detached(Duration::from_secs(1));
    let plugin = registry.get("test.registry/configured").unwrap();
    let resp = plugin
        .execute_json(&ctx, &Json::encode(&()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.as_str(), "8443");
}

#[tokio::test]
async fn configured_instances_are_registered_explicitly_and_called() {
    let registry = Registry::new()
        .with(Greeter {
            greeting: "hello".into(),
        })
        .unwrap();
    assert_eq!(registry.len(), 1);
    assert_eq!(registry.instance::<Greeter>().unwrap().greeting, "hello");
    assert!(registry.instance::<FakeAction>().is_none());

    let ctx = Context::detached(Duration::from_secs(1));
    let greeter = registry.get("test.registry/greeter").unwrap();
    let resp = greeter
        .execute_json(&ctx, &Json::encode("ops").unwrap())
        .await
        .unwrap();
    assert_eq!(resp.decode::<String>().unwrap(), "hello, ops");
    assert_eq!(resp.as_str(), "\"hello, ops\"");

    let entry = registry.iter().next().unwrap().1;
    assert!(
        matches!(entry.origin(), Origin::Explicit { file, .. } if file.ends_with("registry.rs")),
        "{:?}",
        entry.origin()
    );
}

#[test]
fn registries_side_by_side_are_independent() {
    let plain = Registry::new()
        .with(Greeter {
            greeting: "hi".into(),
        })
        .unwrap();
    let formal = Registry::new()
        .with(Greeter {
            greeting: "good morning".into(),
        })
        .unwrap();
    let mut extended = plain.clone();
    extended.register(FakeCheck::default()).unwrap();

    assert_eq!(plain.instance::<Greeter>().unwrap().greeting, "hi");
    assert_eq!(
        formal.instance::<Greeter>().unwrap().greeting,
        "good morning"
    );
    assert_eq!(extended.instance::<Greeter>().unwrap().greeting, "hi");
    assert!(extended.contains("coercion.testing/check"));
    assert!(
        !plain.contains("coercion.testing/check"),
        "registering into a clone changed the original"
    );
    assert_eq!((plain.len(), formal.len(), extended.len()), (1, 1, 2));

    let empty = Registry::new();
    assert!(empty.is_empty());
    assert!(empty.get("test.registry/greeter").is_none());
    assert_eq!(format!("{empty:?}"), "{}");
    assert_eq!(
        format!("{plain:?}"),
        "{\"test.registry/greeter\": \"registry::Greeter (action)\"}"
    );
}

#[test]
fn a_duplicate_name_names_both_types_and_where_they_were_registered() {
    let mut registry = Registry::new();
    let first_line = line!() + 1;
    registry.register(DupOne).unwrap();
    let second_line = line!() + 1;
    let err = registry.register(DupTwo).unwrap_err();
    let RegistryError::Duplicate {
        name,
        first_type,
        first_origin,
        second_type,
        second_origin,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(name, "dup/x");
    assert_eq!(
        (*first_type, *second_type),
        ("registry::DupOne", "registry::DupTwo")
    );
    assert_eq!(
        *first_origin,
        format!("registered explicitly at tests/registry.rs:{first_line}")
    );
    assert_eq!(
        *second_origin,
        format!("registered explicitly at tests/registry.rs:{second_line}")
    );
    assert_eq!(
        err.to_string(),
        format!(
            "plugin name \"dup/x\" registered twice: by `registry::DupOne` (registered explicitly at tests/registry.rs:{first_line}) and by `registry::DupTwo` (registered explicitly at tests/registry.rs:{second_line})"
        )
    );
    // The first registration stays.
    assert_eq!(registry.kind_of("dup/x"), Some(PluginKind::Action));
    assert_eq!(registry.len(), 1);
}

#[test]
fn a_duplicate_of_an_inventory_plugin_names_its_source_location() {
    let err = Registry::from_inventory()
        .unwrap()
        .with(Command)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("plugin name \"coercion/command\" registered twice: by `coercion::plugins::command::Command` ("), "{err}");
    assert!(err.contains("command.rs:"), "{err}");
    assert!(
        err.contains(
            ") and by `coercion::plugins::command::Command` (registered explicitly at tests/registry.rs:"
        ),
        "{err}"
    );
}

#[test]
fn init_all_names_the_failing_plugin_and_its_message() {
    let healthy = Registry::new()
        .with(Greeter {
            greeting: "hi".into(),
        })
        .unwrap();
    assert_eq!(healthy.init_all(), Ok(()));
    let registry = healthy.with(NeedsSsh).unwrap();
    let failure = registry.init_all().unwrap_err();
    assert_eq!(failure.plugin, "test.registry/needs-ssh");
    assert_eq!(failure.type_name, "registry::NeedsSsh");
    assert_eq!(failure.message, "`ssh` is not on the PATH");
    assert_eq!(
        failure.to_string(),
        "plugin \"test.registry/needs-ssh\" (`registry::NeedsSsh`) failed its init check: `ssh` is not on the PATH"
    );
}

#[test]
fn a_plugin_with_an_invalid_retry_policy_is_refused() {
    let bad = RetryPolicy {
        multiplier: 0.5,
        ..RetryPolicy::fast()
    };
    let err = Registry::new().with(Retrying(bad)).unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::BadRetryPolicy {
                name: "test.registry/retrying",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "plugin \"test.registry/retrying\" (`registry::Retrying`) has an invalid retry policy: multiplier must be greater than 1, got 0.5"
    );
    let mut registry = Registry::new();
    assert!(
        registry
            .register(Retrying(RetryPolicy {
                initial: Duration::ZERO,
                ..RetryPolicy::seconds()
            }))
            .is_err()
    );
    assert!(
        registry.is_empty(),
        "a refused plugin must not be registered"
    );
    registry
        .register(Retrying(RetryPolicy::thirty_seconds()))
        .unwrap();
    assert_eq!(
        registry
            .get("test.registry/retrying")
            .unwrap()
            .retry_policy(),
        RetryPolicy::thirty_seconds()
    );
}

#[test]
fn a_blank_name_is_refused() {
    let err = Registry::new().with(Blank).unwrap_err();
    assert_eq!(
        err,
        RegistryError::BlankName {
            type_name: "registry::Blank"
        }
    );
    assert_eq!(err.to_string(), "plugin `registry::Blank` has a blank name");
}

// ---- RetryPolicy ------------------------------------------------------------------------------

#[test]
fn the_presets_match_go() {
    let fast = RetryPolicy::fast();
    assert_eq!(fast.initial, Duration::from_millis(100));
    assert_eq!(fast.multiplier, 2.0);
    assert_eq!(fast.randomization, 0.5);
    assert_eq!(fast.max_interval, Duration::from_secs(60));
    assert_eq!(RetryPolicy::default(), fast);

    let seconds = RetryPolicy::seconds();
    assert_eq!(
        (
            seconds.initial,
            seconds.multiplier,
            seconds.randomization,
            seconds.max_interval
        ),
        (Duration::from_secs(1), 2.0, 0.5, Duration::from_secs(60))
    );

    let thirty = RetryPolicy::thirty_seconds();
    assert_eq!(
        (
            thirty.initial,
            thirty.multiplier,
            thirty.randomization,
            thirty.max_interval
        ),
        (Duration::from_secs(30), 1.1, 0.2, Duration::from_secs(300))
    );
    for preset in [fast, seconds, thirty] {
        assert_eq!(preset.validate(), Ok(()));
    }
}

#[test]
fn validate_rejects_each_bad_parameter() {
    let base = RetryPolicy::seconds();
    let cases = [
        (
            RetryPolicy {
                initial: Duration::ZERO,
                ..base
            },
            "initial interval must be greater than zero",
        ),
        (
            RetryPolicy {
                multiplier: 1.0,
                ..base
            },
            "multiplier must be greater than 1, got 1",
        ),
        (
            RetryPolicy {
                multiplier: -2.0,
                ..base
            },
            "multiplier must be greater than 1, got -2",
        ),
        (
            RetryPolicy {
                multiplier: f32::NAN,
                ..base
            },
            "multiplier must be greater than 1, got NaN",
        ),
        (
            RetryPolicy {
                multiplier: f32::INFINITY,
                ..base
            },
            "multiplier must be greater than 1, got inf",
        ),
        (
            RetryPolicy {
                randomization: -0.1,
                ..base
            },
            "randomization factor must be within [0, 1], got -0.1",
        ),
        (
            RetryPolicy {
                randomization: 1.5,
                ..base
            },
            "randomization factor must be within [0, 1], got 1.5",
        ),
        (
            RetryPolicy {
                randomization: f32::NAN,
                ..base
            },
            "randomization factor must be within [0, 1], got NaN",
        ),
        (
            RetryPolicy {
                max_interval: Duration::from_millis(999),
                ..base
            },
            "max interval 999ms is shorter than the initial interval 1s",
        ),
    ];
    for (policy, message) in cases {
        assert_eq!(
            policy.validate().unwrap_err().to_string(),
            format!("invalid retry policy: {message}")
        );
    }
    // The bounds themselves are fine.
    let edge = RetryPolicy {
        randomization: 1.0,
        max_interval: base.initial,
        ..base
    };
    assert_eq!(edge.validate(), Ok(()));
    assert_eq!(
        RetryPolicy {
            randomization: 0.0,
            ..base
        }
        .validate(),
        Ok(())
    );

    assert!(RetryPolicy::new(Duration::from_secs(1), 3.0, 0.1, Duration::from_secs(10)).is_ok());
    assert!(RetryPolicy::new(Duration::from_secs(1), 0.9, 0.1, Duration::from_secs(10)).is_err());
}

#[test]
fn delays_without_randomization_grow_by_the_multiplier_and_cap() {
    let policy =
        RetryPolicy::new(Duration::from_millis(100), 2.0, 0.0, Duration::from_secs(1)).unwrap();
    let delays: Vec<Duration> = policy.delays().take(8).collect();
    // backon multiplies in f32, so a delay may be off by a few nanoseconds.
    let millis: Vec<u128> = delays
        .iter()
        .map(|d| (d.as_micros() + 500) / 1_000)
        .collect();
    assert_eq!(millis, [100, 200, 400, 800, 1_000, 1_000, 1_000, 1_000]);
    for (delay, expected) in delays.iter().zip(&millis) {
        assert!(
            delay.abs_diff(Duration::from_millis(*expected as u64)) < Duration::from_micros(1),
            "{delay:?}"
        );
    }
}

/// The delay before randomization: `initial × multiplierⁿ`, capped.
fn base_delay(policy: &RetryPolicy, n: i32) -> f64 {
    (policy.initial.as_secs_f64() * f64::from(policy.multiplier).powi(n))
        .min(policy.max_interval.as_secs_f64())
}

#[test]
fn delays_stay_within_the_randomization_band() {
    for policy in [
        RetryPolicy::fast(),
        RetryPolicy::seconds(),
        RetryPolicy::thirty_seconds(),
    ] {
        let r = f64::from(policy.randomization);
        let mut off_center = 0;
        for round in 0..20 {
            for (n, delay) in policy.delays().take(40).enumerate() {
                let base = base_delay(&policy, n as i32);
                let got = delay.as_secs_f64();
                // A little slack for the f32 arithmetic behind the scenes.
                let (low, high) = (base * (1.0 - r) * 0.999, base * (1.0 + r) * 1.001);
                assert!(
                    (low..=high).contains(&got),
                    "{policy:?}: delay {n} of round {round} is {delay:?}, outside [{low}, {high}]"
                );
                if (got - base).abs() > base * r * 0.01 {
                    off_center += 1;
                }
            }
        }
        assert!(
            off_center > 700,
            "{policy:?}: only {off_center} of 800 delays were randomized"
        );
        // Far along the sequence, every delay is the capped one, randomized.
        let max = policy.max_interval.as_secs_f64();
        let late = policy.delays().nth(500).unwrap().as_secs_f64();
        assert!(
            late >= max * (1.0 - r) * 0.999 && late <= max * (1.0 + r) * 1.001,
            "{late}"
        );
    }
}

#[test]
fn retry_policy_serializes_with_readable_durations() {
    let text = serde_json::to_string(&RetryPolicy::thirty_seconds()).unwrap();
    assert!(text.contains("\"initial\":\"30s\""), "{text}");
    assert!(text.contains("\"max_interval\":\"5m\""), "{text}");
    let back: RetryPolicy = serde_json::from_str(&text).unwrap();
    assert_eq!(back, RetryPolicy::thirty_seconds());
}

// ---- PluginError ------------------------------------------------------------------------------

#[derive(Debug)]
struct Layer {
    message: &'static str,
    source: Option<Box<Layer>>,
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message)
    }
}

impl std::error::Error for Layer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as _)
    }
}

fn layers(messages: &[&'static str]) -> Layer {
    let mut err: Option<Layer> = None;
    for message in messages.iter().rev() {
        err = Some(Layer {
            message,
            source: err.map(Box::new),
        });
    }
    err.unwrap()
}

#[test]
fn an_io_error_converts_with_its_chain_and_context_wraps_any_error() {
    fn read(path: &str) -> Result<String, PluginError> {
        Ok(std::fs::read_to_string(path)?)
    }
    let err = read("/nonexistent/coercion-config").unwrap_err();
    assert!(!err.permanent);
    assert!(err.message.contains("No such file"), "{err:?}");

    use coercion::ErrorContext;
    let wrapped = std::fs::read_to_string("/nonexistent/coercion-config")
        .context("reading the config")
        .unwrap_err();
    assert_eq!(wrapped.message, "reading the config");
    assert!(!wrapped.permanent);
    assert!(
        wrapped
            .chain()
            .starts_with("reading the config: No such file"),
        "{}",
        wrapped.chain()
    );
    let lazy = Err::<(), _>(layers(&["scp exited with 1", "connection refused"]))
        .with_context(|| format!("copying to {}", "web-1"))
        .unwrap_err();
    assert_eq!(
        lazy.chain(),
        "copying to web-1: scp exited with 1: connection refused"
    );
    // A permanent plugin error stays permanent under a context.
    let permanent = Err::<(), _>(PluginError::permanent("no such host"))
        .context("resolving")
        .unwrap_err();
    assert!(permanent.permanent);
    assert_eq!(permanent.chain(), "resolving: no such host");
    // Still serializable with its chain.
    let json = serde_json::to_string(&lazy).unwrap();
    assert_eq!(serde_json::from_str::<PluginError>(&json).unwrap(), lazy);
}

#[test]
fn from_error_keeps_the_source_chain() {
    let err = PluginError::from_error(&layers(&[
        "deploy failed",
        "scp exited with 1",
        "connection refused",
    ]));
    assert_eq!(err.message, "deploy failed");
    assert_eq!((err.code, err.permanent), (0, false));
    assert_eq!(
        err.chain(),
        "deploy failed: scp exited with 1: connection refused"
    );
    assert_eq!(
        err.to_string(),
        "deploy failed",
        "Display is the message alone"
    );
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(source.to_string(), "scp exited with 1");
    assert_eq!(source.source().unwrap().to_string(), "connection refused");
    assert!(source.source().unwrap().source().is_none());

    let io = std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        layers(&["no key", "agent down"]),
    );
    assert_eq!(PluginError::from_error(&io).chain(), "no key: agent down");
}

#[test]
fn chain_of_a_lone_error_is_its_message() {
    assert_eq!(PluginError::new("boom").chain(), "boom");
}

#[test]
fn caused_by_keeps_a_plugin_error_cause_whole() {
    let root = PluginError::permanent("quota exceeded")
        .with_code(429)
        .caused_by(&layers(&["HTTP 429"]));
    let err = PluginError::new("upload failed")
        .with_code(3)
        .caused_by(&root);
    assert_eq!(err.chain(), "upload failed: quota exceeded: HTTP 429");
    let cause = err.source.as_deref().unwrap();
    assert_eq!(cause.code, 429);
    assert_eq!(cause.source.as_deref().unwrap().message, "HTTP 429");
    // Converting a plugin error yields a retryable copy of it.
    let converted = PluginError::from_error(&root);
    assert_eq!(converted, root.clone().set_permanent(false));
}

#[test]
fn plugin_error_builders() {
    let err = PluginError::new("x");
    assert_eq!(
        (err.code, err.permanent, err.source.is_none()),
        (0, false, true)
    );
    assert!(PluginError::permanent("x").permanent);
    assert!(!PluginError::permanent("x").set_permanent(false).permanent);
    assert_eq!(PluginError::new("x").with_code(9).code, 9);
}

#[test]
fn plugin_error_round_trips_through_json() {
    let err = PluginError::permanent("upload failed")
        .with_code(3)
        .caused_by(&layers(&["quota exceeded", "HTTP 429"]));
    let text = serde_json::to_string(&err).unwrap();
    assert_eq!(
        text,
        r#"{"code":3,"message":"upload failed","permanent":true,"source":{"code":0,"message":"quota exceeded","permanent":false,"source":{"code":0,"message":"HTTP 429","permanent":false}}}"#
    );
    let back: PluginError = serde_json::from_str(&text).unwrap();
    assert_eq!(back, err);
    // Code and permanence may be left out.
    let minimal: PluginError = serde_json::from_str(r#"{"message":"m"}"#).unwrap();
    assert_eq!(minimal, PluginError::new("m"));
}

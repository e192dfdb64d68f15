//! The [`Registry`]: which plugins a workstream may call, by name.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::plugin::{DynPlugin, PluginKind, PluginMeta, RetryPolicyError};

/// A registered plugin with where it came from.
#[derive(Clone)]
pub struct Entry {
    plugin: Arc<dyn DynPlugin>,
    origin: Origin,
}

/// Where a registry entry came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// `#[plugin]` at this source location.
    Inventory {
        /// The file of the struct.
        file: &'static str,
        /// Its line.
        line: u32,
    },
    /// Registered by hand with [`Registry::with`], [`Registry::register`] or
    /// [`Registry::register_dyn`], called at this source location.
    Explicit {
        /// The file of the call.
        file: &'static str,
        /// Its line.
        line: u32,
    },
}

impl Origin {
    #[track_caller]
    fn caller() -> Origin {
        let at = std::panic::Location::caller();
        Origin::Explicit {
            file: at.file(),
            line: at.line(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Inventory { file, line } => write!(f, "{file}:{line}"),
            Origin::Explicit { file, line } => write!(f, "registered explicitly at {file}:{line}"),
        }
    }
}

impl Entry {
    /// The plugin.
    pub fn plugin(&self) -> &Arc<dyn DynPlugin> {
        &self.plugin
    }
    /// Where it was registered.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}

/// Why a plugin could not be registered.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two plugins claim one name.
    #[error(
        "plugin name \"{name}\" registered twice: by `{first_type}` ({first_origin}) and by `{second_type}` ({second_origin})"
    )]
    Duplicate {
        /// The name.
        name: String,
        /// The type registered first.
        first_type: &'static str,
        /// Where it was registered.
        first_origin: String,
        /// The type registered second.
        second_type: &'static str,
        /// Where it was registered.
        second_origin: String,
    },
    /// The plugin's name is empty or only spaces.
    #[error("plugin `{type_name}` has a blank name")]
    BlankName {
        /// The type.
        type_name: &'static str,
    },
    /// The plugin's retry policy is out of range.
    #[error("plugin \"{name}\" (`{type_name}`) has an {source}")]
    BadRetryPolicy {
        /// The name.
        name: &'static str,
        /// The type.
        type_name: &'static str,
        /// What is wrong.
        source: RetryPolicyError,
    },
}

/// The plugins a workstream may call, by name. Several registries may exist side by side (for
/// different security contexts); each workstream uses one.
///
/// ```
/// use coercion::Registry;
/// use coercion::plugins::Command;
///
/// // Every plugin marked #[plugin] that this binary links (the built-in ones among them)…
/// let all = Registry::from_inventory()?;
/// assert!(all.contains("coercion/command"));
/// // …or only configured instances, for a narrower security context.
/// let narrow = Registry::new().with(Command::default())?;
/// assert_eq!(narrow.len(), 1);
/// # Ok::<(), coercion::registry::RegistryError>(())
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    entries: BTreeMap<&'static str, Entry>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.entries
                    .iter()
                    .map(|(k, e)| (k, format!("{} ({})", e.plugin.type_name(), e.plugin.kind()))),
            )
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Every plugin annotated `#[plugin]` / `#[plugin(check)]` in the crates linked into this
    /// program (not `#[plugin(manual)]` ones).
    ///
    /// A plugin crate that is only listed in `Cargo.toml` but never named in code is not linked,
    /// so its plugins are missing here: name it once with `use my_plugins as _;`. Naming one of
    /// its plugin types (in a `plan!` or the builder) links it too.
    pub fn from_inventory() -> Result<Registry, RegistryError> {
        let mut reg = Registry::new();
        for r in inventory::iter::<crate::__private::PluginRegistration> {
            let plugin = (r.ctor)();
            reg.insert(
                plugin,
                Origin::Inventory {
                    file: r.file,
                    line: r.line,
                },
            )?;
        }
        Ok(reg)
    }

    /// Adds a configured instance (builder style).
    #[track_caller]
    pub fn with<P: PluginMeta>(mut self, plugin: P) -> Result<Registry, RegistryError> {
        self.register(plugin)?;
        Ok(self)
    }

    /// Adds a configured instance.
    #[track_caller]
    pub fn register<P: PluginMeta>(&mut self, plugin: P) -> Result<(), RegistryError> {
        self.insert(Arc::new(plugin), Origin::caller())
    }

    /// Adds an already erased plugin.
    #[track_caller]
    pub fn register_dyn(&mut self, plugin: Arc<dyn DynPlugin>) -> Result<(), RegistryError> {
        self.insert(plugin, Origin::caller())
    }

    fn insert(&mut self, plugin: Arc<dyn DynPlugin>, origin: Origin) -> Result<(), RegistryError> {
        let name = plugin.name();
        if name.trim().is_empty() {
            return Err(RegistryError::BlankName {
                type_name: plugin.type_name(),
            });
        }
        plugin
            .retry_policy()
            .validate()
            .map_err(|source| RegistryError::BadRetryPolicy {
                name,
                type_name: plugin.type_name(),
                source,
            })?;
        if let Some(first) = self.entries.get(name) {
            return Err(RegistryError::Duplicate {
                name: name.to_owned(),
                first_type: first.plugin.type_name(),
                first_origin: first.origin.to_string(),
                second_type: plugin.type_name(),
                second_origin: origin.to_string(),
            });
        }
        self.entries.insert(name, Entry { plugin, origin });
        Ok(())
    }

    /// The plugin registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn DynPlugin>> {
        self.entries.get(name).map(|e| &e.plugin)
    }

    /// The configured instance of plugin type `P`, if registered.
    pub fn instance<P: PluginMeta>(&self) -> Option<&P> {
        self.get(P::NAME)?.as_any().downcast_ref::<P>()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The names of the plugins `plan` calls that are not registered here, sorted, each once.
    /// A workstream refuses to run a plan while this is not empty.
    pub fn missing_for(&self, plan: &crate::Plan) -> Vec<String> {
        let mut missing = std::collections::BTreeSet::new();
        for (loc, _) in plan.walk() {
            if let Some(action) = plan.action(loc)
                && !self.contains(action.plugin())
            {
                missing.insert(action.plugin().to_owned());
            }
        }
        missing.into_iter().collect()
    }

    /// Every entry, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Entry)> {
        self.entries.iter().map(|(k, v)| (*k, v))
    }

    /// The number of plugins.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Runs every plugin's `init()`; the first failure is returned with the plugin's name.
    pub fn init_all(&self) -> Result<(), InitFailure> {
        for (name, e) in &self.entries {
            e.plugin.init().map_err(|err| InitFailure {
                plugin: (*name).to_owned(),
                type_name: e.plugin.type_name(),
                message: err.message,
            })?;
        }
        Ok(())
    }

    /// The kind of the plugin registered under `name`.
    pub fn kind_of(&self, name: &str) -> Option<PluginKind> {
        self.get(name).map(|p| p.kind())
    }
}

/// A plugin's `init()` failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("plugin \"{plugin}\" (`{type_name}`) failed its init check: {message}")]
#[non_exhaustive]
pub struct InitFailure {
    /// The plugin's name.
    pub plugin: String,
    /// Its type.
    pub type_name: &'static str,
    /// What it reported.
    pub message: String,
}

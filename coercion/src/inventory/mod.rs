//! Ansible inventories, as they are: hosts with their address, port, user and variables,
//! grouped, read from Ansible's INI or YAML inventory files with the `group_vars/` and
//! `host_vars/` directories beside them, and selected with Ansible's host patterns.
//!
//! ```
//! use coercion::inventory::Inventory;
//!
//! let inventory = Inventory::from_ini(
//!     "[web]\n\
//!      web[1:3] ansible_user=deploy\n\
//!      [db]\n\
//!      db1 ansible_host=10.0.0.9 ansible_port=2222\n\
//!      [prod:children]\n\
//!      web\n\
//!      db\n",
//!     "hosts.ini",
//! )?;
//! let web2 = inventory.host("web2").unwrap();
//! assert_eq!(web2.user(), Some("deploy"));
//! assert_eq!(inventory.host("db1").unwrap().address(), "10.0.0.9");
//!
//! let names: Vec<&str> = inventory.select("prod:!web3")?.iter().map(|h| h.name()).collect();
//! assert_eq!(names, ["web1", "web2", "db1"]);
//! # Ok::<(), coercion::inventory::InventoryError>(())
//! ```
//!
//! # What is read, and how
//!
//! - **INI** ([`Inventory::from_ini`]): `[group]` sections of host lines, `[group:children]`
//!   sections of group names, `[group:vars]` sections of `key=value` lines; hosts before the
//!   first section are ungrouped; `#` and `;` start comment lines. A host line is a host name
//!   (or a range, below), optionally `:port`, then `key=value` words split the way Python's
//!   `shlex` splits them (quotes group words, `#` starts a comment). Values are read as
//!   ansible-core's INI plugin reads them: a value that is a Python literal becomes that value
//!   (`80` a number, `True` a boolean, `None` null, `'x'` a string, `[1, 2]` a list,
//!   `{'a': 1}` a map), anything else stays the string it is (`FALSE`, `yes`, `10.0.0.1`,
//!   `01`). In a host line the words are split first, so `x="a b"` is the string `a b`; in a
//!   `:vars` section everything after the first `=` is the value. Ansible's documentation says
//!   `:vars` values are strings; its INI plugin in fact evaluates them as Python literals too
//!   (so `http_port=80` is the number 80 there as well, while `flag=FALSE` is a string). We do
//!   what the plugin does.
//! - **YAML** ([`Inventory::from_yaml`]): a map of group names to groups, each with optional
//!   `hosts` (a map of host names to their variables or nothing), `children` (a map of group
//!   names to groups) and `vars`. Keys of a group other than these three are skipped with a
//!   `tracing` warning, as Ansible skips them. YAML 1.1 booleans (`yes`, `on`) are booleans, as
//!   with Ansible's PyYAML. An empty YAML file is an empty inventory (Ansible refuses it).
//!   Of duplicate keys in a mapping, the last wins, as in Ansible (which warns).
//!   YAML nested deeper than 32 levels (14 levels of child groups) is refused, so that no input
//!   can exhaust a thread's stack.
//! - **Host ranges**, in both formats: `web[01:20]` (zero-padded: `web01` … `web20`),
//!   `db-[a:f]`, `node[0:10:2]` (a step), several in one name; an empty start counts from 0, as
//!   in Ansible.
//! - **Implicit groups**: every host is in `all`; a host in no other group is in `ungrouped`;
//!   a group that is nobody's child is a child of `all`.
//! - **Connection variables**: [`Host::address`] is `ansible_host` (or the older
//!   `ansible_ssh_host`), else the host's name; [`Host::port`] is `ansible_port` (or
//!   `ansible_ssh_port`, or the `host:port` of an INI line); [`Host::user`] is `ansible_user`
//!   (or `ansible_ssh_user`). When both spellings are set, the `ansible_*` one wins.
//! - **`group_vars/` and `host_vars/`** beside the inventory file ([`Inventory::load`] only):
//!   for a group or host `NAME`, the first of `NAME` (a file, or a directory whose files are all
//!   read, recursively, in name order; hidden files and names with other extensions skipped),
//!   `NAME.yml`, `NAME.yaml`, `NAME.json`, as Ansible looks them up. Each file is a YAML (or
//!   JSON) map of variables.
//!
//! # Variable precedence
//!
//! A host's [`Host::vars`] are merged as Ansible merges them, a later source replacing a whole
//! variable of an earlier one (Ansible's default `hash_behaviour=replace`):
//!
//! 1. `all`'s variables from the inventory file;
//! 2. the variables from the inventory file of the host's other groups (direct and ancestors),
//!    in Ansible's group order: shallower groups first (a group's depth is its longest path
//!    from `all`), then by `ansible_group_priority` (default 1), then by name — so a child
//!    group overrides its parents, and of two groups at the same depth the later name wins;
//! 3. `group_vars/all`, then the `group_vars/` files of the other groups, in the same order —
//!    as Ansible's `VARIABLE_PRECEDENCE` (`all_inventory`, `groups_inventory`,
//!    `all_plugins_inventory`, `groups_plugins_inventory`): any `group_vars/` file, even
//!    `all`'s, overrides every inventory-file group variable;
//! 4. the host's own variables from the inventory file (later lines override earlier ones),
//!    then its `host_vars/` files.
//!
//! # Host patterns
//!
//! [`Inventory::select`] takes Ansible's host patterns: `all` or `*`; a group or host name;
//! globs (`web*`, `db-?`, `[ab]*`); unions `a:b` or `a,b`; intersections `a:&prod`;
//! exclusions `a:!web3`; subscripts of a group (`web[0]`, `web[-1]`, `web[1:3]`, as Ansible:
//! indices from 0, the end included). As in Ansible, the unions are taken first, then the
//! intersections, then the exclusions, whatever the order of the terms; the hosts come back in
//! inventory order. Regex terms (`~web[0-9]+`) are not supported and are refused. Where Ansible
//! warns about a term that matches no host or group and goes on, we refuse the pattern with an
//! error that names the term: a typo in a deploy's target should stop it.
//!
//! # Errors
//!
//! A malformed inventory is an [`InventoryError::Malformed`] that reads like
//! `hosts.ini:7: a host range needs a start and an end, as in web[01:20]: "web[01]"`: the file,
//! the line and what is wrong. No input makes the parsers panic.
//!
//! # Why serde-saphyr
//!
//! `serde_yaml`, the usual choice, is unmaintained. We read YAML with `serde-saphyr`: it is
//! maintained, written without `unsafe` C bindings (unlike `serde_yaml_ng`, which wraps
//! `unsafe-libyaml`), promises not to panic on any input and bounds what an input may cost
//! (alias bombs, nesting depth), and gives every value its line through its `Spanned` wrapper —
//! which lets us point at the line of a wrong shape (hosts as a list, vars as a string), not only
//! at YAML syntax errors. With only its `deserialize` feature it brings 11 crates.

mod builder;
mod hostname;
mod ini;
mod literal;
mod pattern;
mod vars_dir;
mod yaml;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Why an inventory could not be read, or a host pattern or a variable could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// A file of the inventory (the inventory file, or a file under `group_vars/` or
    /// `host_vars/`) could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file of the inventory is malformed: `file:line: what is wrong`.
    #[error("{file}:{line}: {message}")]
    Malformed {
        /// The file, as given to [`Inventory::load`] (or the `origin` given to
        /// [`Inventory::from_ini`] and [`Inventory::from_yaml`]).
        file: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A host pattern is malformed, or one of its terms names no host or group.
    #[error("host pattern {pattern:?}: {message}")]
    Pattern {
        /// The whole pattern.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// A host's variable (or its whole set of variables) does not have the type asked for.
    #[error("host {host}: {}", var_type_subject(name.as_deref()))]
    VarType {
        /// The host.
        host: String,
        /// The variable, or `None` for [`Host::vars_as`].
        name: Option<String>,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

/// An Ansible inventory: hosts in inventory order (first appearance in the file) and groups.
///
/// ```
/// use coercion::inventory::Inventory;
///
/// let inventory = Inventory::from_ini(
///     "lb.example.com\n\
///      [web]\n\
///      web[01:02].example.com http_port=8080\n\
///      [web:vars]\n\
///      ansible_user=deploy\n",
///     "inline",
/// )?;
/// let web = inventory.select("web")?;
/// assert_eq!(web.len(), 2);
/// assert_eq!(web[0].name(), "web01.example.com");
/// assert_eq!(web[0].var::<u16>("http_port")?, Some(8080));
/// assert_eq!(web[0].user(), Some("deploy"));
/// assert_eq!(inventory.group("ungrouped").unwrap().hosts(), ["lb.example.com"]);
/// # Ok::<(), coercion::inventory::InventoryError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Inventory {
    hosts: Vec<Host>,
    host_index: HashMap<String, usize>,
    groups: Vec<Group>,
    group_index: HashMap<String, usize>,
}

/// A host of an [`Inventory`], with its variables merged from every source (see the
/// [module documentation](self) for the order).
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    name: String,
    address: String,
    port: Option<u16>,
    user: Option<String>,
    groups: Vec<String>,
    vars: Map<String, Value>,
}

/// A group of an [`Inventory`].
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    name: String,
    hosts: Vec<String>,
    children: Vec<String>,
    vars: Map<String, Value>,
}

impl Inventory {
    /// Reads the inventory file at `path`, with the `group_vars/` and `host_vars/` directories
    /// beside it.
    ///
    /// The format comes from the extension: `.yml`, `.yaml` and `.json` are read as YAML (JSON
    /// is YAML); any other extension, or none, as INI — unless the content looks like YAML
    /// (its first line that is not blank or a comment is `---`, starts with `{`, or is a single
    /// word ending in `:`, as `all:`).
    ///
    /// # Errors
    ///
    /// [`InventoryError::Read`] if a file cannot be read, [`InventoryError::Malformed`] if the
    /// inventory or one of its variable files is malformed.
    pub fn load(path: impl AsRef<Path>) -> Result<Inventory, InventoryError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
            path: path.to_owned(),
            source,
        })?;
        let origin = path.display().to_string();
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let yaml = matches!(extension, "yml" | "yaml" | "json") || looks_like_yaml(&text);
        let builder = if yaml {
            yaml::parse(&text, &origin)?
        } else {
            ini::parse(&text, &origin)?
        };
        let base = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        builder.finish(Some(&base))
    }

    /// Reads an inventory in Ansible's INI format from `text`; `origin` names it in errors.
    /// No `group_vars/` or `host_vars/` directory is read.
    ///
    /// # Errors
    ///
    /// [`InventoryError::Malformed`] if the text is not a valid INI inventory.
    pub fn from_ini(text: &str, origin: &str) -> Result<Inventory, InventoryError> {
        ini::parse(text, origin)?.finish(None)
    }

    /// Reads an inventory in Ansible's YAML format from `text`; `origin` names it in errors.
    /// No `group_vars/` or `host_vars/` directory is read.
    ///
    /// # Errors
    ///
    /// [`InventoryError::Malformed`] if the text is not YAML, or not shaped as an inventory.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Inventory, InventoryError> {
        yaml::parse(text, origin)?.finish(None)
    }

    /// Every host, in inventory order.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter()
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.host_index.get(name).map(|&i| &self.hosts[i])
    }

    /// The group named `name` (`all` and `ungrouped` always exist).
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.group_index.get(name).map(|&i| &self.groups[i])
    }

    /// Every group: `all`, `ungrouped`, then the others in order of first appearance.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter()
    }

    /// The hosts an Ansible host pattern selects, in inventory order (see the
    /// [module documentation](self#host-patterns)).
    ///
    /// # Errors
    ///
    /// [`InventoryError::Pattern`] if the pattern is empty or malformed, uses a regex term, or
    /// one of its terms matches no host or group.
    pub fn select(&self, pattern: &str) -> Result<Vec<&Host>, InventoryError> {
        let indices =
            pattern::select(self, pattern).map_err(|message| InventoryError::Pattern {
                pattern: pattern.to_owned(),
                message,
            })?;
        Ok(indices.into_iter().map(|i| &self.hosts[i]).collect())
    }

    fn host_position(&self, name: &str) -> Option<usize> {
        self.host_index.get(name).copied()
    }
}

impl Host {
    /// The host's name in the inventory (Ansible's `inventory_hostname`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where to connect: `ansible_host` (or `ansible_ssh_host`), else the name.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The port to connect to: `ansible_port` (or `ansible_ssh_port`, or the `host:port` of an
    /// INI line), if set.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The user to connect as: `ansible_user` (or `ansible_ssh_user`), if set.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Every group the host is in, directly or through a child group, `all` included, in
    /// precedence order (`all` first, then by depth, priority and name).
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Whether the host is in the group `name`, directly or through a child group.
    pub fn in_group(&self, name: &str) -> bool {
        self.groups.iter().any(|g| g == name)
    }

    /// The host's variables, merged from every source in Ansible's precedence order.
    pub fn vars(&self) -> &Map<String, Value> {
        &self.vars
    }

    /// The variable `name`, deserialized as a `T`; `None` if the host has no such variable.
    ///
    /// # Errors
    ///
    /// [`InventoryError::VarType`] if the variable does not fit `T`.
    pub fn var<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, InventoryError> {
        match self.vars.get(name) {
            None => Ok(None),
            Some(value) => {
                T::deserialize(value)
                    .map(Some)
                    .map_err(|source| InventoryError::VarType {
                        host: self.name.clone(),
                        name: Some(name.to_owned()),
                        source,
                    })
            }
        }
    }

    /// All the host's variables deserialized as one `T` (a struct with the fields it needs).
    ///
    /// # Errors
    ///
    /// [`InventoryError::VarType`] if the variables do not fit `T`.
    pub fn vars_as<T: DeserializeOwned>(&self) -> Result<T, InventoryError> {
        T::deserialize(&self.vars).map_err(|source| InventoryError::VarType {
            host: self.name.clone(),
            name: None,
            source,
        })
    }
}

impl Group {
    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The names of the group's hosts, direct and through its children, in inventory order.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The names of the group's direct child groups.
    pub fn children(&self) -> &[String] {
        &self.children
    }

    /// The group's own variables: those of the inventory file, overridden by its
    /// `group_vars/` files. A host sees them merged with its other groups' (see
    /// [`Host::vars`]).
    pub fn vars(&self) -> &Map<String, Value> {
        &self.vars
    }
}

fn var_type_subject(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("variable {name:?} does not fit the type asked for"),
        None => "its variables do not fit the type asked for".to_owned(),
    }
}

/// Whether an inventory file without a YAML extension holds YAML after all.
fn looks_like_yaml(text: &str) -> bool {
    let first = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with(';'));
    match first {
        None => false,
        Some(line) => {
            line.starts_with("---")
                || line.starts_with('{')
                || (line.ends_with(':')
                    && line.len() > 1
                    && !line[..line.len() - 1]
                        .contains(|c: char| c.is_whitespace() || c == ':' || c == '=' || c == '['))
        }
    }
}

//! Ansible's YAML inventory format, and the YAML variable files of `group_vars/` and
//! `host_vars/`, read into a tree whose every node knows its line.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

use super::InventoryError;
use super::builder::{Builder, check_connection_var};
use super::hostname::parse_host;

/// A YAML value and the line it starts on.
type Node = Spanned<Kind>;

#[derive(Debug)]
enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Kind, D::Error> {
        deserializer.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::UInt(v))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_string()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Kind, E> {
        Ok(Kind::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_none<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Kind, D::Error> {
        Kind::deserialize(deserializer)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<Kind, D::Error> {
        Kind::deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Kind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Node, Node>()? {
            entries.push(entry);
        }
        Ok(Kind::Map(entries))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Kind, A::Error> {
        Err(de::Error::custom(
            "tagged values are not supported in an inventory",
        ))
    }
}

fn line(node: &Node) -> usize {
    usize::try_from(node.referenced.line()).unwrap_or(0).max(1)
}

fn describe(kind: &Kind) -> &'static str {
    match kind {
        Kind::Null => "nothing",
        Kind::Bool(_) => "a boolean",
        Kind::Int(_) | Kind::UInt(_) | Kind::Float(_) => "a number",
        Kind::Str(_) => "a string",
        Kind::Seq(_) => "a list",
        Kind::Map(_) => "a mapping",
    }
}

/// How deep YAML collections may nest. An inventory nests two levels per level of groups; 32
/// leaves room for 14 levels of child groups, and keeps the parse far from the end of a 2 MiB
/// thread stack (each level costs tens of kilobytes of stack in a debug build).
const MAX_YAML_DEPTH: usize = 32;

/// Parses `text` into a tree; `None` for an empty document.
fn tree(text: &str, origin: &str) -> Result<Option<Node>, InventoryError> {
    if text.lines().all(|l| {
        l.trim().is_empty()
            || l.trim_start().starts_with('#')
            || l.trim() == "---"
            || l.trim() == "..."
    }) {
        return Ok(None);
    }
    let mut options = serde_saphyr::Options::default();
    let mut budget = options.budget.unwrap_or_default();
    budget.max_depth = MAX_YAML_DEPTH;
    options.budget = Some(budget);
    // Ansible keeps the last of duplicate keys (and warns).
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::LastWins;
    serde_saphyr::from_str_with_options::<Node>(text, options)
        .map(Some)
        .map_err(|error| {
            let plain = error.without_snippet();
            let line = plain
                .location()
                .map(|l| usize::try_from(l.line()).unwrap_or(0).max(1))
                .unwrap_or(1);
            let message = plain.render_with_options(serde_saphyr::render_options! {
                snippets: serde_saphyr::SnippetMode::Off,
            });
            InventoryError::Malformed {
                file: origin.to_owned(),
                line,
                message: match plain {
                    serde_saphyr::Error::Budget { .. } if message.contains("Depth") => {
                        format!("YAML: nests deeper than {MAX_YAML_DEPTH} levels")
                    }
                    _ => format!("YAML: {}", strip_location(&message)),
                },
            }
        })
}

/// serde-saphyr ends a plain message with its own ` at line L, column C`; the line is ours.
fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at) => message[..at].trim_end(),
        None => message.trim_end(),
    }
}

pub(crate) fn parse(text: &str, origin: &str) -> Result<Builder, InventoryError> {
    let mut builder = Builder::new(origin);
    let Some(root) = tree(text, origin)? else {
        return Ok(builder);
    };
    let Kind::Map(groups) = &root.value else {
        return Err(builder.error(
            line(&root),
            format!(
                "an inventory is a mapping of group names to groups (as in `all: {{hosts: …}}`), not {}",
                describe(&root.value)
            ),
        ));
    };
    for (name, group) in groups {
        let name = key(&builder, name, "a group name")?;
        let index = builder.group(&name);
        read_group(&mut builder, index, group, 0)?;
    }
    Ok(builder)
}

/// How deep `children` may nest; deeper is refused rather than recursed into.
const MAX_NESTING: usize = 256;

fn read_group(
    builder: &mut Builder,
    group: usize,
    node: &Node,
    nesting: usize,
) -> Result<(), InventoryError> {
    let name = builder.group_name(group).to_owned();
    if nesting > MAX_NESTING {
        return Err(builder.error(
            line(node),
            format!("groups nest deeper than {MAX_NESTING} levels at {name:?}"),
        ));
    }
    let entries = match &node.value {
        Kind::Null => return Ok(()),
        Kind::Map(entries) => entries,
        other => {
            return Err(builder.error(
                line(node),
                format!(
                    "group {name:?} must be a mapping with hosts, children or vars (or nothing), not {}",
                    describe(other)
                ),
            ));
        }
    };
    for (field, value) in entries {
        let field_name = key(builder, field, "a group's key")?;
        match field_name.as_str() {
            "hosts" => {
                let hosts = section_map(
                    builder,
                    value,
                    &name,
                    "hosts",
                    "host names, each with its variables or nothing",
                )?;
                for (host_key, host_vars) in hosts {
                    let entry = key(builder, host_key, "a host name")?;
                    let (names, port) =
                        parse_host(&entry).map_err(|m| builder.error(line(host_key), m))?;
                    let vars = match &host_vars.value {
                        Kind::Null => Vec::new(),
                        Kind::Map(vars) => vars.iter().collect(),
                        other => {
                            return Err(builder.error(
                                line(host_vars),
                                format!(
                                    "the variables of host {entry:?} must be a mapping (or nothing), not {}",
                                    describe(other)
                                ),
                            ));
                        }
                    };
                    for host_name in names {
                        let host = builder.host_in(&host_name, group);
                        if let Some(port) = port {
                            builder.set_host_var(
                                host,
                                "ansible_port".to_owned(),
                                port.into(),
                                line(host_key),
                            )?;
                        }
                        for (var, value) in &vars {
                            let var_name = key(builder, var, "a variable name")?;
                            let value = json(builder, value)?;
                            builder.set_host_var(host, var_name, value, line(var))?;
                        }
                    }
                }
            }
            "children" => {
                let children = section_map(
                    builder,
                    value,
                    &name,
                    "children",
                    "group names, each with its group or nothing",
                )?;
                for (child_key, child_node) in children {
                    let child_name = key(builder, child_key, "a group name")?;
                    let child = builder.group(&child_name);
                    builder.add_child(group, child, line(child_key))?;
                    read_group(builder, child, child_node, nesting + 1)?;
                }
            }
            "vars" => {
                let vars = section_map(builder, value, &name, "vars", "variable names and values")?;
                for (var, value) in vars {
                    let var_name = key(builder, var, "a variable name")?;
                    let value = json(builder, value)?;
                    builder.set_group_var(group, var_name, value, line(var))?;
                }
            }
            other => {
                tracing::warn!(
                    "{}:{}: skipping key {other:?} of group {name:?}: a group has only hosts, children and vars",
                    builder.file(),
                    line(field)
                );
            }
        }
    }
    Ok(())
}

/// The entries of a group's `hosts`, `children` or `vars`, which must be a mapping (or nothing).
fn section_map<'a>(
    builder: &Builder,
    node: &'a Node,
    group: &str,
    field: &str,
    what: &str,
) -> Result<&'a [(Node, Node)], InventoryError> {
    match &node.value {
        Kind::Null => Ok(&[]),
        Kind::Map(entries) => Ok(entries),
        other => Err(builder.error(
            line(node),
            format!(
                "the {field} of group {group:?} must be a mapping of {what}, not {}",
                describe(other)
            ),
        )),
    }
}

/// A mapping key as text: strings as they are, numbers and booleans as they read.
fn key(builder: &Builder, node: &Node, what: &str) -> Result<String, InventoryError> {
    scalar_text(&node.value).ok_or_else(|| {
        builder.error(
            line(node),
            format!("{what} must be a string, not {}", describe(&node.value)),
        )
    })
}

fn scalar_text(kind: &Kind) -> Option<String> {
    Some(match kind {
        Kind::Str(s) => s.clone(),
        Kind::Int(i) => i.to_string(),
        Kind::UInt(u) => u.to_string(),
        Kind::Float(f) => f.to_string(),
        Kind::Bool(b) => b.to_string(),
        Kind::Null | Kind::Seq(_) | Kind::Map(_) => return None,
    })
}

fn json(builder: &Builder, node: &Node) -> Result<Value, InventoryError> {
    // Iterative would be longer; serde-saphyr's budget already bounds the nesting depth.
    Ok(match &node.value {
        Kind::Null => Value::Null,
        Kind::Bool(b) => Value::Bool(*b),
        Kind::Int(i) => Value::from(*i),
        Kind::UInt(u) => Value::from(*u),
        Kind::Float(f) => {
            Number::from_f64(*f).map_or_else(|| Value::String(f.to_string()), Value::Number)
        }
        Kind::Str(s) => Value::String(s.clone()),
        Kind::Seq(items) => Value::Array(
            items
                .iter()
                .map(|i| json(builder, i))
                .collect::<Result<_, _>>()?,
        ),
        Kind::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                map.insert(key(builder, k, "a variable name")?, json(builder, v)?);
            }
            Value::Object(map)
        }
    })
}

/// A variable file of `group_vars/` or `host_vars/`: a mapping of variables, or nothing.
pub(crate) fn vars_file(text: &str, origin: &str) -> Result<Map<String, Value>, InventoryError> {
    let builder = Builder::new(origin);
    let Some(root) = tree(text, origin)? else {
        return Ok(Map::new());
    };
    match &root.value {
        Kind::Null => Ok(Map::new()),
        Kind::Map(entries) => {
            let mut vars = Map::new();
            for (var, value) in entries {
                let name = key(&builder, var, "a variable name")?;
                let value = json(&builder, value)?;
                check_connection_var(&name, &value).map_err(|m| builder.error(line(var), m))?;
                vars.insert(name, value);
            }
            Ok(vars)
        }
        other => Err(builder.error(
            line(&root),
            format!(
                "a variable file is a mapping of variable names to values, not {}",
                describe(other)
            ),
        )),
    }
}

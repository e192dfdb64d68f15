//! Ansible's INI inventory format.

use super::InventoryError;
use super::builder::{Builder, UNGROUPED};
use super::hostname::{parse_host, shlex_split};
use super::literal::ini_value;

#[derive(Clone, Copy, PartialEq)]
enum Section {
    Hosts,
    Children,
    Vars,
}

pub(crate) fn parse(text: &str, origin: &str) -> Result<Builder, InventoryError> {
    let mut builder = Builder::new(origin);
    let mut group = UNGROUPED;
    let mut section = Section::Hosts;
    // Groups declared by a `[g]` or `[g:children]` header; `all` and `ungrouped` always are.
    let mut declared = vec![true, true];
    // References that a declaration must answer by the end: (group, line, what referred to it).
    let mut references: Vec<(usize, usize, String)> = Vec::new();

    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.split('\n').enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            match header(line) {
                Ok(Some((name, kind))) => {
                    section = match kind {
                        None => Section::Hosts,
                        Some("children") => Section::Children,
                        Some("vars") => Section::Vars,
                        Some(other) => {
                            return Err(builder.error(
                                number,
                                format!(
                                    "unknown section kind {other:?} in [{name}:{other}]: a section is [{name}], [{name}:children] or [{name}:vars]"
                                ),
                            ));
                        }
                    };
                    group = builder.group(name);
                    declared.resize(declared.len().max(group + 1), false);
                    if section == Section::Vars {
                        references.push((group, number, format!("[{name}:vars]")));
                    } else {
                        declared[group] = true;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(()) => {
                    return Err(builder.error(
                        number,
                        format!(
                            "a section header is [group], [group:children] or [group:vars], with no spaces or other brackets in the group name: {line:?}"
                        ),
                    ));
                }
            }
        }
        match section {
            Section::Hosts => host_line(&mut builder, group, line, number)?,
            Section::Children => {
                let name = group_name(line).ok_or_else(|| {
                    builder.error(
                        number,
                        format!(
                            "expected a group name in [{}:children], got {line:?}",
                            builder.group_name(group)
                        ),
                    )
                })?;
                let child = builder.group(name);
                declared.resize(declared.len().max(child + 1), false);
                builder.add_child(group, child, number)?;
                references.push((
                    child,
                    number,
                    format!("[{}:children]", builder.group_name(group)),
                ));
            }
            Section::Vars => {
                let Some((key, value)) = line.split_once('=') else {
                    return Err(builder.error(
                        number,
                        format!(
                            "expected key=value in [{}:vars], got {line:?}",
                            builder.group_name(group)
                        ),
                    ));
                };
                let key = key.trim();
                if key.is_empty() {
                    return Err(builder.error(
                        number,
                        format!("a variable needs a name before '=': {line:?}"),
                    ));
                }
                builder.set_group_var(group, key.to_owned(), ini_value(value.trim()), number)?;
            }
        }
    }

    for (group, line, referrer) in references {
        if !declared[group] {
            let name = builder.group_name(group).to_owned();
            let message = if referrer.ends_with(":vars]") {
                format!(
                    "{referrer} is for group {name:?}, which no [{name}] or [{name}:children] section declares"
                )
            } else {
                format!(
                    "{referrer} names group {name:?}, which no [{name}] or [{name}:children] section declares"
                )
            };
            return Err(builder.error(line, message));
        }
    }
    Ok(builder)
}

/// `[name]` or `[name:kind]`, maybe followed by a comment: `Ok(Some)`. `Ok(None)` for a line
/// that starts with `[` but is a host (`[::1]:22`, `[a:c].example.com`); `Err` for a line that
/// is meant as a header and is malformed.
fn header(line: &str) -> Result<Option<(&str, Option<&str>)>, ()> {
    let Some(end) = line.find(']') else {
        return Ok(None);
    };
    let after = &line[end + 1..];
    let meant_as_header =
        after.is_empty() || after.starts_with(char::is_whitespace) || line.ends_with(']');
    if !meant_as_header {
        return Ok(None);
    }
    let rest = after.trim_start();
    let inner = &line[1..end];
    let (name, kind) = match inner.split_once(':') {
        Some((name, kind)) => (name, Some(kind)),
        None => (inner, None),
    };
    let name_ok = !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '[');
    let kind_ok =
        kind.is_none_or(|k| !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_'));
    if name_ok && kind_ok && (rest.is_empty() || rest.starts_with('#')) {
        Ok(Some((name, kind)))
    } else {
        Err(())
    }
}

/// A line of a `:children` section: one group name, maybe followed by a comment.
fn group_name(line: &str) -> Option<&str> {
    let end = line.find(|c: char| c.is_whitespace()).unwrap_or(line.len());
    let (name, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let ok = !name.is_empty()
        && !name.contains([':', ']', '[', '#'])
        && (rest.is_empty() || rest.starts_with('#'));
    ok.then_some(name)
}

fn host_line(
    builder: &mut Builder,
    group: usize,
    line: &str,
    number: usize,
) -> Result<(), InventoryError> {
    let words = shlex_split(line)
        .map_err(|m| builder.error(number, format!("cannot split the host line: {m}: {line:?}")))?;
    let Some((entry, assignments)) = words.split_first() else {
        return Ok(());
    };
    let (names, port) = parse_host(entry).map_err(|m| builder.error(number, m))?;
    let mut vars = Vec::with_capacity(assignments.len());
    for word in assignments {
        let Some((key, value)) = word.split_once('=') else {
            return Err(builder.error(
                number,
                format!("expected key=value after the host name, got {word:?}"),
            ));
        };
        if key.is_empty() {
            return Err(builder.error(
                number,
                format!("a variable needs a name before '=': {word:?}"),
            ));
        }
        vars.push((key.to_owned(), ini_value(value)));
    }
    for name in names {
        let host = builder.host_in(&name, group);
        if let Some(port) = port {
            builder.set_host_var(host, "ansible_port".to_owned(), port.into(), number)?;
        }
        for (key, value) in &vars {
            builder.set_host_var(host, key.clone(), value.clone(), number)?;
        }
    }
    Ok(())
}

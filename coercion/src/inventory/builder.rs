//! What both parsers fill: hosts and groups as read, then the implicit groups, the variable
//! files and the precedence that make an [`Inventory`].

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{Map, Value};

use super::{Group, Host, Inventory, InventoryError, vars_dir};

pub(crate) const ALL: usize = 0;
pub(crate) const UNGROUPED: usize = 1;

struct RawHost {
    name: String,
    vars: Map<String, Value>,
    groups: Vec<usize>,
}

struct RawGroup {
    name: String,
    vars: Map<String, Value>,
    children: Vec<usize>,
    parents: Vec<usize>,
    hosts: Vec<usize>,
}

/// An inventory as read from one file, before the implicit groups and the precedence.
pub(crate) struct Builder {
    file: String,
    hosts: Vec<RawHost>,
    host_index: HashMap<String, usize>,
    groups: Vec<RawGroup>,
    group_index: HashMap<String, usize>,
}

impl Builder {
    pub(crate) fn new(file: &str) -> Builder {
        let mut builder = Builder {
            file: file.to_owned(),
            hosts: Vec::new(),
            host_index: HashMap::new(),
            groups: Vec::new(),
            group_index: HashMap::new(),
        };
        builder.group("all");
        builder.group("ungrouped");
        builder
    }

    /// An error at `line` of the file being read.
    pub(crate) fn error(&self, line: usize, message: impl Into<String>) -> InventoryError {
        InventoryError::Malformed {
            file: self.file.clone(),
            line,
            message: message.into(),
        }
    }

    /// The group named `name`, created if new.
    pub(crate) fn group(&mut self, name: &str) -> usize {
        if let Some(&i) = self.group_index.get(name) {
            return i;
        }
        self.groups.push(RawGroup {
            name: name.to_owned(),
            vars: Map::new(),
            children: Vec::new(),
            parents: Vec::new(),
            hosts: Vec::new(),
        });
        self.group_index
            .insert(name.to_owned(), self.groups.len() - 1);
        self.groups.len() - 1
    }

    pub(crate) fn file(&self) -> &str {
        &self.file
    }

    pub(crate) fn group_name(&self, group: usize) -> &str {
        &self.groups[group].name
    }

    /// The host named `name` in `group`, created if new.
    pub(crate) fn host_in(&mut self, name: &str, group: usize) -> usize {
        let host = match self.host_index.get(name) {
            Some(&i) => i,
            None => {
                self.hosts.push(RawHost {
                    name: name.to_owned(),
                    vars: Map::new(),
                    groups: Vec::new(),
                });
                self.host_index
                    .insert(name.to_owned(), self.hosts.len() - 1);
                self.hosts.len() - 1
            }
        };
        if !self.hosts[host].groups.contains(&group) {
            self.hosts[host].groups.push(group);
            self.groups[group].hosts.push(host);
        }
        host
    }

    /// Makes `child` a child of `parent`, refusing a group that would contain itself.
    pub(crate) fn add_child(
        &mut self,
        parent: usize,
        child: usize,
        line: usize,
    ) -> Result<(), InventoryError> {
        if child == ALL {
            return Err(self.error(
                line,
                format!(
                    "the group all cannot be a child of {:?}: it contains every group",
                    self.groups[parent].name
                ),
            ));
        }
        if self.groups[parent].children.contains(&child) {
            return Ok(());
        }
        if let Some(path) = self.path_down(child, parent) {
            let mut names: Vec<&str> = path.iter().map(|&g| self.groups[g].name.as_str()).collect();
            names.push(&self.groups[child].name);
            return Err(self.error(
                line,
                format!(
                    "group {:?} would contain itself: {}",
                    self.groups[child].name,
                    names.join(" → ")
                ),
            ));
        }
        self.groups[parent].children.push(child);
        self.groups[child].parents.push(parent);
        Ok(())
    }

    /// The groups from `from` down its children to `to`, both included, if `to` is `from` or
    /// one of its descendants.
    fn path_down(&self, from: usize, to: usize) -> Option<Vec<usize>> {
        let mut came_from: HashMap<usize, usize> = HashMap::new();
        let mut stack = vec![from];
        let mut seen = HashSet::from([from]);
        while let Some(g) = stack.pop() {
            if g == to {
                let mut path = vec![g];
                let mut at = g;
                while let Some(&prev) = came_from.get(&at) {
                    path.push(prev);
                    at = prev;
                }
                path.reverse();
                return Some(path);
            }
            for &c in &self.groups[g].children {
                if seen.insert(c) {
                    came_from.insert(c, g);
                    stack.push(c);
                }
            }
        }
        None
    }

    pub(crate) fn set_host_var(
        &mut self,
        host: usize,
        key: String,
        value: Value,
        line: usize,
    ) -> Result<(), InventoryError> {
        check_connection_var(&key, &value).map_err(|m| self.error(line, m))?;
        self.hosts[host].vars.insert(key, value);
        Ok(())
    }

    pub(crate) fn set_group_var(
        &mut self,
        group: usize,
        key: String,
        value: Value,
        line: usize,
    ) -> Result<(), InventoryError> {
        check_connection_var(&key, &value).map_err(|m| self.error(line, m))?;
        self.groups[group].vars.insert(key, value);
        Ok(())
    }

    /// Adds the implicit groups, reads `group_vars/` and `host_vars/` under `base` if given,
    /// and merges each host's variables.
    pub(crate) fn finish(mut self, base: Option<&Path>) -> Result<Inventory, InventoryError> {
        for g in 1..self.groups.len() {
            if self.groups[g].parents.is_empty() {
                self.groups[ALL].children.push(g);
                self.groups[g].parents.push(ALL);
            }
        }
        for h in 0..self.hosts.len() {
            let elsewhere = self.hosts[h]
                .groups
                .iter()
                .any(|&g| g != ALL && g != UNGROUPED);
            if elsewhere {
                self.hosts[h].groups.retain(|&g| g != UNGROUPED);
                self.groups[UNGROUPED].hosts.retain(|&x| x != h);
            } else if !self.hosts[h].groups.contains(&UNGROUPED) {
                self.hosts[h].groups.push(UNGROUPED);
                self.groups[UNGROUPED].hosts.push(h);
            }
        }

        let depth = self.depths();
        let priority: Vec<i64> = self
            .groups
            .iter()
            .map(|g| {
                g.vars
                    .get("ansible_group_priority")
                    .and_then(|v| {
                        v.as_i64()
                            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    })
                    .unwrap_or(1)
            })
            .collect();

        let mut group_files: Vec<Map<String, Value>> = vec![Map::new(); self.groups.len()];
        let mut host_files: Vec<Map<String, Value>> = vec![Map::new(); self.hosts.len()];
        if let Some(base) = base {
            let group_dir = base.join("group_vars");
            if group_dir.is_dir() {
                for (g, group) in self.groups.iter().enumerate() {
                    group_files[g] = vars_dir::load(&group_dir, &group.name)?;
                }
            }
            let host_dir = base.join("host_vars");
            if host_dir.is_dir() {
                for (h, host) in self.hosts.iter().enumerate() {
                    host_files[h] = vars_dir::load(&host_dir, &host.name)?;
                }
            }
        }

        let mut group_hosts: Vec<Vec<String>> = vec![Vec::new(); self.groups.len()];
        let mut hosts = Vec::with_capacity(self.hosts.len());
        for (h, raw) in self.hosts.iter().enumerate() {
            let mut ancestors: Vec<usize> = Vec::new();
            let mut seen: HashSet<usize> = HashSet::new();
            let mut stack: Vec<usize> = raw.groups.clone();
            stack.push(ALL);
            while let Some(g) = stack.pop() {
                if seen.insert(g) {
                    ancestors.push(g);
                    stack.extend(self.groups[g].parents.iter().copied());
                }
            }
            ancestors.sort_by(|&a, &b| {
                (depth[a], priority[a], &self.groups[a].name).cmp(&(
                    depth[b],
                    priority[b],
                    &self.groups[b].name,
                ))
            });
            let mut vars = Map::new();
            vars.extend(self.groups[ALL].vars.clone());
            for &g in ancestors.iter().filter(|&&g| g != ALL) {
                vars.extend(self.groups[g].vars.clone());
            }
            // Ansible's VARIABLE_PRECEDENCE: every inventory-file group var, then
            // group_vars/all, then the other groups' group_vars files.
            vars.extend(group_files[ALL].clone());
            for &g in ancestors.iter().filter(|&&g| g != ALL) {
                vars.extend(group_files[g].clone());
            }
            vars.extend(raw.vars.clone());
            vars.extend(host_files[h].clone());
            for &g in &ancestors {
                group_hosts[g].push(raw.name.clone());
            }
            hosts.push(connection(
                raw.name.clone(),
                ancestors
                    .iter()
                    .map(|&g| self.groups[g].name.clone())
                    .collect(),
                vars,
            ));
        }

        let groups: Vec<Group> = self
            .groups
            .iter()
            .zip(group_files)
            .zip(group_hosts)
            .map(|((raw, files), hosts)| {
                let mut vars = raw.vars.clone();
                vars.extend(files);
                Group {
                    name: raw.name.clone(),
                    hosts,
                    children: raw
                        .children
                        .iter()
                        .map(|&c| self.groups[c].name.clone())
                        .collect(),
                    vars,
                }
            })
            .collect();
        Ok(Inventory {
            host_index: hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (h.name.clone(), i))
                .collect(),
            hosts,
            group_index: groups
                .iter()
                .enumerate()
                .map(|(i, g)| (g.name.clone(), i))
                .collect(),
            groups,
        })
    }

    /// Each group's longest distance from `all` (the graph has no cycle: `add_child` refuses
    /// them, and after `finish`'s first step every group but `all` has a parent).
    fn depths(&self) -> Vec<usize> {
        let n = self.groups.len();
        let mut pending_parents: Vec<usize> = self.groups.iter().map(|g| g.parents.len()).collect();
        let mut depth = vec![0usize; n];
        let mut ready = vec![ALL];
        while let Some(g) = ready.pop() {
            for &c in &self.groups[g].children {
                depth[c] = depth[c].max(depth[g] + 1);
                pending_parents[c] -= 1;
                if pending_parents[c] == 0 {
                    ready.push(c);
                }
            }
        }
        depth
    }
}

/// A variable that says how to connect must say it in a usable form.
pub(crate) fn check_connection_var(key: &str, value: &Value) -> Result<(), String> {
    match key {
        "ansible_port" | "ansible_ssh_port" => {
            if port_of(value).is_some() || value.is_null() {
                Ok(())
            } else {
                Err(format!(
                    "{key} must be a port number (1 to 65535), not {value}"
                ))
            }
        }
        "ansible_host" | "ansible_ssh_host" | "ansible_user" | "ansible_ssh_user" => match value {
            Value::String(s) if !s.is_empty() => Ok(()),
            Value::Null | Value::Number(_) => Ok(()),
            _ => Err(format!("{key} must be a non-empty string, not {value}")),
        },
        _ => Ok(()),
    }
}

fn port_of(value: &Value) -> Option<u16> {
    let port = match value {
        Value::Number(n) => u16::try_from(n.as_u64()?).ok()?,
        Value::String(s) => s.trim().parse::<u16>().ok()?,
        _ => return None,
    };
    (port != 0).then_some(port)
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn connection(name: String, groups: Vec<String>, vars: Map<String, Value>) -> Host {
    let first = |keys: [&str; 2]| {
        keys.iter()
            .find_map(|k| vars.get(*k).filter(|v| !v.is_null()))
    };
    let address = first(["ansible_host", "ansible_ssh_host"])
        .and_then(text_of)
        .unwrap_or_else(|| name.clone());
    let port = first(["ansible_port", "ansible_ssh_port"]).and_then(port_of);
    let user = first(["ansible_user", "ansible_ssh_user"]).and_then(text_of);
    Host {
        name,
        address,
        port,
        user,
        groups,
        vars,
    }
}

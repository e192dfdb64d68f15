//! `group_vars/` and `host_vars/`: variable files of a group or host, looked up as Ansible
//! looks them up.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{InventoryError, yaml};

const EXTENSIONS: [&str; 3] = ["yml", "yaml", "json"];

/// The variables of `name` under `dir` (`group_vars/` or `host_vars/`): from the first of
/// `NAME` (a file, or a directory of files), `NAME.yml`, `NAME.yaml`, `NAME.json`.
pub(crate) fn load(dir: &Path, name: &str) -> Result<Map<String, Value>, InventoryError> {
    let mut vars = Map::new();
    // A name that would lead out of the directory has no variable files.
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Ok(vars);
    }
    let candidates = std::iter::once(dir.join(name))
        .chain(EXTENSIONS.iter().map(|e| dir.join(format!("{name}.{e}"))));
    for candidate in candidates {
        if candidate.is_dir() {
            for file in files_under(&candidate)? {
                vars.extend(read(&file)?);
            }
            break;
        }
        if candidate.is_file() {
            vars.extend(read(&candidate)?);
            break;
        }
    }
    Ok(vars)
}

/// The variable files under `dir`, recursively, in name order.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, InventoryError> {
    let read_error = |source| InventoryError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    entries.sort();
    let mut files = Vec::new();
    for path in entries {
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or(".");
        if file_name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            files.extend(files_under(&path)?);
            continue;
        }
        let extension = path.extension().and_then(|e| e.to_str());
        if extension.is_none_or(|e| EXTENSIONS.contains(&e)) {
            files.push(path);
        }
    }
    Ok(files)
}

fn read(path: &Path) -> Result<Map<String, Value>, InventoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
        path: path.to_owned(),
        source,
    })?;
    yaml::vars_file(&text, &path.display().to_string())
}

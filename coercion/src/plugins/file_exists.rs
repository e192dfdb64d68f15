//! `coercion/file-exists`: a path exists, is of a kind, and contains a text.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::codes;
use crate::plugin::{Context, Plugin, PluginError, ValidationError};

/// What a path is (symbolic links are followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// Anything else: a socket, a FIFO, a device.
    Other,
}

impl FileKind {
    fn of(meta: &std::fs::Metadata) -> FileKind {
        if meta.is_file() {
            FileKind::File
        } else if meta.is_dir() {
            FileKind::Dir
        } else {
            FileKind::Other
        }
    }

    /// The name in JSON.
    fn name(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Other => "other",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            FileKind::File => "a regular file",
            FileKind::Dir => "a directory",
            FileKind::Other => "neither a regular file nor a directory",
        }
    }
}

/// The request of [`FileExists`]. In JSON:
///
/// ```json
/// { "path": "/etc/web/config.toml", "kind": "file", "contains": "port = 8080" }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExistsReq {
    /// The path to look at; relative paths are relative to the workstream's directory.
    pub path: PathBuf,
    /// What the path must be; any kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FileKind>,
    /// Text the file must contain (the path must then be a regular file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
}

impl FileExistsReq {
    /// `path` exists, whatever it is.
    pub fn new(path: impl Into<PathBuf>) -> FileExistsReq {
        FileExistsReq {
            path: path.into(),
            kind: None,
            contains: None,
        }
    }

    /// Requires the path to be of `kind`.
    pub fn kind(mut self, kind: FileKind) -> FileExistsReq {
        self.kind = Some(kind);
        self
    }

    /// Requires the file to contain `text`.
    pub fn contains(mut self, text: impl Into<String>) -> FileExistsReq {
        self.contains = Some(text.into());
        self
    }
}

/// What was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileExistsResp {
    /// What the path is.
    pub kind: FileKind,
    /// Its size in bytes.
    pub size: u64,
}

/// A file check (a check plugin, registered as `coercion/file-exists`): `path` exists, is of
/// `kind`, and contains `contains` (the whole file is read and compared as bytes).
///
/// Errors ([`codes`](super::codes)): `NOT_FOUND`, `WRONG_KIND`, `MISSING_TEXT` (retryable: a
/// check may wait for the file to appear), `IO` (e.g. permission denied). `validate` refuses an
/// empty `path`, an empty `contains`, and `contains` with a kind other than `file`.
///
/// ```
/// # use coercion::plugins::{FileExistsReq, FileKind};
/// let req = FileExistsReq::new("/var/run/web.pid").kind(FileKind::File);
/// ```
#[crate::plugin(check, name = "coercion/file-exists")]
#[derive(Clone, Copy, Debug, Default)]
pub struct FileExists;

impl Plugin for FileExists {
    type Request = FileExistsReq;
    type Response = FileExistsResp;

    async fn execute(
        &self,
        _ctx: &Context,
        req: FileExistsReq,
    ) -> Result<FileExistsResp, PluginError> {
        probe(&req).await
    }

    fn validate(&self, req: &FileExistsReq) -> Result<(), ValidationError> {
        validate(req, "")
    }
}

/// Checks a file request; field names in messages start with `prefix`.
pub(super) fn validate(req: &FileExistsReq, prefix: &str) -> Result<(), ValidationError> {
    let refuse = |what: String| Err(ValidationError::new(what));
    if req.path.as_os_str().is_empty() {
        return refuse(format!("`{prefix}path` must not be empty"));
    }
    if let Some(text) = &req.contains {
        if text.is_empty() {
            return refuse(format!("`{prefix}contains` must not be empty when given"));
        }
        if let Some(kind) = req.kind.filter(|k| *k != FileKind::File) {
            return refuse(format!(
                "`{prefix}contains` needs a regular file, but `{prefix}kind` is \"{}\"",
                kind.name()
            ));
        }
    }
    Ok(())
}

/// Looks at the path once (also used by `coercion/wait-for`).
pub(super) async fn probe(req: &FileExistsReq) -> Result<FileExistsResp, PluginError> {
    let shown = req.path.display();
    let meta = match tokio::fs::metadata(&req.path).await {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                PluginError::new(format!("{shown} does not exist")).with_code(codes::NOT_FOUND)
            );
        }
        Err(e) => {
            return Err(
                PluginError::new(format!("cannot inspect {shown}: {e}")).with_code(codes::IO)
            );
        }
    };
    let kind = FileKind::of(&meta);
    let wanted = req.kind.or(req.contains.as_ref().map(|_| FileKind::File));
    if let Some(wanted) = wanted.filter(|w| *w != kind) {
        return Err(
            PluginError::new(format!("{shown} is {}, not {}", kind.noun(), wanted.noun()))
                .with_code(codes::WRONG_KIND),
        );
    }
    if let Some(text) = &req.contains {
        let bytes = tokio::fs::read(&req.path).await.map_err(|e| {
            PluginError::new(format!("cannot read {shown}: {e}")).with_code(codes::IO)
        })?;
        let needle = text.as_bytes();
        if !bytes.windows(needle.len()).any(|w| w == needle) {
            return Err(
                PluginError::new(format!("{shown} does not contain {text:?}"))
                    .with_code(codes::MISSING_TEXT),
            );
        }
    }
    Ok(FileExistsResp {
        kind,
        size: meta.len(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plugins::test_support::TempDir;

    fn ctx() -> Context {
        Context::detached(Duration::from_secs(30))
    }

    #[tokio::test]
    async fn finds_files_and_directories() {
        let dir = TempDir::new("exists");
        let file = dir.join("config.toml");
        std::fs::write(&file, "port = 8080\n").unwrap();

        let resp = FileExists
            .execute(&ctx(), FileExistsReq::new(&file))
            .await
            .unwrap();
        assert_eq!(
            resp,
            FileExistsResp {
                kind: FileKind::File,
                size: 12
            }
        );
        let resp = FileExists
            .execute(&ctx(), FileExistsReq::new(dir.path()).kind(FileKind::Dir))
            .await
            .unwrap();
        assert_eq!(resp.kind, FileKind::Dir);
        let resp = FileExists
            .execute(&ctx(), FileExistsReq::new(&file).contains("= 8080"))
            .await
            .unwrap();
        assert_eq!(resp.kind, FileKind::File);
    }

    #[tokio::test]
    async fn missing_path_is_not_found() {
        let dir = TempDir::new("missing");
        let path = dir.join("nope");
        let err = FileExists
            .execute(&ctx(), FileExistsReq::new(&path))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::NOT_FOUND);
        assert!(!err.permanent);
        assert_eq!(err.message, format!("{} does not exist", path.display()));
    }

    #[tokio::test]
    async fn wrong_kind_is_reported() {
        let dir = TempDir::new("kind");
        let file = dir.join("f");
        std::fs::write(&file, "x").unwrap();
        let err = FileExists
            .execute(&ctx(), FileExistsReq::new(&file).kind(FileKind::Dir))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::WRONG_KIND);
        assert_eq!(
            err.message,
            format!("{} is a regular file, not a directory", file.display())
        );
        let err = FileExists
            .execute(&ctx(), FileExistsReq::new(dir.path()).contains("x"))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::WRONG_KIND);
        assert!(
            err.message.ends_with("is a directory, not a regular file"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn missing_text_is_reported() {
        let dir = TempDir::new("text");
        let file = dir.join("f");
        std::fs::write(&file, "port = 8080\n").unwrap();
        let err = FileExists
            .execute(&ctx(), FileExistsReq::new(&file).contains("port = 9090"))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::MISSING_TEXT);
        assert_eq!(
            err.message,
            format!("{} does not contain \"port = 9090\"", file.display())
        );
    }

    #[test]
    fn validate_refuses_requests_that_cannot_work() {
        assert!(
            FileExists
                .validate(&FileExistsReq::new("/x").kind(FileKind::File).contains("a"))
                .is_ok()
        );
        let refused = |req: FileExistsReq| FileExists.validate(&req).unwrap_err().message;
        assert_eq!(refused(FileExistsReq::new("")), "`path` must not be empty");
        assert_eq!(
            refused(FileExistsReq::new("/x").contains("")),
            "`contains` must not be empty when given"
        );
        assert_eq!(
            refused(FileExistsReq::new("/x").kind(FileKind::Dir).contains("a")),
            "`contains` needs a regular file, but `kind` is \"dir\""
        );
    }

    #[test]
    fn json_form() {
        let req: FileExistsReq = serde_json::from_str(r#"{"path": "/x", "kind": "dir"}"#).unwrap();
        assert_eq!(req, FileExistsReq::new("/x").kind(FileKind::Dir));
        assert!(
            serde_json::from_str::<FileExistsReq>(r#"{"path": "/x", "kind": "folder"}"#).is_err()
        );
    }
}

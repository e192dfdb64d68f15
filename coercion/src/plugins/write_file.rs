//! `coercion/write-file`: write a file atomically, with a mode.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::codes;
use crate::plugin::{Context, Plugin, PluginError, ValidationError};
use crate::preview::Preview;

/// The highest permission mode: the permission bits plus setuid, setgid and sticky.
pub(super) const MAX_MODE: u32 = 0o7777;

/// What to write. In JSON: `{ "text": "port = 8080\n" }` or `{ "base64": "AP8=" }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileContents {
    /// UTF-8 text, written as it is.
    Text(String),
    /// Any bytes; base64 (standard alphabet, padded) in JSON.
    #[serde(rename = "base64", with = "base64_bytes")]
    Bytes(Vec<u8>),
}

impl FileContents {
    fn as_bytes(&self) -> &[u8] {
        match self {
            FileContents::Text(text) => text.as_bytes(),
            FileContents::Bytes(bytes) => bytes,
        }
    }
}

impl Default for FileContents {
    /// Empty text.
    fn default() -> Self {
        FileContents::Text(String::new())
    }
}

/// The request of [`WriteFile`]. In JSON (`mode` is a string of octal digits):
///
/// ```json
/// { "path": "/etc/web/config.toml", "contents": { "text": "port = 8080\n" },
///   "mode": "0640", "create_dirs": true }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFileReq {
    /// The file to write; relative paths are relative to the workstream's directory.
    pub path: PathBuf,
    /// What to write.
    pub contents: FileContents,
    /// Unix permission bits (`0o640`), applied exactly (the umask does not apply). When absent,
    /// an existing file keeps its mode and a new one gets the usual `0o666` minus the umask.
    #[serde(default, with = "octal_mode", skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Create the missing parent directories. Default `false`: a missing directory is an error.
    #[serde(default)]
    pub create_dirs: bool,
}

impl WriteFileReq {
    /// Writes `text` to `path`.
    pub fn text(path: impl Into<PathBuf>, text: impl Into<String>) -> WriteFileReq {
        WriteFileReq {
            path: path.into(),
            contents: FileContents::Text(text.into()),
            ..WriteFileReq::default()
        }
    }

    /// Writes `bytes` to `path`.
    pub fn bytes(path: impl Into<PathBuf>, bytes: impl Into<Vec<u8>>) -> WriteFileReq {
        WriteFileReq {
            path: path.into(),
            contents: FileContents::Bytes(bytes.into()),
            ..WriteFileReq::default()
        }
    }

    /// Sets the permission bits.
    pub fn mode(mut self, mode: u32) -> WriteFileReq {
        self.mode = Some(mode);
        self
    }

    /// Creates missing parent directories.
    pub fn create_dirs(mut self) -> WriteFileReq {
        self.create_dirs = true;
        self
    }
}

/// What was done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFileResp {
    /// The file written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// `false` when the file already had these contents and mode, so nothing was written.
    pub changed: bool,
}

/// Writes a file atomically (an action plugin, registered as `coercion/write-file`).
///
/// The contents go to a temporary file in the same directory, which gets the mode, is synced,
/// and is renamed over `path`; then the directory is synced. Readers see the old file or the
/// new one, never a part, and a crash leaves at most a stray `.<name>.<pid>.<n>.tmp` file. A
/// file that already has the contents and the mode is left alone (`changed: false`), so
/// running the action again is cheap and harmless. Writing continues in the background if the
/// attempt is abandoned, so the file is never left half-written.
///
/// Errors ([`codes`](super::codes)): `NOT_FOUND` (the directory is missing and `create_dirs`
/// is off), `WRONG_KIND` (the path is a directory), `IO` (the cause in the message; permanent
/// for missing files and denied permissions). `validate` refuses an empty `path`, a path
/// without a file name (`/tmp/`, `..`), a NUL byte in it, and a mode above `0o7777`.
///
/// ```
/// # use coercion::plugins::WriteFileReq;
/// let req = WriteFileReq::text("/etc/web/config.toml", "port = 8080\n").mode(0o640).create_dirs();
/// ```
#[crate::plugin(preview, name = "coercion/write-file")]
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteFile;

impl Plugin for WriteFile {
    type Request = WriteFileReq;
    type Response = WriteFileResp;

    async fn execute(
        &self,
        _ctx: &Context,
        req: WriteFileReq,
    ) -> Result<WriteFileResp, PluginError> {
        let path = req.path.clone();
        let bytes = req.contents.as_bytes().len() as u64;
        let changed = tokio::task::spawn_blocking(move || write_atomically(&req))
            .await
            .map_err(|e| {
                PluginError::new(format!("writing {} failed", path.display())).caused_by(&e)
            })??;
        Ok(WriteFileResp {
            path,
            bytes,
            changed,
        })
    }

    fn validate(&self, req: &WriteFileReq) -> Result<(), ValidationError> {
        let path = req.path.as_os_str().as_bytes();
        if path.is_empty() {
            return Err(ValidationError::new("`path` must not be empty"));
        }
        if path.contains(&0) {
            return Err(ValidationError::new("`path` contains a NUL byte"));
        }
        if path.ends_with(b"/") || req.path.file_name().is_none() {
            return Err(ValidationError::new(format!(
                "`path` {} does not name a file",
                req.path.display()
            )));
        }
        if let Some(mode) = req.mode.filter(|m| *m > MAX_MODE) {
            return Err(ValidationError::new(format!(
                "`mode` {mode:#o} is not a permission mode (at most 0o7777)"
            )));
        }
        Ok(())
    }
}

/// Previews compare the file with the request: contents (a unified diff when both are UTF-8
/// text) and mode.
impl crate::Previews for WriteFile {
    async fn preview(&self, _ctx: &Context, req: &WriteFileReq) -> Result<Preview, PluginError> {
        let req = req.clone();
        tokio::task::spawn_blocking(move || preview_write(&req))
            .await
            .map_err(|e| PluginError::new("the preview's thread failed").caused_by(&e))
    }
}

/// What writing `req` would change, read from the file system without writing.
fn preview_write(req: &WriteFileReq) -> Preview {
    let path = &req.path;
    let shown = path.display().to_string();
    let new = req.contents.as_bytes();
    let mode_text = |m: Option<u32>| m.map(|m| format!(", mode {m:o}")).unwrap_or_default();
    // Diffs of text up to a size people read; beyond it, the summary says what changes.
    const DIFF_LIMIT: usize = 256 * 1024;
    let text_diff = |old: &[u8], from: &str| match (std::str::from_utf8(old), &req.contents) {
        (Ok(old), FileContents::Text(new))
            if old.len() <= DIFF_LIMIT && new.len() <= DIFF_LIMIT =>
        {
            crate::preview::unified_diff(old, new, from, &shown)
        }
        _ => String::new(),
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            Preview::cannot_tell(format!("{shown} is a directory: an attempt would fail"))
        }
        // A FIFO or a device would block or stream the read: not read in a preview.
        Ok(meta) if !meta.is_file() => Preview::cannot_tell(format!(
            "{shown} is not a regular file: a preview does not read it"
        )),
        Ok(meta) => {
            let current = meta.permissions().mode() & MAX_MODE;
            let old = match std::fs::read(path) {
                Ok(old) => old,
                Err(e) => return Preview::cannot_tell(format!("cannot read {shown}: {e}")),
            };
            let mode = req.mode.filter(|m| *m != current);
            if old == new && mode.is_none() {
                return Preview::no_change(format!(
                    "{shown} already holds these {} bytes (mode {current:o})",
                    new.len()
                ));
            }
            let mut what = Vec::new();
            if old != new {
                what.push(format!("{} → {} bytes", old.len(), new.len()));
            }
            if let Some(m) = mode {
                what.push(format!("mode {current:o} → {m:o}"));
            }
            Preview::would_change(format!("would rewrite {shown} ({})", what.join(", ")))
                .with_diff(text_diff(&old, &shown))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            if !req.create_dirs && !dir.is_dir() {
                return Preview::cannot_tell(format!(
                    "directory {} does not exist: an attempt would fail (set `create_dirs` to create it)",
                    dir.display()
                ));
            }
            Preview::would_change(format!(
                "would create {shown} ({} bytes{})",
                new.len(),
                mode_text(req.mode)
            ))
            .with_diff(text_diff(b"", "/dev/null"))
        }
        Err(e) => Preview::cannot_tell(format!("cannot inspect {shown}: {e}")),
    }
}

fn io_error(what: String, e: &std::io::Error) -> PluginError {
    let permanent = matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
    );
    PluginError::new(format!("{what}: {e}"))
        .set_permanent(permanent)
        .with_code(codes::IO)
}

/// Writes the file unless it is already as requested; returns whether it wrote.
fn write_atomically(req: &WriteFileReq) -> Result<bool, PluginError> {
    let path = &req.path;
    let shown = path.display();
    let contents = req.contents.as_bytes();
    let name = path.file_name().ok_or_else(|| {
        PluginError::permanent(format!("{shown} does not name a file")).with_code(codes::IO)
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if req.create_dirs {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_error(format!("cannot create directory {}", dir.display()), &e))?;
    } else if !dir.is_dir() {
        return Err(PluginError::permanent(format!(
            "cannot write {shown}: directory {} does not exist (set `create_dirs` to create it)",
            dir.display()
        ))
        .with_code(codes::NOT_FOUND));
    }

    let mode = match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(
                PluginError::permanent(format!("cannot write {shown}: it is a directory"))
                    .with_code(codes::WRONG_KIND),
            );
        }
        Ok(meta) => {
            let current = meta.permissions().mode() & MAX_MODE;
            let wanted = req.mode.unwrap_or(current);
            if current == wanted
                && meta.len() == contents.len() as u64
                && std::fs::read(path).is_ok_and(|old| old == contents)
            {
                return Ok(false);
            }
            Some(wanted)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => req.mode,
        Err(e) => return Err(io_error(format!("cannot inspect {shown}"), &e)),
    };

    // At most 100 bytes of the name, so the temporary name stays within NAME_MAX.
    let stem = String::from_utf8_lossy(&name.as_bytes()[..name.len().min(100)]).into_owned();
    let tmp = dir.join(format!(
        ".{stem}.{}.{:x}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ));
    let written = (|| {
        // Without a mode, the kernel applies the umask to 0o666 as for any new file; with one,
        // the file starts private and gets the exact mode before anyone can see it.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if mode.is_some() { 0o600 } else { 0o666 })
            .open(&tmp)?;
        file.write_all(contents)?;
        if let Some(mode) = mode {
            file.set_permissions(Permissions::from_mode(mode))?;
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(format!("cannot write {shown}"), &e));
    }
    Ok(true)
}

/// `Vec<u8>` as a base64 string.
pub(super) mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(in crate::plugins) fn serialize<S: Serializer>(
        bytes: &[u8],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(in crate::plugins) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.trim())
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

/// An optional mode as a string of octal digits (`"0640"`, `"640"` or `"0o640"`). JSON numbers
/// are refused: `640` would silently mean `0o1200`.
pub(super) mod octal_mode {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(in crate::plugins) fn serialize<S: Serializer>(
        mode: &Option<u32>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match mode {
            Some(mode) => s.serialize_str(&format!("{mode:04o}")),
            None => s.serialize_none(),
        }
    }

    pub(in crate::plugins) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<u32>, D::Error> {
        d.deserialize_any(ModeVisitor)
    }

    struct ModeVisitor;

    impl<'de> Visitor<'de> for ModeVisitor {
        type Value = Option<u32>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string of octal digits such as \"0640\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Option<u32>, E> {
            let digits = text.strip_prefix("0o").unwrap_or(text);
            match u32::from_str_radix(digits, 8) {
                Ok(mode) if mode <= super::MAX_MODE && !digits.is_empty() => Ok(Some(mode)),
                _ => Err(E::custom(format!(
                    "mode {text:?} is not octal permission bits between \"0000\" and \"7777\""
                ))),
            }
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Option<u32>, E> {
            Err(E::custom(format!(
                "mode must be a string of octal digits such as \"0640\", not the number {n} (JSON numbers are decimal)"
            )))
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Option<u32>, E> {
            self.visit_u64(n.unsigned_abs())
        }

        fn visit_none<E: de::Error>(self) -> Result<Option<u32>, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<u32>, E> {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::plugins::test_support::TempDir;

    fn ctx() -> Context {
        Context::detached(Duration::from_secs(30))
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & MAX_MODE
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn writes_text_and_leaves_no_temporary_file() {
        let dir = TempDir::new("write");
        let path = dir.join("config.toml");
        let resp = WriteFile
            .execute(&ctx(), WriteFileReq::text(&path, "port = 8080\n"))
            .await
            .unwrap();
        assert_eq!(
            resp,
            WriteFileResp {
                path: path.clone(),
                bytes: 12,
                changed: true
            }
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "port = 8080\n");
        assert_eq!(entries(dir.path()), ["config.toml"]);
    }

    #[tokio::test]
    async fn writes_bytes() {
        let dir = TempDir::new("bytes");
        let path = dir.join("blob");
        let bytes: Vec<u8> = (0..=255).collect();
        WriteFile
            .execute(&ctx(), WriteFileReq::bytes(&path, bytes.clone()))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[tokio::test]
    async fn applies_the_mode_exactly_and_keeps_an_existing_one() {
        let dir = TempDir::new("mode");
        let path = dir.join("secret");
        WriteFile
            .execute(&ctx(), WriteFileReq::text(&path, "a").mode(0o640))
            .await
            .unwrap();
        assert_eq!(mode_of(&path), 0o640);
        // 0o666 survives: the umask does not apply to an explicit mode.
        WriteFile
            .execute(&ctx(), WriteFileReq::text(&path, "b").mode(0o666))
            .await
            .unwrap();
        assert_eq!(mode_of(&path), 0o666);
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        WriteFile
            .execute(&ctx(), WriteFileReq::text(&path, "c"))
            .await
            .unwrap();
        assert_eq!(
            mode_of(&path),
            0o600,
            "no mode keeps the existing file's mode"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c");
    }

    #[tokio::test]
    async fn same_contents_and_mode_change_nothing() {
        let dir = TempDir::new("same");
        let path = dir.join("f");
        let req = WriteFileReq::text(&path, "same").mode(0o644);
        assert!(
            WriteFile
                .execute(&ctx(), req.clone())
                .await
                .unwrap()
                .changed
        );
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        assert!(
            !WriteFile
                .execute(&ctx(), req.clone())
                .await
                .unwrap()
                .changed
        );
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap()),
            inode,
            "not rewritten"
        );
        assert!(
            WriteFile
                .execute(&ctx(), req.clone().mode(0o600))
                .await
                .unwrap()
                .changed,
            "a new mode is a change"
        );
        assert_eq!(mode_of(&path), 0o600);
        assert!(
            WriteFile
                .execute(&ctx(), WriteFileReq::text(&path, "other").mode(0o600))
                .await
                .unwrap()
                .changed
        );
    }

    #[tokio::test]
    async fn missing_directory_is_an_error_unless_created() {
        let dir = TempDir::new("dirs");
        let path = dir.join("a/b/c.txt");
        let err = WriteFile
            .execute(&ctx(), WriteFileReq::text(&path, "x"))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::NOT_FOUND);
        assert!(err.permanent);
        assert!(
            err.message
                .contains("does not exist (set `create_dirs` to create it)"),
            "{}",
            err.message
        );
        WriteFile
            .execute(&ctx(), WriteFileReq::text(&path, "x").create_dirs())
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
    }

    #[tokio::test]
    async fn a_directory_in_the_way_fails_and_leaves_nothing_behind() {
        let dir = TempDir::new("isdir");
        std::fs::create_dir(dir.join("taken")).unwrap();
        let err = WriteFile
            .execute(&ctx(), WriteFileReq::text(dir.join("taken"), "x"))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::WRONG_KIND);
        assert!(
            err.message.ends_with("taken: it is a directory"),
            "{}",
            err.message
        );
        assert_eq!(entries(dir.path()), ["taken"]);
    }

    #[tokio::test]
    async fn a_long_file_name_still_fits_its_temporary_name() {
        let dir = TempDir::new("long");
        let name = "n".repeat(250);
        let path = dir.join(&name);
        WriteFile
            .execute(&ctx(), WriteFileReq::text(&path, "x"))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
        assert_eq!(entries(dir.path()), [name]);
    }

    #[tokio::test]
    async fn readers_never_see_a_partial_file() {
        let dir = TempDir::new("atomic");
        let path = dir.join("data");
        let big_a = "a".repeat(4 << 20);
        let big_b = "b".repeat(4 << 20);
        std::fs::write(&path, &big_a).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, stop, a, b) = (path.clone(), stop.clone(), big_a.clone(), big_b.clone());
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let seen = std::fs::read_to_string(&path).expect("the file always exists");
                    assert!(
                        seen == a || seen == b,
                        "a reader saw a partial file of {} bytes",
                        seen.len()
                    );
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..8 {
            let contents = if i % 2 == 0 { &big_b } else { &big_a };
            WriteFile
                .execute(&ctx(), WriteFileReq::text(&path, contents.clone()))
                .await
                .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let reads = reader.join().expect("the reader found no partial file");
        assert!(reads > 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), big_a);
        assert_eq!(entries(dir.path()), ["data"]);
    }

    #[test]
    fn validate_refuses_requests_that_cannot_work() {
        let refused = |req: WriteFileReq| WriteFile.validate(&req).unwrap_err().message;
        assert!(
            WriteFile
                .validate(&WriteFileReq::text("conf/app.toml", "x").mode(0o7777))
                .is_ok()
        );
        assert_eq!(
            refused(WriteFileReq::text("", "x")),
            "`path` must not be empty"
        );
        assert_eq!(
            refused(WriteFileReq::text("/tmp/", "x")),
            "`path` /tmp/ does not name a file"
        );
        assert_eq!(
            refused(WriteFileReq::text("a/..", "x")),
            "`path` a/.. does not name a file"
        );
        assert_eq!(
            refused(WriteFileReq::text("a\0b", "x")),
            "`path` contains a NUL byte"
        );
        assert_eq!(
            refused(WriteFileReq::text("/x", "x").mode(0o10000)),
            "`mode` 0o10000 is not a permission mode (at most 0o7777)"
        );
    }

    #[test]
    fn json_form() {
        let req: WriteFileReq = serde_json::from_str(
            r#"{"path": "/x", "contents": {"base64": "AP8="}, "mode": "0640"}"#,
        )
        .unwrap();
        assert_eq!(req, WriteFileReq::bytes("/x", vec![0, 255]).mode(0o640));
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["mode"], "0640");
        assert_eq!(json["contents"]["base64"], "AP8=");
        assert_eq!(serde_json::from_value::<WriteFileReq>(json).unwrap(), req);

        let req: WriteFileReq =
            serde_json::from_str(r#"{"path": "/x", "contents": {"text": "hi"}, "mode": "0o755"}"#)
                .unwrap();
        assert_eq!(req, WriteFileReq::text("/x", "hi").mode(0o755));
        let req: WriteFileReq =
            serde_json::from_str(r#"{"path": "/x", "contents": {"text": "hi"}}"#).unwrap();
        assert_eq!(req.mode, None);

        let err = |s: &str| {
            serde_json::from_str::<WriteFileReq>(s)
                .unwrap_err()
                .to_string()
        };
        assert!(
            err(r#"{"path": "/x", "contents": {"text": ""}, "mode": 644}"#)
                .contains("not the number 644")
        );
        assert!(
            err(r#"{"path": "/x", "contents": {"text": ""}, "mode": "0999"}"#)
                .contains("is not octal permission bits")
        );
        assert!(
            err(r#"{"path": "/x", "contents": {"text": ""}, "mode": "17777"}"#)
                .contains("is not octal permission bits")
        );
        assert!(err(r#"{"path": "/x", "contents": {"base64": "!!"}}"#).contains("invalid base64"));
    }
}

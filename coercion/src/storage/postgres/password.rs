//! The password of a connection whose URL carries none (or an empty one), found where libpq
//! finds it, so that no password has to sit in a URL (shown by `ps`, kept in shell histories and
//! unit files): `PGPASSWORD`, then the password file — `PGPASSFILE`, by default `~/.pgpass` —
//! whose lines are `host:port:database:user:password` (a field that is `*` matches anything,
//! `\:` and `\\` escape, `#` starts a comment line; the first matching line wins).
//!
//! As libpq, a password file that others can read or write is ignored with a warning; and when
//! the server then refuses the login, the error says so (see [`explain`]). The file is read when
//! the store connects: a password changed in it reaches new connections after a restart.

use std::path::{Path, PathBuf};

use tokio_postgres::config::Host;

use crate::storage::StoreError;

/// Where passwords are looked for: the process's environment, or a test's. (No `Debug`: it
/// holds a password.)
#[derive(Default)]
pub(crate) struct Sources {
    /// `PGPASSWORD`.
    pub password: Option<String>,
    /// `PGPASSFILE`, or `~/.pgpass`.
    pub file: Option<PathBuf>,
}

impl Sources {
    /// The process's: `PGPASSWORD`, and `PGPASSFILE` or `$HOME/.pgpass`.
    pub fn of_process() -> Sources {
        let password = std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty());
        let file = std::env::var_os("PGPASSFILE")
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")));
        Sources { password, file }
    }
}

/// Where a connection's password came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// The URL had one (or names no user): nothing looked up.
    InUrl,
    /// `PGPASSWORD`.
    Environment,
    /// A line of this password file.
    File(PathBuf),
    /// None anywhere: the server may not ask for one.
    Nowhere,
    /// The line for this connection is in a password file others can read or write (this
    /// mode): ignored, as libpq ignores it.
    Unsafe(PathBuf, u32),
}

/// Sets `config`'s password from `sources` when its URL carries none.
pub(crate) fn fill(
    config: &mut tokio_postgres::Config,
    sources: &Sources,
) -> Result<Found, StoreError> {
    let Some(user) = config.get_user().map(str::to_owned) else {
        return Ok(Found::InUrl);
    };
    if config.get_password().is_some_and(|p| !p.is_empty()) {
        return Ok(Found::InUrl);
    }
    if let Some(password) = &sources.password {
        config.password(password.as_str());
        return Ok(Found::Environment);
    }
    let Some(file) = &sources.file else {
        return Ok(Found::Nowhere);
    };
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        // As libpq: a missing or unreadable file is no password.
        Err(_) => return Ok(Found::Nowhere),
    };
    // The first host's (a URL naming several hosts uses one password for all).
    let hosts: Vec<String> = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => vec![name.clone()],
        // A socket directory matches its path; the usual default directories also match
        // `localhost`, as libpq's default socket does.
        #[cfg(unix)]
        Some(Host::Unix(path)) => {
            let mut names = vec![path.display().to_string()];
            if ["/var/run/postgresql", "/run/postgresql", "/tmp"]
                .iter()
                .any(|d| path == Path::new(d))
            {
                names.push("localhost".to_owned());
            }
            names
        }
        None => vec!["localhost".to_owned()],
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let database = config.get_dbname().unwrap_or(&user).to_owned();
    let Some(password) = text.lines().find_map(|line| {
        let fields = split(line)?;
        let matches = |field: &Field, value: &str| field.any || field.text == value;
        (hosts.iter().any(|h| matches(&fields[0], h))
            && matches(&fields[1], &port)
            && matches(&fields[2], &database)
            && matches(&fields[3], &user))
        .then(|| fields[4].text.clone())
    }) else {
        return Ok(Found::Nowhere);
    };
    if let Some(mode) = readable_by_others(file) {
        tracing::warn!(
            file = %file.display(),
            "the password file can be read or written by others (mode {mode:04o}) and is ignored; make it private: chmod 600 {}",
            file.display()
        );
        return Ok(Found::Unsafe(file.clone(), mode));
    }
    config.password(password.as_str());
    Ok(Found::File(file.clone()))
}

/// One field of a password file's line: its text, unescaped, and whether it is `*` unescaped
/// (which matches anything; `\*` is a star).
#[derive(Debug, PartialEq, Eq)]
struct Field {
    text: String,
    any: bool,
}

/// `e`, a failure to connect, with where the password came from when the server refused it
/// (or asked for one that was nowhere): the usual puzzle of a password kept outside the URL.
pub(crate) fn explain(mut e: StoreError, found: &Found, sources: &Sources) -> StoreError {
    let mut cause = std::error::Error::source(&e);
    let mut refused = false;
    while let Some(c) = cause {
        if let Some(pg) = c.downcast_ref::<tokio_postgres::Error>() {
            // SQLSTATE class 28: invalid authorization specification, invalid password.
            // A password the client lacks is a configuration error, its cause says which.
            refused |= pg.code().is_some_and(|s| s.code().starts_with("28"))
                || crate::storage::Chain(pg)
                    .to_string()
                    .contains("password missing");
        }
        cause = c.source();
    }
    if !refused {
        return e;
    }
    let note = match found {
        Found::InUrl => "the password was the URL's".to_owned(),
        Found::Environment => "the password came from PGPASSWORD".to_owned(),
        Found::File(file) => format!("the password came from {}", file.display()),
        Found::Nowhere => match &sources.file {
            Some(file) => format!(
                "no password was found in the URL, PGPASSWORD or a matching line of {}",
                file.display()
            ),
            None => "no password was found in the URL or PGPASSWORD".to_owned(),
        },
        Found::Unsafe(file, mode) => format!(
            "the password file {} was ignored: others can read or write it (mode {mode:04o}); \
             make it private: chmod 600 {}",
            file.display(),
            file.display()
        ),
    };
    if let StoreError::Transient { message, .. } | StoreError::Permanent { message, .. } = &mut e {
        message.push_str(&format!(" ({note})"));
    }
    e
}

/// The five fields of a password file's line, unescaped; `None` for a comment, a blank line or
/// a line of fewer fields (skipped, as libpq skips them). The password ends at the first
/// unescaped `:` after it, as in libpq.
fn split(line: &str) -> Option<[Field; 5]> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let mut fields: Vec<Field> = Vec::with_capacity(5);
    let (mut text, mut escaped) = (String::new(), false);
    let mut chars = line.chars();
    loop {
        match chars.next() {
            Some('\\') => {
                if let Some(next) = chars.next() {
                    text.push(next);
                    escaped = true;
                }
            }
            Some(c) if c != ':' => text.push(c),
            end => {
                let any = text == "*" && !escaped;
                fields.push(Field { text, any });
                if end.is_none() || fields.len() == 5 {
                    break;
                }
                (text, escaped) = (String::new(), false);
            }
        }
    }
    fields.try_into().ok()
}

/// The file's mode when others can read or write it.
#[cfg(unix)]
fn readable_by_others(file: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn readable_by_others(_file: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn config(url: &str) -> tokio_postgres::Config {
        tokio_postgres::Config::from_str(url).unwrap()
    }

    /// A private password file holding `text`, in a directory removed at the end.
    struct File(PathBuf);
    impl File {
        fn new(text: &str, mode: u32) -> File {
            use std::os::unix::fs::PermissionsExt;
            let dir =
                std::env::temp_dir().join(format!("coercion-pgpass-{}", uuid::Uuid::now_v7()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("pgpass");
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            File(path)
        }
        fn sources(&self) -> Sources {
            Sources {
                password: None,
                file: Some(self.0.clone()),
            }
        }
    }
    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    fn texts(line: &str) -> Option<Vec<(String, bool)>> {
        split(line).map(|f| f.into_iter().map(|f| (f.text, f.any)).collect())
    }

    #[test]
    fn a_line_is_five_fields_with_escapes_as_libpq_reads_them() {
        let field = |t: &str, any: bool| (t.to_owned(), any);
        assert_eq!(
            texts(r"db\:1:5432:*:al\\ice:pa\:ss\word:ignored").unwrap(),
            [
                field("db:1", false),
                field("5432", false),
                field("*", true),
                field(r"al\ice", false),
                field("pa:ssword", false)
            ]
        );
        assert_eq!(
            texts(r"\*:*:*:*:pw").unwrap()[0],
            field("*", false),
            "an escaped star"
        );
        assert_eq!(
            texts("h:1:d:u:pw\r").unwrap()[4],
            field("pw", false),
            "CRLF"
        );
        assert_eq!(split("# a:b:c:d:e"), None);
        assert_eq!(split("   "), None);
        assert_eq!(split("a:b:c:d"), None, "four fields");
        assert_eq!(
            texts("a:b:c:d:").unwrap()[4],
            field("", false),
            "an empty password"
        );
    }

    #[test]
    fn the_first_matching_line_gives_the_password() {
        let file = File::new(
            "# production\n\
             db.prod:5432:coercion:deploy:wrong-host\n\
             127.0.0.1:6543:coercion:deploy:wrong-port\n\
             127.0.0.1:5432:other:deploy:wrong-db\n\
             127.0.0.1:*:coercion:deploy:right\n\
             *:*:*:*:too-late\n",
            0o600,
        );
        let mut c = config("postgres://deploy@127.0.0.1/coercion");
        assert_eq!(
            fill(&mut c, &file.sources()).unwrap(),
            Found::File(file.0.clone())
        );
        assert_eq!(c.get_password(), Some(&b"right"[..]));
        // The database defaults to the user's name, as the server's does.
        let mut c = config("postgres://deploy@db.prod:5432");
        let other = File::new("db.prod:5432:deploy:deploy:by-user-name\n", 0o600);
        fill(&mut c, &other.sources()).unwrap();
        assert_eq!(c.get_password(), Some(&b"by-user-name"[..]));
    }

    #[test]
    fn the_url_then_the_environment_then_the_file() {
        let file = File::new("*:*:*:*:from-file\n", 0o600);
        let mut c = config("postgres://deploy:in-url@db/coercion");
        assert_eq!(fill(&mut c, &file.sources()).unwrap(), Found::InUrl);
        assert_eq!(c.get_password(), Some(&b"in-url"[..]));
        let mut c = config("postgres://deploy@db/coercion");
        let env = Sources {
            password: Some("from-env".to_owned()),
            ..file.sources()
        };
        assert_eq!(fill(&mut c, &env).unwrap(), Found::Environment);
        assert_eq!(c.get_password(), Some(&b"from-env"[..]));
        let mut c = config("postgres://deploy@db/coercion");
        let nothing = Sources {
            password: None,
            file: Some(file.0.with_file_name("missing")),
        };
        assert_eq!(fill(&mut c, &nothing).unwrap(), Found::Nowhere);
        assert_eq!(c.get_password(), None);
    }

    #[test]
    fn a_password_file_others_can_read_is_ignored_and_named() {
        let file = File::new("db:*:*:deploy:secret\n", 0o644);
        let mut c = config("postgres://deploy@db/coercion");
        assert_eq!(
            fill(&mut c, &file.sources()).unwrap(),
            Found::Unsafe(file.0.clone(), 0o644)
        );
        assert_eq!(c.get_password(), None);
        // A file with no line for this connection is not in the way.
        let mut c = config("postgres://someone-else@db/coercion");
        assert_eq!(fill(&mut c, &file.sources()).unwrap(), Found::Nowhere);
    }

    #[test]
    fn an_empty_url_password_is_no_password_and_sockets_match_their_directory() {
        let file = File::new(
            "/srv/pg:5432:*:deploy:other-cluster\nlocalhost:5432:*:deploy:default-socket\n\
             db.prod:5432:*:deploy:from-file\n",
            0o600,
        );
        let mut c = config("postgres://deploy:@db.prod/coercion");
        fill(&mut c, &file.sources()).unwrap();
        assert_eq!(
            c.get_password(),
            Some(&b"from-file"[..]),
            "an empty one is none"
        );
        let mut c = config("host=/srv/pg user=deploy");
        fill(&mut c, &file.sources()).unwrap();
        assert_eq!(c.get_password(), Some(&b"other-cluster"[..]));
        let mut c = config("host=/var/run/postgresql user=deploy");
        fill(&mut c, &file.sources()).unwrap();
        assert_eq!(c.get_password(), Some(&b"default-socket"[..]));
        let mut c = config("host=/srv/other user=deploy");
        assert_eq!(fill(&mut c, &file.sources()).unwrap(), Found::Nowhere);
    }
}

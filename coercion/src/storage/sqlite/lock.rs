//! The writer's lock: an exclusive lock ([`File::try_lock`]: `flock` on Unix, `LockFileEx` on
//! Windows) on the sidecar file `<db>.lock`, held for the store's lifetime, with the holder's pid
//! written inside for the error message of the next process that tries. The operating system
//! releases the lock when the process dies, even by SIGKILL.

use std::fs::File;
use std::path::Path;

use crate::storage::StoreError;

/// How many times, [`PROBE_WAIT`] apart, a writer tries the lock again when it is held: a
/// reader's probe ([`held`]) holds it for microseconds (longer only when the prober is
/// descheduled), a running process for its lifetime.
const PROBE_RETRIES: u32 = 20;
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// A held lock; released on drop.
#[derive(Debug)]
pub(super) struct WriterLock {
    #[allow(dead_code)] // Held for its file descriptor: closing it releases the lock.
    file: File,
}

impl WriterLock {
    /// Takes the lock on `lock_path` for the database `db` (named in messages), or fails with
    /// [`StoreError::Locked`] if another process — or another store of this one — holds it
    /// (within ~100 ms: a reader's probe is waited out).
    pub fn acquire(lock_path: &Path, db: &Path) -> Result<WriterLock, StoreError> {
        use std::io::{Read, Seek, SeekFrom, Write};

        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
        let mut file = options.open(lock_path).map_err(|e| {
            // The usual cause, said plainly: the store's directory is not there.
            let dir = lock_path.parent().filter(|d| !d.as_os_str().is_empty());
            let why = match dir.map(|d| (d, std::fs::metadata(d))) {
                Some((d, Err(m))) if m.kind() == std::io::ErrorKind::NotFound => format!(
                    "the directory {} does not exist (create it, or choose another path)",
                    d.display()
                ),
                Some((d, Ok(m))) if !m.is_dir() => format!("{} is not a directory", d.display()),
                _ => format!("cannot open the lock file {}", lock_path.display()),
            };
            StoreError::permanent(format!("sqlite:{}: {why}", db.display())).caused_by(e)
        })?;
        // A reader probing the lock (`held`) holds it shared for a few microseconds: try a few
        // more times over ~100 ms before taking the lock for a running process's.
        let mut tries = 0;
        let locked = loop {
            match file.try_lock() {
                Err(std::fs::TryLockError::WouldBlock) if tries < PROBE_RETRIES => {
                    tries += 1;
                    std::thread::sleep(PROBE_WAIT);
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) if pid == std::process::id() => {
                        "this process (another SqliteStore is open on it)".to_owned()
                    }
                    Ok(pid) => format!("another process (pid {pid})"),
                    Err(_) => "another process".to_owned(),
                };
                return Err(StoreError::Locked(format!(
                    "{} is in use by {holder} that runs plans from it; only one process may run plans \
                     from a SQLite store at a time. Open it with SqliteStore::open_read_only to read it meanwhile",
                    db.display()
                )));
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(StoreError::permanent(format!(
                    "sqlite:{}: cannot lock {}",
                    db.display(),
                    lock_path.display()
                ))
                .caused_by(err));
            }
        }
        // Best effort: the pid only improves the message another process shows.
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = write!(file, "{}", std::process::id());
        let _ = file.flush();
        Ok(WriterLock { file })
    }
}

/// Whether a process holds the writer's lock on `lock_path` (no lock file: none does). Takes a
/// shared lock and releases it at once, so it never stands in a writer's way for long.
pub(super) fn held(lock_path: &Path) -> std::io::Result<bool> {
    let file = match File::open(lock_path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match file.try_lock_shared() {
        Ok(()) => {
            file.unlock()?;
            Ok(false)
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// [`held`], failing with a message that names the store and the lock file.
pub(super) fn held_for(store: &str, lock_path: &Path) -> Result<bool, StoreError> {
    held(lock_path).map_err(|e| {
        StoreError::permanent(format!(
            "{store}: cannot tell whether a process runs plans from it: cannot read its lock file {}",
            lock_path.display()
        ))
        .caused_by(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readers probe the lock (`held`: a shared lock taken and released at once) whenever they
    /// ask whether a process runs plans — `show`, `list`, each second of a live page. A writer
    /// starting at that instant must not take the probe for a running process.
    #[test]
    fn a_writer_starting_during_probes_is_not_refused() {
        let dir = super::super::tests::TempDir::new("lock-probe");
        let db = dir.db();
        let lock = super::super::sidecar(&db, ".lock");
        drop(WriterLock::acquire(&lock, &db).unwrap());
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let probed = std::sync::Arc::new(AtomicU64::new(0));
        let probes = {
            let (stop, probed, lock) = (stop.clone(), probed.clone(), lock.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    held(&lock).unwrap();
                    probed.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        while probed.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        let starts = 2_000;
        let refused = (0..starts)
            .filter(|_| WriterLock::acquire(&lock, &db).is_err())
            .count();
        stop.store(true, Ordering::Relaxed);
        probes.join().unwrap();
        let probed = probed.load(Ordering::Relaxed);
        assert_eq!(
            refused, 0,
            "of {starts} starts, {refused} were refused during {probed} probes"
        );
    }
}

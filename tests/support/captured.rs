//! A log captured in memory, for tests that assert what was traced: a `Write` that appends to
//! a shared buffer, handed to `tracing_subscriber::fmt().with_writer(move || w.clone())`.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// The captured log; clones share the buffer.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

//! Unit tests of the SQLite store that need crate-private access.

//! Examples and cross-crate tests of coercion. Not published.
//!
//! This crate exists so the workspace root can own `examples/` and `tests/`; it also compiles
//! every Rust snippet of the README as a doctest, so the README cannot drift from the API.
#![doc = include_str!("../README.md")]

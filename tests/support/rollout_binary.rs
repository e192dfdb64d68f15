//! The `rollout` example's binary, for the tests that run it as a user would.

use std::path::{Path, PathBuf};

/// `target/<profile>/examples/rollout`, beside the test's `deps/`; `scripts/test.sh` builds it
/// first (`cargo build --example rollout`: `--all-targets` builds examples only as test harnesses).
pub fn rollout_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples").join("rollout");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --example rollout` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

//! The main job's preview: `rollout --check --diff` on local hosts says what a run would change
//! and changes nothing (no config written, no store created, no instance started); after a
//! real run of the same release the configs are unchanged, and a new release shows its diff.
//!
//! Runs the example's binary, which `scripts/test.sh` builds first (`cargo build --example
//! rollout`).

use std::path::Path;
use std::process::Command;

#[path = "support/rollout_binary.rs"]
mod rollout_binary;
use rollout_binary::rollout_binary;

fn rollout(dir: &Path, extra: &[&str]) -> (bool, String) {
    let (work, db) = (dir.join("work"), dir.join("plans.db"));
    let out = Command::new(rollout_binary())
        .args([
            "--hosts",
            "3",
            "--dir",
            work.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_and_diff_preview_the_rollout_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = rollout(dir.path(), &["--check", "--diff", "--release", "r1"]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with("preview of Roll out r1 to 3 hosts\n"),
        "{out}"
    );
    assert_eq!(out.matches("+version=r1").count(), 3, "{out}");
    assert_eq!(
        out.matches("✓ ").count(),
        2,
        "the two pre-checks ran: {out}"
    );
    assert!(
        out.contains("… canary still healthy would run after"),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with(
            "7 would change, 3 unchanged, 0 unknown; checks: 2 passed, 0 failed, 1 would run after"
        ),
        "{out}"
    );
    assert!(
        !out.contains('\u{1b}'),
        "no colours when stdout is not a terminal: {out:?}"
    );
    // Nothing was done: no store, no config, no pid file.
    assert!(!dir.path().join("plans.db").exists());
    let written: Vec<_> = std::fs::read_dir(dir.path().join("work"))
        .unwrap()
        .collect();
    assert!(written.is_empty(), "{written:?}");

    // A gate needs a batch after the canary.
    let (ok, out) = rollout(dir.path(), &["--check", "--gate", "--serial", "100%"]);
    assert!(!ok && out.contains("--gate holds the batches after the canary, but --serial 100% makes one batch of 3 hosts"), "{out}");
    let (ok, out) = rollout(dir.path(), &["--check", "--gate", "--release", "r1"]);
    assert!(
        ok && out.contains(
            "⏸ promote canary would wait for approval (coercion/gate): The canary runs r1"
        ),
        "{out}"
    );

    // `--diff` needs `--check`.
    let (ok, out) = rollout(dir.path(), &["--diff"]);
    assert!(!ok && out.contains("--check"), "{out}");

    // After a real run of r1, the same release changes no config; r2 shows its diff.
    let (ok, out) = rollout(dir.path(), &["--release", "r1"]);
    assert!(ok, "{out}");
    let (ok, out) = rollout(dir.path(), &["--check", "--release", "r1"]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("= write config no change").count(), 3, "{out}");
    let (ok, out) = rollout(dir.path(), &["--check", "--diff", "--release", "r2"]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("-version=r1\n").count(), 3, "{out}");
    assert_eq!(out.matches("+version=r2\n").count(), 3, "{out}");
    let config = std::fs::read_to_string(dir.path().join("work/host-00.conf")).unwrap();
    assert_eq!(config, "version=r1\nbroken=false\n");
}

/// A rollout that fails still closes its store before it exits: the WAL is checkpointed into
/// the file and removed, as after a run that succeeded (the README: "the file alone then holds
/// everything"). The failure is the README's own example.
#[test]
fn a_failed_rollout_closes_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = rollout(dir.path(), &["--fault-rate", "0.5", "--seed", "3"]);
    assert!(!ok, "the README's failing run fails: {out}");
    assert!(out.contains("Failed (reason: Block)"), "{out}");
    assert!(dir.path().join("plans.db").exists(), "{out}");
    let wal = dir.path().join("plans.db-wal");
    assert!(
        !wal.exists(),
        "a WAL of {} bytes left behind: {out}",
        std::fs::metadata(&wal).map_or(0, |m| m.len())
    );
}

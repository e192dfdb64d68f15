//! The main job over real SSH: the `rollout` example against the hosts of
//! `scripts/ssh-hosts.sh` (scripts/test.sh starts them and exports `SSH_HOSTS_DIR`), through a
//! YAML inventory with group variables and an Ansible host pattern, as the README shows.
//!
//! Runs the example's binary, which `scripts/test.sh` builds first (`cargo build --example
//! rollout`; `--all-targets` builds examples only as test harnesses). Without
//! `SSH_HOSTS_DIR` the test fails when `CI` is set and is skipped (loudly) otherwise.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;

use coercion::ListFilter;
use coercion::plugins::ssh::SshUpload;
use coercion::prelude::*;

#[path = "support/rollout_binary.rs"]
mod rollout_binary;
use rollout_binary::rollout_binary;

fn hosts_dir() -> Option<PathBuf> {
    match std::env::var_os("SSH_HOSTS_DIR") {
        Some(dir) if !dir.is_empty() => Some(dir.into()),
        _ if std::env::var_os("CI").is_some() => panic!(
            "SSH_HOSTS_DIR is not set (and CI is): run through `scripts/ssh-hosts.sh --test` (scripts/test.sh does)"
        ),
        _ => {
            eprintln!(
                "!!!!!!!! SKIPPED rollout_ssh: SSH_HOSTS_DIR is not set — the rollout over SSH was NOT tested !!!!!!!!"
            );
            None
        }
    }
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(rollout_binary()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Whether something answers on `address:port`.
fn listening(address: &str, port: u16) -> bool {
    TcpStream::connect((address, port)).is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rollout_example_deploys_over_ssh_from_a_yaml_inventory() {
    let Some(dir) = hosts_dir() else { return };
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let (port, user) = (read("port"), read("user"));
    let work = tempdir("coercion-rollout-ssh-test");
    let remote = work.join("remote");
    // A port free on the hosts' addresses, for the instances.
    let http_port = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 3), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hosts: String = (1..=6)
        .map(|i| {
            format!(
                "        host{i:04}: {{ ansible_host: 127.0.0.{}, ansible_port: {port}, ansible_user: {user} }}\n",
                i + 1
            )
        })
        .collect();
    let inventory = work.join("inventory.yml");
    std::fs::write(
        &inventory,
        format!(
            "all:\n  vars:\n    coercion_dir: {remote}\n    http_port: {http_port}\n  children:\n    fleet:\n      hosts:\n{hosts}",
            remote = remote.display()
        ),
    )
    .unwrap();
    let db = work.join("plans.db");
    let ssh_config = dir.join("ssh_config");
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--inventory",
            inventory.to_str().unwrap(),
            "--ssh-config",
            ssh_config.to_str().unwrap(),
            "--limit",
            "fleet:!host0001",
            "--serial",
            "1,50%",
            "--db",
            db.to_str().unwrap(),
            "--dir",
            work.join("local").to_str().unwrap(),
        ]
        .map(String::from)
        .into();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    // First run: five hosts (the pattern leaves host0001 out), batches of 1, 2 and 2; the
    // instances stay up.
    let first = args(&["--keep-running", "--release", "r1"]);
    let (ok, out) = run(&first.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{out}");
    assert!(out.contains("to 5 hosts over SSH"), "{out}");
    assert!(out.contains("Completed"), "{out}");
    for k in 3..=7 {
        assert!(
            listening(&format!("127.0.0.{k}"), http_port),
            "127.0.0.{k}:{http_port} does not answer after the rollout"
        );
    }
    assert!(
        !listening("127.0.0.2", http_port),
        "host0001 was excluded by the pattern, yet something answers there"
    );

    // A preview of the next release over SSH: each remote file is read and compared, nothing
    // is written (the configs still say r1), nothing is stored (two plans at the end).
    let check = args(&["--check", "--diff", "--release", "r2"]);
    let (ok, out) = run(&check.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{out}");
    assert_eq!(
        out.matches("= upload service no change").count(),
        5,
        "{out}"
    );
    assert_eq!(
        out.matches("~ upload config would change").count(),
        5,
        "{out}"
    );
    assert_eq!(out.matches("-version=r1\n").count(), 5, "{out}");
    assert_eq!(out.matches("+version=r2\n").count(), 5, "{out}");
    assert_eq!(
        out.matches("~ restart would change (coercion/ssh-command): would run on ")
            .count(),
        5,
        "{out}"
    );
    assert!(out.contains("checks: 6 passed, 0 failed"), "{out}");
    for i in 2..=6 {
        let config = remote.join(format!("host{i:04}/service.conf"));
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.starts_with("version=r1\n"),
            "{}: {text}",
            config.display()
        );
    }

    // Second run: the service binary is already there (uploads skipped), the instances are
    // restarted with the new version, and the deferred cleanup stops them and removes their
    // directories.
    let second = args(&[]);
    let (ok, out) = run(&second.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{out}");
    for k in 3..=7 {
        assert!(
            !listening(&format!("127.0.0.{k}"), http_port),
            "127.0.0.{k}:{http_port} still answers after the cleanup"
        );
    }
    for i in 2..=6 {
        let host_dir = remote.join(format!("host{i:04}"));
        assert!(
            !host_dir.exists(),
            "{} was not cleaned up",
            host_dir.display()
        );
    }

    // What the plans recorded: three batches, and in the second run every service upload was
    // skipped because the remote file was identical.
    let ws = Workstream::open(&db, Registry::from_inventory().unwrap())
        .await
        .unwrap();
    let mut plans = ws.list(&ListFilter::default()).await.unwrap();
    plans.sort_by_key(|p| p.id);
    assert_eq!(plans.len(), 2);
    let last = ws.read(plans[1].id).await.unwrap();
    let sizes: Vec<usize> = last.blocks().iter().map(|b| b.sequences().len()).collect();
    assert_eq!(sizes, [1, 2, 2]);
    for block in last.blocks() {
        for sequence in block.sequences() {
            let upload = &sequence.actions()[0];
            assert_eq!(upload.name(), "upload service");
            let resp = upload.response::<SshUpload>().unwrap();
            assert!(
                !resp.changed,
                "{}: the service upload was not skipped",
                sequence.name()
            );
        }
    }
    drop(ws);
    let _ = std::fs::remove_dir_all(&work);
}

fn tempdir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

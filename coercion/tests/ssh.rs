//! The SSH plugins against real sshd hosts on this machine.
//!
//! Needs the hosts of `scripts/ssh-hosts.sh --test` (scripts/test.sh starts them): it exports
//! `SSH_HOSTS_DIR`. Without it, every test fails when `CI` is set, and is skipped (with a loud
//! line) otherwise:
//!
//! ```text
//! N=6 bash scripts/ssh-hosts.sh --test cargo test -p coercion --features ssh --test ssh
//! ```
//!
//! Each test that counts connections uses hosts no other test touches (the pool is
//! process-wide): 127.0.0.2 and .3 the reuse test, .4 the reconnect test; the others share .5
//! and .6.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;

use coercion::plugins::codes;
use coercion::plugins::ssh::{
    SshCheck, SshCommand, SshCommandReq, SshCommandResp, SshTarget, SshUpload, SshUploadReq,
    connect_all,
};
use coercion::prelude::*;
use tokio_util::sync::CancellationToken;

/// The hosts started by `scripts/ssh-hosts.sh`.
struct Hosts {
    dir: PathBuf,
    port: u16,
    user: String,
}

impl Hosts {
    /// The hosts, or `None` (after a loud line) when the test is skipped.
    fn get(test: &str) -> Option<Hosts> {
        match std::env::var("SSH_HOSTS_DIR") {
            Ok(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                let read = |name: &str| {
                    std::fs::read_to_string(dir.join(name))
                        .unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()))
                        .trim()
                        .to_owned()
                };
                Some(Hosts {
                    port: read("port").parse().unwrap(),
                    user: read("user"),
                    dir,
                })
            }
            _ if std::env::var_os("CI").is_some() => panic!(
                "SSH_HOSTS_DIR is not set (and CI is): the SSH tests need real hosts. Run them \
                 through `scripts/ssh-hosts.sh --test cargo test -p coercion --features ssh --test ssh` \
                 (scripts/test.sh does)"
            ),
            _ => {
                eprintln!(
                    "!!!!!!!! SKIPPED {test}: SSH_HOSTS_DIR is not set — the SSH plugins were NOT \
                     tested (run through scripts/ssh-hosts.sh --test) !!!!!!!!"
                );
                None
            }
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    /// Host `k` (2 = 127.0.0.2), through the hosts' ssh_config.
    fn target(&self, k: u8) -> SshTarget {
        SshTarget::new(format!("127.0.0.{k}")).config(self.config())
    }

    /// How many TCP connections sshd accepted on 127.0.0.`k` since the hosts were ready.
    fn accepted(&self, k: u8) -> usize {
        let log = std::fs::read_to_string(self.dir.join("sshd.log")).unwrap();
        let after = log.split("--- ssh-hosts ready ---").nth(1).unwrap_or("");
        let needle = format!(" on 127.0.0.{k} port {} ", self.port);
        after
            .lines()
            .filter(|l| l.starts_with("Connection from ") && l.contains(&needle))
            .count()
    }

    /// Runs `script` on host `k` with the `ssh` binary: a connection of its own.
    fn ssh(&self, k: u8, script: &str) -> String {
        let out = Process::new("ssh")
            .arg("-F")
            .arg(self.config())
            .arg(format!("127.0.0.{k}"))
            .arg(script)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A copy of the ssh_config with `line` replaced by `with` (the first line that starts so).
    fn config_with(&self, name: &str, line: &str, with: &str) -> PathBuf {
        let text = std::fs::read_to_string(self.config()).unwrap();
        let changed: Vec<String> = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with(line) {
                    format!("  {with}")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        let path = self.dir.join(name);
        std::fs::write(&path, changed.join("\n") + "\n").unwrap();
        path
    }
}

fn ctx() -> Context {
    Context::detached(Duration::from_secs(60))
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), fastrand_u64())
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

async fn run(req: SshCommandReq) -> Result<SshCommandResp, PluginError> {
    SshCommand.execute(&ctx(), req).await
}

#[tokio::test]
async fn command_check_and_quoting() {
    let Some(hosts) = Hosts::get("command_check_and_quoting") else {
        return;
    };
    let t = hosts.target(5);
    let resp = run(SshCommandReq::new(t.clone(), "printf")
        .args(["%s|", "a b", "$(echo no)", "it's", "*"])
        .env("GREETING", "hello world")
        .cwd("/tmp"))
    .await
    .unwrap();
    assert_eq!(resp.stdout, "a b|$(echo no)|it's|*|");
    assert_eq!(resp.exit_code, 0);
    assert_eq!(resp.host, t.to_string());

    let resp = run(SshCommandReq::shell(
        t.clone(),
        "echo \"$GREETING from $(pwd) as $(id -un)\"; cat; echo err >&2; exit 3",
    )
    .env("GREETING", "hello world")
    .cwd("/tmp")
    .stdin("piped in\n")
    .success_codes([3]))
    .await
    .unwrap();
    assert_eq!(
        resp.stdout,
        format!("hello world from /tmp as {}\npiped in\n", hosts.user)
    );
    assert_eq!(resp.stderr, "err\n");

    // Output beyond the limit keeps its end.
    let resp = run(SshCommandReq::shell(t.clone(), "seq 1 10000").output_limit(10))
        .await
        .unwrap();
    assert!(resp.truncated);
    assert_eq!(resp.stdout, "999\n10000\n");

    // A failing command: the exit code and the tail of stderr, naming the host.
    let e = run(SshCommandReq::shell(t.clone(), "echo boom >&2; exit 7"))
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::EXIT_CODE);
    assert!(!e.permanent);
    assert!(e.message.contains("exited with code 7"), "{}", e.message);
    assert!(e.message.contains("stderr: boom"), "{}", e.message);
    assert!(e.message.contains("127.0.0.5"), "{}", e.message);

    // The check passes and fails on its exit code.
    SshCheck
        .execute(
            &ctx(),
            SshCommandReq::new(t.clone(), "test").args(["-d", "/tmp"]),
        )
        .await
        .unwrap();
    let e = SshCheck
        .execute(
            &ctx(),
            SshCommandReq::new(t, "test").args(["-d", "/nonexistent"]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::EXIT_CODE);
}

#[tokio::test]
async fn upload_is_atomic_with_mode_and_skipped_when_identical() {
    let Some(hosts) = Hosts::get("upload_is_atomic_with_mode_and_skipped_when_identical") else {
        return;
    };
    let t = hosts.target(6);
    let dir = format!("/tmp/{}", unique("coercion-ssh-upload"));
    hosts.ssh(6, &format!("mkdir -p {dir}"));
    let path = format!("{dir}/config.toml");

    let first = SshUpload
        .execute(
            &ctx(),
            SshUploadReq::text(t.clone(), &path, "port = 8080\n").mode(0o640),
        )
        .await
        .unwrap();
    assert!(first.changed);
    assert_eq!(first.bytes, 12);
    assert_eq!(
        hosts.ssh(6, &format!("cat {path}; stat -c %a {path}")),
        "port = 8080\n640\n"
    );
    let sha = hosts.ssh(6, &format!("sha256sum {path} | cut -c1-64"));
    assert_eq!(first.sha256, sha.trim());

    let again = SshUpload
        .execute(
            &ctx(),
            SshUploadReq::text(t.clone(), &path, "port = 8080\n").mode(0o640),
        )
        .await
        .unwrap();
    assert!(!again.changed, "identical contents and mode: nothing to do");
    assert_eq!(again.sha256, first.sha256);

    // Only the mode differs: written again.
    let mode = SshUpload
        .execute(
            &ctx(),
            SshUploadReq::text(t.clone(), &path, "port = 8080\n").mode(0o600),
        )
        .await
        .unwrap();
    assert!(mode.changed);
    assert_eq!(hosts.ssh(6, &format!("stat -c %a {path}")), "600\n");

    // Bytes from a local file; no temporary file is left behind.
    let local = std::env::temp_dir().join(unique("coercion-ssh-local"));
    std::fs::write(&local, [0u8, 255, 1, 2]).unwrap();
    let bin = SshUpload
        .execute(
            &ctx(),
            SshUploadReq::local_file(t.clone(), format!("{dir}/blob"), &local),
        )
        .await
        .unwrap();
    std::fs::remove_file(&local).unwrap();
    assert!(bin.changed);
    assert_eq!(
        hosts.ssh(6, &format!("od -An -tu1 {dir}/blob | tr -s ' '")),
        " 0 255 1 2\n"
    );
    assert_eq!(hosts.ssh(6, &format!("ls -A {dir}")), "blob\nconfig.toml\n");

    // A missing directory is a clear failure.
    let e = SshUpload
        .execute(
            &ctx(),
            SshUploadReq::text(t, format!("{dir}/no/such/file"), "x"),
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("127.0.0.6"), "{}", e.message);
    assert!(e.message.contains("No such file"), "{}", e.message);
    // ...unless the upload creates it.
    let deep = SshUpload
        .execute(
            &ctx(),
            SshUploadReq::text(hosts.target(6), format!("{dir}/no/such/file"), "x").create_dirs(),
        )
        .await
        .unwrap();
    assert!(deep.changed);
    assert_eq!(hosts.ssh(6, &format!("cat {dir}/no/such/file")), "x");
    // A path that is a directory is refused, not written into.
    let e = SshUpload
        .execute(
            &ctx(),
            SshUploadReq::text(hosts.target(6), format!("{dir}/no/such"), "x"),
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("is a directory"), "{}", e.message);
    assert_eq!(hosts.ssh(6, &format!("ls -A {dir}/no/such")), "file\n");
    hosts.ssh(6, &format!("rm -rf {dir}"));
}

#[tokio::test]
async fn a_plan_of_many_actions_uses_one_connection_per_host() {
    let Some(hosts) = Hosts::get("a_plan_of_many_actions_uses_one_connection_per_host") else {
        return;
    };
    let before = (hosts.accepted(2), hosts.accepted(3));
    let dir = format!("/tmp/{}", unique("coercion-ssh-reuse"));
    let sequences = [2u8, 3].map(|k| {
        let t = hosts.target(k);
        let mut seq = Sequence::builder(format!("127.0.0.{k}"))
            .action(ActionSpec::new::<SshCommand>(
                "mkdir",
                SshCommandReq::new(t.clone(), "mkdir").args(["-p", &dir]),
            ))
            .action(ActionSpec::new::<SshUpload>(
                "upload",
                SshUploadReq::text(t.clone(), format!("{dir}/{k}.txt"), "ok\n"),
            ));
        for i in 0..8 {
            seq = seq.action(ActionSpec::new::<SshCommand>(
                format!("echo {i}"),
                SshCommandReq::new(t.clone(), "echo").arg(i.to_string()),
            ));
        }
        seq.action(ActionSpec::new::<SshCommand>(
            "cleanup",
            SshCommandReq::new(t, "rm").args(["-rf", &dir]),
        ))
    });
    let plan = Plan::builder("reuse")
        .pre_checks(Checks::builder().action(CheckSpec::new::<SshCheck>(
            "reachable",
            SshCommandReq::new(hosts.target(2), "true"),
        )))
        .block(Block::builder("hosts").concurrency(2).sequences(sequences))
        .post_checks(Checks::builder().action(CheckSpec::new::<SshCheck>(
            "still there",
            SshCommandReq::new(hosts.target(3), "true"),
        )))
        .build();
    let done = coercion::testing::run_in_memory(Registry::from_inventory().unwrap(), plan)
        .await
        .unwrap();
    assert_eq!(
        done.status(),
        Status::Completed,
        "{}",
        coercion::testing::outline(&done)
    );
    let echo = &done.blocks()[0].sequences()[0].actions()[5];
    assert_eq!(echo.response::<SshCommand>().unwrap().stdout, "3\n");
    let after = (hosts.accepted(2), hosts.accepted(3));
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "one TCP connection per host for 12 actions each"
    );
}

#[tokio::test]
async fn connect_all_opens_ahead_and_reports_each_host() {
    let Some(hosts) = Hosts::get("connect_all_opens_ahead_and_reports_each_host") else {
        return;
    };
    let closed = closed_port();
    let results = connect_all(
        [
            hosts.target(5),
            hosts.target(6),
            SshTarget::new("127.0.0.1")
                .port(closed)
                .config(hosts.config()),
        ],
        4,
    )
    .await;
    assert_eq!(results.len(), 3);
    assert!(results[0].1.is_ok() && results[1].1.is_ok(), "{results:?}");
    let e = results[2].1.as_ref().unwrap_err();
    assert_eq!(e.code, codes::SSH_UNREACHABLE);
}

#[tokio::test]
async fn a_dropped_connection_is_opened_again() {
    let Some(hosts) = Hosts::get("a_dropped_connection_is_opened_again") else {
        return;
    };
    let t = hosts.target(4);
    let before = hosts.accepted(4);
    run(SshCommandReq::new(t.clone(), "true")).await.unwrap();
    let socket = coercion::plugins::ssh::control_socket(&t).await.unwrap();
    // Kill the master: `ssh -O check` tells its pid.
    let check = Process::new("ssh")
        .arg("-S")
        .arg(&socket)
        .args(["-O", "check", "x"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    let pid: i32 = said
        .split("pid=")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("ssh -O check said {said:?}"));
    // SAFETY: plain kill(2) of the ssh master this process started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let resp = run(SshCommandReq::new(t.clone(), "echo").arg("again"))
        .await
        .unwrap();
    assert_eq!(resp.stdout, "again\n");
    assert_eq!(
        hosts.accepted(4) - before,
        2,
        "the first connection, then one new one"
    );
    run(SshCommandReq::new(t, "true")).await.unwrap();
    assert_eq!(hosts.accepted(4) - before, 2, "and that one is reused");
}

#[tokio::test]
async fn host_key_mismatch_names_the_known_hosts_line() {
    let Some(hosts) = Hosts::get("host_key_mismatch_names_the_known_hosts_line") else {
        return;
    };
    let other = hosts.dir.join(unique("other_host_key"));
    keygen(&other);
    let key = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let key: Vec<&str> = key.split_whitespace().take(2).collect();
    let known = hosts.dir.join(unique("known_hosts_wrong"));
    std::fs::write(
        &known,
        format!(
            "# pinned by hand\n[127.0.0.5]:{} {}\n",
            hosts.port,
            key.join(" ")
        ),
    )
    .unwrap();
    let config = hosts.config_with(
        &unique("ssh_config_wrong_key"),
        "UserKnownHostsFile",
        &format!("UserKnownHostsFile {}", known.display()),
    );
    let e = run(SshCommandReq::new(hosts.target(5).config(&config), "true"))
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::SSH_HOST_KEY, "{}", e.message);
    assert!(e.permanent);
    assert!(e.message.contains("127.0.0.5"), "{}", e.message);
    assert!(
        e.message.contains(&format!("{}:2", known.display())),
        "names the file and line: {}",
        e.message
    );
}

#[tokio::test]
async fn a_refused_key_is_an_authentication_error() {
    let Some(hosts) = Hosts::get("a_refused_key_is_an_authentication_error") else {
        return;
    };
    let wrong = hosts.dir.join(unique("wrong_id"));
    keygen(&wrong);
    let config = hosts.config_with(
        &unique("ssh_config_wrong_id"),
        "IdentityFile",
        &format!("IdentityFile {}", wrong.display()),
    );
    let e = run(SshCommandReq::new(hosts.target(6).config(&config), "true"))
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::SSH_AUTH, "{}", e.message);
    assert!(e.permanent);
    assert!(
        e.message
            .contains("authentication to 127.0.0.6 was refused"),
        "{}",
        e.message
    );
    assert!(e.message.contains("Permission denied"), "{}", e.message);
}

#[tokio::test]
async fn an_unreachable_address_is_retryable() {
    let Some(hosts) = Hosts::get("an_unreachable_address_is_retryable") else {
        return;
    };
    let port = closed_port();
    let e = run(SshCommandReq::new(
        SshTarget::new("127.0.0.1")
            .port(port)
            .config(hosts.config()),
        "true",
    ))
    .await
    .unwrap_err();
    assert_eq!(e.code, codes::SSH_UNREACHABLE, "{}", e.message);
    assert!(!e.permanent);
    assert!(
        e.message
            .contains(&format!("cannot reach 127.0.0.1:{port}")),
        "{}",
        e.message
    );
    assert!(e.message.contains("Connection refused"), "{}", e.message);
}

#[tokio::test]
async fn a_timeout_kills_the_remote_process_group() {
    let Some(hosts) = Hosts::get("a_timeout_kills_the_remote_process_group") else {
        return;
    };
    let marker = unique("timeout-marker");
    // A child in the background too: the whole group must go.
    let script = format!("sleep 600 & sleep 601; : {marker}");
    let started = std::time::Instant::now();
    let e = run(SshCommandReq::shell(hosts.target(5), script).timeout(Duration::from_millis(800)))
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::TIMED_OUT, "{}", e.message);
    assert!(
        e.message.contains("did not finish within 800ms"),
        "{}",
        e.message
    );
    assert!(e.message.contains("127.0.0.5"), "{}", e.message);
    assert!(started.elapsed() < Duration::from_secs(5));
    let left = hosts.ssh(
        5,
        &format!(
            "pgrep -f '[{}]{}' ; pgrep -fx 'sleep 60[01]'",
            &marker[..1],
            &marker[1..]
        ),
    );
    assert_eq!(left, "", "no remote process is left");
}

#[tokio::test]
async fn a_stop_kills_the_remote_process_group() {
    let Some(hosts) = Hosts::get("a_stop_kills_the_remote_process_group") else {
        return;
    };
    let marker = unique("stop-marker");
    let token = CancellationToken::new();
    let ctx = Context::detached(Duration::from_secs(60)).with_cancellation(token.clone());
    let stopper = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        stopper.cancel();
    });
    let e = SshCommand
        .execute(
            &ctx,
            SshCommandReq::shell(hosts.target(6), format!("sleep 602; : {marker}")),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::CANCELLED, "{}", e.message);
    assert!(e.permanent);
    let left = hosts.ssh(6, &format!("pgrep -f '[{}]{}'", &marker[..1], &marker[1..]));
    assert_eq!(left, "");
}

#[tokio::test]
async fn an_abandoned_attempt_kills_the_remote_process_group() {
    let Some(hosts) = Hosts::get("an_abandoned_attempt_kills_the_remote_process_group") else {
        return;
    };
    let marker = unique("drop-marker");
    let req = SshCommandReq::shell(hosts.target(6), format!("sleep 603; : {marker}"));
    // The engine drops the attempt's future when the action's timeout expires.
    let dropped = tokio::time::timeout(Duration::from_millis(800), run(req)).await;
    assert!(dropped.is_err());
    let pattern = format!("[{}]{}", &marker[..1], &marker[1..]);
    let mut left = String::from("?");
    for _ in 0..30 {
        left = hosts.ssh(6, &format!("pgrep -f '{pattern}'"));
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, "", "the drop guard killed the group");
}

/// Everything the SSH plugins log at any level, for the secret test.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_secret_is_never_in_ps_output_nor_logs() {
    let Some(hosts) = Hosts::get("a_secret_is_never_in_ps_output_nor_logs") else {
        return;
    };
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // The process-wide subscriber (no other test here sets one): a scoped one missed events
    // now and then (tracing's callsite cache, rebuilt by other threads' tests).
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only subscriber of this binary");

    let secret = unique("hunter2-secret");
    let marker = unique("secret-marker");
    let t = hosts.target(5);
    // The command reads the secret from its stdin, then sleeps so `ps` can look.
    let req = SshCommandReq::shell(
        t.clone(),
        format!("read -r pw; read -r rest; echo \"${{#pw}} $rest\"; sleep 2; : {marker}"),
    )
    .secret_stdin(Secret::new(secret.clone()))
    .stdin("after the secret\n");
    let plan =
        Plan::builder("secret")
            .block(Block::builder("b").sequences([
                Sequence::builder("s").action(ActionSpec::new::<SshCommand>("use", req)),
            ]))
            .build();
    let ws = Workstream::in_memory(Registry::from_inventory().unwrap())
        .await
        .unwrap();
    let id = ws.submit_and_start(plan).await.unwrap();
    // While it sleeps: every process on the host, with its arguments.
    let mut seen = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = hosts.ssh(5, "ps -eo args");
        if seen.contains(&marker) {
            break;
        }
    }
    assert!(seen.contains(&marker), "the command was seen running");
    assert!(
        !seen.contains(&secret),
        "the secret is in the remote ps output"
    );
    let local = Process::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&local.stdout).contains(&secret),
        "in the local ps output"
    );

    let done = ws.wait(id).await.unwrap();
    assert_eq!(
        done.status(),
        Status::Completed,
        "{}",
        coercion::testing::outline(&done)
    );
    let resp = done.blocks()[0].sequences()[0].actions()[0]
        .response::<SshCommand>()
        .unwrap();
    assert_eq!(resp.stdout, format!("{} after the secret\n", secret.len()));
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logged.contains("ssh: running"),
        "the plugin logged: {logged}"
    );
    assert!(!logged.contains(&secret), "the secret is in the logs");
}

#[tokio::test]
async fn become_runs_as_the_other_user() {
    let Some(hosts) = Hosts::get("become_runs_as_the_other_user") else {
        return;
    };
    let Ok(user) = std::fs::read_to_string(hosts.dir.join("become_user")) else {
        eprintln!(
            "!!!!!!!! SKIPPED become_runs_as_the_other_user: no become user (ssh-hosts.sh --test as root creates one) !!!!!!!!"
        );
        return;
    };
    let user = user.trim();
    let resp = run(SshCommandReq::new(hosts.target(5), "id")
        .arg("-un")
        .become_user(user))
    .await
    .unwrap();
    assert_eq!(resp.stdout.trim(), user);

    // A timeout reaches the command run as the other user too.
    let marker = unique("become-marker");
    let e = run(
        SshCommandReq::shell(hosts.target(5), format!("sleep 604; : {marker}"))
            .become_user(user)
            .timeout(Duration::from_millis(800)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, codes::TIMED_OUT);
    let left = hosts.ssh(5, &format!("pgrep -f '[{}]{}'", &marker[..1], &marker[1..]));
    assert_eq!(left, "");

    // An upload owned by that user (the login user is root in the test command).
    if hosts.user == "root" {
        let path = format!("/tmp/{}", unique("coercion-ssh-owned"));
        let up = SshUpload
            .execute(
                &ctx(),
                SshUploadReq::text(hosts.target(5), &path, "x\n")
                    .owner(user)
                    .mode(0o600),
            )
            .await
            .unwrap();
        assert!(up.changed);
        assert_eq!(
            hosts.ssh(5, &format!("stat -c '%U %a' {path}")),
            format!("{user} 600\n")
        );
        let again = SshUpload
            .execute(
                &ctx(),
                SshUploadReq::text(hosts.target(5), &path, "x\n")
                    .owner(user)
                    .mode(0o600),
            )
            .await
            .unwrap();
        assert!(!again.changed);
        hosts.ssh(5, &format!("rm -f {path}"));
    }

    // A user sudo does not allow: a clear failure.
    let e = run(SshCommandReq::new(hosts.target(5), "true").become_user("nobody-such-user"))
        .await
        .unwrap_err();
    assert!(e.message.contains("sudo"), "{}", e.message);
}

fn keygen(path: &Path) {
    let status = Process::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A port on 127.0.0.1 nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_host_wait_for_a_channel() {
    let Some(hosts) = Hosts::get("concurrent_commands_on_one_host_wait_for_a_channel") else {
        return;
    };
    // sshd refuses channels beyond its MaxSessions (10 by default): 20 commands at once on one
    // host must all succeed, at most 8 of them running at a time on its connection.
    let dir = format!("/tmp/{}", unique("coercion-ssh-channels"));
    hosts.ssh(5, &format!("mkdir -p {dir}"));
    let script =
        format!("touch {dir}/r.$$; sleep 0.3; ls {dir} | grep -c '^r\\.'; rm -f {dir}/r.$$");
    let runs = (0..20).map(|_| {
        let req = SshCommandReq::shell(hosts.target(5), script.clone());
        tokio::spawn(async move { run(req).await })
    });
    let mut most = 0;
    for run in futures_util::future::join_all(runs).await {
        let resp = run.unwrap().expect("every command gets a channel in turn");
        most = most.max(resp.stdout.trim().parse::<usize>().unwrap());
    }
    hosts.ssh(5, &format!("rm -rf {dir}"));
    assert!(most <= 8, "{most} commands ran at once on one connection");
    assert!(
        most >= 2,
        "the commands did not run concurrently at all ({most})"
    );
}

#[tokio::test]
async fn creates_and_removes_make_a_remote_command_predictable_and_previewable() {
    use coercion::{Preview, Previews};
    let Some(hosts) =
        Hosts::get("creates_and_removes_make_a_remote_command_predictable_and_previewable")
    else {
        return;
    };
    let t = hosts.target(6);
    let dir = format!("/tmp/{}", unique("creates"));
    let marker = format!("{dir}/installed marker");
    let install = SshCommandReq::shell(
        t.clone(),
        format!("mkdir -p '{dir}' && touch '{marker}' && echo installed"),
    )
    .creates(&marker);

    // Not there yet: it would run (the exact argv), and it does.
    let preview = SshCommand.preview(&ctx(), &install).await.unwrap();
    assert_eq!(
        preview,
        Preview::would_change(format!(
            "would run on {t}: [\"sh\", \"-c\", \"mkdir -p '{dir}' && touch '{marker}' && echo installed\"]"
        ))
    );
    let resp = run(install.clone()).await.unwrap();
    assert_eq!(
        (resp.skipped.as_deref(), resp.stdout.as_str()),
        (None, "installed\n")
    );

    // There now: it would not run, and it does not.
    let preview = SshCommand.preview(&ctx(), &install).await.unwrap();
    assert_eq!(
        preview,
        Preview::no_change(format!("would not run on {t}: {marker} exists (`creates`)"))
    );
    let resp = run(install).await.unwrap();
    assert_eq!(resp.skipped, Some(format!("{marker} exists (`creates`)")));
    assert_eq!((resp.exit_code, resp.stdout.as_str()), (0, ""));

    // `removes`: runs only while the path exists.
    let remove = SshCommandReq::shell(t.clone(), format!("rm -rf '{dir}'")).removes(&marker);
    assert!(matches!(
        SshCommand.preview(&ctx(), &remove).await.unwrap(),
        Preview::WouldChange { .. }
    ));
    assert_eq!(run(remove.clone()).await.unwrap().skipped, None);
    assert_eq!(
        hosts.ssh(6, &format!("test -e '{marker}' && echo there || echo gone")),
        "gone\n"
    );
    assert_eq!(
        run(remove).await.unwrap().skipped,
        Some(format!("{marker} does not exist (`removes`)"))
    );
}

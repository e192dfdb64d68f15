#!/usr/bin/env bash
# The README's test command: installs and starts what the tests need, then runs the whole suite.
#
#   ./scripts/test.sh
#
# 1. The minimal build (`--no-default-features`: engine, macros, memory store, command/file/tcp/
#    sleep plugins; no SQLite, HTTP or crypto) still compiles. It shares the target directory,
#    so it costs seconds.
# 2. Debian's Chromium + ChromeDriver and the Node packages of tests/browser/ (the web UI tests),
#    installed when missing (scripts/browser-deps.sh).
# 3. A throwaway PostgreSQL cluster on loopback for the multi-worker tests, installed from
#    Debian's packages when missing, started for the run and removed after it
#    (scripts/with-postgres.sh; it exports COERCION_PG_URL).
# 4. N=6 real SSH hosts on 127.0.0.2-7 for the SSH plugins' tests (scripts/ssh-hosts.sh --test:
#    installs openssh-server and sudo when missing, throwaway keys, a throwaway `become` user
#    when run as root; it exports SSH_HOSTS_DIR and removes everything after the run).
# 5. Every test of the workspace — unit, integration, trybuild UI suites, property tests, crash
#    tests, the CLI and browser tests, the PostgreSQL tests — and every doctest, README included;
#    then the API docs with every feature and warnings denied.
set -euo pipefail
cd "$(dirname "$0")/.."

FEATURES="coercion/cli,coercion/ssh,coercion-workspace/postgres,coercion-workspace/otel"

cargo check -p coercion --no-default-features --lib
bash scripts/browser-deps.sh
exec env N=6 bash scripts/ssh-hosts.sh --test bash scripts/with-postgres.sh bash -c "
  set -e
  # The rollout and otel examples' own binaries, which tests/rollout_ssh.rs and
  # tests/otel_example.rs run (--all-targets builds
  # examples only as test harnesses).
  cargo build --example rollout --example otel --features $FEATURES
  cargo test --workspace --all-targets --features $FEATURES
  cargo test --workspace --doc --features $FEATURES
  # The API docs as docs.rs builds them: every feature, warnings (broken links, missing docs)
  # denied.
  RUSTDOCFLAGS='-D warnings' cargo doc -p coercion --all-features --no-deps
"

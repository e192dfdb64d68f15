#!/usr/bin/env bash
# N "hosts" reachable over real SSH on this machine, for the SSH plugins' tests and for demos:
# Debian's sshd listening on 127.0.0.2 … 127.0.0.(N+1) (one sshd per 16 addresses, its limit),
# a throwaway host key, a throwaway user key and a pinned known_hosts file.
#
#   N=20 scripts/ssh-hosts.sh COMMAND...      run COMMAND with SSH_HOSTS_DIR=DIR exported, then
#                                             stop sshd and remove DIR (exit status: COMMAND's)
#   N=20 scripts/ssh-hosts.sh --start         start the hosts, print DIR, leave them running
#   scripts/ssh-hosts.sh --stop DIR           stop hosts started with --start and remove DIR
#   scripts/ssh-hosts.sh --test …             test mode (either form above), see below
#
# DIR/inventory.ini  Ansible INI, group [fleet]: hostNNNN ansible_host=127.0.0.K ansible_port=PORT
#                    ansible_user=USER (USER: the user running this script)
# DIR/ssh_config     Host 127.0.0.*: Port, User, IdentityFile, UserKnownHostsFile,
#                    StrictHostKeyChecking yes, BatchMode yes — use it with `ssh -F DIR/ssh_config`
# DIR/id_ed25519     the user key; DIR/known_hosts every host's key, pinned; DIR/host_ed25519.pub
# DIR/sshd.log       sshd's log (LogLevel $SSHD_LOGLEVEL, default ERROR; VERBOSE logs every
#                    accepted connection with the address it reached: "… on 127.0.0.K port PORT")
# DIR/port, DIR/user the port and login user; DIR/become_user (test mode, root only) see below
#
# Environment: N (default 20, at most 250), SSH_PORT (default: 2222, or the next free port up to
# 2299 when something already listens there), SSHD_LOGLEVEL, and SSH_HOSTS_USER: log in as that
# user instead of the one running the script. As root, a missing SSH_HOSTS_USER is created for
# the run (a throwaway system user with /bin/sh as its shell and a home directory in DIR) and
# removed after it. Every remote command starts the login user's shell, which for bash reads
# ~/.bashrc: on a machine whose own ~/.bashrc is slow (pyenv, nvm, …) that dominates the cost of a
# command over an open connection (measured here: 35 ms per `ssh … true` through a ControlMaster
# as a /bin/sh user, 140-260 ms as root with a pyenv-initialising ~/.bashrc), so benchmarks
# should use e.g. SSH_HOSTS_USER=coercion-ssh.
#
# SSH_KEX (unset by default: OpenSSH's own choice) is written into the ssh_config as
# KexAlgorithms, for both sides of a benchmark alike: OpenSSH 9.x negotiates the post-quantum
# hybrid sntrup761x25519-sha512 by default, whose key generation costs ~160 ms of client CPU per
# connection on this machine kind (curve25519-sha256: ~10 ms), which dominates opening 100
# connections on 2 cores.
#
# Test mode (--test), what scripts/test.sh uses: SSHD_LOGLEVEL defaults to VERBOSE (the
# connection-reuse test counts accepted connections per address), and — only in this mode, only
# when run as root — a throwaway system user `coercion-become` is created (if missing) with a
# sudoers drop-in /etc/sudoers.d/coercion-ssh-hosts that lets the login user run
# `sudo -n -u coercion-become …` without a password, for the `become_user` tests. Both are removed
# again on exit when this run created them (not with --start; --stop removes them).
#
# Installs openssh-server (and sudo, in test mode) from Debian's packages when missing.
set -euo pipefail

BECOME_USER=coercion-become
SUDOERS=/etc/sudoers.d/coercion-ssh-hosts

stop_dir() {
  local dir=$1 f
  for f in "$dir"/sshd.*.pid; do
    [ -f "$f" ] || continue
    # The listener, and the per-connection sshd processes it forked (so that clients' master
    # connections end now rather than linger).
    pkill -P "$(cat "$f")" 2>/dev/null || true
    kill "$(cat "$f")" 2>/dev/null || true
  done
  # Only what this run created; a throwaway user's leftover processes (instances a demo left
  # running) are ended first, or userdel refuses.
  if [ -f "$dir/created_sudoers" ]; then
    rm -f "$SUDOERS"
  fi
  if [ -f "$dir/created_become_user" ]; then
    pkill -KILL -u "$BECOME_USER" 2>/dev/null || true
    userdel "$BECOME_USER" 2>/dev/null || true
  fi
  if [ -f "$dir/created_login_user" ]; then
    pkill -KILL -u "$(cat "$dir/created_login_user")" 2>/dev/null || true
    userdel "$(cat "$dir/created_login_user")" 2>/dev/null || true
  fi
  rm -rf "$dir"
}

TEST=0
MODE=run
while [ "$#" -gt 0 ]; do
  case "$1" in
    --test) TEST=1; shift ;;
    --start) MODE=start; shift ;;
    --stop)
      [ "$#" -eq 2 ] && [ -f "$2/inventory.ini" ] || { echo "usage: $0 --stop DIR" >&2; exit 2; }
      stop_dir "$2"
      exit 0 ;;
    *) break ;;
  esac
done
if [ "$MODE" = run ] && [ "$#" -eq 0 ]; then
  echo "usage: $0 [--test] COMMAND... | $0 [--test] --start | $0 --stop DIR" >&2
  exit 2
fi
[ "$TEST" = 1 ] && SSHD_LOGLEVEL=${SSHD_LOGLEVEL:-VERBOSE}

N=${N:-20}
[ "$N" -ge 1 ] && [ "$N" -le 250 ] || { echo "ssh-hosts: N must be 1-250 (127.0.0.2-251)" >&2; exit 2; }

apt_install() {
  [ "$(id -u)" = 0 ] || { echo "ssh-hosts: $* missing and not root: install it (apt-get install $*)" >&2; exit 1; }
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! command -v sshd >/dev/null && [ ! -x /usr/sbin/sshd ]; then
  apt_install openssh-server openssh-client
fi
command -v ssh >/dev/null || apt_install openssh-client
SSHD=$(command -v sshd || echo /usr/sbin/sshd)

# A port free on every address we use (bash's /dev/tcp: a connection means something listens).
listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
port_free() {
  local i
  for i in $(seq 2 $((N + 1))); do
    if listening "127.0.0.$i" "$1"; then return 1; fi
  done
}
if [ -n "${SSH_PORT:-}" ]; then
  PORT=$SSH_PORT
  port_free "$PORT" || { echo "ssh-hosts: something already listens on port $PORT of 127.0.0.2-$((N + 1))" >&2; exit 1; }
else
  PORT=
  for p in $(seq 2222 2299); do
    if port_free "$p"; then PORT=$p; break; fi
  done
  [ -n "$PORT" ] || { echo "ssh-hosts: no free port in 2222-2299; set SSH_PORT" >&2; exit 1; }
fi

DIR=$(mktemp -d /tmp/ssh-hosts.XXXXXX)
chmod 700 "$DIR"
if [ "$MODE" = run ]; then
  trap 'stop_dir "$DIR"' EXIT
else
  trap '[ "${STARTED:-}" = 1 ] || stop_dir "$DIR"' EXIT
fi
USER_NAME=${SSH_HOSTS_USER:-$(id -un)}
if ! id "$USER_NAME" >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "ssh-hosts: no user $USER_NAME (and not root to create it)" >&2; exit 1; }
  mkdir -p "$DIR/home"
  useradd --system --home-dir "$DIR/home" --shell /bin/sh "$USER_NAME"
  usermod -p '*' "$USER_NAME"   # not locked: sshd without PAM refuses locked accounts
  chown "$USER_NAME" "$DIR/home"
  echo "$USER_NAME" > "$DIR/created_login_user"
fi
if [ "$USER_NAME" != "$(id -un)" ]; then
  # sshd reads authorized_keys as the login user.
  chmod 711 "$DIR"
fi
echo "$PORT" > "$DIR/port"
echo "$USER_NAME" > "$DIR/user"

if [ "$TEST" = 1 ] && [ "$(id -u)" = 0 ]; then
  command -v sudo >/dev/null || apt_install sudo
  if ! id "$BECOME_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /bin/sh "$BECOME_USER"
    touch "$DIR/created_become_user"
  fi
  if [ ! -f "$SUDOERS" ]; then
    echo "$USER_NAME ALL=($BECOME_USER) NOPASSWD: ALL" > "$SUDOERS.tmp"
    chmod 0440 "$SUDOERS.tmp"
    visudo -cq -f "$SUDOERS.tmp" && mv "$SUDOERS.tmp" "$SUDOERS"
    touch "$DIR/created_sudoers"
  fi
  echo "$BECOME_USER" > "$DIR/become_user"
fi

ssh-keygen -q -t ed25519 -N '' -f "$DIR/host_ed25519" -C host
ssh-keygen -q -t ed25519 -N '' -f "$DIR/id_ed25519" -C user
cp "$DIR/id_ed25519.pub" "$DIR/authorized_keys"
chmod 644 "$DIR/authorized_keys"
mkdir -p /run/sshd 2>/dev/null || true
for first in $(seq 2 16 $((N + 1))); do
  last=$(( first + 15 < N + 1 ? first + 15 : N + 1 ))
  {
    echo "Port $PORT"
    for i in $(seq "$first" "$last"); do echo "ListenAddress 127.0.0.$i"; done
    echo "HostKey $DIR/host_ed25519"
    echo "PidFile $DIR/sshd.$first.pid"
    echo "AuthorizedKeysFile $DIR/authorized_keys"
    echo "PasswordAuthentication no"
    echo "KbdInteractiveAuthentication no"
    echo "PermitRootLogin prohibit-password"
    echo "StrictModes no"
    echo "UsePAM no"
    echo "UseDNS no"
    echo "MaxStartups 1000:30:2000"
    echo "MaxSessions 200"
    echo "Subsystem sftp internal-sftp"
    echo "LogLevel ${SSHD_LOGLEVEL:-ERROR}"
  } > "$DIR/sshd_config.$first"
  "$SSHD" -f "$DIR/sshd_config.$first" -E "$DIR/sshd.log"
done

hostkey=$(cut -d' ' -f1,2 "$DIR/host_ed25519.pub")
: > "$DIR/known_hosts"
echo "[fleet]" > "$DIR/inventory.ini"
for i in $(seq 1 "$N"); do
  ip=127.0.0.$((i + 1))
  echo "[$ip]:$PORT $hostkey" >> "$DIR/known_hosts"
  printf 'host%04d ansible_host=%s ansible_port=%s ansible_user=%s\n' "$i" "$ip" "$PORT" "$USER_NAME" >> "$DIR/inventory.ini"
done
cat > "$DIR/ssh_config" <<CFG
Host 127.0.0.*
  Port $PORT
  User $USER_NAME
  IdentityFile $DIR/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $DIR/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
${SSH_KEX:+  KexAlgorithms $SSH_KEX}
CFG

# Wait until every sshd answers (the last address of each).
for first in $(seq 2 16 $((N + 1))); do
  last=$(( first + 15 < N + 1 ? first + 15 : N + 1 ))
  for _ in $(seq 50); do
    ssh -F "$DIR/ssh_config" "127.0.0.$last" true 2>/dev/null && break
    sleep 0.1
  done
  ssh -F "$DIR/ssh_config" "127.0.0.$last" true || {
    cat "$DIR/sshd.log" >&2
    echo "ssh-hosts: sshd on 127.0.0.$first-$last did not come up" >&2
    exit 1
  }
done
# The readiness probes above are not the tests' connections.
[ "$TEST" = 1 ] && echo "--- ssh-hosts ready ---" >> "$DIR/sshd.log"
echo "ssh-hosts: $N hosts on 127.0.0.2-127.0.0.$((N + 1)):$PORT (inventory: $DIR/inventory.ini, ssh_config: $DIR/ssh_config)" >&2

if [ "$MODE" = start ]; then
  STARTED=1
  echo "$DIR"
  exit 0
fi
export SSH_HOSTS_DIR="$DIR"
set +e
"$@"
status=$?
exit "$status"

#!/usr/bin/env bash
# Side by side: the Ansible peer (../shared/peers/ansible) and our `rollout` bench workload on the
# same N hosts, alternating one run of each, RUNS times; prints both medians and the ratio.
#
#   scripts/vs-ansible.sh                          # local hosts: N = 20 and 100, 5 runs each
#   scripts/vs-ansible.sh --transport ssh          # N real SSH hosts on loopback (scripts/ssh-hosts.sh)
#   NS="20" RUNS=3 scripts/vs-ansible.sh --transport ssh
#   SSH_KEX=curve25519-sha256 scripts/vs-ansible.sh --transport ssh   # both sides, see ssh-hosts.sh
#
# Local: Ansible with `ansible_connection=local`; ours is `bench rollout --hosts N`.
# SSH: scripts/ssh-hosts.sh starts N sshd hosts (127.0.0.2 …) once per N and writes an Ansible
# inventory and an ssh_config. Ansible runs with pipelining and ControlPersist (its fastest
# honest setting, see the peer's header); ours is `bench rollout --inventory FILE --ssh-config
# FILE`, whose `wall_s` counts from before the first connection. Both sides are timed as whole
# processes here (the figures printed are process wall times), so start-up costs count on both.
#
# The Ansible side creates its own virtualenv from PyPI on first use (ansible-core, see
# peers/ansible/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
TRANSPORT=local
while [ $# -gt 0 ]; do
  case "$1" in
    --transport) TRANSPORT="${2:-}"; shift 2 ;;
    --transport=*) TRANSPORT="${1#--transport=}"; shift ;;
    *) echo "usage: scripts/vs-ansible.sh [--transport local|ssh]" >&2; exit 2 ;;
  esac
done
case "$TRANSPORT" in local|ssh) ;; *) echo "--transport is local or ssh, not ${TRANSPORT:-nothing}" >&2; exit 2 ;; esac
PEERS="${PEERS_DIR:-$(cd .. && pwd)/shared/peers}"
[ -x "$PEERS/ansible/run.sh" ] || { echo "no Ansible peer at $PEERS/ansible/run.sh (set PEERS_DIR)" >&2; exit 2; }
RUNS="${RUNS:-5}"
OUT="$(mktemp -d)"
trap 'status=$?; if [ "$status" != 0 ]; then tail -n 20 "$OUT"/*.log >&2 2>/dev/null; fi; rm -rf "$OUT"' EXIT
export OUT RUNS PEERS TRANSPORT

cargo build --release --example bench >&2
export BENCH="$PWD/target/release/examples/bench"

# One N: RUNS alternated runs of each side, then a JSON line with both medians.
one_n() {
  local N=$1 i try
  : > "$OUT/ours-$N"; : > "$OUT/ansible-$N"
  for i in $(seq 1 "$RUNS"); do
    echo "N=$N run $i/$RUNS: coercion ($TRANSPORT)" >&2
    local t0 t1
    t0=$(date +%s.%N)
    if [ "$TRANSPORT" = ssh ]; then
      "$BENCH" rollout --inventory "$SSH_HOSTS_DIR/inventory.ini" --ssh-config "$SSH_HOSTS_DIR/ssh_config" --json > "$OUT/ours-run" 2>>"$OUT/ours-$N.log"
    else
      "$BENCH" rollout --hosts "$N" --json > "$OUT/ours-run" 2>>"$OUT/ours-$N.log"
    fi
    t1=$(date +%s.%N)
    python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$t0" "$t1" >> "$OUT/ours-$N"
    cat "$OUT/ours-run" >> "$OUT/ours-$N.jsonl"
    echo "N=$N run $i/$RUNS: ansible ($TRANSPORT)" >&2
    # The peer script's `ansible-playbook --version | head -1` sometimes dies of a broken pipe
    # (ansible exits 250 when `head` closes first): try again, up to 5 times.
    for try in 1 2 3 4 5; do
      if [ "$TRANSPORT" = ssh ]; then
        # A fresh ControlPersist directory per run: Ansible's masters from its previous run
        # (ControlPersist=60s) would otherwise spare it the handshakes our side pays each run.
        rm -rf "$OUT/ansible-cp"; mkdir -p "$OUT/ansible-cp"
        if ANSIBLE_SSH_CONTROL_PATH_DIR="$OUT/ansible-cp" INVENTORY="$SSH_HOSTS_DIR/inventory.ini" SSH_CONFIG="$SSH_HOSTS_DIR/ssh_config" PIPELINING=1 \
           VARIANTS=serial5-linear RUNS=1 WARMUP=0 "$PEERS/ansible/run.sh" 2>>"$OUT/ansible-$N.log" > "$OUT/ansible-run"; then
          break
        fi
      elif NS="$N" VARIANTS=serial5-linear RUNS=1 WARMUP=0 "$PEERS/ansible/run.sh" 2>>"$OUT/ansible-$N.log" > "$OUT/ansible-run"; then
        break
      fi
      echo "N=$N run $i: ansible failed (try $try)" >&2
      [ "$try" = 5 ] && exit 1
    done
    python3 -c 'import json,sys
for line in open(sys.argv[1]):
    line=line.strip()
    if line.startswith("{"):
        print(json.loads(line)["wall_s"]["median"])' "$OUT/ansible-run" >> "$OUT/ansible-$N"
  done
  python3 - "$N" "$TRANSPORT" "$OUT/ours-$N" "$OUT/ansible-$N" "$OUT/ours-$N.jsonl" <<'PY'
import statistics, sys, json, os
n, transport, ours, ansible, inner = sys.argv[1:6]
o = [float(x) for x in open(ours).read().split()]
a = [float(x) for x in open(ansible).read().split()]
w = [json.loads(l)["wall_s"] for l in open(inner) if l.startswith("{")]
mo, ma = statistics.median(o), statistics.median(a)
print(json.dumps({"hosts": int(n), "transport": transport, "runs": len(o),
                  "coercion_median_s": round(mo, 4), "ansible_median_s": round(ma, 3),
                  "ratio": round(ma / mo, 1), "coercion_inner_wall_median_s": round(statistics.median(w), 4),
                  "loadavg": open("/proc/loadavg").read().split()[:3],
                  "coercion_runs_s": [round(x, 4) for x in o], "ansible_runs_s": a}))
PY
}
export -f one_n

if [ "$TRANSPORT" = ssh ]; then
  # The hosts' login user writes into the peer's work and remote-temp directories: keep its
  # state (virtualenv, work directories) in a place that user can reach, not under ~/.cache.
  export PEERS_STATE="${PEERS_STATE:-/tmp/coercion-peers}"
  mkdir -p "$PEERS_STATE/ansible/tmp"
  chmod 755 "$PEERS_STATE" "$PEERS_STATE/ansible"
  chmod 1777 "$PEERS_STATE/ansible/tmp"
  for N in ${NS:-20 100}; do mkdir -p "$PEERS_STATE/ansible/work-$N"; chmod 1777 "$PEERS_STATE/ansible/work-$N"; done
fi

for N in ${NS:-20 100}; do
  if [ "$TRANSPORT" = ssh ]; then
    # A login user with /bin/sh: root's ~/.bashrc on this machine kind runs `pyenv init`, which
    # costs 100-200 ms per remote command on both sides (SSH_HOSTS_USER= keeps the caller).
    N="$N" SSH_HOSTS_USER="${SSH_HOSTS_USER-coercion-ssh}" bash scripts/ssh-hosts.sh bash -c "set -euo pipefail; one_n $N"
  else
    one_n "$N"
  fi
done

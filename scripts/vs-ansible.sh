#!/usr/bin/env bash
# Side by side: the Ansible peer (../shared/peers/ansible) and our `rollout` bench workload on the
# same N hosts, alternating one run of each, RUNS times; prints both medians and the ratio.
#
#   scripts/vs-ansible.sh                 # N = 20 and 100, 5 runs each
#   NS="20" RUNS=3 scripts/vs-ansible.sh
#
# The Ansible side creates its own virtualenv from PyPI on first use (ansible-core, see
# peers/ansible/run.sh). Our side is `cargo run --release --example bench -- rollout --hosts N`.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS="${PEERS_DIR:-$(cd .. && pwd)/shared/peers}"
[ -x "$PEERS/ansible/run.sh" ] || { echo "no Ansible peer at $PEERS/ansible/run.sh (set PEERS_DIR)" >&2; exit 2; }
RUNS="${RUNS:-5}"
OUT="$(mktemp -d)"
trap 'status=$?; if [ "$status" != 0 ]; then tail -n 20 "$OUT"/*.log >&2 2>/dev/null; fi; rm -rf "$OUT"' EXIT

cargo build --release --example bench >&2
BENCH=target/release/examples/bench

for N in ${NS:-20 100}; do
  : > "$OUT/ours-$N"; : > "$OUT/ansible-$N"
  for i in $(seq 1 "$RUNS"); do
    echo "N=$N run $i/$RUNS: coercion" >&2
    "$BENCH" rollout --hosts "$N" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["wall_s"])' >> "$OUT/ours-$N"
    echo "N=$N run $i/$RUNS: ansible" >&2
    # The peer script's `ansible-playbook --version | head -1` sometimes dies of a broken pipe
    # (ansible exits 250 when `head` closes first): try again, up to 5 times.
    for try in 1 2 3 4 5; do
      if NS="$N" VARIANTS=serial5-linear RUNS=1 WARMUP=0 "$PEERS/ansible/run.sh" 2>>"$OUT/ansible-$N.log" > "$OUT/ansible-run"; then
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
  python3 - "$N" "$OUT/ours-$N" "$OUT/ansible-$N" <<'PY'
import statistics, sys, json
n, ours, ansible = sys.argv[1], sys.argv[2], sys.argv[3]
o = [float(x) for x in open(ours).read().split()]
a = [float(x) for x in open(ansible).read().split()]
mo, ma = statistics.median(o), statistics.median(a)
print(json.dumps({"hosts": int(n), "runs": len(o), "coercion_median_s": round(mo, 4),
                  "ansible_median_s": round(ma, 3), "ratio": round(ma / mo, 1),
                  "coercion_runs_s": o, "ansible_runs_s": a}))
PY
done

#!/usr/bin/env bash
# The web UI under load (a benchmark, not a test): VIEWERS clients watch the live page of a plan
# that another process runs, on loopback, until it ends (or LIMIT seconds). Prints the bytes the
# server sent them, the CPU time the server used, and the machine's load.
#
#   scripts/web-load.sh                         # 200 viewers of a 240-action plan (~20 s)
#   VIEWERS=50 SEQUENCES=12 scripts/web-load.sh
#   COERCION=/path/to/another/coercion scripts/web-load.sh   # the same load on another build
#
# The plan is `bench live`'s (SEQUENCES hosts of 10 actions of STEP_MS, one at a time), run in
# the background on a scratch SQLite file; `bench` and `coercion` are built first (debug
# profile). Each viewer is `curl -N` on the plan's event stream.
set -euo pipefail
cd "$(dirname "$0")/.."

VIEWERS=${VIEWERS:-200}
SEQUENCES=${SEQUENCES:-24}
STEP_MS=${STEP_MS:-80}
LIMIT=${LIMIT:-120}

cargo build -q --example bench
cargo build -q -p coercion --features cli --bin coercion
COERCION=${COERCION:-$PWD/target/debug/coercion}
BENCH=$PWD/target/debug/examples/bench

DIR=$(mktemp -d /tmp/coercion-web-load.XXXXXX)
cleanup() {
    kill "${SERVER:-}" "${RUNNER:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

"$BENCH" live --db "$DIR/load.db" --sequences "$SEQUENCES" --step-ms "$STEP_MS" --json \
    >"$DIR/runner.log" 2>&1 &
RUNNER=$!

# The plan's id, once it runs.
ID=
for _ in $(seq 1 600); do
    if [ -f "$DIR/load.db" ]; then
        ID=$("$COERCION" --db "$DIR/load.db" list --status Running --json 2>/dev/null |
            sed -n 's/^    "id": "\([0-9a-f-]*\)".*/\1/p' | head -n 1) || true
        [ -n "$ID" ] && break
    fi
    sleep 0.05
done
[ -n "$ID" ] || { echo "web-load: the plan never ran:" >&2; cat "$DIR/runner.log" >&2; exit 1; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$COERCION" --db "$DIR/load.db" serve --addr "127.0.0.1:$PORT" >"$DIR/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
    sleep 0.05
done

cpu() { awk '{ print $14 + $15 }' "/proc/$SERVER/stat"; }
TICKS=$(getconf CLK_TCK)
BEFORE=$(cpu)
START=$(date +%s.%N)
VIEWER_PIDS=()
for i in $(seq 1 "$VIEWERS"); do
    curl -sN --max-time "$LIMIT" -o /dev/null -w '%{size_download}\n' \
        "http://127.0.0.1:$PORT/plans/$ID/events" >"$DIR/viewer.$i" 2>/dev/null &
    VIEWER_PIDS+=($!)
done
wait "${VIEWER_PIDS[@]}" || true
END=$(date +%s.%N)
AFTER=$(cpu)
BYTES=$(cat "$DIR"/viewer.* | awk '{ s += $1 } END { print s }')
wait "$RUNNER" || true
SUMMARY=$(tail -n 1 "$DIR/runner.log")

awk -v v="$VIEWERS" -v b="$BYTES" -v c0="$BEFORE" -v c1="$AFTER" -v t="$TICKS" \
    -v s="$START" -v e="$END" -v run="$SUMMARY" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN {
    wall = e - s; cpu = (c1 - c0) / t;
    printf "plan: %s\n", run;
    printf "viewers %d, watched %.1f s\n", v, wall;
    printf "sent %.1f MB (%.2f MB/s, %.0f KB per viewer)\n", b / 1e6, b / 1e6 / wall, b / v / 1e3;
    printf "server CPU %.2f s (%.0f%% of one core)\n", cpu, 100 * cpu / wall;
    printf "load average %s\n", load;
}'

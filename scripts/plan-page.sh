#!/usr/bin/env bash
# The web UI's page of a large plan (a benchmark, not a test): runs a plan of SEQUENCES hosts of
# 10 no-op actions to its end on a scratch SQLite file (`bench durable --db`), serves the file
# with `coercion serve`, and fetches the plan's page ROUNDS times. Prints the time to the whole
# page, its size, and the server's peak memory (VmHWM) and CPU time.
#
#   scripts/plan-page.sh                      # 1,000,000 actions (100,000 hosts)
#   SEQUENCES=10000 scripts/plan-page.sh      # 100,000 actions
#
# Release builds of `bench` and `coercion` are built first, unless BIN names a directory that
# holds both (`BIN=/tmp/before-bin scripts/plan-page.sh`: another build, for a comparison).
set -euo pipefail
cd "$(dirname "$0")/.."

SEQUENCES=${SEQUENCES:-100000}
ROUNDS=${ROUNDS:-3}

if [ -n "${BIN:-}" ]; then
    COERCION=$BIN/coercion
    BENCH=$BIN/bench
else
    cargo build -q --release --example bench
    cargo build -q --release -p coercion --features cli --bin coercion
    COERCION=$PWD/target/release/coercion
    BENCH=$PWD/target/release/examples/bench
fi

DIR=$(mktemp -d /tmp/coercion-plan-page.XXXXXX)
cleanup() {
    kill "${SERVER:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

"$BENCH" durable --sequences "$SEQUENCES" --db "$DIR/big.db" --json >"$DIR/run.json"
ID=$("$COERCION" --db "$DIR/big.db" list --json | sed -n 's/^    "id": "\([0-9a-f-]*\)".*/\1/p' | head -n 1)
[ -n "$ID" ] || { echo "plan-page: no plan in the store" >&2; exit 1; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$COERCION" --db "$DIR/big.db" serve --addr "127.0.0.1:$PORT" >"$DIR/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 200); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
    sleep 0.05
done
rss() { awk '/^VmHWM:/ { print $2 * 1024 }' "/proc/$SERVER/status"; }
cpu() { awk '{ print $14 + $15 }' "/proc/$SERVER/stat"; }
BEFORE_RSS=$(rss)
BEFORE_CPU=$(cpu)
for i in $(seq 1 "$ROUNDS"); do
    curl -s -o "$DIR/page.html" --max-time 600 \
        -w "{\"round\": $i, \"page_s\": %{time_total}, \"page_bytes\": %{size_download}, \"http\": %{http_code}}\n" \
        "http://127.0.0.1:$PORT/plans/$ID"
done
echo "{\"actions\": $((SEQUENCES * 10)), \"server_peak_rss_bytes\": $(rss), \"server_rss_before_bytes\": $BEFORE_RSS, \"server_cpu_s\": $(awk -v a="$BEFORE_CPU" -v b="$(cpu)" -v t="$(getconf CLK_TCK)" 'BEGIN { print (b - a) / t }'), \"load\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"

#!/usr/bin/env bash
# Two Logbook binaries in strict mode, loaded alternately in one run, to tell a change
# from this machine's drift (figures of one binary move by more than many changes do
# from one quarter of an hour to the next). For each binary and round: 1,000 calls/s for
# 10 s, then a ramp of 5 s steps on the same server (like bench/gateway.sh), then, on a
# fresh server, the gateway's CPU per call at a steady rate (from /proc, user + system).
#
#   bench/gateway-ab.sh OLD_BIN NEW_BIN          # e.g. a copy of target/release/logbook
#   ROUNDS=2 RAMP="6000 7000 8000" STEADY=5000 bench/gateway-ab.sh old new
#   RAMP= STEADY=3000 bench/gateway-ab.sh old new   # no ramp: 1,000/s and CPU per call
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
[ $# -eq 2 ] || { echo "usage: $0 OLD_BIN NEW_BIN" >&2; exit 2; }
ROUNDS="${ROUNDS:-2}"; RAMP="${RAMP-6000 7000 8000}"; STEADY="${STEADY:-5000}"
WORK="$(mktemp -d /tmp/logbook-ab.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release --locked -p logbook -p logbook-bench --bins >&2
BIN="$CARGO_TARGET_DIR/release"
"$BIN/mock-upstream" > "$WORK/up.out" 2>/dev/null & PIDS+=("$!")
for _ in $(seq 50); do grep -q listening "$WORK/up.out" && break; sleep 0.1; done
UP=$(grep -o 'http://[0-9.:]*' "$WORK/up.out" | head -1)
{ printf '[logging]\nmode = "strict"\n'; bench_upstream_toml "$UP"; } > "$WORK/strict.toml"
serve() { # bin name: start a fresh strict server, set URL and SPID
  rm -rf "$WORK/$2"
  "$1" serve --listen 127.0.0.1:0 --data-dir "$WORK/$2" --config "$WORK/strict.toml" > "$WORK/$2.out" 2> "$WORK/$2.err" &
  SPID=$!; PIDS+=("$SPID")
  for _ in $(seq 100); do grep -q listening "$WORK/$2.out" && break; sleep 0.1; done
  URL=$(grep -o 'http://[0-9.:]*' "$WORK/$2.out" | head -1)
}
stop() { kill "$SPID"; wait "$SPID" 2>/dev/null || true; }
echo "# machine: $(nproc) cores, $(uname -r), $(date -u +%FT%TZ)"
"$BIN/fsync-probe" --dir "$WORK/probe"
for round in $(seq "$ROUNDS"); do
  for which in old new; do
    bin=$1; [ "$which" = new ] && bin=$2
    serve "$bin" "$which"
    "$BIN/loadgen" --label "$which" --url "$URL/v1/chat/completions" --rate 1000 --duration 10
    for r in $RAMP; do "$BIN/loadgen" --label "$which-ramp" --url "$URL/v1/chat/completions" --rate "$r" --duration 5; done
    stop
    serve "$bin" "$which-cpu"
    "$BIN/loadgen" --label "$which-steady" --url "$URL/v1/chat/completions" --rate "$STEADY" --duration 9 > "$WORK/steady.json" &
    lg=$!; sleep 3
    a=$(awk '{print $14+$15}' "/proc/$SPID/stat"); sleep 7; b=$(awk '{print $14+$15}' "/proc/$SPID/stat")
    wait "$lg"; cat "$WORK/steady.json"
    hz=$(getconf CLK_TCK)
    echo "{\"label\":\"$which-cpu\",\"rate\":$STEADY,\"cpu_us_per_call\":$(( (b - a) * 1000000 / hz / 7 / STEADY ))}"
    stop
  done
done

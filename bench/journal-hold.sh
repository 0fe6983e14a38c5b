#!/usr/bin/env bash
# How much journal a server keeps on disk after 20 s of strict calls at RATE (default
# 1,000/s), and each destination's cursor and backlog from /healthz: a destination that
# takes few of the entries (the trail) must not hold the segments the others delivered.
#
#   bench/journal-hold.sh [LOGBOOK_BINARY ...]   # default: this tree's release build
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
cargo build --release --locked -p logbook -p logbook-bench --bins >&2
BIN="$CARGO_TARGET_DIR/release"
[ $# -gt 0 ] || set -- "$BIN/logbook"
W="$(mktemp -d /tmp/logbook-hold.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
url_of() { for _ in $(seq 1 100); do grep -o 'http://[0-9.:]*' "$1" 2>/dev/null | head -1 && return 0; sleep 0.1; done; return 1; }
"$BIN/mock-upstream" > "$W/up.out" 2>&1 & PIDS+=("$!")
UP=$(url_of "$W/up.out")
{ printf '[logging]\nmode = "strict"\n'; bench_upstream_toml "$UP"; } > "$W/c.toml"
for LB in "$@"; do
  rm -rf "$W/d" "$W/lb.out"
  "$LB" serve --listen 127.0.0.1:0 --data-dir "$W/d" --config "$W/c.toml" > "$W/lb.out" 2> "$W/lb.err" & LBP=$!
  URL=$(url_of "$W/lb.out")
  "$BIN/loadgen" --label hold --url "$URL/v1/chat/completions" --rate "${RATE:-1000}" --duration 20 > /dev/null
  echo "$LB: journal on disk $(du -sm "$W/d/journal" | cut -f1) MB"
  curl -s "$URL/healthz" | python3 -c '
import json, sys
for name, d in json.load(sys.stdin)["destinations"].items():
    print("  ", name, "cursor", d["cursor"], "backlog", d["backlog"])'
  kill "$LBP"; wait "$LBP" 2>/dev/null || true
done

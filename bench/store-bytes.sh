#!/usr/bin/env bash
# The store's bytes per record against the gz archive's (issue #13, point 3's measure):
# `logbook import` writes the generated records at the hot zstd level (fast); a server
# started on the folder then compacts every closed partition once at the cold level.
# Prints the import rate, bytes per record before and after, and the compaction's time
# and the server's peak RSS while it compacts (sampled every 0.2 s).
#
#   N=100000 bench/store-bytes.sh
#   N=1000000 LOGBOOK_BIN=/path/to/other/logbook bench/store-bytes.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
N="${N:-100000}"
SRC="${SRC:-$HOME/.cache/logbook/bench-data/records-$N}"
WORK="$(mktemp -d /tmp/logbook-store-bytes.XXXXXX)"
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release --locked --bin logbook --bin gen-records >&2
BIN="$CARGO_TARGET_DIR/release"
LOGBOOK="${LOGBOOK_BIN:-$BIN/logbook}"
if [ ! -d "$SRC/AWSLogs" ]; then mkdir -p "$SRC"; "$BIN/gen-records" --out "$SRC" --records "$N" >&2; fi
echo "# machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(date -u +%FT%TZ), $N records"
stats() { python3 - "$WORK/data/store/manifest.json" "$N" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); n = int(sys.argv[2])
fs = [f for g in m["groups"].values() for f in g["files"]]
print(json.dumps({"files": len(fs), "cold": sum(1 for f in fs if f.get("cold")), "rows": sum(f["rows"] for f in fs),
                  "bytes_per_record": round(sum(f["bytes"] for f in fs) / n)}))
PY
}
archive=$(find "$SRC/AWSLogs" -name '*.json.gz' -printf '%s\n' | awk '{s+=$1} END {print s}')
echo "{\"what\":\"archive (gz JSON Lines)\",\"bytes_per_record\":$((archive / N))}"
t0=$(date +%s%N)
"$LOGBOOK" import "$SRC" --log-group /aws/bedrock/modelinvocations --data-dir "$WORK/data" >/dev/null 2>&1
t1=$(date +%s%N)
echo "{\"what\":\"import (hot level)\",\"records_per_s\":$(( N * 1000000000 / (t1 - t0) )),\"store\":$(stats)}"
"$LOGBOOK" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 > "$WORK/serve.out" 2> "$WORK/serve.err" &
PID=$!
t0=$(date +%s%N)
max_kb=0
for _ in $(seq 1 3000); do
  kb=$(awk '/^VmRSS/{print $2}' "/proc/$PID/status" 2>/dev/null || echo 0)
  [ "${kb:-0}" -gt "$max_kb" ] && max_kb=$kb
  s=$(stats)
  python3 -c "import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d['cold']==d['files'] else 1)" "$s" && break
  sleep 0.2
done
t1=$(date +%s%N)
echo "{\"what\":\"after the server's first compaction (cold level)\",\"seconds\":$(( (t1 - t0) / 1000000 ))e-3,\"records_per_s\":$(( N * 1000000000 / (t1 - t0) )),\"max_rss_mb\":$((max_kb / 1024)),\"store\":$s}"

#!/usr/bin/env bash
# Resident memory of a gateway under a steady load (issue #13: `logbook serve` at 1,000
# calls/s for five minutes, goal <= 100 MB), with LiteLLM (PyPI, bench venv) under the
# same load as the peer. Logbook runs in strict mode, logging to the archive and the
# default log group, against the mock upstream of bench/gateway.sh. RSS is read from
# /proc every second (LiteLLM: the sum over its process tree). Then the files the run
# left in Logbook's store (by merge tier) and three queries' times over them.
#
#   RATE=1000 DUR=300 bench/memory.sh
#   LOGBOOK_BIN=/path/to/other/logbook ONLY=logbook bench/memory.sh   # another build
#   EXTRA_TOML='[store]\nflush_bytes = 16777216' ONLY=logbook bench/memory.sh   # a setting
#   SAMPLE=0.5 ONLY=logbook bench/memory.sh   # RSS every half second (default 1 s)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
RATE="${RATE:-1000}"
DUR="${DUR:-300}"
SAMPLE="${SAMPLE:-1}"   # seconds between RSS samples (0.5 catches merges' peaks better)
ONLY="${ONLY:-logbook litellm}"
BENCH_VENV="${BENCH_VENV:-$HOME/.cache/logbook/bench-venv}"
OUT="bench/out"
WORK="$(mktemp -d /tmp/logbook-mem.XXXXXX)"
mkdir -p "$OUT"
RESULTS="$OUT/memory-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --locked -p logbook -p logbook-bench --bins >&2
BIN="$CARGO_TARGET_DIR/release"
LOGBOOK="${LOGBOOK_BIN:-$BIN/logbook}"

tree_rss_kb() { # pid: RSS of it and its descendants, in KB
  local total=0 p
  for p in $1 $(pgrep -P "$1" 2>/dev/null) $(for c in $(pgrep -P "$1" 2>/dev/null); do pgrep -P "$c" 2>/dev/null; done); do
    total=$((total + $(awk '/^VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

measure() { # label pid url
  local label="$1" pid="$2" url="$3" samples="$WORK/$1.rss"
  # Each sample: time, the tree's RSS, and the top process's anonymous and file-backed
  # parts (a Logbook server's file-backed part is its executable mapped from the page
  # cache, 38-44 MB; the anonymous part is its heap).
  ( while kill -0 "$pid" 2>/dev/null; do
      echo "$(date +%s.%N) $(tree_rss_kb "$pid") $(awk '/^RssAnon/{a=$2} /^RssFile/{f=$2} END{print a+0, f+0}' "/proc/$pid/status" 2>/dev/null || echo 0 0)"
      sleep "$SAMPLE"
    done ) > "$samples" &
  local sampler=$!
  "$BIN/loadgen" --label "$label" --url "$url/v1/chat/completions" --rate "$RATE" --duration "$DUR" --kind openai-chat | tee -a "$RESULTS"
  kill "$sampler" 2>/dev/null || true
  python3 - "$label" "$samples" <<'PY' | tee -a "$RESULTS"
import json, statistics, sys
label, path = sys.argv[1], sys.argv[2]
rows = [l.split() for l in open(path) if len(l.split()) == 4]
t0 = float(rows[0][0])
pts = [(float(t) - t0, int(kb) / 1024, int(a) / 1024, int(f) / 1024) for t, kb, a, f in rows]
at = lambda s: round(min(pts, key=lambda p: abs(p[0] - s))[1], 1)
last_min = [p[1] for p in pts if p[0] >= pts[-1][0] - 60]
top = max(pts, key=lambda p: p[1])
print(json.dumps({"label": label + "-rss", "samples": len(pts), "start_mb": round(pts[0][1], 1),
                  "at_20s_mb": at(20), "at_60s_mb": at(60), "at_120s_mb": at(120), "max_mb": round(top[1], 1),
                  "max_at_s": round(top[0]), "anon_mb_at_max": round(top[2], 1), "file_mb_at_max": round(top[3], 1),
                  "max_anon_mb": round(max(p[2] for p in pts), 1),
                  "last_minute_median_mb": round(statistics.median(last_min), 1), "end_mb": round(pts[-1][1], 1)}))
PY
}

echo "# machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(uname -r), $(date -u +%FT%TZ); rate $RATE/s for $DUR s" | tee -a "$RESULTS"
"$BIN/mock-upstream" > "$WORK/upstream.out" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/upstream.out" 2>/dev/null && break; sleep 0.1; done
UP=$(grep -o 'http://[0-9.:]*' "$WORK/upstream.out" | head -1)

case " $ONLY " in *" logbook "*)
  bench_upstream_toml "$UP" > "$WORK/logbook.toml"
  # EXTRA_TOML: more configuration, to measure a setting (e.g. '[store]\nflush_bytes = 16777216').
  printf '%b\n' "${EXTRA_TOML:-}" >> "$WORK/logbook.toml"
  "$LOGBOOK" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --config "$WORK/logbook.toml" > "$WORK/logbook.out" 2> "$WORK/logbook.err" &
  LB_PID=$!
  PIDS+=("$LB_PID")
  for _ in $(seq 1 300); do grep -q "listening on" "$WORK/logbook.out" 2>/dev/null && break; sleep 0.1; done
  measure logbook "$LB_PID" "$(grep -o 'http://[0-9.:]*' "$WORK/logbook.out" | head -1)"
  kill "$LB_PID"; wait "$LB_PID" 2>/dev/null || true
  # What the run left in the store, and what its files cost a query: the open hour's
  # flushes are merged tier by tier (16 files of a tier into one of the next), and a
  # query pays about 0.5 ms per file it opens. Three questions, `logbook query
  # --data-dir` on the stopped server's folder, median of 3 (whole command, in ms).
  python3 - "$WORK/data/store/manifest.json" <<'PY' | tee -a "$RESULTS"
import collections, json, sys
m = json.load(open(sys.argv[1]))
fs = [f for g in m["groups"].values() for f in g["files"]]
tiers = collections.Counter(f.get("tier", 0) for f in fs)
print(json.dumps({"label": "logbook-store", "files": len(fs), "rows": sum(f["rows"] for f in fs),
                  "files_by_tier": {str(k): v for k, v in sorted(tiers.items())}}))
PY
  for q in 'stats count(*) by modelId' 'filter modelId like /bench/ | stats count(*)' \
           'fields @timestamp, requestId | sort @timestamp desc | limit 20'; do
    ms=()
    for _ in 1 2 3; do
      s=$(date +%s%N)
      "$LOGBOOK" query --data-dir "$WORK/data" "$q" > /dev/null
      ms+=($(( ($(date +%s%N) - s) / 1000000 )))
    done
    python3 -c 'import json, statistics, sys; print(json.dumps({"label": "logbook-query", "query": sys.argv[1], "runs_ms": [int(x) for x in sys.argv[2:]], "median_ms": statistics.median(int(x) for x in sys.argv[2:])}))' "$q" "${ms[@]}" | tee -a "$RESULTS"
  done
;; esac

case " $ONLY " in *" litellm "*)
  if [ -x "$BENCH_VENV/bin/litellm" ]; then
    cat > "$WORK/litellm.yaml" <<YAML
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: $UP/v1
      api_key: sk-none
general_settings:
  master_key: sk-bench
YAML
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    ( cd "$WORK" && LITELLM_LOG=ERROR exec "$BENCH_VENV/bin/litellm" --config litellm.yaml --host 127.0.0.1 --port "$PORT" \
        --num_workers 2 > "$WORK/litellm.out" 2> "$WORK/litellm.err" ) &
    LL_PID=$!
    PIDS+=("$LL_PID")
    for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PORT/health/liveliness" >/dev/null 2>&1 && break; sleep 0.2; done
    measure litellm "$LL_PID" "http://127.0.0.1:$PORT"
  else
    echo "LiteLLM not installed in $BENCH_VENV: pip install 'litellm[proxy]' there to include the peer" >&2
  fi
;; esac
echo "results: $RESULTS" >&2

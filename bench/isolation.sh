#!/usr/bin/env bash
# Query isolation (issue #8): the model call's latency through Logbook (strict) at RATE rps
# with no query running, then while QUERIES heavy SQL queries run (a three-way cross join
# over the log group, each kept busy by a filter on the joined rows), then after they are
# cancelled: one server, one run. Prints JSON lines and keeps them in bench/out/.
#
#   RATE=1000 DUR=10 QUERIES=10 RUNNING=10 bench/isolation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
RATE="${RATE:-1000}"
DUR="${DUR:-10}"
QUERIES="${QUERIES:-10}"
RUNNING="${RUNNING:-10}"   # [query] max_running: how many of them execute at once
SEED_SECS="${SEED_SECS:-3}"
OUT="bench/out"
WORK="$(mktemp -d /tmp/logbook-isolation.XXXXXX)"
mkdir -p "$OUT"
RESULTS="$OUT/isolation-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --locked -p logbook -p logbook-bench --bins >&2
BIN="$CARGO_TARGET_DIR/release"

url_of() { # file: wait for its "listening on" line and echo the URL
  for _ in $(seq 1 300); do
    if grep -q "listening on" "$1" 2>/dev/null; then grep -o 'http://[0-9.:]*' "$1" | head -1; return 0; fi
    sleep 0.1
  done
  echo "$1: server did not start" >&2; return 1
}
load() { # label url
  "$BIN/loadgen" --label "$1" --url "$2" --rate "$RATE" --duration "$DUR" | tee -a "$RESULTS"
}
health() { # label url
  echo "{\"label\":\"$1\",\"health\":$(curl -s "$2/healthz")}" | tee -a "$RESULTS"
}

echo "# machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(uname -r), $(date -u +%FT%TZ)" | tee -a "$RESULTS"
"$BIN/mock-upstream" > "$WORK/upstream.out" 2> "$WORK/upstream.err" &
PIDS+=("$!")
UP=$(url_of "$WORK/upstream.out")
cat > "$WORK/logbook.toml" <<EOF
[logging]
mode = "strict"
[query]
max_running = $RUNNING
http_timeout_secs = 3600
[[principals]]
arn = "arn:aws:iam::000000000000:user/bench"
api_key = "sk-bench"
[[principals]]
arn = "arn:aws:iam::000000000000:user/reader"
api_key = "sk-reader"
permissions = ["logs:read"]
[[providers]]
name = "up"
type = "openai"
base_url = "$UP/v1"
[[routes]]
model = "*"
provider = "up"
EOF
"$BIN/logbook" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --config "$WORK/logbook.toml" > "$WORK/logbook.out" 2> "$WORK/logbook.err" &
PIDS+=("$!")
LB=$(url_of "$WORK/logbook.out")
# Records for the queries to chew on.
"$BIN/loadgen" --label seed --url "$LB/v1/chat/completions" --rate 1000 --duration "$SEED_SECS" --warmup 0 > /dev/null

load "direct-to-upstream" "$UP/v1/chat/completions"   # the floor: no gateway at all
load "calls-no-queries" "$LB/v1/chat/completions"
HEAVY='{"language": "sql", "start": 0, "query": "SELECT count(*) FROM invocations a, invocations b, invocations c WHERE a.input_token_count + b.input_token_count + c.input_token_count > 0"}'
QPIDS=()
for _ in $(seq 1 "$QUERIES"); do
  curl -s -o /dev/null -X POST "$LB/logbook/query" -H "Authorization: Bearer sk-reader" -d "$HEAVY" &
  QPIDS+=("$!")
done
sleep 2
health "health-with-queries" "$LB"
load "calls-with-$QUERIES-heavy-queries" "$LB/v1/chat/completions"
health "health-after-load" "$LB"
for p in "${QPIDS[@]}"; do kill "$p" 2>/dev/null || true; done   # the clients leave: queries cancelled
sleep 2
health "health-after-cancel" "$LB"
load "calls-after-queries" "$LB/v1/chat/completions"
echo "results: $RESULTS" >&2

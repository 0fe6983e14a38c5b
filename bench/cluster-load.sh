#!/usr/bin/env bash
# Three replicas on one home bucket at their combined strict rate (issue #13): moto's S3
# server on loopback is the home *and* the archive bucket (records, claims, shared state,
# published stores all go there); three `logbook serve` processes in strict mode, each
# with its own data folder, in front of the same mock OpenAI-compatible upstream, loaded
# at once by three open-loop generators. Beside it, one replica alone (no cluster, local
# archive) at the same total rate. After each step, every replica must answer
# `stats count(*)` with every record the cluster served (none lost, none twice).
#
#   RAMP="300 600 900 1200" DUR=5 bench/cluster-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
RAMP="${RAMP:-300 600 900 1200}"    # per replica; the cluster gets three times this
DUR="${DUR:-5}"
VENV="${LOGBOOK_TEST_VENV:-$HOME/.cache/logbook/venv}"
OUT="bench/out"
WORK="$(mktemp -d /tmp/logbook-cluster-load.XXXXXX)"
mkdir -p "$OUT"
RESULTS="$OUT/cluster-load-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --locked -p logbook -p logbook-bench --bins >&2
BIN="$CARGO_TARGET_DIR/release"

url_of() { # file: wait for its "listening on" line and echo the URL
  for _ in $(seq 1 300); do
    if grep -q "listening on" "$1" 2>/dev/null; then
      grep -o 'http://[0-9.:]*' "$1" | head -1; return 0
    fi
    sleep 0.1
  done
  echo "$1: no listening line" >&2; return 1
}

free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "# machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(uname -r), $(date -u +%FT%TZ)" | tee -a "$RESULTS"

MOTO_PORT=$(free_port)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" > "$WORK/moto.log" 2>&1 &
PIDS+=("$!")
MOTO="http://127.0.0.1:$MOTO_PORT"
for _ in $(seq 1 100); do curl -s "$MOTO" >/dev/null && break; sleep 0.1; done
"$VENV/bin/python" -c "import boto3; boto3.client('s3', endpoint_url='$MOTO', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing').create_bucket(Bucket='home')"

"$BIN/mock-upstream" > "$WORK/upstream.out" 2> "$WORK/upstream.err" &
PIDS+=("$!")
UP=$(url_of "$WORK/upstream.out")

common() {
  printf '[logging]\nmode = "strict"\n'
  bench_upstream_toml "$UP"
}

declare -A URL
for n in a b c; do
  { common; cat <<EOF
[archive]
bucket = "shared"
[[buckets]]
name = "shared"
url = "s3://home"
endpoint = "$MOTO"
path_style = true
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
[cluster]
home = "shared"
EOF
  } > "$WORK/$n.toml"
  "$BIN/logbook" serve --listen 127.0.0.1:0 --data-dir "$WORK/$n" --config "$WORK/$n.toml" > "$WORK/$n.out" 2> "$WORK/$n.err" &
  PIDS+=("$!")
done
for n in a b c; do URL[$n]=$(url_of "$WORK/$n.out"); done
common > "$WORK/alone.toml"
"$BIN/logbook" serve --listen 127.0.0.1:0 --data-dir "$WORK/alone" --config "$WORK/alone.toml" > "$WORK/alone.out" 2> "$WORK/alone.err" &
ALONE_PID="$!"
PIDS+=("$ALONE_PID")
ALONE=$(url_of "$WORK/alone.out")

count() { # url: records the cluster's queries see (this replica's and the others')
  curl -s -X POST "$1/logbook/query" -H 'Authorization: Bearer sk-bench' -H 'content-type: application/json' \
    -d '{"query":"stats count(*) as n","logGroups":["/aws/bedrock/modelinvocations"],"start":0,"end":4102444800000}' \
    | "$VENV/bin/python" -c 'import json,sys; r=json.load(sys.stdin); print(r["rows"][0][0] if r.get("rows") else 0)'
}

served=0
for r in $RAMP; do
  total=$((3 * r))
  # The three replicas at once, r each (no warm-up, so every call is counted).
  LOADS=()
  for n in a b c; do
    "$BIN/loadgen" --label "cluster-replica-$n" --url "${URL[$n]}/v1/chat/completions" --rate "$r" --duration "$DUR" \
      --warmup 0 > "$WORK/load-$n.json" &
    LOADS+=("$!")
  done
  for p in "${LOADS[@]}"; do wait "$p" || true; done
  ok=0; errors=0; p50=0; p99=0
  for n in a b c; do
    line=$(cat "$WORK/load-$n.json")
    echo "$line" | tee -a "$RESULTS"
    ok=$((ok + $(echo "$line" | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["ok"])')))
    errors=$((errors + $(echo "$line" | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["errors"])')))
  done
  # Every call answered 200 had its record durable first; the cluster's count must reach
  # every call the three replicas served.
  served=$((served + ok))
  t0=$(date +%s%N)
  seen=0
  for _ in $(seq 1 120); do
    seen=$(count "${URL[a]}")
    [ "$seen" -ge "$served" ] && break
    sleep 0.5
  done
  t1=$(date +%s%N)
  echo "{\"label\":\"cluster-step\",\"per_replica_rps\":$r,\"cluster_rps\":$total,\"ok\":$ok,\"errors\":$errors,\"served_so_far\":$served,\"seen_by_replica_a\":$seen,\"visible_after_ms\":$(( (t1 - t0) / 1000000 ))}" | tee -a "$RESULTS"
  "$BIN/loadgen" --label "alone" --url "$ALONE/v1/chat/completions" --rate "$total" --duration "$DUR" --warmup 0 | tee -a "$RESULTS"
done
for n in b c; do
  echo "{\"label\":\"count-on-$n\",\"records\":$(count "${URL[$n]}")}" | tee -a "$RESULTS"
done
for n in a b c; do
  echo "{\"label\":\"health-$n\",\"destinations\":$(curl -s "${URL[$n]}/healthz" | "$VENV/bin/python" -c 'import json,sys; h=json.load(sys.stdin); print(json.dumps({"status":h["status"],"cluster":{k:h["cluster"][k] for k in ("node","failedRenewals","lost")}}))')}" | tee -a "$RESULTS"
done

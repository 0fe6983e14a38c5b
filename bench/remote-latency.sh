#!/usr/bin/env bash
# Does a remote destination cost the call path anything? (issue #9) The same Logbook
# (strict mode, OpenAI chat through a mock upstream) at RATE requests/s, once with the
# archive in a local folder and once with it in moto's S3 (plus a moto CloudWatch Logs
# group), alternating ROUNDS times so the noise shows. Prints JSON lines (loadgen's
# latency percentiles) and keeps them in bench/out/.
#
#   RATE=1000 DUR=15 ROUNDS=2 bench/remote-latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
VENV="${VENV:-$HOME/.cache/logbook/venv}"
RATE="${RATE:-1000}"; DUR="${DUR:-15}"; ROUNDS="${ROUNDS:-2}"
OUT="bench/out"; mkdir -p "$OUT"
RESULTS="$OUT/remote-latency-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
WORK="$(mktemp -d /tmp/logbook-rl.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release --locked -p logbook -p logbook-bench --bins >&2
BIN="$CARGO_TARGET_DIR/release"
"$BIN/mock-upstream" > "$WORK/up.out" 2>&1 & PIDS+=("$!")
for _ in $(seq 300); do grep -q "listening on" "$WORK/up.out" 2>/dev/null && break; sleep 0.1; done
UP=$(grep -o 'http://[0-9.:]*' "$WORK/up.out" | head -1)
PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" > "$WORK/moto.log" 2>&1 & PIDS+=("$!")
MOTO="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -sf "$MOTO/moto-api/" >/dev/null && break; sleep 0.1; done
"$VENV/bin/python" - "$MOTO" <<'PY'
import sys, boto3
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
boto3.client("s3", **kw).create_bucket(Bucket="remote-archive")
boto3.client("logs", **kw).create_log_group(logGroupName="/remote")
PY
common="[[principals]]
arn = \"arn:aws:iam::000000000000:user/bench\"
api_key = \"sk-bench\"
[[providers]]
name = \"up\"
type = \"openai\"
base_url = \"$UP/v1\"
[[routes]]
model = \"*\"
provider = \"up\""
echo "$common" > "$WORK/local.toml"
cat > "$WORK/remote.toml" <<TOML
$common
[[buckets]]
name = "remote-archive"
url = "s3://remote-archive"
endpoint = "$MOTO"
path_style = true
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
[[log_groups]]
name = "/remote"
endpoint = "$MOTO"
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
[archive]
bucket = "remote-archive"
[logging_config.default]
s3Config = { bucketName = "remote-archive" }
cloudWatchConfig = { logGroupName = "/remote", roleArn = "arn:aws:iam::000000000000:role/r" }
TOML
echo "{\"machine\":\"$(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(uname -r)\",\"rate\":$RATE,\"duration\":$DUR}" | tee -a "$RESULTS"
for round in $(seq "$ROUNDS"); do
  for kind in local remote; do
    rm -rf "$WORK/data-$kind"
    "$BIN/logbook" serve --listen 127.0.0.1:0 --data-dir "$WORK/data-$kind" --config "$WORK/$kind.toml" > "$WORK/lb.out" 2> "$WORK/lb-$kind.err" &
    LB_PID=$!
    for _ in $(seq 300); do grep -q "listening on" "$WORK/lb.out" 2>/dev/null && break; sleep 0.1; done
    LB=$(grep -o 'http://[0-9.:]*' "$WORK/lb.out" | head -1)
    "$BIN/loadgen" --label "$kind-round$round" --url "$LB/v1/chat/completions" --rate "$RATE" --duration "$DUR" | tee -a "$RESULTS"
    sleep 3
    curl -s "$LB/healthz" | "$VENV/bin/python" -c 'import json,sys; h=json.load(sys.stdin); print(json.dumps({"label":sys.argv[1]+"-delivery","status":h["status"],"destinations":{k:{"records":v["records"],"backlog":v["backlog"]["entries"],"failures":v["failures"]} for k,v in h["destinations"].items()}}))' "$kind-round$round" | tee -a "$RESULTS"
    kill "$LB_PID"; wait "$LB_PID" 2>/dev/null || true
  done
done

#!/usr/bin/env bash
# Delivery throughput (issue #9): one real Destination drains a journal pre-filled with N
# records of about 2 KB to a local bucket, the embedded log-group store, moto's S3 and
# moto's CloudWatch Logs
# (moto_server from the test venv, on loopback). Prints JSON lines and keeps them in
# bench/out/.
#
#   N=50000 N_LOCAL=1000000 bench/delivery.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
VENV="${VENV:-$HOME/.cache/logbook/venv}"
N="${N:-50000}"
N_LOCAL="${N_LOCAL:-$N}"
OUT="bench/out"
mkdir -p "$OUT"
RESULTS="$OUT/delivery-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
cargo build --release --locked -p logbook-bench --bin delivery-bench >&2
BIN="$CARGO_TARGET_DIR/release/delivery-bench"
PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >/tmp/delivery-bench-moto.log 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null || true' EXIT
URL="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -sf "$URL/moto-api/" >/dev/null && break; sleep 0.1; done
"$VENV/bin/python" - "$URL" <<'PY'
import sys, boto3
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
boto3.client("s3", **kw).create_bucket(Bucket="bench")
boto3.client("logs", **kw).create_log_group(logGroupName="/bench")
PY
"$BIN" --target local --records "$N_LOCAL" | tee -a "$RESULTS"
"$BIN" --target store --records "$N_LOCAL" | tee -a "$RESULTS"
"$BIN" --target s3 --endpoint "$URL" --records "$N" | tee -a "$RESULTS"
"$BIN" --target cloudwatch --endpoint "$URL" --records "$N" | tee -a "$RESULTS"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; $(uname -r)" | tee -a "$RESULTS"

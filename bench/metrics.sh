#!/usr/bin/env bash
# /metrics scrape time with 200 models, against prometheus_client (Python) in the same run.
#   bench/metrics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
VENV="${LOGBOOK_TEST_VENV:-$HOME/.cache/logbook/venv}"
cargo build --release --locked --bin logbook >&2
LOGBOOK_BIN="$CARGO_TARGET_DIR/release/logbook" "$VENV/bin/python" bench/metrics.py

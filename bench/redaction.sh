#!/usr/bin/env bash
# Redaction throughput and recall against Microsoft Presidio's pattern recognizers
# (presidio-analyzer from PyPI, in its own venv; no spaCy model is needed for them).
#   LINES=20000 bench/redaction.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
V="${BENCH_VENV:-$HOME/.cache/logbook/bench-venv}"
[ -x "$V/bin/python" ] || python3 -m venv "$V"
"$V/bin/python" -c "import presidio_analyzer" 2>/dev/null || "$V/bin/python" -m pip install -q presidio-analyzer
cargo build --release --locked --bin redact-bench >&2
"$V/bin/python" bench/redaction.py "$CARGO_TARGET_DIR/release/redact-bench"

#!/usr/bin/env bash
# Console benchmark (issue #14): first paint of the overview and query-to-chart in the
# explorer, in Debian's headless Chromium, over N generated records. See bench/console.py.
#
#   N=1000000 REPEAT=5 bench/console.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
N="${N:-1000000}"
VENV="${LOGBOOK_TEST_VENV:-$HOME/.cache/logbook/venv}"
export SRC="${SRC:-$HOME/.cache/logbook/bench-data/records-$N}"
export WORK="${WORK:-$HOME/.cache/logbook/bench-data/work-$N}"
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --locked --bin logbook --bin gen-records >&2
export LOGBOOK_BIN="$CARGO_TARGET_DIR/release/logbook"
if [ ! -d "$SRC/AWSLogs" ]; then
  mkdir -p "$SRC"
  "$CARGO_TARGET_DIR/release/gen-records" --out "$SRC" --records "$N" >&2
fi
mkdir -p "$WORK"
N="$N" "$VENV/bin/python" bench/console.py

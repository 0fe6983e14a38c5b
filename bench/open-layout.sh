#!/usr/bin/env bash
# Open-layout benchmark (issue #13): the query benchmark's N generated records written in
# the open layout by the product's ParquetFormat, then the same SQL asked of DuckDB (PyPI)
# over those files through docs/open-layout/duckdb.sql, and of Logbook's own engine over
# its store (HTTP and `logbook query --sql`). See bench/open_layout.py.
#
#   N=1000000 REPEAT=3 bench/open-layout.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
N="${N:-1000000}"
VENV="${LOGBOOK_TEST_VENV:-$HOME/.cache/logbook/venv}"
export SRC="${SRC:-$HOME/.cache/logbook/bench-data/records-$N}"
export WORK="${WORK:-$HOME/.cache/logbook/bench-data/work-$N}"
cargo build --release --locked --bin logbook --bin gen-records --bin open-layout >&2
export LOGBOOK_BIN="$CARGO_TARGET_DIR/release/logbook"
export OPEN_LAYOUT_BIN="$CARGO_TARGET_DIR/release/open-layout"
if [ ! -d "$SRC/AWSLogs" ]; then
  mkdir -p "$SRC"
  "$CARGO_TARGET_DIR/release/gen-records" --out "$SRC" --records "$N" >&2
fi
mkdir -p "$WORK"
N="$N" "$VENV/bin/python" bench/open_layout.py

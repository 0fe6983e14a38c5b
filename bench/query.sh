#!/usr/bin/env bash
# Query benchmark (issue #4): generate N realistic Bedrock records (cached), import them
# into a Logbook log group, and time four questions in Logbook and in DuckDB (PyPI) over
# the same records as gz JSON and as Parquet, and in chDB over the same Parquet. See
# bench/query.py.
#
#   N=1000000 REPEAT=3 bench/query.sh
#
# The imported store is kept in $WORK between runs (the questions reuse it, and its
# import figure is reprinted with "reused_from"); FRESH=1 removes it first, so the
# import is measured again with the current build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
N="${N:-1000000}"
VENV="${LOGBOOK_TEST_VENV:-$HOME/.cache/logbook/venv}"
export SRC="${SRC:-$HOME/.cache/logbook/bench-data/records-$N}"
export WORK="${WORK:-$HOME/.cache/logbook/bench-data/work-$N}"
cargo build --release --locked --bin logbook --bin gen-records >&2
export LOGBOOK_BIN="$CARGO_TARGET_DIR/release/logbook"
if [ ! -d "$SRC/AWSLogs" ]; then
  mkdir -p "$SRC"
  /usr/bin/time -f "generated in %e s" "$CARGO_TARGET_DIR/release/gen-records" --out "$SRC" --records "$N" >&2
fi
if [ "${FRESH:-0}" = 1 ]; then
  rm -rf "$WORK/data" "$WORK/import.json"
fi
mkdir -p "$WORK"
# chDB, the second peer (bench only, not a test dependency).
"$VENV/bin/python" -c "import chdb" 2>/dev/null || "$VENV/bin/pip" install -q chdb >&2
N="$N" "$VENV/bin/python" bench/query.py

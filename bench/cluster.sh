#!/usr/bin/env bash
# Queries over a shared home bucket (issue #13): one replica's own store against another
# replica reading the same records from the home (moto's S3 server). See bench/cluster.py.
#
#   N=100000 REPEAT=3 bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
export N="${N:-100000}"
export VENV="${LOGBOOK_TEST_VENV:-$HOME/.cache/logbook/venv}"
export SRC="${SRC:-$HOME/.cache/logbook/bench-data/records-$N}"
export WORK="${WORK:-$HOME/.cache/logbook/bench-data/work-$N}"
cargo build --release --locked --bin logbook --bin gen-records >&2
export LOGBOOK_BIN="$CARGO_TARGET_DIR/release/logbook"
if [ ! -d "$SRC/AWSLogs" ]; then
  mkdir -p "$SRC"
  "$CARGO_TARGET_DIR/release/gen-records" --out "$SRC" --records "$N" >&2
fi
mkdir -p "$WORK"
echo "# machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(date -u +%FT%TZ)"
"$VENV/bin/python" bench/cluster.py

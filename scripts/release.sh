#!/usr/bin/env bash
# A release build for shipping: `dist/logbook` without debug info (the profile strips it)
# and, beside it, `dist/logbook.debug` with the line tables, linked by a debuglink so gdb,
# addr2line and perf find them when the file is next to the binary or in
# /usr/lib/debug. Also writes shell completions.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
# Keep the line tables in this build; they are split off below.
CARGO_PROFILE_RELEASE_STRIP=none cargo build --release --locked --bin logbook
mkdir -p dist/completions
cp "$CARGO_TARGET_DIR/release/logbook" dist/logbook
objcopy --only-keep-debug dist/logbook dist/logbook.debug
objcopy --strip-debug --add-gnu-debuglink=dist/logbook.debug dist/logbook
for sh in bash zsh fish; do dist/logbook completions "$sh" > "dist/completions/logbook.$sh"; done
dist/logbook --version
ls -l dist/logbook dist/logbook.debug

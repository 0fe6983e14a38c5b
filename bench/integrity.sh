#!/usr/bin/env bash
# Tamper-evidence benchmark (issue #11): `logbook verify` over N realistic records (the
# query benchmark's generated records, cached), signed as the archive's delivery signs
# them (bench/src/bin/notarize.rs), against two peers on the same objects in the same
# run: the single-stream floor (`gzip -dc | sha256sum`, no per-line work) and a Python
# script doing the same RFC 6962 leaf hashing (hashlib + gzip).
#
#   N=1000000 bench/integrity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
N="${N:-1000000}"
SRC="${SRC:-$HOME/.cache/logbook/bench-data/records-$N}"
W="${WORK:-$HOME/.cache/logbook/bench-data/integrity-$N}"
cargo build --release --locked --bin logbook --bin gen-records --bin notarize >&2
R="$CARGO_TARGET_DIR/release"
if [ ! -d "$SRC/AWSLogs" ]; then
  mkdir -p "$SRC"
  "$R/gen-records" --out "$SRC" --records "$N" >&2
fi
rm -rf "$W" && mkdir -p "$W" && cp -r "$SRC" "$W/bucket"
"$R/logbook" keys generate --out "$W/key.pem" >/dev/null
"$R/notarize" --bucket "$W/bucket" --key "$W/key.pem"
objects=$(find "$W/bucket/AWSLogs" -name '*.json.gz' | wc -l)
bytes=$(find "$W/bucket/AWSLogs" -name '*.json.gz' -print0 | xargs -0 cat | gzip -dc | wc -c)
echo "machine: $(nproc) cores, $(uname -sr); $N records in $objects objects, $((bytes / 1000000)) MB uncompressed"
sync
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
for i in 1 2 3; do
  lv=$(t "$R/logbook" verify --bucket-dir "$W/bucket" --public-key "$W/key.pub.pem")
  fl=$(t sh -c "find '$W/bucket/AWSLogs' -name '*.json.gz' -print0 | sort -z | xargs -0 cat | gzip -dc | sha256sum")
  py=$(t python3 - "$W/bucket/AWSLogs" <<'PY'
import gzip, hashlib, os, sys
n = 0
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        if f.endswith(".json.gz"):
            with gzip.open(os.path.join(root, f), "rb") as fh:
                for line in fh.read().split(b"\n"):
                    if line:
                        hashlib.sha256(b"\x00" + line).digest()
                        n += 1
print(n)
PY
)
  printf 'run %d: logbook verify %.2f s (%.0f records/s) | gzip -dc | sha256sum %.2f s | python hashlib %.2f s\n' \
    "$i" "$lv" "$(echo "$N / $lv" | bc -l)" "$fl" "$py"
done

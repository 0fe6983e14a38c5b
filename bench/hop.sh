#!/usr/bin/env bash
# What one proxy hop costs on this machine, as a floor for the gateway's added latency
# (issue #10): the mock upstream called directly, through nginx (Debian's package, a
# reverse proxy with upstream keep-alive and no logging), and through Logbook in async
# and strict mode, at 1,000 calls/s, interleaved round by round so the box's drift falls
# on all targets alike. Each round also runs the smallest strict journal there is at the
# same rate (`fsync-probe --group-commit`: the disk's own durable-answer wait), and the
# two-file flush floor beside strict mode's load (`fsync-probe --files 2`). Prints each
# run's JSON line, then medians per target.
#
#   ROUNDS=3 RATE=1000 DUR=10 bench/hop.sh
#   NEW_BIN=/tmp/logbook-new bench/hop.sh    # also a second Logbook build, both modes
#   BESIDE_FSYNC=1 bench/hop.sh   # also direct, nginx and Logbook async while the smallest
#                                 # group-commit journal takes 5 KB entries at the same rate
#                                 # (the disk load strict mode adds, without Logbook's wait;
#                                 # its p99 is the disk's durable wait under the gateway's load)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
ROUNDS="${ROUNDS:-3}"; RATE="${RATE:-1000}"; DUR="${DUR:-10}"
NGINX="${NGINX:-/usr/sbin/nginx}"
WORK="$(mktemp -d /tmp/logbook-hop.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cargo build --release --locked -p logbook -p logbook-bench --bins >&2
BIN="$CARGO_TARGET_DIR/release"
LOGBOOK="${LOGBOOK_BIN:-$BIN/logbook}"
RESULTS="$WORK/results.jsonl"

listening() { # file: wait for a "listening" line, echo its URL
  for _ in $(seq 100); do grep -q listening "$1" 2>/dev/null && break; sleep 0.1; done
  grep -o 'http://[0-9.:]*' "$1" | head -1
}
"$BIN/mock-upstream" > "$WORK/up.out" 2>/dev/null & PIDS+=("$!")
UP=$(listening "$WORK/up.out")

TARGETS=(direct)
URLS=("$UP")
if [ -x "$NGINX" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream up { server ${UP#http://}; keepalive 256; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
  "$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2> "$WORK/nginx.err" & PIDS+=("$!")
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  TARGETS+=(nginx); URLS+=("http://127.0.0.1:$port")
else
  echo "# $NGINX not found: no nginx hop (apt-get install nginx-core)" >&2
fi

# Each Logbook run gets a fresh server, stopped after it: an idle server's background work
# (flushes, merges, archive objects) would otherwise fall into the other targets' runs.
LB_TARGETS=("logbook-async $LOGBOOK async" "logbook-strict $LOGBOOK strict")
if [ -n "${NEW_BIN:-}" ]; then
  LB_TARGETS+=("new-async $NEW_BIN async" "new-strict $NEW_BIN strict")
fi
load() { # label url
  "$BIN/loadgen" --label "$1" --url "$2/v1/chat/completions" --rate "$RATE" --duration "$DUR" | tee -a "$RESULTS"
}
beside_fsync() { # label url: the load with the smallest group-commit journal beside it
  "$BIN/fsync-probe" --dir "$WORK/beside" --group-commit --rate "$RATE" --n $((RATE * DUR)) --size 5120 \
    --label "fsync-beside-$1" >> "$RESULTS" &
  local probe=$!
  load "$1+fsync" "$2"
  wait "$probe"
}

echo "# machine: $(nproc) cores, $(uname -r), $(date -u +%FT%TZ)" | tee -a "$RESULTS"
"$BIN/fsync-probe" --dir "$WORK/probe" | tee -a "$RESULTS"
for round in $(seq "$ROUNDS"); do
  for i in "${!TARGETS[@]}"; do load "${TARGETS[$i]}" "${URLS[$i]}"; done
  # The smallest strict journal there is, at the same rate, in this round: its wait for
  # the disk at p99 is what strict mode's would be if Logbook's journal cost nothing.
  "$BIN/fsync-probe" --dir "$WORK/ideal" --group-commit --rate "$RATE" --n $((RATE * DUR)) \
    --size 5120 --label "ideal-journal" | tee -a "$RESULTS"
  if [ -n "${BESIDE_FSYNC:-}" ]; then
    for i in "${!TARGETS[@]}"; do beside_fsync "${TARGETS[$i]}" "${URLS[$i]}"; done
  fi
  for t in "${LB_TARGETS[@]}"; do
    read -r name bin mode <<< "$t"
    { printf '[logging]\nmode = "%s"\n' "$mode"; bench_upstream_toml "$UP"; } > "$WORK/$name.toml"
    rm -rf "$WORK/$name-data"
    "$bin" serve --listen 127.0.0.1:0 --data-dir "$WORK/$name-data" --config "$WORK/$name.toml" \
      > "$WORK/$name.out" 2> "$WORK/$name.err" &
    pid=$!; PIDS+=("$pid")
    url=$(listening "$WORK/$name.out")
    if [ "$mode" = strict ]; then
      # The flush floor during this very run (see bench/src/bin/fsync-probe.rs): two files
      # fdatasyncing 100 times a second each beside the load (a tenth more flushes than
      # the journal's); its floor p99 is a wait at p99 that any server answering only
      # after a flush had in this window, whatever its design (a lower bound: a stall is
      # counted from when both probe files are in it).
      "$BIN/fsync-probe" --dir "$WORK/floor" --files 2 --rate 100 --n $((100 * DUR)) \
        --size 5120 --label "floor-$name" >> "$RESULTS" &
      probe=$!
      load "$name" "$url"
      wait "$probe"
    else
      load "$name" "$url"
    fi
    if [ -n "${BESIDE_FSYNC:-}" ] && [ "$mode" = async ]; then beside_fsync "$name" "$url"; fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if "p99_ms" in r and "label" in r:
        runs.setdefault(r["label"], []).append(r)
direct = runs.get("direct")
med = lambda k, rs: statistics.median(r[k] for r in rs)
print(f"# medians of {len(direct or [])} rounds: p50 / p99 ms, added p99 over direct (same round, then median)")
for label, rs in runs.items():
    if label.startswith("floor-"):
        floors = " / ".join(f"{r['floor_p99_ms']:.2f}" for r in rs)
        escapes = sum(r["escapes"] for r in rs)
        long_syncs = sum(r["long_syncs"] for r in rs)
        print(f"{label:16} fdatasync p99 {med('p99_ms', rs):.3f}  floor p99 {med('floor_p99_ms', rs):.3f} ({floors})  escapes {escapes} of {long_syncs} syncs over 5 ms")
        continue
    if label.startswith("fdatasync") or label.startswith("fsync-beside") or label == "ideal-journal":
        rounds = " / ".join(f"{r['p99_ms']:.2f}" for r in rs)
        print(f"{label:16} p50 {med('p50_ms', rs):.3f}  p99 {med('p99_ms', rs):.3f} ({rounds})")
        continue
    added = ""
    if direct and label != "direct":
        adds = [r["p99_ms"] - d["p99_ms"] for r, d in zip(rs, direct)]
        added = f"  added p99 {statistics.median(adds):.2f} ms ({' / '.join(f'{a:.2f}' for a in adds)})"
    errors = sum(r.get("errors", 0) for r in rs)
    print(f"{label:16} p50 {med('p50_ms', rs):.2f}  p99 {med('p99_ms', rs):.2f}  errors {errors}{added}")
    floor = runs.get(f"floor-{label}")
    if direct and floor:
        beyond = [r["p99_ms"] - d["p99_ms"] - f["floor_p99_ms"] for r, d, f in zip(rs, direct, floor)]
        print(f"{'':16} added p99 beyond the same run's flush floor p99 {statistics.median(beyond):.2f} ms ({' / '.join(f'{b:.2f}' for b in beyond)})")
PY

#!/usr/bin/env bash
# Encryption at rest (issue #11): the same N generated records imported into two data
# folders, one plain and one with [encryption] master_key_file, then the query
# benchmark's four questions timed through a running server over each (same process
# settings, alternately), with import rate and store bytes. A master key only changes how
# the Parquet files are sealed, so the ratio is the cost of decrypting pages.
#
#   N=1000000 REPEAT=5 bench/encryption.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/logbook/target}"
N="${N:-1000000}"
VENV="${LOGBOOK_TEST_VENV:-$HOME/.cache/logbook/venv}"
export SRC="${SRC:-$HOME/.cache/logbook/bench-data/records-$N}"
export WORK="$(mktemp -d /tmp/logbook-enc-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin logbook --bin gen-records >&2
export LOGBOOK_BIN="$CARGO_TARGET_DIR/release/logbook"
if [ ! -d "$SRC/AWSLogs" ]; then
  mkdir -p "$SRC"
  "$CARGO_TARGET_DIR/release/gen-records" --out "$SRC" --records "$N" >&2
fi
N="$N" "$VENV/bin/python" - <<'PY'
import json, os, statistics, subprocess, time
import requests
BIN, SRC, WORK, N = os.environ["LOGBOOK_BIN"], os.environ["SRC"], os.environ["WORK"], int(os.environ["N"])
REPEAT = int(os.environ.get("REPEAT", "5"))
GROUP = "bench"
QUESTIONS = {
    "tokens_by_model": "stats sum(input.inputTokenCount), sum(output.outputTokenCount) by modelId",
    "needle_in_prompts": "filter input.inputBodyJson like /rare-phrase/ | fields requestId",
    "count_by_hour": "stats count(*) by bin(1h)",
    "top10_output_tokens": "fields requestId, output.outputTokenCount | sort output.outputTokenCount desc | limit 10",
}
def emit(**kw):
    print(json.dumps(kw), flush=True)
def du(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs if f.endswith(".parquet"))
folders = {}
for name in ("plain", "encrypted"):
    data = os.path.join(WORK, name)
    os.makedirs(data)
    cfg = os.path.join(data, "logbook.toml")
    with open(cfg, "w") as f:
        if name == "encrypted":
            subprocess.run([BIN, "keys", "generate-master", "--out", os.path.join(data, "master.key")], check=True, capture_output=True)
            f.write('[encryption]\nmaster_key_file = "master.key"\n')
    t = time.perf_counter()
    subprocess.run([BIN, "import", SRC, "--log-group", GROUP, "--data-dir", data, "--config", cfg], check=True, capture_output=True)
    dt = time.perf_counter() - t
    emit(what="import", folder=name, seconds=round(dt, 2), records_per_s=round(N / dt), store_bytes_per_record=round(du(data) / N))
    folders[name] = (data, cfg)
servers = {}
try:
    for name, (data, cfg) in folders.items():
        p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--config", cfg],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        url = p.stdout.readline().decode().split("listening on ", 1)[1].strip()
        key = json.load(open(os.path.join(data, "admin-credentials.json")))["apiKey"]
        servers[name] = (p, url, key)
    sess = requests.Session()
    def http(name, q):
        _, url, key = servers[name]
        r = sess.post(url + "/logbook/query", json={"query": q, "logGroups": [GROUP], "start": 0, "end": 4102444800000, "limit": 100000},
                      headers={"Authorization": f"Bearer {key}"}, timeout=600)
        r.raise_for_status()
        return r.json()["rows"]
    for q_name, q in QUESTIONS.items():
        # (Top 10 by output tokens: ties may pick other request ids; compare the values.)
        same = lambda rows: sorted(json.dumps(r if q_name != "top10_output_tokens" else r[1:]) for r in rows)
        assert same(http("plain", q)) == same(http("encrypted", q)), q_name  # same answers (and warm caches)
        times = {"plain": [], "encrypted": []}
        for _ in range(REPEAT):
            for name in times:  # alternately
                t = time.perf_counter(); http(name, q); times[name].append(time.perf_counter() - t)
        p, e = statistics.median(times["plain"]), statistics.median(times["encrypted"])
        emit(what=q_name, plain_s=round(p, 4), encrypted_s=round(e, 4), ratio=round(e / p, 2))
finally:
    for p, _, _ in servers.values():
        p.terminate(); p.wait()
PY

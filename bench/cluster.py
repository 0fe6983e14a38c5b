"""Queries over a shared home bucket (issue #13): the same questions answered by the
replica that holds the records in its own store, and by another replica that reads them
from the home (moto's S3 server on loopback). Run through bench/cluster.sh.

Prints a JSON line per question and a Markdown table: the median of REPEAT runs after a
warm-up, through POST /logbook/query on each replica."""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

import boto3
import requests

BIN = os.environ["LOGBOOK_BIN"]
SRC = os.environ["SRC"]
WORK = os.environ["WORK"]
N = int(os.environ.get("N", "100000"))
REPEAT = int(os.environ.get("REPEAT", "3"))
MOTO = os.path.join(os.environ["VENV"], "bin", "moto_server")
GROUP = "bench"

QUESTIONS = {
    "tokens_by_model": "stats sum(input.inputTokenCount), sum(output.outputTokenCount) by modelId",
    "needle_in_prompts": "filter input.inputBodyJson like /rare-phrase/ | fields requestId",
    "count_by_hour": "stats count(*) by bin(1h)",
    "top10_output_tokens": "fields requestId, output.outputTokenCount | sort output.outputTokenCount desc | limit 10",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(check, what, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    sys.exit(f"timed out waiting for {what}")


procs = []
try:
    port = free_port()
    moto_url = f"http://127.0.0.1:{port}"
    procs.append(subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, "moto")
    boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="home")
    config = f"""[[buckets]]
name = "shared"
url = "s3://home"
endpoint = "{moto_url}"
path_style = true
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
[cluster]
home = "shared"
poll_ms = 500
"""
    shutil.rmtree(os.path.join(WORK, "cluster"), ignore_errors=True)
    # a holds the records; b reads a's files from its local copy of them (the default);
    # c reads them from the home on every query (peer_cache_mb = 0).
    dirs = {n: os.path.join(WORK, "cluster", n) for n in "abc"}
    for n, d in dirs.items():
        os.makedirs(d)
        with open(os.path.join(d, "logbook.toml"), "w") as f:
            f.write(config + ("peer_cache_mb = 0\n" if n == "c" else ""))
    t = time.perf_counter()
    subprocess.run([BIN, "import", SRC, "--log-group", GROUP, "--data-dir", dirs["a"]], check=True, capture_output=True)
    print(json.dumps({"what": "import_a", "seconds": round(time.perf_counter() - t, 2)}), flush=True)
    servers = {}
    for n, d in dirs.items():
        p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", d, "--config", os.path.join(d, "logbook.toml")],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(p)
        url = p.stdout.readline().decode().split("listening on ", 1)[1].strip()
        key = json.load(open(os.path.join(d, "admin-credentials.json")))["apiKey"]
        servers[n] = (url, key)

    def health(n):
        return requests.get(servers[n][0] + "/healthz", timeout=10).json()

    t = time.perf_counter()
    # The files A's manifest names (compaction may leave retired ones on disk a while).
    manifest = json.load(open(os.path.join(dirs["a"], "store", "manifest.json")))
    files = sum(len(g.get("files", [])) for g in manifest["groups"].values())
    wait(lambda: health("a")["cluster"]["published"]["filesUploaded"] >= files and health("a")["cluster"]["published"]["published"] >= 1,
         "replica a's store in the home")
    print(json.dumps({"what": "publish_a", "files": files, "seconds": round(time.perf_counter() - t, 2)}), flush=True)
    node_a = open(os.path.join(dirs["a"], "node-id")).read().strip()
    wait(lambda: node_a in health("b")["cluster"]["peers"] and node_a in health("c")["cluster"]["peers"], "replicas b and c to see a")
    t = time.perf_counter()
    wait(lambda: health("b")["cluster"]["peerCache"]["copied"] >= files, "replica b's copy of a's files")
    print(json.dumps({"what": "copy_to_b", "files": files, "bytes": health("b")["cluster"]["peerCache"]["bytes"],
                      "seconds": round(time.perf_counter() - t, 2)}), flush=True)
    sess = requests.Session()

    def query(n, q):
        url, key = servers[n]
        r = sess.post(url + "/logbook/query", json={"query": q, "logGroups": [GROUP], "start": 0, "end": 4102444800000, "limit": 100000},
                      headers={"Authorization": f"Bearer {key}"}, timeout=600)
        r.raise_for_status()
        return r.json()

    def timed(fn):
        fn()
        ts = []
        for _ in range(REPEAT):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    rows = []
    for name, q in QUESTIONS.items():
        local = query("a", q)
        for other in ("b", "c"):
            remote = query(other, q)
            if name == "top10_output_tokens":
                # Ties in the sort key may pick different records: compare the key only.
                def keys(res):
                    i = res["columns"].index("output.outputTokenCount")
                    return sorted(str(r[i]) for r in res["rows"])
                assert keys(local) == keys(remote), name
            else:
                assert sorted(map(json.dumps, local["rows"])) == sorted(map(json.dumps, remote["rows"])), name
        t_a, t_b, t_c = timed(lambda: query("a", q)), timed(lambda: query("b", q)), timed(lambda: query("c", q))
        r = {"what": name, "own_store_s": round(t_a, 4), "local_copy_s": round(t_b, 4), "from_home_s": round(t_c, 4),
             "rows": len(local["rows"])}
        print(json.dumps(r), flush=True)
        rows.append(r)
    print(f"\n| question ({N:,} records) | replica with the records (own store) | another replica, local copy of the files | another replica, files from the home (moto) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['own_store_s']} s | {r['local_copy_s']} s | {r['from_home_s']} s |")
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()

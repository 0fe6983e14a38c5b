"""Order queries against a running Logbook over the query benchmark's store (issue #13).

Starts `logbook serve` on loopback over the store `bench/query.sh` imported (run that
first), and times, REPEAT times each after a warm-up (medians; 15 by default), the top 10
by output tokens, the default newest-first order with @message, an empty time range (the
fixed cost of a query), the needle and the count by hour; prints the statistics each
answer reports (records read, bytes of files read). Given several binaries, it runs
ROUNDS rounds (2 by default) of each in turn, a server at a time: compare builds in one
window.

    REPEAT=150 ~/.cache/logbook/venv/bin/python bench/order_queries.py OLD_BIN NEW_BIN
"""
import json
import os
import statistics
import subprocess
import sys
import time

import requests

BINS = sys.argv[1:]
REPEAT = int(os.environ.get("REPEAT", "15"))
ROUNDS = int(os.environ.get("ROUNDS", "2")) if len(BINS) > 1 else 1
DATA = os.path.expanduser(os.environ.get("DATA", "~/.cache/logbook/bench-data/work-1000000/data"))
QUERIES = [
    ("top10", "fields requestId, output.outputTokenCount | sort output.outputTokenCount desc | limit 10", False),
    ("top10_empty_range", "fields requestId, output.outputTokenCount | sort output.outputTokenCount desc | limit 10", True),
    ("newest20", "fields @timestamp, @message | limit 20", False),
    ("needle", "filter input.inputBodyJson like /rare-phrase/ | fields requestId", False),
    ("count_by_hour", "stats count(*) by bin(1h)", False),
]


def measure(BIN, rnd):
    srv = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", DATA],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        url = srv.stdout.readline().decode().split("listening on ", 1)[1].strip()
        key = json.load(open(os.path.join(DATA, "admin-credentials.json")))["apiKey"]
        s = requests.Session()

        def q(text, empty):
            start, end = (0, 1) if empty else (0, 4102444800000)
            r = s.post(url + "/logbook/query",
                       json={"query": text, "logGroups": ["bench"], "start": start, "end": end, "limit": 100000},
                       headers={"Authorization": f"Bearer {key}"}, timeout=600)
            r.raise_for_status()
            return r.json()

        for name, text, empty in QUERIES:
            stats = q(text, empty)["statistics"]
            ts = []
            for _ in range(REPEAT):
                t = time.perf_counter()
                q(text, empty)
                ts.append(time.perf_counter() - t)
            print(json.dumps({"bin": BIN, "round": rnd, "what": name, "median_ms": round(statistics.median(ts) * 1000, 2), **stats}))
    finally:
        srv.terminate()
        srv.wait()


for rnd in range(1, ROUNDS + 1):
    for b in BINS:
        measure(b, rnd)

#!/usr/bin/env python3
# Usage: bench/two_questions.py URL DATA_DIR   (a running `logbook serve --data-dir DATA_DIR`
# over an imported log group `bench`; the admin key is read from DATA_DIR). Used for the
# 10,000,000-record figures in BENCHMARKS.md, where bench/query.sh`s full run is too long.
# Two questions at 10M: Logbook over HTTP (a running serve) vs DuckDB and chDB over the
# store's own Parquet files (PEERS_ON=store's SQL). Medians of 3 after a warm-up.
import json, os, statistics, sys, time
import duckdb, requests, chdb
url, data = sys.argv[1], sys.argv[2]
m = json.load(open(os.path.join(data, "store", "manifest.json")))
files = [os.path.join(data, "store", f["path"]) for f in m["groups"]["bench"]["files"]]
print("files", len(files), "cold", sum(1 for f in m["groups"]["bench"]["files"] if f.get("cold")))
key = json.load(open(os.path.join(data, "admin-credentials.json")))["apiKey"]
s = requests.Session()
def http(q):
    r = s.post(url + "/logbook/query", json={"query": q, "logGroups": ["bench"], "start": 0, "end": 4102444800000, "limit": 100000},
               headers={"Authorization": f"Bearer {key}"}, timeout=600)
    r.raise_for_status(); return r.json()
def timed(fn, n=3):
    fn(); ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return round(statistics.median(ts), 4), [round(x, 3) for x in ts]
pq = f"read_parquet({files!r})"
# The files the manifest names (the folder also holds retired files until their grace ends).
ch = "file('" + os.path.dirname(files[0]) + "/{" + ",".join(os.path.basename(f) for f in files) + "}', Parquet)"
db = duckdb.connect()
Q = {
 "tokens_by_model": ("stats sum(input.inputTokenCount), sum(output.outputTokenCount) by modelId",
                     "SELECT model_id, sum(input_token_count), sum(output_token_count) FROM {t} GROUP BY 1"),
 "needle_in_prompts": ("filter input.inputBodyJson like /rare-phrase/ | fields requestId",
                       "SELECT request_id FROM {t} WHERE input_body_json LIKE '%rare-phrase%'"),
}
for name, (ins, sql) in Q.items():
    ours = http(ins)
    print(name, "logbook_http", timed(lambda: http(ins)), "rows", len(ours["rows"]), ours["statistics"]["recordsScanned"], flush=True)
    if name == "tokens_by_model":
        canon = lambda rows: sorted(tuple("" if v is None else str(v) for v in r) for r in rows)
        print(name, "values equal to DuckDB's:", canon(ours["rows"]) == canon(db.execute(sql.format(t=pq)).fetchall()), flush=True)
    print(name, "duckdb", timed(lambda: db.execute(sql.format(t=pq)).fetchall()), "rows", len(db.execute(sql.format(t=pq)).fetchall()), flush=True)
    print(name, "chdb", timed(lambda: chdb.query(sql.format(t=ch), "CSV")), "rows", len(chdb.query(sql.format(t=ch), "CSV").data().splitlines()), flush=True)

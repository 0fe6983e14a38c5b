"""Query benchmark (issue #4): Logbook vs DuckDB over the same 1,000,000 generated Bedrock
records. Run through bench/query.sh, which builds the binaries and sets the paths.

Measures, each as the median of REPEAT runs after one warm-up:
  * import rate of the gz JSON into a log group (logbook import);
  * four questions through a running Logbook (POST /logbook/query, Insights) and through
    the `logbook query` command (process start included), and in DuckDB (in process) over
    the gz JSON and over a Parquet copy of it;
  * bytes on disk per record: the gz archive, Logbook's store, DuckDB's Parquet copy.
Prints a JSON line per measurement and a Markdown table at the end.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import duckdb
import requests

try:  # chDB (ClickHouse in process, from PyPI): the second peer over the same Parquet copy
    import chdb
except ImportError:
    chdb = None

BIN = os.environ["LOGBOOK_BIN"]
SRC = os.environ["SRC"]          # generated archive folder
WORK = os.environ["WORK"]        # scratch folder (store, parquet)
N = int(os.environ.get("N", "1000000"))
REPEAT = int(os.environ.get("REPEAT", "3"))
# PEERS_ON=store: the peers read the store's own Parquet files (no gz JSON runs, no copy:
# at 10,000,000 records this box has no disk for a second copy).
ON_STORE = os.environ.get("PEERS_ON", "copy") == "store"
GROUP = "bench"
DATA = os.path.join(WORK, "data")
results = []


def emit(**kw):
    results.append(kw)
    print(json.dumps(kw), flush=True)


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def timed(fn, repeat=None):
    fn()  # warm-up
    ts = []
    for _ in range(repeat or REPEAT):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


# 1. Import.
if not os.path.exists(os.path.join(DATA, "store", "manifest.json")):
    t = time.perf_counter()
    p = subprocess.run([BIN, "import", SRC, "--log-group", GROUP, "--data-dir", DATA], capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(p.stderr)
    emit(what="import", seconds=round(dt, 2), records_per_s=round(N / dt), stdout=p.stdout.strip())
    with open(os.path.join(WORK, "import.json"), "w") as f:
        f.write(json.dumps(results[-1]) + "\n")

gz_bytes = du(SRC)
store_bytes = du(os.path.join(DATA, "store"))
emit(what="bytes_per_record", archive_gz=round(gz_bytes / N), logbook_store=round(store_bytes / N))
saved = os.path.join(WORK, "import.json")
if results and results[0].get("what") != "import" and os.path.exists(saved):
    # The store of an earlier run (FRESH=1 bench/query.sh imports anew): its import
    # figure, said to be that run's.
    for line in open(saved):
        r = json.loads(line)
        r["reused_from"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(saved)))
        print(json.dumps(r))

# 2. DuckDB over the gz JSON, and a Parquet copy.
db = duckdb.connect()
db.execute(f"SET threads={os.cpu_count()}")
db.execute("SET preserve_insertion_order=false")  # else COPY of 1M records runs out of memory
db.execute(f"SET temp_directory='{os.path.join(WORK, 'duckdb-tmp')}'")
gz = f"read_json('{SRC}/AWSLogs/**/*.json.gz', format='newline_delimited')"
pq_path = os.path.join(WORK, "duckdb.parquet")
if not ON_STORE and not os.path.exists(pq_path):
    t = time.perf_counter()
    db.execute(f"COPY (SELECT * FROM {gz}) TO '{pq_path}' (FORMAT parquet, COMPRESSION zstd)")
    emit(what="duckdb_parquet_copy", seconds=round(time.perf_counter() - t, 2))
if not ON_STORE:
    emit(what="bytes_per_record_duckdb_parquet", bytes=round(os.path.getsize(pq_path) / N))
pq = f"read_parquet('{pq_path}')"

QUESTIONS = {  # name: (Insights, DuckDB SQL, chDB SQL)
    "tokens_by_model": (
        "stats sum(input.inputTokenCount), sum(output.outputTokenCount) by modelId",
        "SELECT modelId, sum(input.inputTokenCount), sum(output.outputTokenCount) FROM {t} GROUP BY 1",
        "SELECT modelId, sum(input.inputTokenCount), sum(output.outputTokenCount) FROM {t} GROUP BY 1",
    ),
    "needle_in_prompts": (
        "filter input.inputBodyJson like /rare-phrase/ | fields requestId",
        "SELECT requestId FROM {t} WHERE CAST(input.inputBodyJson AS VARCHAR) LIKE '%rare-phrase%'",
        "SELECT requestId FROM {t} WHERE toString(input.inputBodyJson) LIKE '%rare-phrase%'",
    ),
    "count_by_hour": (
        "stats count(*) by bin(1h)",
        "SELECT date_trunc('hour', CAST(timestamp AS TIMESTAMP)), count(*) FROM {t} GROUP BY 1",
        "SELECT toStartOfHour(timestamp), count() FROM {t} GROUP BY 1",
    ),
    "top10_output_tokens": (
        "fields requestId, output.outputTokenCount | sort output.outputTokenCount desc | limit 10",
        "SELECT requestId, output.outputTokenCount FROM {t} ORDER BY output.outputTokenCount DESC LIMIT 10",
        "SELECT requestId, output.outputTokenCount FROM {t} ORDER BY output.outputTokenCount DESC LIMIT 10",
    ),
}
ch_pq = f"file('{pq_path}', Parquet)"
if ON_STORE:
    # The store's columns are flat (snake_case); its text index column is ignored.
    # The files the manifest names, not a glob: a folder also holds files retired by a
    # compaction until their grace period ends (read twice, they duplicate records).
    with open(os.path.join(DATA, "store", "manifest.json")) as f:
        named = [fm["path"] for fm in json.load(f)["groups"][GROUP]["files"]]
    pq = f"read_parquet({[os.path.join(DATA, 'store', p) for p in named]!r})"
    gdir = os.path.dirname(os.path.join(DATA, "store", named[0]))
    ch_pq = "file('" + gdir + "/{" + ",".join(os.path.basename(p) for p in named) + "}', Parquet)"
    QUESTIONS = {
        "tokens_by_model": (QUESTIONS["tokens_by_model"][0],
                            "SELECT model_id, sum(input_token_count), sum(output_token_count) FROM {t} GROUP BY 1",
                            "SELECT model_id, sum(input_token_count), sum(output_token_count) FROM {t} GROUP BY 1"),
        "needle_in_prompts": (QUESTIONS["needle_in_prompts"][0],
                              "SELECT request_id FROM {t} WHERE input_body_json LIKE '%rare-phrase%'",
                              "SELECT request_id FROM {t} WHERE input_body_json LIKE '%rare-phrase%'"),
        "count_by_hour": (QUESTIONS["count_by_hour"][0],
                          "SELECT date_trunc('hour', timestamp), count(*) FROM {t} GROUP BY 1",
                          "SELECT toStartOfHour(timestamp), count() FROM {t} GROUP BY 1"),
        "top10_output_tokens": (QUESTIONS["top10_output_tokens"][0],
                                "SELECT request_id, output_token_count FROM {t} ORDER BY 2 DESC LIMIT 10",
                                "SELECT request_id, output_token_count FROM {t} ORDER BY 2 DESC LIMIT 10"),
    }

# 3. A running Logbook over the imported store.
srv = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", DATA], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
try:
    url = srv.stdout.readline().decode().split("listening on ", 1)[1].strip()
    key = json.load(open(os.path.join(DATA, "admin-credentials.json")))["apiKey"]
    sess = requests.Session()
    # A first start over an import compacts its closed days (LZ4 hot files into zstd
    # cold ones, about a core for minutes). Timed while that runs, every engine here,
    # the peers too, would share the box with it: wait until the store's manifest has
    # not changed for 20 s (at most 20 minutes), and say how long that took.
    manifest = os.path.join(DATA, "store", "manifest.json")
    t0 = time.perf_counter()
    last, still = os.path.getmtime(manifest), time.perf_counter()
    while time.perf_counter() - still < 20 and time.perf_counter() - t0 < 1200:
        time.sleep(1)
        m = os.path.getmtime(manifest)
        if m != last:
            last, still = m, time.perf_counter()
    emit(what="compaction_wait", seconds=round(time.perf_counter() - t0 - 20, 1))

    def http(q):
        r = sess.post(url + "/logbook/query", json={"query": q, "logGroups": [GROUP], "start": 0, "end": 4102444800000, "limit": 100000},
                      headers={"Authorization": f"Bearer {key}"}, timeout=600)
        r.raise_for_status()
        return r.json()

    for name, (insights, sql, ch_sql) in QUESTIONS.items():
        ours = http(insights)
        t_http = timed(lambda: http(insights))
        t_cli = timed(lambda: subprocess.run([BIN, "query", "--data-dir", DATA, "--log-group", GROUP, "--format", "csv", insights],
                                             check=True, capture_output=True))
        # The gz JSON scan takes tens of seconds: one timed run after the warm-up.
        t_gz = None if ON_STORE else timed(lambda: db.execute(sql.format(t=gz)).fetchall(), repeat=1)
        t_pq = timed(lambda: db.execute(sql.format(t=pq)).fetchall())
        theirs = db.execute(sql.format(t=pq)).fetchall()
        t_ch, rows_ch = None, None
        if chdb is not None:
            t_ch = round(timed(lambda: chdb.query(ch_sql.format(t=ch_pq), "CSV")), 4)
            rows_ch = len(chdb.query(ch_sql.format(t=ch_pq), "CSV").data().splitlines())
        # The same answer, value for value, where both sides write values alike.
        same = None
        if name == "tokens_by_model":
            canon = lambda rows: sorted(tuple("" if v is None else str(v) for v in r) for r in rows)
            same = canon(ours["rows"]) == canon(theirs)
        elif name == "needle_in_prompts":
            same = sorted(r[0] for r in ours["rows"]) == sorted(str(r[0]) for r in theirs)  # DuckDB: UUIDs
        elif name == "count_by_hour":
            # Hours as Logbook writes them ("2026-11-28 00:00:00.000") and DuckDB's datetimes.
            same = sorted((r[0][:19], int(r[1])) for r in ours["rows"]) == sorted((str(h)[:19], c) for h, c in theirs)
        elif name == "top10_output_tokens":
            # The counts in order (calls tied on a count may be any of them).
            same = [None if r[1] is None else int(r[1]) for r in ours["rows"]] == [r[1] for r in theirs]
        emit(what=name, logbook_http_s=round(t_http, 4), logbook_cli_s=round(t_cli, 4), duckdb_gz_s=t_gz and round(t_gz, 4),
             duckdb_parquet_s=round(t_pq, 4), chdb_parquet_s=t_ch, speedup_vs_duckdb_gz=t_gz and round(t_gz / t_http, 1),
             rows_logbook=len(ours["rows"]), rows_duckdb=len(theirs), rows_chdb=rows_ch, values_equal=same)
    # 4. The monthly chargeback report by team (issue #10: <= 1 s at 1M records), against
    # the same aggregation written by hand in DuckDB over the Parquet copy.
    def report():
        r = sess.post(url + "/logbook/report/chargeback", json={"by": ["team"], "period": "month", "logGroups": [GROUP]},
                      headers={"Authorization": f"Bearer {key}"}, timeout=600)
        r.raise_for_status()
        return r.json()
    ours = report()
    t_http = timed(report)
    t_cli = timed(lambda: subprocess.run([BIN, "report", "chargeback", "--data-dir", DATA, "--log-group", GROUP, "--by", "team",
                                          "--format", "csv"], check=True, capture_output=True))
    duck_sql = ("SELECT strftime(date_trunc('month', CAST(timestamp AS TIMESTAMP)), '%Y-%m') AS m, "
                "coalesce(logbook.principalTags.team, requestMetadata.team, '(none)') AS team, count(*), "
                "sum(CAST(logbook.cost AS DECIMAL(38, 12))) FROM {t} GROUP BY 1, 2")
    if ON_STORE:  # flat columns: the tags are JSON text, the cost a decimal
        duck_sql = ("SELECT strftime(date_trunc('month', timestamp), '%Y-%m') AS m, "
                    "coalesce(json_extract_string(principal_tags, '$.team'), json_extract_string(request_metadata, '$.team'), "
                    "'(none)') AS team, count(*), sum(cost) FROM {t} GROUP BY 1, 2")
    t_pq = timed(lambda: db.execute(duck_sql.format(t=pq)).fetchall())
    theirs = db.execute(duck_sql.format(t=pq)).fetchall()
    duck_total = sum(r[3] for r in theirs)
    emit(what="chargeback_month_by_team", logbook_http_s=round(t_http, 4), logbook_cli_s=round(t_cli, 4), duckdb_gz_s=None,
         duckdb_parquet_s=round(t_pq, 4), speedup_vs_duckdb_gz=None, rows_logbook=len(ours["rows"]), rows_duckdb=len(theirs),
         total_logbook=ours["total"]["cost"], total_duckdb=str(duck_total.normalize()),
         totals_equal=str(duck_total.normalize()) == ours["total"]["cost"])
finally:
    srv.terminate()
    srv.wait()

print("\n| question | Logbook (HTTP) | `logbook query` | DuckDB gz JSON | DuckDB Parquet | chDB Parquet | vs DuckDB gz |")
print("|---|---|---|---|---|---|---|")
for r in results:
    if "logbook_http_s" in r:
        gz_s = f"{r['duckdb_gz_s']} s" if r['duckdb_gz_s'] is not None else "—"
        vs = f"{r['speedup_vs_duckdb_gz']}x" if r['speedup_vs_duckdb_gz'] is not None else "—"
        ch = f"{r['chdb_parquet_s']} s" if r.get('chdb_parquet_s') is not None else "—"
        print(f"| {r['what']} | {r['logbook_http_s']} s | {r['logbook_cli_s']} s | {gz_s} | {r['duckdb_parquet_s']} s | {ch} | {vs} |")

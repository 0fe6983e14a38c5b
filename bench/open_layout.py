"""Open-layout benchmark (issue #13): DuckDB over the open layout against Logbook's own
engine, the same SQL text on both. Run through bench/open-layout.sh.

  * writes the generated records in the open layout with the product's ParquetFormat
    (records/s, bytes per record), once, cached in $WORK/open;
  * imports them into a Logbook log group if the query benchmark has not (cached);
  * times each question, median of REPEAT after one warm-up: DuckDB in process over the
    view of docs/open-layout/duckdb.sql; a running Logbook (POST /logbook/query, SQL);
    the `logbook query --sql` command (process start included); and checks that the
    answers agree.
"""

import decimal
import json
import os
import statistics
import subprocess
import sys
import time

import duckdb
import requests

BIN = os.environ["LOGBOOK_BIN"]
TOOL = os.environ["OPEN_LAYOUT_BIN"]
SRC = os.environ["SRC"]
WORK = os.environ["WORK"]
N = int(os.environ.get("N", "1000000"))
REPEAT = int(os.environ.get("REPEAT", "3"))
GROUP = "bench"
DATA = os.path.join(WORK, "data")
OPEN = os.path.join(WORK, "open")
ROOT = os.path.join(os.path.dirname(__file__), "..")
results = []


def emit(**kw):
    results.append(kw)
    print(json.dumps(kw, default=str), flush=True)


def du(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def timed(fn):
    fn()
    ts = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


if not os.path.exists(os.path.join(OPEN, "done.json")):
    p = subprocess.run([TOOL, "--src", SRC, "--out", OPEN], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(p.stderr)
    with open(os.path.join(OPEN, "done.json"), "w") as f:
        f.write(p.stdout)
written = json.load(open(os.path.join(OPEN, "done.json")))
emit(what="write_open_layout", records_per_s=written["records_per_s"], seconds=written["seconds"],
     bytes_per_record=round(du(OPEN) / N), archive_gz_bytes_per_record=round(du(SRC) / N),
     files=sum(1 for _, _, fs in os.walk(OPEN) for f in fs if f.endswith(".parquet")))

if not os.path.exists(os.path.join(DATA, "store", "manifest.json")):
    p = subprocess.run([BIN, "import", SRC, "--log-group", GROUP, "--data-dir", DATA], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(p.stderr)

db = duckdb.connect()
db.execute(f"SET threads={os.cpu_count()}")
db.execute(open(os.path.join(ROOT, "docs", "open-layout", "duckdb.sql")).read().replace("<location>", OPEN))

QUESTIONS = {
    "tokens_by_model": "SELECT model_id, sum(input_token_count) AS i, sum(output_token_count) AS o FROM invocations GROUP BY model_id ORDER BY model_id",
    "needle_in_prompts": "SELECT request_id FROM invocations WHERE input_body_json LIKE '%rare-phrase%' ORDER BY request_id",
    "count_by_hour": "SELECT date_trunc('hour', timestamp) AS h, count(*) AS n FROM invocations GROUP BY 1 ORDER BY 1",
    "top10_output_tokens": "SELECT request_id, output_token_count FROM invocations ORDER BY output_token_count DESC NULLS LAST, request_id LIMIT 10",
    "cost_by_operation": "SELECT operation, count(*) AS n, sum(cost) AS c FROM invocations GROUP BY operation ORDER BY operation",
}


def norm(v):
    if v is None:
        return None
    if isinstance(v, (int, float, decimal.Decimal)):
        return decimal.Decimal(str(v)).normalize()
    try:
        return decimal.Decimal(v).normalize()
    except (decimal.InvalidOperation, TypeError):
        return str(v)


srv = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", DATA], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
try:
    url = srv.stdout.readline().decode().split("listening on ", 1)[1].strip()
    key = json.load(open(os.path.join(DATA, "admin-credentials.json")))["apiKey"]
    sess = requests.Session()

    def http(sql):
        r = sess.post(url + "/logbook/query", json={"query": sql, "language": "sql", "logGroups": [GROUP], "start": 0,
                                                    "end": 4102444800000, "limit": 100000},
                      headers={"Authorization": f"Bearer {key}"}, timeout=600)
        r.raise_for_status()
        return r.json()

    for name, sql in QUESTIONS.items():
        # DuckDB hands TIMESTAMPTZ to Python through pytz: the hour goes out as text.
        duck_sql = f"SELECT CAST(h AS VARCHAR) AS h, n FROM ({sql}) q ORDER BY h" if name == "count_by_hour" else sql
        theirs = db.execute(duck_sql).fetchall()
        ours = http(sql)
        t_duck = timed(lambda: db.execute(duck_sql).fetchall())
        t_http = timed(lambda: http(sql))
        t_cli = timed(lambda: subprocess.run([BIN, "query", "--sql", "--data-dir", DATA, "--log-group", GROUP, "--format", "csv", sql],
                                             check=True, capture_output=True))
        # Time buckets print differently (DuckDB in the session's zone): compare the rest.
        skip_first = name == "count_by_hour"
        a = [[norm(v) for v in (r[1:] if skip_first else r)] for r in theirs]
        b = [[norm(v) for v in (list(row.values())[1:] if skip_first else row.values())] for row in
             [dict(zip(ours["columns"], r)) if isinstance(r, list) else r for r in ours["rows"]]]
        emit(what=name, duckdb_open_layout_s=round(t_duck, 4), logbook_http_s=round(t_http, 4), logbook_cli_s=round(t_cli, 4),
             rows=len(theirs), answers_equal=a == b)
finally:
    srv.terminate()
    srv.wait()

print("\n| question | DuckDB over the open layout | Logbook (HTTP) | `logbook query --sql` | same answer |")
print("|---|---|---|---|---|")
for r in results:
    if "duckdb_open_layout_s" in r:
        print(f"| {r['what']} | {r['duckdb_open_layout_s']} s | {r['logbook_http_s']} s | {r['logbook_cli_s']} s | {r['answers_equal']} |")

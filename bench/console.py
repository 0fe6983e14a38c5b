"""Console benchmark (issue #14): N generated records imported into the default log group,
a release server over them, and Debian's headless Chromium (Playwright) timing what a
person waits for:

  * overview: from navigation to the page's numbers and charts painted (the totals, the
    series chart, the top tables), and the browser's first contentful paint of the shell;
  * explorer: from clicking "Run query" on `stats ... by bin(1d)` to the chart painted.

The peer is DuckDB (PyPI) answering the overview's main aggregate (with exact p50/p99 per
day) over the same records, reading the store's own Parquet files, in the same run. Prints one JSON line per figure.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import duckdb
from playwright.sync_api import sync_playwright

BIN = os.environ["LOGBOOK_BIN"]
SRC = os.environ["SRC"]
WORK = os.environ["WORK"]
N = int(os.environ.get("N", "1000000"))
REPEAT = int(os.environ.get("REPEAT", "5"))
CHROMIUM = os.environ.get("LOGBOOK_CHROMIUM", "/usr/bin/chromium")
DATA = os.path.join(WORK, "console-data")


def emit(**kw):
    print(json.dumps(kw), flush=True)


if not os.path.exists(os.path.join(DATA, "store", "manifest.json")):
    t = time.perf_counter()
    p = subprocess.run([BIN, "import", SRC, "--data-dir", DATA], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(p.stderr)
    emit(what="import", seconds=round(time.perf_counter() - t, 1))

srv = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", DATA], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL)
try:
    url = srv.stdout.readline().decode().split("listening on ", 1)[1].strip()
    key = json.load(open(os.path.join(DATA, "admin-credentials.json")))["apiKey"]
    # A long-running server has compacted the imported hour files into day files: wait
    # until its compaction (every minute) leaves the file count unchanged twice.
    manifest = os.path.join(DATA, "store", "manifest.json")

    def files():
        m = json.load(open(manifest))
        return sum(len(g.get("files", [])) for g in m["groups"].values())

    t, last, same = time.perf_counter(), None, 0
    while same < 2:
        time.sleep(65)
        n = files()
        same = same + 1 if n == last else 0
        last = n
    emit(what="compaction_settled", files=last, waited_s=round(time.perf_counter() - t))

    # The overview over HTTP, and the three requests the page made before rollups, timed
    # in the same run over the same store.
    import urllib.request

    def post(path, body):
        req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": "Bearer " + key, "content-type": "application/json"})
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=600) as r:
            out = json.load(r)
        return time.perf_counter() - t, out

    end = int(time.time() * 1000)
    span = {"start": end - 31536000000, "end": end}
    # (The chargeback itself now reads rollups too: its SQL stands in for it here.)
    before = [
        ("/logbook/query", {**span, "language": "sql", "query":
                            "SELECT to_char(date_bin(INTERVAL '15 minutes', timestamp), '%Y-%m-%d') AS d, count(*), "
                            "sum(input_token_count), sum(output_token_count), CAST(sum(cost) AS VARCHAR) "
                            "FROM invocations GROUP BY 1"}),
        ("/logbook/query", {**span, "query": "stats count(*) as calls, count(errorCode) as errors, "
                            "pct(logbook.latencyMs, 50) as p50, pct(logbook.latencyMs, 99) as p99"}),
        ("/logbook/query", {**span, "query": "stats count(*) as calls, count(errorCode) as errors, sum(inputTokenCount) as i, "
                            "sum(outputTokenCount) as o, pct(logbook.latencyMs, 50) as p50, "
                            "pct(logbook.latencyMs, 99) as p99 by bin(1d)"}),
    ]
    cost_sql = ("SELECT to_char(date_trunc('month', timestamp), '%Y-%m') AS p, "
                "coalesce(json_get(principal_tags, 'team'), json_get(request_metadata, 'team'), '(none)') AS team, "
                "count(*), sum(input_token_count), sum(output_token_count), CAST(sum(cost) AS VARCHAR) "
                "FROM invocations GROUP BY 1, 2")
    for name, runs in (("overview_api", [[("/logbook/report/overview", {**span, "bin": "1d", "tz": "UTC"})]]),
                       ("before_rollups_cards_and_charts_api", [before]),
                       ("chargeback_by_team_month_api", [[("/logbook/report/chargeback", {**span, "by": ["team"], "period": "month"})]]),
                       ("chargeback_by_team_month_as_sql_api", [[("/logbook/query", {**span, "language": "sql", "query": cost_sql})]])):
        ts = []
        from concurrent.futures import ThreadPoolExecutor
        for i in range(REPEAT + 1):
            # At once, as the page sent them.
            t0 = time.perf_counter()
            with ThreadPoolExecutor(len(runs[0])) as ex:
                outs = list(ex.map(lambda pb: post(*pb), runs[0]))
            dt = time.perf_counter() - t0
            out = outs[0][1]
            if i:
                ts.append(dt)
        extra = {"sources": out["sources"], "calls": out["total"]["calls"], "cost": out["total"]["cost"]} if "sources" in out else \
            {"total_cost": out["total"]["cost"]} if "total" in out else {}
        emit(what=name, records=N, median_s=round(statistics.median(ts), 3), runs=[round(x, 3) for x in ts], **extra)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        page.set_default_timeout(600_000)
        page.goto(url + "/console")
        # The generated records end on 2026-11-01: look at the last 365 days.
        page.evaluate("() => localStorage.setItem('logbook.range', '31536000000')")
        page.get_by_label("API key", exact=True).fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("#card-p99")
        top, overview, fcp = [], [], []
        for i in range(REPEAT + 1):
            page.goto(url + "/console#/overview")
            t = time.perf_counter()
            page.reload()
            page.wait_for_selector("#card-cost")
            page.wait_for_selector("#card-p99")
            # Attached, not visible: a flat series (the same calls every day) is a line of
            # zero height, which Playwright does not count as visible.
            page.wait_for_selector("figure.chart svg polyline", state="attached")
            t_top = time.perf_counter() - t
            page.wait_for_selector("#recent[data-loaded]")
            dt = time.perf_counter() - t
            paint = page.evaluate("() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null")
            if i:  # the first is a warm-up
                top.append(t_top)
                overview.append(dt)
                fcp.append(paint)
        calls = page.locator("#card-calls").inner_text()
        emit(what="overview_cards_and_charts_painted", records=N, calls_shown=calls, median_s=round(statistics.median(top), 3),
             runs=[round(x, 3) for x in top])
        emit(what="overview_whole_page_painted", records=N, median_s=round(statistics.median(overview), 3),
             runs=[round(x, 3) for x in overview])
        emit(what="overview_first_contentful_paint", median_ms=round(statistics.median(fcp), 1))
        # Cost: the default report (by team, per month) and the budgets, from navigation.
        runs = []
        for i in range(REPEAT + 1):
            page.goto(url + "/console#/overview")
            page.wait_for_selector("#card-cost")
            t = time.perf_counter()
            page.get_by_role("link", name="Cost").click()
            page.wait_for_selector("#report-total")
            if i:
                runs.append(time.perf_counter() - t)
        emit(what="cost_report_painted", records=N, median_s=round(statistics.median(runs), 3),
             runs=[round(x, 3) for x in runs], total=page.locator("#report-total").inner_text())
        page.goto(url + "/console#/explorer")
        q = page.get_by_label("Query", exact=False).first
        q.fill("stats count(*) as calls, sum(outputTokenCount) as out by bin(1d)")
        page.get_by_label("Show as").select_option("chart")
        runs = []
        for i in range(REPEAT + 1):
            page.evaluate("() => { const r = document.getElementById('results'); while (r.firstChild) r.firstChild.remove(); }")
            t = time.perf_counter()
            page.get_by_role("button", name="Run query").click()
            page.wait_for_selector("#results svg", timeout=120_000)
            dt = time.perf_counter() - t
            if page.locator("#results svg polyline").count() < 1:
                sys.exit("no chart: " + page.locator("#results").inner_text()[:300])
            if i:
                runs.append(dt)
        emit(what="explorer_query_to_chart", records=N, median_s=round(statistics.median(runs), 3), runs=[round(x, 3) for x in runs])
        browser.close()
finally:
    srv.terminate()
    srv.wait()

# The peer: DuckDB (in process, no HTTP, no browser), the overview's series aggregate over
# the same records: Logbook's own store files, which are plain Parquet (the open layout).
files = os.path.join(DATA, "store", "groups", "**", "*.parquet")
db = duckdb.connect()
sql = (f"SELECT CAST(date_trunc('day', timestamp) AS VARCHAR) AS d, count(*), count(error_code), "
       f"sum(input_token_count), sum(output_token_count), quantile_cont(latency_ms, 0.5), "
       f"quantile_cont(latency_ms, 0.99) FROM read_parquet('{files}') GROUP BY 1")
ts = []
for i in range(REPEAT + 1):
    t = time.perf_counter()
    db.execute(sql).fetchall()
    if i:
        ts.append(time.perf_counter() - t)
emit(what="duckdb_overview_series_aggregate", records=N, median_s=round(statistics.median(ts), 3), runs=[round(x, 3) for x in ts])

"""The console (issue #14), driven in Debian's headless Chromium through Playwright: sign-in,
every page, a query with field names offered as you type, CSV and JSON downloads, the
record view, one truth between the page, the chargeback report and the records, hostile
prompts that must stay text, permissions page by page, and the session's defences
(cookie flags, CSRF, expiry, one error for any wrong credential, audit)."""

import base64
import decimal
import json
import os
import time

import boto3
import pytest
import requests
from botocore.config import Config as BotoConfig

from conftest import Server
from playwright.sync_api import expect

CHROMIUM = os.environ.get("LOGBOOK_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("LOGBOOK_SCREENSHOTS") or os.path.join("/tmp", "logbook-console-screenshots")
# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
HOSTILE = ('hi <script>window.__xss=1</script> <img src=x onerror="window.__xss=2"> '
           '[click](javascript:window.__xss=3) <a href="javascript:window.__xss=4">a</a> ')
LONG = "W" * 20000

CONFIG = """
[server]
account_id = "123456789012"

[[principals]]
arn = "arn:aws:iam::123456789012:user/admin"
access_key_id = "AKIAADMIN0000000000"
secret_access_key = "admin-secret"
api_key = "sk-admin-console"
permissions = ["role:admin", "logging:read"]
tags = { team = "platform" }

[[principals]]
arn = "arn:aws:iam::123456789012:user/analyst"
api_key = "sk-analyst-console"
permissions = ["role:analyst"]

[[principals]]
arn = "arn:aws:iam::123456789012:user/auditor"
api_key = "sk-auditor-console"
permissions = ["role:auditor"]

[[principals]]
arn = "arn:aws:iam::123456789012:user/app"
access_key_id = "AKIAAPP000000000000"
secret_access_key = "app-secret"
permissions = ["role:app"]
"""


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium"
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Watch:
    """What a page did that it must not: script dialogs, uncaught errors, CSP violations."""

    def __init__(self, page):
        self.dialogs, self.errors, self.csp = [], [], []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.csp.append(m.text) if "Content Security Policy" in m.text else None)

    def clean(self):
        assert self.dialogs == [] and self.errors == [] and self.csp == [], (self.dialogs, self.errors, self.csp)


def new_page(browser, tz="UTC"):
    ctx = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900}, timezone_id=tz)
    page = ctx.new_page()
    page.set_default_timeout(20000)
    return ctx, page, Watch(page)


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


def sign_in(page, url, api_key):
    page.goto(url + "/console")
    page.get_by_label("API key", exact=True).fill(api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#app:not([hidden])")


def runtime(s, key="AKIAAPP000000000000", secret="app-secret"):
    return boto3.client("bedrock-runtime", endpoint_url=s.url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=BotoConfig(retries={"total_max_attempts": 1}))


def api_query(s, query, language="insights", key="sk-admin-console"):
    r = requests.post(s.url + "/logbook/query", headers={"Authorization": f"Bearer {key}"},
                      json={"query": query, "language": language, "start": 0}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait_count(s, n):
    deadline = time.time() + 20
    while True:
        got = int(api_query(s, "stats count(*) as n")["rows"][0][0] or 0)
        if got >= n:
            return
        assert time.time() < deadline, f"{got} records, expected {n}"
        time.sleep(0.2)


def seed(s):
    """A small day: two teams, two models, an error, a stream, an image and a hostile prompt."""
    rt = runtime(s)
    ids = []
    for i in range(3):
        r = rt.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                        messages=[{"role": "user", "content": [{"text": f"question {i} from search"}]}],
                        requestMetadata={"team": "search"})
        ids.append(r["ResponseMetadata"]["RequestId"])
    for ev in rt.converse_stream(modelId="amazon.nova-lite-v1:0", messages=[{"role": "user", "content": [{"text": "stream"}]}],
                                 requestMetadata={"team": "ads"})["stream"]:
        pass
    hostile = rt.converse(modelId="amazon.nova-lite-v1:0", requestMetadata={"team": "ads"}, messages=[{"role": "user", "content": [
        {"text": HOSTILE + LONG}, {"image": {"format": "png", "source": {"bytes": PNG}}}]}])
    with pytest.raises(Exception):
        rt.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=[])
    wait_count(s, 6)
    return ids, hostile["ResponseMetadata"]["RequestId"]


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data", CONFIG).start()
    yield s
    s.stop()


def test_every_page_in_a_real_browser_and_one_truth_for_every_total(server, browser, tmp_path):
    s = server
    ids, _ = seed(s)
    cw = boto3.client("cloudwatch", endpoint_url=s.url, region_name="us-east-1", aws_access_key_id="AKIAADMIN0000000000",
                      aws_secret_access_key="admin-secret")
    cw.put_metric_alarm(AlarmName="client-errors", Namespace="AWS/Bedrock", MetricName="InvocationClientErrors",
                        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=0,
                        ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching")
    ctx, page, watch = new_page(browser)
    # Keyboard only: type the key, Enter submits.
    page.goto(s.url + "/console")
    page.get_by_label("API key", exact=True).focus()
    page.keyboard.type("sk-admin-console")
    page.keyboard.press("Enter")
    page.wait_for_selector("#card-cost")
    page.wait_for_selector("figure.chart svg[role=img]")
    shot(page, "overview")

    # One truth: the page's totals = the chargeback report = the sum over the records.
    report = requests.post(s.url + "/logbook/report/chargeback", headers={"Authorization": "Bearer sk-admin-console"},
                           json={"by": [], "period": "day"}, timeout=30).json()
    sql = api_query(s, "SELECT CAST(sum(cost) AS VARCHAR) AS c, count(*) AS n, sum(input_token_count) AS i FROM invocations", "sql")
    sql_cost, sql_n, sql_in = sql["rows"][0]
    page_cost = page.locator("#card-cost").inner_text()
    assert decimal.Decimal(page_cost) == decimal.Decimal(report["total"]["cost"]) == decimal.Decimal(sql_cost) > 0
    assert page.locator("#card-calls").inner_text() == str(report["total"]["calls"]) == sql_n == "6"
    assert page.locator("#card-input").inner_text().replace(",", "") == str(report["total"]["inputTokens"]) == sql_in
    assert page.locator("#card-errors").inner_text() == "1"
    assert "Days are cut in UTC" in page.locator("main").inner_text()
    # The overview's own answer (what the page drew) is the same truth.
    ov = requests.post(s.url + "/logbook/report/overview", headers={"Authorization": "Bearer sk-admin-console"},
                       json={"bin": "1h"}, timeout=30).json()
    assert (ov["total"]["calls"], decimal.Decimal(ov["total"]["cost"])) == (6, decimal.Decimal(report["total"]["cost"]))
    assert {t["value"]: t["calls"] for t in ov["top"]["team"]} == {"search": 3, "ads": 2, "(none)": 1}
    assert "search" in page.locator("main").inner_text()
    # The zone days are cut in is shown and can be chosen; totals stay the sums.
    page.get_by_label("Time zone").select_option("Asia/Kolkata")
    expect(page.locator("main")).to_contain_text("Days are cut in Asia/Kolkata")
    page.wait_for_selector("#card-cost")
    assert decimal.Decimal(page.locator("#card-cost").inner_text()) == decimal.Decimal(report["total"]["cost"])
    page.get_by_label("Time zone").select_option("UTC")

    # Every control has a name a screen reader can say.
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button, a[href]')]
        .filter(e => e.offsetParent !== null)
        .filter(e => !((e.labels && e.labels.length) || e.getAttribute('aria-label') || e.textContent.trim()))
        .map(e => e.outerHTML.slice(0, 80))""")
    assert unnamed == []

    # Keyboard navigation: Tab reaches the page links, Enter follows one.
    page.locator("body").focus()
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Explorer":
            break
    else:
        pytest.fail("Tab never reached the Explorer link")
    page.keyboard.press("Enter")
    page.wait_for_selector("#q")

    # Explorer: field names are offered as you type; arrows and Enter take one.
    q = page.get_by_label("Query", exact=False).first
    q.fill("")
    q.type("fields reque")
    expect(page.locator("#suggest")).to_contain_text("requestId")
    q.press("ArrowDown")
    q.press("Enter")
    assert q.input_value() == "fields requestId"
    q.fill("fields @timestamp, requestId, modelId, logbook.cost | sort @timestamp desc | limit 50")
    q.press("Control+Enter")
    page.wait_for_selector("#result-count")
    assert page.locator("#result-count").inner_text().startswith("6 rows")
    shot(page, "explorer")
    with page.expect_download() as d:
        page.get_by_role("button", name="Download CSV").click()
    lines = open(d.value.path()).read().splitlines()
    assert lines[0] == "@timestamp,requestId,modelId,logbook.cost" and len(lines) == 7
    assert set(ids) <= {line.split(",")[1] for line in lines[1:]}
    with page.expect_download() as d:
        page.get_by_role("button", name="Download JSON").click()
    rows = json.load(open(d.value.path()))
    assert len(rows) == 6 and set(ids) <= {r["requestId"] for r in rows}
    # A stats ... by bin() result as a chart; the query is in the history.
    q.fill("stats count(*) as calls, sum(outputTokenCount) as out by bin(1h)")
    page.get_by_role("button", name="Run query").click()
    page.wait_for_selector("#result-count")
    page.get_by_label("Show as").select_option("chart")
    page.wait_for_selector("#results svg[role=img]")
    assert "calls" in page.locator("#results").inner_text()
    page.get_by_text("History").click()
    assert "stats count(*) as calls" in page.locator("#history").inner_text()
    shot(page, "explorer-chart")

    # The record view: the conversation, rendered.
    page.goto(s.url + f"/console#/record/{ids[0]}")
    page.wait_for_selector("#conversation .msg.assistant")
    assert "question 0 from search" in page.locator("#conversation").inner_text()
    assert ids[0] in page.locator("#facts").inner_text()
    shot(page, "record")

    # Cost: chargeback by any dimension, with its total; budgets.
    page.get_by_role("link", name="Cost").click()
    page.wait_for_selector("#report-total")
    page.get_by_label("By", exact=True).fill("team,model")
    page.get_by_role("button", name="Show report").click()
    page.wait_for_selector("#report table")
    text = page.locator("#report").inner_text()
    assert "search" in text and "ads" in text and report["total"]["cost"] in page.locator("#report-total").inner_text()
    with page.expect_download() as d:
        page.get_by_role("button", name="Download CSV").click()
    assert "search" in open(d.value.path()).read()
    shot(page, "cost")

    page.get_by_role("link", name="Alarms").click()
    page.wait_for_selector("#alarm-list")
    row = page.locator("#alarm-list tbody tr").first.locator("td")
    assert row.nth(0).inner_text() == "client-errors"
    assert row.nth(1).inner_text() == "AWS/Bedrock InvocationClientErrors"
    assert row.nth(2).inner_text() == "Sum GreaterThanThreshold 0 for 1/1 × 60s"
    assert row.nth(3).inner_text() in ("OK", "ALARM", "INSUFFICIENT_DATA")
    shot(page, "alarms")

    page.get_by_role("link", name="Configuration").click()
    page.wait_for_selector("#health")
    assert "Destinations and delivery" in page.locator("main").inner_text()
    shot(page, "configuration")

    page.get_by_role("link", name="Trail").click()
    page.wait_for_selector("#trail-count")
    trail = page.locator("#trail").inner_text()
    # The sign-in and the console's own reads are in the trail.
    assert "ConsoleLogin" in trail and "LogbookQuery" in trail and "DescribeAlarms" in trail
    assert "PutMetricAlarm" in trail and "monitoring.amazonaws.com" in trail
    page.get_by_label("Event name").fill("ConsoleLogin")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#trail-count")).to_contain_text("1 events")
    shot(page, "trail")

    # Sign out: the cookie is gone and no longer works.
    cookie = {c["name"]: c["value"] for c in ctx.cookies()}["logbook_session"]
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_selector("#signin:not([hidden])")
    assert "logbook_session" not in {c["name"] for c in ctx.cookies()}
    r = requests.get(s.url + "/console/api/session", cookies={"logbook_session": cookie}, timeout=5)
    assert r.status_code == 401
    watch.clean()
    ctx.close()


def test_hostile_prompts_stay_text(server, browser):
    s = server
    _, hostile = seed(s)
    ctx, page, watch = new_page(browser)
    sign_in(page, s.url, "sk-admin-console")
    page.goto(s.url + f"/console#/record/{hostile}")
    page.wait_for_selector("#conversation .msg.assistant")
    conv = page.locator("#conversation")
    assert "<script>window.__xss=1</script>" in conv.inner_text()
    assert "javascript:window.__xss=3" in conv.inner_text()
    # Only the PNG the prompt carried is an image, as a data: URL; no link anywhere.
    imgs = conv.locator("img")
    assert imgs.count() == 1 and imgs.first.get_attribute("src").startswith("data:image/png;base64,")
    assert conv.locator("a").count() == 0 and conv.locator("script").count() == 0
    # A 20,000-character word wraps instead of widening the page.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.locator("details summary", has_text="The record as stored").click()
    shot(page, "record-hostile")
    # The same record in the explorer's table, as raw JSON.
    page.goto(s.url + "/console#/explorer")
    page.get_by_label("Query", exact=False).first.fill(f'filter requestId = "{hostile}" | fields @message')
    page.get_by_role("button", name="Run query").click()
    page.wait_for_selector("#result-count")
    assert "window.__xss=1" in page.locator("#results").inner_text()
    assert page.evaluate("window.__xss === undefined")
    # A request id in the URL is never put in a query unchecked.
    page.goto(s.url + '/console#/record/x%22%20%7C%20stats%20count(*)')
    page.wait_for_selector("main [role=alert]")
    assert "not a request id" in page.locator("main").inner_text()
    assert page.evaluate("window.__xss === undefined")
    watch.clean()
    ctx.close()


def test_permissions_hold_page_by_page(server, browser):
    s = server
    rt = runtime(s)
    r = rt.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "mail jane@example.com please"}]}])
    rid = r["ResponseMetadata"]["RequestId"]
    wait_count(s, 1)
    ctx, page, watch = new_page(browser)
    sign_in(page, s.url, "sk-analyst-console")
    nav = page.locator("#nav")
    assert nav.get_by_role("link", name="Explorer").is_visible()
    assert not nav.get_by_role("link", name="Trail").is_visible()
    assert not nav.get_by_role("link", name="Configuration").is_visible()
    assert "bodies: redacted" in page.locator("#who").inner_text()
    page.goto(s.url + f"/console#/record/{rid}")
    page.wait_for_selector("#conversation .msg")
    text = page.locator("#conversation").inner_text()
    assert "[EMAIL]" in text and "jane@" not in text
    shot(page, "record-analyst")
    # Typing the trail's address shows a refusal, not the trail.
    page.goto(s.url + "/console#/trail")
    page.wait_for_selector("main [role=alert]")
    assert "Not allowed" in page.locator("main").inner_text()
    watch.clean()
    ctx.close()

    # An alarm change the analyst may not make is refused, and the refusal is in the trail.
    r = requests.post(s.url + "/", headers={"Authorization": "Bearer sk-analyst-console",
                                            "content-type": "application/x-amz-json-1.0",
                                            "x-amz-target": "GraniteServiceVersion20100801.DeleteAlarms"},
                      data=json.dumps({"AlarmNames": ["anything"]}), timeout=5)
    assert r.status_code == 403, r.text

    # The auditor sees the analyst's reads in the trail: console reads are audited.
    ctx, page, watch = new_page(browser)
    sign_in(page, s.url, "sk-auditor-console")
    page.get_by_role("link", name="Trail").click()
    page.get_by_label("Principal (ARN, * at the end for a prefix)").fill("arn:aws:iam::123456789012:user/analyst")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#trail")).to_contain_text("LogbookOverview")
    expect(page.locator("#trail")).to_contain_text("LogbookQuery")
    assert "ConsoleLogin" in page.locator("#trail").inner_text()
    row = page.locator("#trail tbody tr", has_text="DeleteAlarms")
    assert row.count() == 1 and "AccessDenied" in row.inner_text()
    watch.clean()
    ctx.close()

    # A principal that may only invoke sees no data.
    r = requests.post(s.url + "/console/api/session", json={"accessKeyId": "AKIAAPP000000000000", "secretAccessKey": "app-secret"}, timeout=5)
    assert r.status_code == 200
    h = {"x-logbook-csrf": r.json()["csrf"]}
    q = requests.post(s.url + "/console/api/query", json={"query": "fields @message"}, cookies=r.cookies, headers=h, timeout=5)
    assert q.status_code == 403 and "logs:read" in q.json()["message"]
    q = requests.post(s.url + "/console/api/overview", json={}, cookies=r.cookies, headers=h, timeout=5)
    assert q.status_code == 403 and "logs:read" in q.json()["message"]


def test_latest_errors_are_the_newest_twenty_read_from_the_newest_intervals(server, browser):
    """The overview lists the latest errors by querying only the newest intervals whose
    error counts (from the overview's series) add up to twenty: the rows must be exactly
    the newest twenty errors of the whole period."""
    s = server
    rt = runtime(s)
    for i in range(26):
        with pytest.raises(Exception):
            rt.converse(modelId="amazon.nova-lite-v1:0",
                        messages=[{"role": "user", "content": [{"text": f"e{i} [mock:error=ThrottlingException]"}]}])
    rt.converse(modelId="amazon.nova-lite-v1:0", messages=[{"role": "user", "content": [{"text": "fine"}]}])
    wait_count(s, 27)
    newest = api_query(s, "filter ispresent(errorCode) | fields requestId | sort @timestamp desc | limit 20")
    want = [row[0] for row in newest["rows"]]
    assert len(want) == 20
    ctx, page, watch = new_page(browser)
    sign_in(page, s.url, "sk-admin-console")
    page.wait_for_selector("#recent[data-loaded]")
    assert page.locator("#card-errors").inner_text() == "26"
    got = page.locator("#recent tbody tr td:nth-child(2)").all_inner_texts()
    assert got == want
    watch.clean()
    ctx.close()
    # It read from the start of the (1-hour) interval holding them, not the period's start.
    r = requests.post(s.url + "/console/api/session", json={"apiKey": "sk-auditor-console"}, timeout=5)
    h = {"x-logbook-csrf": r.json()["csrf"]}
    events = requests.get(s.url + "/console/api/trail?name=LogbookQuery", cookies=r.cookies, headers=h, timeout=10).json()
    starts = [e["requestParameters"].get("start") for e in events["events"]
              if "ispresent(errorCode)" in str(e["requestParameters"].get("query"))]
    assert starts and all(x % 3_600_000 == 0 for x in starts), starts


# Delays the next answer of one console API when the test asks (`window.__slow[name] = true`),
# in the page itself, so the browser's own event loop keeps running meanwhile.
SLOW_NEXT = """
(() => {
  const f = window.fetch.bind(window);
  window.__slow = {};
  window.fetch = (url, init) => {
    const p = f(url, init);
    const m = /\\/console\\/api\\/(trail|chargeback|query)/.exec(String(url));
    if (!m || !window.__slow[m[1]]) return p;
    window.__slow[m[1]] = false;
    return p.then((r) => new Promise((res) => setTimeout(() => res(r), 1500)));
  };
})();
"""


def test_a_slow_earlier_answer_is_never_drawn_beside_a_newer_one(server, browser):
    """A page's first load answering after the user already asked again (a filter applied,
    a report re-run, a second Ctrl+Enter) is dropped: one table, the newest answer. A
    suite run once caught the trail drawing both (two tables, a row twice)."""
    s = server
    rt = runtime(s)
    rt.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "one call"}]}],
                requestMetadata={"team": "search"})
    wait_count(s, 1)
    ctx, page, watch = new_page(browser)
    page.add_init_script(SLOW_NEXT)
    sign_in(page, s.url, "sk-admin-console")
    nav = page.locator("#nav")

    # Trail: the unfiltered first load is slow; the filtered one answers first.
    page.evaluate("window.__slow.trail = true")
    nav.get_by_role("link", name="Trail").click()
    page.get_by_label("Event name").fill("ConsoleLogin")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_selector("#trail table")
    page.wait_for_timeout(2500)
    assert page.locator("#trail table").count() == 1
    names = page.locator("#trail tbody tr td:nth-child(2)").all_inner_texts()
    assert names and set(names) == {"ConsoleLogin"}, names

    # Cost: the first report (by team) is slow; the one by model answers first.
    page.evaluate("window.__slow.chargeback = true")
    nav.get_by_role("link", name="Cost").click()
    page.get_by_label("By", exact=True).fill("model")
    page.get_by_role("button", name="Show report").click()
    page.wait_for_selector("#report table")
    page.wait_for_timeout(2500)
    assert page.locator("#report table").count() == 1
    assert "by model" in page.locator("#report table caption").inner_text()

    # Explorer: a second Ctrl+Enter while the first query runs.
    nav.get_by_role("link", name="Explorer").click()
    q = page.get_by_label("Query", exact=False).first
    q.fill("stats count(*) as first_query")
    page.evaluate("window.__slow.query = true")
    q.press("Control+Enter")
    q.fill("stats count(*) as second_query")
    q.press("Control+Enter")
    page.wait_for_selector("#results table")
    page.wait_for_timeout(2500)
    assert page.locator("#results table").count() == 1
    head = page.locator("#results table thead").inner_text()
    assert "second_query" in head and "first_query" not in head, head
    watch.clean()
    ctx.close()


def test_sign_in_sessions_and_csrf_are_strict(make_server):
    s = make_server(CONFIG + "\n[console]\nsession_idle_secs = 2\n")
    url = s.url + "/console/api/session"
    # Any wrong credential gets the same answer: nothing says which part was wrong.
    answers = set()
    for body in ({"apiKey": "sk-wrong"}, {"accessKeyId": "AKIAADMIN0000000000", "secretAccessKey": "wrong"},
                 {"accessKeyId": "AKIAUNKNOWN00000000", "secretAccessKey": "admin-secret"}):
        r = requests.post(url, json=body, timeout=5)
        assert r.status_code == 401 and "set-cookie" not in r.headers
        answers.add(r.text)
    assert len(answers) == 1 and "not valid" in answers.pop()
    # Sign-in is JSON from the console's own origin only.
    assert requests.post(url, data={"apiKey": "sk-admin-console"}, timeout=5).status_code == 403
    assert requests.post(url, json={"apiKey": "sk-admin-console"}, headers={"Origin": "http://evil.example"}, timeout=5).status_code == 403
    assert requests.post(url, data=b"{" * 100_000, headers={"content-type": "application/json"}, timeout=5).status_code == 413
    assert requests.post(url, data=b"[1]", headers={"content-type": "application/json"}, timeout=5).status_code == 400
    assert requests.post(url, json={"apiKey": "a", "accessKeyId": "b", "secretAccessKey": "c"}, timeout=5).status_code == 400

    r = requests.post(url, json={"accessKeyId": "AKIAADMIN0000000000", "secretAccessKey": "admin-secret"},
                      headers={"Origin": s.url}, timeout=5)
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/console"):
        assert flag in cookie
    assert "secret" not in r.text and r.json()["arn"].endswith("user/admin")
    jar, csrf = r.cookies, r.json()["csrf"]
    q = {"query": "stats count(*) as n"}
    api = s.url + "/console/api/query"
    assert requests.post(api, json=q, timeout=5).status_code == 401
    assert requests.post(api, json=q, cookies=jar, timeout=5).json()["code"] == "CsrfTokenMismatch"
    assert requests.post(api, json=q, cookies=jar, headers={"x-logbook-csrf": "0" * 64}, timeout=5).status_code == 403
    assert requests.get(s.url + "/console/api/alarms", cookies=jar, timeout=5).status_code == 403
    assert requests.post(api, json=q, cookies=jar, headers={"x-logbook-csrf": csrf}, timeout=5).status_code == 200
    # The cookie is no credential for the APIs.
    r = requests.post(s.url + "/logbook/query", json=q, cookies={"logbook_session": jar["logbook_session"]},
                      headers={"x-logbook-csrf": csrf}, timeout=5)
    assert r.status_code == 403
    # Every console answer carries the policy.
    for path in ("/console", "/console/assets/app.js", "/console/api/session"):
        r = requests.get(s.url + path, cookies=jar, timeout=5)
        assert "script-src 'self'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
    # An idle session ends.
    time.sleep(2.5)
    r = requests.get(s.url + "/console/api/session", cookies=jar, timeout=5)
    assert r.status_code == 401 and r.json()["code"] == "SessionExpired"
    # Sign-ins are ConsoleLogin events, failures too, and no secret is written anywhere.
    r = requests.post(url, json={"apiKey": "sk-auditor-console"}, timeout=5)
    h = {"x-logbook-csrf": r.json()["csrf"]}
    events = requests.get(s.url + "/console/api/trail?name=ConsoleLogin", cookies=r.cookies, headers=h, timeout=10).json()
    outcomes = sorted(e["additionalEventData"]["ConsoleLogin"] for e in events["events"])
    assert outcomes == ["Failure"] * 3 + ["Success"] * 2, outcomes
    everything = json.dumps(events) + s.stderr()
    for secret in ("sk-wrong", "admin-secret", "sk-admin-console", "sk-auditor-console", "wrong\""):
        assert secret not in everything
    s.stop()
    s2 = make_server("[console]\nenabled = false\n", name="off")
    assert requests.get(s2.url + "/console", timeout=5).status_code == 404

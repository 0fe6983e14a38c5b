"""Cost per call, through the real clients: every API's record carries its exact cost
(decimal string, cache tokens and streams included) and the catalog version; a call that
cannot be priced says null and why, never 0; the config extends the catalog; SQL and
Insights sum costs exactly."""

import json
import time
from decimal import Decimal

import pytest

from conftest import Server, read_records, record_for, wait_record, wait_records
from test_query import insights, logs, rows

CATALOG = "2026-11-30"
# USD per 1M tokens from crates/ops/catalog/prices.toml: (input, output, cache read, cache write).
PRICES = {
    "amazon.nova-lite-v1:0": ("0.06", "0.24", "0.015", None),
    "anthropic.claude-3-5-haiku-20241022-v1:0": ("0.80", "4.00", "0.08", "1.00"),
    "anthropic.claude-3-haiku-20240307-v1:0": ("0.25", "1.25", None, None),
    "amazon.titan-text-express-v1": ("0.20", "0.60", None, None),
    "amazon.titan-embed-text-v2:0": ("0.02", "0", None, None),
    "gpt-4o-mini": ("0.15", "0.60", "0.075", None),
    "text-embedding-3-small": ("0.02", "0", None, None),
}


def expected_cost(rec):
    """The cost computed here, independently, from the record's own token counts."""
    p = PRICES[rec["modelId"]]
    counts = [
        rec["input"].get("inputTokenCount", 0),
        (rec.get("output") or {}).get("outputTokenCount", 0),
        rec["input"].get("cacheReadInputTokenCount", 0),
        rec["input"].get("cacheWriteInputTokenCount", 0),
    ]
    total = Decimal(0)
    for n, price in zip(counts, p):
        if n:
            assert price is not None, (rec["modelId"], counts)
            total += Decimal(n) * Decimal(price)
    return total / Decimal(1_000_000)


def rid(r):
    return r["ResponseMetadata"]["RequestId"]


def msg(text):
    return [{"role": "user", "content": [{"text": text}]}]


def test_every_api_prices_its_calls_exactly(server):
    c = server.bedrock()
    ids = []
    # Converse with prompt-cache reads.
    r = c.converse(modelId="amazon.nova-lite-v1:0", messages=msg("price me [mock:cache_read=1000]"))
    assert r["usage"]["cacheReadInputTokens"] == 1000
    assert r["usage"]["totalTokens"] == r["usage"]["inputTokens"] + r["usage"]["outputTokens"] + 1000
    ids.append(rid(r))
    # ConverseStream with cache reads and writes: the usage arrives in the last event.
    r = c.converse_stream(modelId="anthropic.claude-3-5-haiku-20241022-v1:0",
                          messages=msg("stream me [mock:chunks=6][mock:cache_read=300][mock:cache_write=200]"))
    events = list(r["stream"])
    usage = [e["metadata"]["usage"] for e in events if "metadata" in e][0]
    assert usage["cacheReadInputTokens"] == 300 and usage["cacheWriteInputTokens"] == 200
    ids.append(rid(r))
    # InvokeModel and its stream, native bodies.
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    r = c.invoke_model(modelId="anthropic.claude-3-haiku-20240307-v1:0", body=json.dumps(body))
    ids.append(rid(r))
    r = c.invoke_model_with_response_stream(modelId="amazon.titan-text-express-v1", body=json.dumps({"inputText": "stream"}))
    list(r["body"])
    ids.append(rid(r))
    r = c.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": "embed me"}))
    ids.append(rid(r))
    # OpenAI: chat with cached tokens (prompt_tokens include them, as OpenAI counts), a
    # streamed chat whose usage comes in the last chunk, and embeddings.
    o = server.openai()
    raw = o.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "cached [mock:cache_read=50]"}])
    resp = raw.parse()
    assert resp.usage.prompt_tokens_details.cached_tokens == 50
    openai_id = raw.headers["x-request-id"]
    ids.append(openai_id)
    stream = o.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream [mock:chunks=4]"}],
        stream=True, stream_options={"include_usage": True})
    list(stream.parse())
    ids.append(stream.headers["x-request-id"])
    raw = o.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["one", "two"])
    ids.append(raw.headers["x-request-id"])

    recs = wait_records(server, len(ids))
    for i in ids:
        rec = record_for(recs, i)
        ext = rec["logbook"]
        assert ext["priceCatalog"] == CATALOG, rec
        assert "unpriced" not in ext, rec
        assert isinstance(ext["cost"], str), rec
        assert Decimal(ext["cost"]) == expected_cost(rec), (rec["operation"], rec["modelId"], ext["cost"], rec["input"], rec.get("output", {}).get("outputTokenCount"))
        assert Decimal(ext["cost"]) > 0
        assert "e" not in ext["cost"].lower()  # a plain decimal, never 1E-7
    # One rule for token counts: disjoint kinds; chat operations carry both cache counts.
    conv = record_for(recs, ids[0])
    assert conv["input"]["cacheReadInputTokenCount"] == 1000 and conv["input"]["cacheWriteInputTokenCount"] == 0
    chat = record_for(recs, openai_id)
    assert chat["input"]["cacheReadInputTokenCount"] == 50
    assert chat["input"]["inputTokenCount"] == resp.usage.prompt_tokens - 50
    assert chat["input"]["cacheWriteInputTokenCount"] == 0
    streamed = record_for(recs, ids[1])
    assert streamed["input"]["cacheWriteInputTokenCount"] == 200
    # InvokeModel carries cache counts only when the model reported them (as Bedrock does).
    assert "cacheReadInputTokenCount" not in record_for(recs, ids[2])["input"]


def test_unpriced_calls_are_null_with_a_reason_never_zero(server):
    # Records in a region the catalog has no Bedrock price for.
    r = server.bedrock(region="eu-west-3").converse(modelId="amazon.nova-lite-v1:0", messages=msg("far away"))
    rec = wait_record(server, rid(r))
    assert rec["logbook"]["cost"] is None
    assert "eu-west-3" in rec["logbook"]["unpriced"] and rec["logbook"]["priceCatalog"] == CATALOG
    # A model with no price at all (OpenAI API, model the catalog does not know).
    raw = server.openai().chat.completions.with_raw_response.create(model="gpt-unknown-1", messages=[{"role": "user", "content": "x"}])
    rec = wait_record(server, raw.headers["x-request-id"])
    assert rec["logbook"]["cost"] is None and "gpt-unknown-1" in rec["logbook"]["unpriced"]
    # A refused call billed nothing: cost 0, priced.
    import botocore.exceptions
    with pytest.raises(botocore.exceptions.ClientError) as e:
        server.bedrock().converse(modelId="amazon.nova-lite-v1:0", messages=msg("[mock:error=ValidationException]"))
    rec = wait_record(server, e.value.response["ResponseMetadata"]["RequestId"])
    assert rec["errorCode"] == "ValidationException" and rec["logbook"]["cost"] == "0"
    # Insights counts the unpriced calls (cost is null there).
    lg = logs(server)
    got = rows(insights(lg, "filter ispresent(logbook.unpriced) | stats count(*) as unpriced"))
    assert got == [{"unpriced": "2"}]


def test_the_config_extends_and_overrides_the_catalog(make_server, tmp_path):
    extra = tmp_path / "acme-prices.toml"
    extra.write_text('version = "acme-file-3"\n[[price]]\nprovider = "openai"\nmodels = ["gpt-unknown-1"]\ninput = "1.5"\noutput = "2"\n')
    s = make_server(f"""
[pricing]
catalog = "{extra}"
version = "acme-7"
[[pricing.price]]
provider = "bedrock"
regions = ["eu-west-3"]
models = ["amazon.nova-lite-v1:0"]
input = "0.078"
output = "0.312"
source = "negotiated rate, contract 42"
""")
    r = s.bedrock(region="eu-west-3").converse(modelId="amazon.nova-lite-v1:0", messages=msg("now priced"))
    rec = wait_record(s, rid(r))
    ext = rec["logbook"]
    assert ext["priceCatalog"] == f"{CATALOG}+acme-file-3+acme-7"
    want = (Decimal(rec["input"]["inputTokenCount"]) * Decimal("0.078")
            + Decimal(rec["output"]["outputTokenCount"]) * Decimal("0.312")) / Decimal(1_000_000)
    assert Decimal(ext["cost"]) == want
    raw = s.openai().chat.completions.with_raw_response.create(model="gpt-unknown-1", messages=[{"role": "user", "content": "x"}])
    rec = wait_record(s, raw.headers["x-request-id"])
    want = (Decimal(rec["input"]["inputTokenCount"]) * Decimal("1.5")
            + Decimal(rec["output"]["outputTokenCount"]) * Decimal("2")) / Decimal(1_000_000)
    assert Decimal(rec["logbook"]["cost"]) == want


@pytest.mark.parametrize("pricing,why", [
    ('[pricing]\n[[pricing.price]]\nprovider = "bedrock"\nmodels = ["m"]\ninput = "1"\n', "needs regions"),
    ('[pricing]\n[[pricing.price]]\nprovider = "openai"\nmodels = ["m"]\ninput = 0.5\n', "line 5, column 9"),
    ('[pricing]\n[[pricing.price]]\nprovider = "openai"\nmodels = ["m"]\ninput = "0.0000001"\n', "more than 6 decimals"),
    ('[pricing]\n[[pricing.price]]\nprovider = "acme"\nmodels = ["m"]\ninput = "1"\n', "not one of"),
    ('[pricing]\ncatalog = "/nonexistent/prices.toml"\n', "/nonexistent/prices.toml"),
])
def test_a_bad_price_is_a_config_error_and_nothing_starts(tmp_path, pricing, why):
    with pytest.raises(RuntimeError) as e:
        Server(tmp_path / "d", pricing).start()
    assert why in str(e.value)


def test_sql_and_insights_sum_costs_exactly(server):
    c = server.bedrock()
    o = server.openai()
    for i in range(12):
        c.converse(modelId="amazon.nova-lite-v1:0", messages=msg(f"call {i} [mock:cache_read={i * 7}]"))
        o.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"chat {i}"}])
    recs = wait_records(server, 24)
    total = sum(Decimal(r["logbook"]["cost"]) for r in recs)
    by_model = {}
    for r in recs:
        by_model[r["modelId"]] = by_model.get(r["modelId"], Decimal(0)) + Decimal(r["logbook"]["cost"])
    lg = logs(server)
    got = rows(insights(lg, "stats sum(logbook.cost) as usd, count(*) as n by modelId | sort modelId asc"))
    assert [(g["modelId"], Decimal(g["usd"]), g["n"]) for g in got] == [(m, by_model[m], "12") for m in sorted(by_model)]
    import requests
    q = requests.post(server.url + "/logbook/query", headers=server.auth_headers(),
                      json={"language": "sql", "query": "SELECT CAST(sum(cost) AS VARCHAR) AS usd, count(cost) AS priced FROM invocations"},
                      timeout=30)
    assert q.status_code == 200, q.text
    body = q.json()
    assert Decimal(body["rows"][0][0]) == total and body["rows"][0][1] == "24", body


TEAMS = """
[server]
account_id = "123456789012"

[[principals]]
arn = "arn:aws:iam::123456789012:user/alice"
access_key_id = "AKIAALICE0000000000"
secret_access_key = "alice-secret"
tags = { team = "search" }

[[principals]]
arn = "arn:aws:iam::123456789012:role/shared-service"
access_key_id = "AKIASHARED000000000"
secret_access_key = "shared-secret"

[[principals]]
arn = "arn:aws:iam::123456789012:user/auditor"
api_key = "sk-auditor-reads-only"
permissions = ["logs:read"]

[[principals]]
arn = "arn:aws:iam::123456789012:user/nobody"
api_key = "sk-nobody"
permissions = ["invoke:*"]
"""


def test_chargeback_report_allocates_each_call_once_and_totals_to_the_digit(make_server):
    """Generated traffic from a tagged principal and a shared service that tags calls with
    requestMetadata (some calls carry both): the report by team counts each call once,
    and every format's total equals the sum of the records' costs."""
    import csv
    import io
    import random
    import subprocess
    import requests
    from conftest import BIN
    s = make_server(TEAMS)
    alice = s.bedrock(key="AKIAALICE0000000000", secret="alice-secret")
    shared = s.bedrock(key="AKIASHARED000000000", secret="shared-secret")
    rnd = random.Random(11)
    models = ["amazon.nova-lite-v1:0", "anthropic.claude-3-5-haiku-20241022-v1:0", "amazon.titan-text-express-v1"]
    n = 60
    for i in range(n):
        client = alice if i % 3 == 0 else shared
        meta = {}
        if i % 4 != 0:
            meta["team"] = rnd.choice(["ads", "billing"])  # on alice's calls too: her tag wins
        model = models[i % 3]
        extra = f"[mock:cache_read={rnd.randint(0, 500)}]" if model != "amazon.titan-text-express-v1" else ""
        kw = {"requestMetadata": meta} if meta else {}
        client.converse(modelId=model, messages=msg(f"call {i} {extra}"), **kw)
    recs = wait_records(s, n)
    total = sum(Decimal(r["logbook"]["cost"]) for r in recs)
    want = {}
    for r in recs:
        team = (r["logbook"].get("principalTags") or {}).get("team") or (r.get("requestMetadata") or {}).get("team") or "(none)"
        want[team] = want.get(team, Decimal(0)) + Decimal(r["logbook"]["cost"])
    assert set(want) == {"search", "ads", "billing", "(none)"}
    s.stop()

    def report(*args):
        p = subprocess.run([BIN, "report", "chargeback", "--data-dir", s.data_dir, *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout

    out = json.loads(report("--by", "team", "--format", "json"))
    assert out["currency"] == "USD" and out["timeZone"] == "UTC" and out["by"] == ["team"]
    got = {}
    for row in out["rows"]:
        got[row["values"][0]] = got.get(row["values"][0], Decimal(0)) + Decimal(row["cost"])
    assert got == want
    assert Decimal(out["total"]["cost"]) == total and out["total"]["calls"] == n
    # CSV: the rows add up to the total row, and the total is the records' sum.
    rows = list(csv.DictReader(io.StringIO(report("--by", "team,model", "--period", "day", "--format", "csv"))))
    assert rows[-1]["period"] == "total"
    assert sum(Decimal(r["cost_usd"]) for r in rows[:-1]) == Decimal(rows[-1]["cost_usd"]) == total
    assert sum(int(r["calls"]) for r in rows[:-1]) == n
    # The table and the HTML page show the same total.
    assert str(total.normalize()) in report("--by", "team")
    html = report("--by", "team", "--format", "html")
    assert html.startswith("<!doctype html>") and str(total.normalize()) in html and "<script" not in html
    # FOCUS: spec columns, and BilledCost sums to the same total.
    focus = list(csv.DictReader(io.StringIO(report("--by", "team", "--format", "focus", "--tz", "Europe/Berlin"))))
    assert sum(Decimal(r["BilledCost"]) for r in focus) == total
    assert {r["ServiceName"] for r in focus} == {"Amazon Bedrock"} and {r["BillingCurrency"] for r in focus} == {"USD"}
    assert all(r["ChargePeriodStart"].endswith("Z") and json.loads(r["Tags"])["team"] in want for r in focus)
    # Bad arguments are precise errors.
    p = subprocess.run([BIN, "report", "chargeback", "--data-dir", s.data_dir, "--by", "te'am"], capture_output=True, text=True)
    assert p.returncode != 0 and "dimension key" in p.stderr
    p = subprocess.run([BIN, "report", "chargeback", "--data-dir", s.data_dir, "--tz", "Mars/Base"], capture_output=True, text=True)
    assert p.returncode != 0 and "IANA" in p.stderr

    # Over HTTP, with the same answer; a reader may run it, an invoker may not.
    s.start()
    url = s.url + "/logbook/report/chargeback"
    r = requests.post(url, headers={"Authorization": "Bearer sk-auditor-reads-only"}, json={"by": ["team"]}, timeout=30)
    assert r.status_code == 200, r.text
    assert Decimal(r.json()["total"]["cost"]) == total
    r = requests.post(url, headers={"Authorization": "Bearer sk-auditor-reads-only"}, json={"by": "team", "format": "csv"}, timeout=30)
    assert r.headers["content-type"].startswith("text/csv") and r.text.splitlines()[-1].endswith("," + str(total.normalize()))
    r = requests.post(url, headers={"Authorization": "Bearer sk-nobody"}, json={}, timeout=30)
    assert r.status_code == 403 and r.headers["x-amzn-ErrorType"].startswith("AccessDeniedException")
    r = requests.post(url, json={}, timeout=30)
    assert r.status_code in (401, 403)
    for body, why in [({"by": ["a.b"]}, "dimension key"), ({"tz": "Nowhere/X"}, "IANA"), ({"period": "year"}, "period"),
                      ({"format": "xml"}, "format"), ({"by": ["x"] * 9}, "at most 8")]:
        r = requests.post(url, headers={"Authorization": "Bearer sk-auditor-reads-only"}, json=body, timeout=30)
        assert r.status_code == 400 and why in r.json()["message"], (body, r.text)

    # The overview (the console's first page): the same exact total and the same teams,
    # from the store files' rollups where they cover the range (here: after the restart
    # every record is in a file), under the same permissions.
    import time as _time
    now = int(_time.time() * 1000)
    ov_url = s.url + "/logbook/report/overview"
    span = {"start": now - 3 * 86_400_000, "end": now + 60_000}
    r = requests.post(ov_url, headers={"Authorization": "Bearer sk-auditor-reads-only"}, json={**span, "bin": "1d"}, timeout=30)
    assert r.status_code == 200, r.text
    ov = r.json()
    assert Decimal(ov["total"]["cost"]) == total and ov["total"]["calls"] == n
    assert sum(Decimal(d["cost"]) for d in ov["days"]) == total
    assert sum(Decimal(p["cost"]) for p in ov["series"]) == total
    assert {t["value"]: Decimal(t["cost"]) for t in ov["top"]["team"]} == want
    assert ov["latencyApproximate"] is True and ov["total"]["p99LatencyMs"] >= ov["total"]["p50LatencyMs"] >= 0
    assert ov["sources"]["filesFromRollups"] >= 1 and ov["sources"]["recordsFromRollups"] == n, ov["sources"]
    r = requests.post(ov_url, headers={"Authorization": "Bearer sk-nobody"}, json={}, timeout=30)
    assert r.status_code == 403 and r.headers["x-amzn-ErrorType"].startswith("AccessDeniedException")
    assert requests.post(ov_url, json={}, timeout=30).status_code in (401, 403)
    for body, why in [({**span, "bin": "7m"}, "bin"), ({**span, "bin": "1w"}, "bin"), ({**span, "bin": 1}, "bin"),
                      ({"start": 0, "end": now}, "400 days"), ({"start": now - 4 * 86_400_000, "end": now, "bin": "1m"}, "larger bin"),
                      ({**span, "tz": "Nowhere/X"}, "IANA"), ({**span, "top": 0}, "top"), ({**span, "top": -1}, "top"),
                      ({"start": now, "end": now - 1}, "before start"), ({**span, "logGroups": ["nope"]}, "does not exist"),
                      ({**span, "start": "yesterday"}, "start"), ({**span, "logGroups": "/a"}, "list of strings"),
                      ({**span, "logGroups": ["/aws/bedrock/modelinvocations", 5]}, "list of strings")]:
        r = requests.post(ov_url, headers={"Authorization": "Bearer sk-auditor-reads-only"}, json=body, timeout=30)
        assert r.status_code in (400, 404) and why in r.json()["message"], (body, r.text)
        assert r.headers["x-amzn-ErrorType"], r.headers


def test_metrics_endpoint_speaks_openmetrics_with_bedrocks_names(make_server):
    """Traffic through the gateway (success, client error, throttle, server error, a
    stream) shows up on /metrics as Bedrock's metrics per model, parsed by Prometheus'
    own client library; only principals with logs:read may scrape."""
    import requests
    import botocore.exceptions
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    s = make_server(TEAMS)
    c = s.bedrock(key="AKIAALICE0000000000", secret="alice-secret")
    model = "amazon.nova-lite-v1:0"
    c.converse(modelId=model, messages=msg("ok [mock:cache_read=100]"))
    list(c.converse_stream(modelId=model, messages=msg("stream [mock:chunks=3]"))["stream"])
    for err in ["ValidationException", "ThrottlingException", "InternalServerException"]:
        with pytest.raises(botocore.exceptions.ClientError):
            c.converse(modelId=model, messages=msg(f"[mock:error={err}]"))
    recs = wait_records(s, 5)
    r = requests.get(s.url + "/metrics", headers={"Authorization": "Bearer sk-auditor-reads-only"}, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/openmetrics-text")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}

    def value(name, suffix="_total", **labels):
        want = {"model_id": model, **labels}
        for smp in fams[name].samples:
            if smp.name == name + suffix and smp.labels == want:
                return smp.value
        raise AssertionError(f"no {name}{suffix} {want} in {fams[name].samples}")

    assert fams["bedrock_invocations"].type == "counter"
    # Accepted calls: the two successes and the server error (it reached the model); a
    # throttle counts only as a throttle; the validation error was refused... by the mock,
    # after routing, so it is an accepted call that failed (Bedrock's newer definition).
    assert value("bedrock_invocation_throttles") == 1
    assert value("bedrock_invocation_client_errors") == 1
    assert value("bedrock_invocation_server_errors") == 1
    assert value("bedrock_invocations") == 4
    ok = [x for x in recs if "errorCode" not in x]
    assert value("bedrock_input_tokens") == sum(x["input"]["inputTokenCount"] for x in ok)
    assert value("bedrock_output_tokens") == sum(x["output"]["outputTokenCount"] for x in ok)
    assert value("bedrock_cache_read_input_tokens") == 100
    assert fams["bedrock_invocation_latency_seconds"].type == "histogram"
    assert value("bedrock_invocation_latency_seconds", "_count") == 4
    assert value("bedrock_time_to_first_token_seconds", "_count") == 1
    assert abs(value("logbook_cost_usd") - float(sum(Decimal(x["logbook"]["cost"]) for x in recs))) < 1e-12
    delivered = [smp for smp in fams["bedrock_model_invocation_logs_s3_delivery_success"].samples if smp.name.endswith("_total")]
    assert delivered and delivered[0].value >= 5
    # The disk's share of strict answers: each journal commit's fdatasync, as a histogram
    # Prometheus can take quantiles of (cumulative buckets, +Inf equal to the count).
    fsync = fams["logbook_journal_fsync_duration_seconds"]
    assert fsync.type == "histogram"
    buckets = [(smp.labels["le"], smp.value) for smp in fsync.samples if smp.name.endswith("_bucket")]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1][0] == "+Inf", buckets
    count = next(smp.value for smp in fsync.samples if smp.name.endswith("_count"))
    total = next(smp.value for smp in fsync.samples if smp.name.endswith("_sum"))
    assert count == buckets[-1][1] and count >= 5 and total > 0, fsync.samples
    journal = requests.get(s.url + "/healthz", timeout=10).json()["journal"]
    assert journal["fsyncs"] >= count, (journal, count)
    assert 0 < journal["fsyncMaxMicros"] <= journal["fsyncMicros"], journal
    # Only readers scrape.
    r = requests.get(s.url + "/metrics", headers={"Authorization": "Bearer sk-nobody"}, timeout=10)
    assert r.status_code == 403 and r.headers["x-amzn-ErrorType"].startswith("AccessDeniedException")
    assert requests.get(s.url + "/metrics", timeout=10).status_code in (401, 403)

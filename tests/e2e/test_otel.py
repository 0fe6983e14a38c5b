"""OpenTelemetry export (issue #13 point 4): one span per call and the calls' metrics,
over OTLP HTTP/protobuf and gRPC, following the GenAI semantic conventions; checked by a
local receiver that decodes what it gets (tests/e2e/otlp_receiver.py). Content only when
configured, redacted by its profile; a collector that is down or a killed server loses no
span."""

import hashlib
import time

import pytest

from conftest import Server
from otlp_receiver import Receiver, attrs

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"


@pytest.fixture
def receiver(request):
    r = Receiver(getattr(request, "param", "http"))
    yield r
    r.stop()


def config(rx, protocol="http/protobuf", **extra):
    lines = ["[otlp]", f'endpoint = "{rx.url}"', f'protocol = "{protocol}"', "metrics_interval_ms = 1000",
             'service_name = "gateway-eu"']
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def wait_spans(rx, n, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        spans = rx.spans()
        if len(spans) >= n:
            return spans
        time.sleep(0.1)
    raise AssertionError(f"{len(rx.spans())} spans received, expected {n}")


def by_request(spans):
    return {attrs(s.attributes)["aws.request_id"]: (res, scope, s) for res, scope, s in spans}


def calls(s):
    """A few calls of each kind; returns {request id: what the client saw}."""
    c = s.bedrock()
    seen = {}
    for i, model in enumerate([NOVA, CLAUDE, NOVA]):
        r = c.converse(modelId=model, messages=[{"role": "user", "content": [{"text": f"question {i} for ana@example.com"}]}],
                       system=[{"text": "be brief"}], inferenceConfig={"maxTokens": 64, "temperature": 0.5},
                       requestMetadata={"team": "search"})
        seen[r["ResponseMetadata"]["RequestId"]] = ("chat", model, r["usage"]["inputTokens"], r["usage"]["outputTokens"], None)
    r = c.converse_stream(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "stream please"}]}])
    events = list(r["stream"])
    u = events[-1]["metadata"]["usage"]
    seen[r["ResponseMetadata"]["RequestId"]] = ("chat", CLAUDE, u["inputTokens"], u["outputTokens"], None)
    try:
        c.converse(modelId=NOVA, messages=[{"role": "user", "content": [{"text": "[mock:error=ThrottlingException]"}]}])
        raise AssertionError("not throttled")
    except c.exceptions.ThrottlingException as e:
        seen[e.response["ResponseMetadata"]["RequestId"]] = ("chat", NOVA, None, None, "ThrottlingException")
    o = s.openai()
    r = o.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=20)
    body = r.parse()
    seen[r.headers["x-request-id"]] = ("chat", "gpt-4o-mini", body.usage.prompt_tokens, body.usage.completion_tokens, None)
    r = o.embeddings.with_raw_response.create(model="text-embedding-3-small", input="embed me")
    seen[r.headers["x-request-id"]] = ("embeddings", "text-embedding-3-small", r.parse().usage.prompt_tokens, None, None)
    return seen


def test_spans_and_metrics_over_http_protobuf_follow_the_genai_conventions(tmp_path, receiver):
    s = Server(tmp_path / "data", config(receiver))
    s.start()
    try:
        seen = calls(s)
        spans = wait_spans(receiver, len(seen))
    finally:
        s.stop()
    assert s.proc.returncode == 0, s.stderr()
    got = by_request(spans)
    assert set(got) == set(seen), "one span per call, nothing else"
    for rid, (op, model, tin, tout, err) in seen.items():
        res, scope, span = got[rid]
        a = attrs(span.attributes)
        assert res["service.name"] == "gateway-eu" and res["service.instance.id"]
        assert scope == "logbook"
        assert span.name == f"{op} {model}"
        assert span.kind == 3  # SPAN_KIND_CLIENT
        assert a["gen_ai.operation.name"] == op and a["gen_ai.request.model"] == model
        assert a["gen_ai.provider.name"] in ("logbook.mock", "openai", "aws.bedrock")
        if tin is not None:
            assert a["gen_ai.usage.input_tokens"] == tin
        if tout is not None:
            assert a["gen_ai.usage.output_tokens"] == tout
        # Ids derived from the request id: the same call always gets the same span.
        h = hashlib.sha256(rid.encode()).digest()
        assert span.trace_id == h[:16] and span.span_id == h[16:24]
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
        if err:
            assert a["error.type"] == err and span.status.code == 2  # STATUS_CODE_ERROR
            assert a["http.response.status_code"] == 429
        else:
            assert "error.type" not in a and span.status.code == 0
        # No content unless configured.
        assert not any(k in a for k in ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"))
    conv = [got[r] for r, v in seen.items() if v[1] == CLAUDE and v[4] is None][0][2]
    a = attrs(conv.attributes)
    assert a["logbook.request_metadata.team"] == "search"
    assert a["gen_ai.request.max_tokens"] == 64 and a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert a["cloud.region"] == "us-east-1" and a["user.id"].startswith("arn:aws:iam::")

    # Metrics, flushed at shutdown (cumulative: the last point per attribute set).
    m = receiver.metric_points()
    def total(name, **want):
        last = {}
        for a, p in m.get(name, []):
            if all(a.get(k) == v for k, v in want.items()):
                last[tuple(sorted(a.items()))] = p
        return sum((p.sum if hasattr(p, "bucket_counts") else p.as_int) for p in last.values())
    served_in = sum(v[2] or 0 for v in seen.values())
    served_out = sum(v[3] or 0 for v in seen.values())
    assert total("gen_ai.client.token.usage", **{"gen_ai.token.type": "input"}) == served_in
    assert total("gen_ai.client.token.usage", **{"gen_ai.token.type": "output"}) == served_out
    assert total("aws.bedrock.invocations") == len(seen) - 1
    assert total("aws.bedrock.invocation_throttles", ModelId=NOVA) == 1
    assert total("aws.bedrock.input_token_count") == served_in
    durations = [p for _, p in m["gen_ai.client.operation.duration"]]
    assert durations and all(p.count > 0 for p in durations)


@pytest.mark.parametrize("receiver", ["grpc"], indirect=True)
def test_grpc_with_content_redacted_and_headers_that_never_reach_a_log(tmp_path, receiver):
    cfg = config(receiver, protocol="grpc", content="true", redact='"pii"') + (
        'headers = { "x-api-key" = "otlp-secret-7d1c" }\n'
        '[redaction.pii]\ndetectors = ["email"]\n')
    s = Server(tmp_path / "data", cfg)
    s.start()
    try:
        seen = calls(s)
        spans = wait_spans(receiver, len(seen))
    finally:
        s.stop()
    got = by_request(spans)
    assert set(got) == set(seen)
    assert all(h.get("x-api-key") == "otlp-secret-7d1c" for h in receiver.headers)
    assert "otlp-secret-7d1c" not in s.stderr()
    import json
    first = [got[r][2] for r, v in seen.items() if v[1] == NOVA and v[4] is None][0]
    a = attrs(first.attributes)
    msgs = json.loads(a["gen_ai.input.messages"])
    assert msgs[0]["role"] == "user" and msgs[0]["parts"][0]["type"] == "text"
    text = msgs[0]["parts"][0]["content"]
    assert text.startswith("question ") and "ana@example.com" not in text, text
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "be brief"}]
    out = json.loads(a["gen_ai.output.messages"])
    assert out[0]["role"] == "assistant" and out[0]["parts"][0]["content"] and out[0]["finish_reason"] == "end_turn"
    chat = [got[r][2] for r, v in seen.items() if v[1] == "gpt-4o-mini"][0]
    ca = attrs(chat.attributes)
    assert json.loads(ca["gen_ai.input.messages"]) == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    assert json.loads(ca["gen_ai.output.messages"])[0]["role"] == "assistant"
    assert receiver.metric_points().get("aws.bedrock.invocations")


def test_a_clients_traceparent_makes_the_calls_span_a_child_in_the_clients_trace(tmp_path, receiver):
    from conftest import wait_records
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    s = Server(tmp_path / "data", config(receiver))
    s.start()
    try:
        o = s.openai()
        joined = o.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "traced"}], max_tokens=5,
            extra_headers={"traceparent": f"00-{trace}-{parent}-01", "tracestate": "vendor=x"}).headers["x-request-id"]
        # boto3, through its event hooks, as an instrumented AWS client sends it.
        c = s.bedrock()
        c.meta.events.register("before-send.bedrock-runtime.Converse",
                               lambda request, **kw: request.headers.__setitem__("traceparent", f"00-{trace}-{parent}-00"))
        via_boto = c.converse(modelId=NOVA, messages=[{"role": "user", "content": [{"text": "traced"}]}])["ResponseMetadata"]["RequestId"]
        c.meta.events.unregister("before-send.bedrock-runtime.Converse")
        # Not valid W3C: upper-case hex, all-zero ids, version ff, a short id, junk after
        # version 00. The call is served and its span starts its own trace.
        bad = {}
        for tp in [f"00-{trace.upper()}-{parent}-01", f"00-{'0' * 32}-{parent}-01", f"00-{trace}-{'0' * 16}-01",
                   f"ff-{trace}-{parent}-01", f"00-{trace}-{parent[:15]}-01", f"00-{trace}-{parent}-01-extra", "garbage"]:
            r = o.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], max_tokens=5,
                extra_headers={"traceparent": tp})
            bad[r.headers["x-request-id"]] = tp
        # Two traceparent headers: neither is trusted (raw HTTP: clients send one).
        import http.client
        import json
        import urllib.parse
        u = urllib.parse.urlparse(s.url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "two"}], "max_tokens": 5}).encode()
        conn.putrequest("POST", "/v1/chat/completions")
        for k, v in s.auth_headers({"content-type": "application/json", "content-length": str(len(body))}).items():
            conn.putheader(k, v)
        conn.putheader("traceparent", f"00-{trace}-{parent}-01")
        conn.putheader("traceparent", f"00-{trace}-{parent}-01")
        conn.endheaders(body)
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        bad[resp.getheader("x-request-id")] = "two headers"
        resp.read()
        conn.close()
        # A later version may add fields: the first four are used.
        later = o.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], max_tokens=5,
            extra_headers={"traceparent": f"01-{trace}-{parent}-01-future"}).headers["x-request-id"]
        spans = wait_spans(receiver, 3 + len(bad))
        recs = {r["requestId"]: r for r in wait_records(s, 3 + len(bad))}
    finally:
        s.stop()
    got = by_request(spans)
    for rid in (joined, via_boto, later):
        span = got[rid][2]
        assert span.trace_id.hex() == trace and span.parent_span_id.hex() == parent, rid
        # The span's own id is still the call's (derived from its request id).
        assert span.span_id == hashlib.sha256(rid.encode()).digest()[16:24]
    assert recs[joined]["logbook"]["traceParent"] == f"00-{trace}-{parent}-01"
    assert recs[via_boto]["logbook"]["traceParent"] == f"00-{trace}-{parent}-00"
    assert recs[later]["logbook"]["traceParent"] == f"01-{trace}-{parent}-01"
    for rid, tp in bad.items():
        span = got[rid][2]
        assert span.trace_id == hashlib.sha256(rid.encode()).digest()[:16], tp
        assert not span.parent_span_id, tp
        assert "traceParent" not in recs[rid]["logbook"], tp


def test_a_collector_outage_and_a_killed_server_lose_no_span(tmp_path, receiver):
    receiver.fail = True
    data = tmp_path / "data"
    s = Server(data, config(receiver, metrics="false"))
    s.start()
    try:
        c = s.bedrock()
        ids = []
        for i in range(6):
            r = c.converse(modelId=NOVA, messages=[{"role": "user", "content": [{"text": f"during the outage {i}"}]}])
            ids.append(r["ResponseMetadata"]["RequestId"])
        # The destination fails and says so; the calls were answered all the same.
        deadline = time.time() + 20
        while time.time() < deadline:
            otlp = s.health()["destinations"]["otlp"]
            if otlp["failures"] > 0 and otlp["backlog"]["entries"] > 0:
                break
            time.sleep(0.1)
        assert otlp["failures"] > 0 and otlp["lastError"], otlp
    finally:
        s.kill9()
    receiver.fail = False
    s2 = Server(data, config(receiver, metrics="false"))
    s2.start()
    try:
        r = s2.bedrock().converse(modelId=NOVA, messages=[{"role": "user", "content": [{"text": "after"}]}])
        ids.append(r["ResponseMetadata"]["RequestId"])
        spans = wait_spans(receiver, len(ids))
    finally:
        s2.stop()
    got = [attrs(sp.attributes)["aws.request_id"] for _, _, sp in spans]
    assert sorted(set(got)) == sorted(ids)
    assert len(got) == len(ids), "nothing exported twice"


def test_a_bad_otlp_section_is_refused_at_start(tmp_path):
    for bad, msg in [('[otlp]\nendpoint = "localhost:4318"\n', "otlp.endpoint"),
                     ('[otlp]\nendpoint = "http://127.0.0.1:1"\nprotocol = "thrift"\n', "otlp.protocol"),
                     ('[otlp]\nendpoint = "http://127.0.0.1:1"\nmetrics_interval_ms = 5\n', "metrics_interval_ms"),
                     ('[otlp]\nendpoint = "http://127.0.0.1:1"\nredact = "nope"\n', "otlp.redact"),
                     ('[otlp]\nendpoint = "http://127.0.0.1:1"\ncolour = "blue"\n', "colour")]:
        s = Server(tmp_path / f"d{abs(hash(bad))}", bad)
        with pytest.raises(Exception):
            s.start()
        assert msg in s.stderr(), (bad, s.stderr())


def test_validate_names_an_unreachable_collector(tmp_path, receiver):
    import subprocess
    from conftest import BIN
    from remote import free_port
    good = tmp_path / "good.toml"
    good.write_text(config(receiver))
    p = subprocess.run([BIN, "validate", str(good)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(config(receiver).replace(receiver.url, f"http://127.0.0.1:{free_port()}"))
    p = subprocess.run([BIN, "validate", str(bad)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "OTLP collector http://127.0.0.1:" in p.stderr, p.stderr
    # --offline checks the file only.
    p = subprocess.run([BIN, "validate", "--offline", str(bad)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr

"""boto3 `bedrock-runtime` against a running Logbook: every operation parses, every call
yields exactly one Bedrock-format record with the request id the client saw."""

import json
import socket
import time

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.exceptions
import pytest
import requests

from conftest import http1_only, read_records, record_for, wait_record, wait_records

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
PRINCIPALS = """
[server]
account_id = "123456789012"

[[principals]]
arn = "arn:aws:iam::123456789012:user/alice"
access_key_id = "AKIAALICE0000000000"
secret_access_key = "alice-secret-do-not-log"
tags = { team = "search", costCenter = "cc-42" }

[[principals]]
arn = "arn:aws:iam::123456789012:role/bot"
api_key = "bedrock-api-key-do-not-log"
"""


def rid(resp):
    return resp["ResponseMetadata"]["RequestId"]


def test_converse_record_matches_bedrock_schema(make_server):
    s = make_server(PRINCIPALS)
    c = s.bedrock(region="eu-west-1", key="AKIAALICE0000000000", secret="alice-secret-do-not-log")
    r = c.converse(
        modelId=CLAUDE,
        messages=[{"role": "user", "content": [{"text": "hello how are you"}]}],
        system=[{"text": "be brief"}],
        inferenceConfig={"maxTokens": 512, "temperature": 0.7},
        requestMetadata={"team": "search", "tenant": "acme"},
    )
    assert r["output"]["message"]["content"][0]["text"].startswith("[mock]")
    assert r["stopReason"] == "end_turn"
    assert rid(r) == r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    rec = wait_record(s, rid(r))
    assert list(rec)[:10] == ["schemaType", "schemaVersion", "timestamp", "accountId", "identity",
                              "region", "requestId", "operation", "modelId", "input"]
    assert rec["schemaType"] == "ModelInvocationLog" and rec["schemaVersion"] == "1.0"
    assert len(rec["timestamp"]) == 20 and rec["timestamp"].endswith("Z")
    assert rec["accountId"] == "123456789012"
    assert rec["identity"] == {"arn": "arn:aws:iam::123456789012:user/alice"}
    assert rec["region"] == "eu-west-1"
    assert rec["operation"] == "Converse" and rec["modelId"] == CLAUDE
    assert rec["input"]["inputContentType"] == "application/json"
    assert rec["input"]["inputBodyJson"]["messages"][0]["content"][0]["text"] == "hello how are you"
    assert rec["input"]["inputBodyJson"]["system"] == [{"text": "be brief"}]
    assert rec["input"]["inputTokenCount"] == r["usage"]["inputTokens"]
    assert rec["input"]["cacheReadInputTokenCount"] == 0
    assert rec["output"]["outputBodyJson"]["output"] == r["output"]
    assert rec["output"]["outputBodyJson"]["usage"] == r["usage"]
    assert rec["output"]["outputTokenCount"] == r["usage"]["outputTokens"]
    assert rec["requestMetadata"] == {"team": "search", "tenant": "acme"}
    assert "errorCode" not in rec
    lb = rec["logbook"]
    assert lb["mock"] is True and lb["provider"] == "mock" and lb["httpStatus"] == 200
    assert lb["auth"] == "sigv4" and lb["accessKeyId"] == "AKIAALICE0000000000"
    assert lb["principalTags"] == {"team": "search", "costCenter": "cc-42"}
    assert lb["sequence"] >= 1 and lb["nodeId"]
    assert "Boto3" in lb["userAgent"]
    raw = json.dumps(rec)
    assert "alice-secret-do-not-log" not in raw and "Signature=" not in raw
    assert "alice-secret-do-not-log" not in s.stderr()


def test_bearer_api_key_identity_never_recorded(make_server):
    s = make_server(PRINCIPALS)
    r = requests.post(f"{s.url}/model/{CLAUDE}/converse",
                      headers={"Authorization": "Bearer bedrock-api-key-do-not-log"},
                      json={"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
    assert r.status_code == 200
    rec = wait_record(s, r.headers["x-amzn-requestid"])
    assert rec["identity"]["arn"] == "arn:aws:iam::123456789012:role/bot"
    assert rec["logbook"]["auth"] == "bearer" and len(rec["logbook"]["apiKeyId"]) == 12
    assert "bedrock-api-key-do-not-log" not in json.dumps(rec)
    assert "bedrock-api-key-do-not-log" not in s.stderr()


def test_authentication_is_enforced_with_aws_error_codes(make_server):
    s = make_server(PRINCIPALS)
    msgs = [{"role": "user", "content": [{"text": "x"}]}]
    for key, secret, code, status in [("AKIANOBODY", "x", "UnrecognizedClientException", 403),
                                      ("AKIAALICE0000000000", "wrong-secret", "InvalidSignatureException", 403)]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s.bedrock(key=key, secret=secret).converse(modelId="m", messages=msgs)
        assert e.value.response["Error"]["Code"] == code
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    r = requests.post(f"{s.url}/model/m/converse", json={"messages": msgs})
    assert r.status_code == 403 and r.headers["x-amzn-errortype"].startswith("MissingAuthenticationTokenException")
    r = requests.post(f"{s.url}/model/m/converse", json={"messages": msgs}, headers={"Authorization": "AWS4-HMAC-SHA256 Credential=AKIAALICE0000000000/20240101/us-east-1/bedrock/aws4_request"})
    assert r.status_code == 400 and r.headers["x-amzn-errortype"].startswith("IncompleteSignatureException")
    r = requests.post(f"{s.url}/model/m/converse", json={"messages": msgs}, headers={"Authorization": "Bearer not-a-key"})
    assert r.status_code == 403 and r.headers["x-amzn-errortype"].startswith("UnrecognizedClientException")
    # A body changed after signing fails verification.
    req = botocore.awsrequest.AWSRequest(method="POST", url=f"{s.url}/model/m/converse", data=json.dumps({"messages": msgs}), headers={"Content-Type": "application/json"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials("AKIAALICE0000000000", "alice-secret-do-not-log"), "bedrock", "us-east-1").add_auth(req)
    r = requests.post(f"{s.url}/model/m/converse", data=json.dumps({"messages": msgs + msgs}), headers=dict(req.headers))
    assert r.status_code == 403 and r.headers["x-amzn-errortype"].startswith("InvalidSignatureException")
    # Unauthenticated calls are not attributed to anyone, so they leave no invocation record:
    # nothing reached the journal (which every record enters before its answer leaves).
    assert s.health()["journal"]["committed"] == 0
    assert read_records(s.data_dir) == []
    assert "alice-secret-do-not-log" not in s.stderr()


def test_model_permissions_deny_and_record(make_server):
    s = make_server(PRINCIPALS.replace('secret_access_key = "alice-secret-do-not-log"', 'secret_access_key = "alice-secret-do-not-log"\npermissions = ["invoke:anthropic.*"]'))
    c = s.bedrock(key="AKIAALICE0000000000", secret="alice-secret-do-not-log")
    c.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "allowed"}]}])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.converse(modelId="meta.llama3-8b-instruct-v1:0", messages=[{"role": "user", "content": [{"text": "denied"}]}])
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "is not authorized to perform: bedrock:InvokeModel" in e.value.response["Error"]["Message"]
    rec = wait_record(s, e.value.response["ResponseMetadata"]["RequestId"])
    assert rec["errorCode"] == "AccessDeniedException" and rec["identity"]["arn"].endswith(":user/alice")


def test_converse_stream_records_assembled_response(server):
    c = server.bedrock()
    r = c.converse_stream(modelId="amazon.nova-lite-v1:0",
                          messages=[{"role": "user", "content": [{"text": "stream please [mock:chunks=7]"}]}])
    events = list(r["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert kinds.count("contentBlockDelta") == 7
    usage = events[-1]["metadata"]["usage"]
    rec = wait_record(server, rid(r))
    assert rec["operation"] == "ConverseStream"
    body = rec["output"]["outputBodyJson"]
    assert body["output"]["message"] == {"role": "assistant", "content": [{"text": text}]}
    assert body["stopReason"] == "end_turn" and body["usage"] == usage
    assert rec["output"]["outputTokenCount"] == usage["outputTokens"]
    assert rec["logbook"]["stream"] is True and "timeToFirstTokenMs" in rec["logbook"]


def test_invoke_model_families(server):
    c = server.bedrock()
    cases = [
        (CLAUDE, {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
                  "messages": [{"role": "user", "content": [{"type": "text", "text": "hi claude"}]}]}),
        ("amazon.titan-text-express-v1", {"inputText": "hi titan", "textGenerationConfig": {"maxTokenCount": 50}}),
        ("amazon.titan-embed-text-v2:0", {"inputText": "embed me", "dimensions": 256}),
        ("meta.llama3-8b-instruct-v1:0", {"prompt": "hi llama", "max_gen_len": 50}),
    ]
    ids = []
    for model, body in cases:
        extra = {"requestMetadata": json.dumps({"app": "tests"})} if model == CLAUDE else {}
        r = c.invoke_model(modelId=model, body=json.dumps(body), contentType="application/json",
                           accept="application/json", **extra)
        out = json.loads(r["body"].read())
        h = r["ResponseMetadata"]["HTTPHeaders"]
        ids.append((rid(r), model, body, out, h))
    recs = wait_records(server, len(cases))
    for request_id, model, body, out, h in ids:
        rec = record_for(recs, request_id)
        assert rec["operation"] == "InvokeModel" and rec["modelId"] == model
        assert rec["input"]["inputBodyJson"] == body
        assert rec["output"]["outputBodyJson"] == out
        assert rec["input"]["inputTokenCount"] == int(h["x-amzn-bedrock-input-token-count"])
        assert rec["output"]["outputTokenCount"] == int(h["x-amzn-bedrock-output-token-count"])
    claude_out = ids[0][3]
    assert claude_out["type"] == "message" and claude_out["model"].startswith("mock:")
    assert record_for(recs, ids[0][0])["requestMetadata"] == {"app": "tests"}
    assert len(ids[2][3]["embedding"]) == 256
    assert "results" in ids[1][3] and "generation" in ids[3][3]


def test_invoke_model_with_response_stream_records_chunk_array(server):
    c = server.bedrock()
    for model, body in [
        (CLAUDE, {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}),
        ("amazon.titan-text-express-v1", {"inputText": "hi titan"}),
    ]:
        r = c.invoke_model_with_response_stream(modelId=model, body=json.dumps(body))
        assert r["contentType"] == "application/json"
        chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
        metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
        rec = wait_record(server, rid(r))
        assert rec["operation"] == "InvokeModelWithResponseStream"
        assert rec["output"]["outputBodyJson"] == chunks
        assert rec["input"]["inputTokenCount"] == metrics["inputTokenCount"]
        assert rec["output"]["outputTokenCount"] == metrics["outputTokenCount"]


def test_errors_are_recorded_with_error_code(server):
    c = server.bedrock()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "x [mock:error=ThrottlingException]"}]}])
    assert e.value.response["Error"]["Code"] == "ThrottlingException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    rec = wait_record(server, e.value.response["ResponseMetadata"]["RequestId"])
    assert rec["errorCode"] == "ThrottlingException"
    assert rec["input"]["inputBodyJson"]["messages"][0]["content"][0]["text"].startswith("x ")
    assert rec["logbook"]["httpStatus"] == 429


def test_mid_stream_failure_records_partial_output(server):
    c = server.bedrock()
    r = c.converse_stream(modelId="m", messages=[{"role": "user", "content": [{"text": "x [mock:chunks=6] [mock:fail_after_chunks=3]"}]}])
    with pytest.raises(botocore.exceptions.EventStreamError) as e:
        for _ in r["stream"]:
            pass
    assert "modelStreamErrorException" in str(e.value)
    rec = wait_record(server, rid(r))
    assert rec["errorCode"] == "ModelStreamErrorException"
    assert rec["output"]["outputBodyJson"]["output"]["message"]["content"][0]["text"]


def test_timeout_is_model_timeout_exception(make_server):
    s = make_server('[[providers]]\nname = "slow"\ntype = "mock"\ntimeout_ms = 300\n')
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s.bedrock().converse(modelId="m", messages=[{"role": "user", "content": [{"text": "x [mock:delay_ms=3000]"}]}])
    assert e.value.response["Error"]["Code"] == "ModelTimeoutException"
    rec = wait_record(s, e.value.response["ResponseMetadata"]["RequestId"])
    assert rec["errorCode"] == "ModelTimeoutException"


def test_unknown_model_is_resource_not_found(make_server):
    s = make_server('[[providers]]\nname = "m"\ntype = "mock"\n[[routes]]\nmodel = "anthropic.*"\nprovider = "m"\n')
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s.bedrock().converse(modelId="nope.model-v1", messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    rec = wait_record(s, e.value.response["ResponseMetadata"]["RequestId"])
    assert rec["errorCode"] == "ResourceNotFoundException"
    # A routed id still works.
    s.bedrock().converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "x"}]}])


def aws_error(resp):
    assert resp.headers["content-type"] == "application/json"
    code = resp.headers["x-amzn-errortype"].split(":")[0]
    return code, resp.json()["message"]


@pytest.mark.parametrize("body,ctype,expect", [
    (b"{not json", "application/json", "Malformed input request"),
    (b'{"messages": "nope"}', "application/json", "Malformed input request"),
    (b'{"messages": [], "unknownField": 1}', "application/json", "unknown field"),
    (b'{"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}', "application/json", "start with a user message"),
    (b'{"messages": [{"role": "user", "content": [{"text": "x"}]}], "requestMetadata": {"k": "v\\u0000"}}', "application/json", "requestMetadata"),
    (b'{"messages": [{"role": "user", "content": [{"text": "x"}]}]}', "text/plain", "not supported"),
])
def test_bad_converse_input_gets_validation_exception(server, body, ctype, expect):
    r = requests.post(f"{server.url}/model/{CLAUDE}/converse", data=body, headers=server.auth_headers({"Content-Type": ctype}))
    assert r.status_code == 400
    code, msg = aws_error(r)
    assert code == "ValidationException" and expect in msg
    rec = wait_record(server, r.headers["x-amzn-requestid"])
    assert rec["errorCode"] == "ValidationException"


def test_bad_invoke_input(server):
    r = requests.post(f"{server.url}/model/{CLAUDE}/invoke", data=b"[1,2]", headers=server.auth_headers({"Content-Type": "application/json"}))
    assert r.status_code == 400 and aws_error(r)[0] == "ValidationException"
    r = requests.post(f"{server.url}/model/{CLAUDE}/invoke", data=b"{}", headers=server.auth_headers({"X-Amzn-Bedrock-Request-Metadata": "not json"}))
    assert r.status_code == 400 and "Request-Metadata" in aws_error(r)[1]
    r = requests.post(f"{server.url}/model/x.unknown/invoke", data=b'{"foo": 1}', headers=server.auth_headers())
    assert r.status_code == 400 and "does not recognise" in aws_error(r)[1]
    assert len(wait_records(server, 3)) == 3


@http1_only("httpx's HTTP/2 client sends the whole body before it reads the early 400 and "
            "times out; test_http2.py checks Logbook's HTTP/2 side with a frame-level client")
def test_oversized_body_is_refused_before_the_model(server):
    big = b'{"inputText": "' + b"a" * 25_000_001 + b'"}'
    r = requests.post(f"{server.url}/model/amazon.titan-text-express-v1/invoke", data=big, headers=server.auth_headers())
    assert r.status_code == 400
    code, msg = aws_error(r)
    assert code == "ValidationException" and "25000000" in msg
    rec = wait_record(server, r.headers["x-amzn-requestid"])
    assert rec["errorCode"] == "ValidationException" and "inputBodyJson" not in rec["input"]


def test_unknown_path_is_aws_shaped(server):
    r = requests.post(f"{server.url}/model/x/frobnicate", data=b"{}", headers=server.auth_headers())
    assert r.status_code == 404 and r.headers["x-amzn-errortype"].startswith("UnknownOperationException")


def test_client_disconnect_mid_stream_is_recorded(server):
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "x [mock:chunks=50] [mock:chunk_delay_ms=50]"}]}]}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    auth = f"Authorization: Bearer {server.admin['apiKey']}\r\n".encode()
    sock.sendall(b"POST /model/amazon.nova-lite-v1:0/converse-stream HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    head = sock.recv(4096)
    assert b"200 OK" in head
    time.sleep(0.2)
    sock.close()
    recs = wait_records(server, 1)
    assert recs[0]["errorCode"] == "ClientDisconnected"
    assert recs[0]["logbook"]["httpStatus"] == 499
    # The model generated tokens but never reported usage: Bedrock's count fields stay
    # empty (only what the upstream reported goes there), the estimate is marked as one,
    # and the call is priced from it, never a silent 0 (budgets would leak otherwise).
    rec = recs[0]
    assert "inputTokenCount" not in rec["input"] and "outputTokenCount" not in rec.get("output", {})
    est = rec["logbook"]["estimatedUsage"]
    assert est["inputTokens"] > 0 and est["outputTokens"] > 0, est
    assert float(rec["logbook"]["cost"]) > 0 and "unpriced" not in rec["logbook"], rec["logbook"]


def test_large_bodies_are_offloaded_to_data_objects(server):
    prompt = "word " * 30_000  # ~150 KB
    r = server.bedrock().converse(modelId="m", messages=[{"role": "user", "content": [{"text": prompt}]}])
    rec = wait_record(server, rid(r))
    path = rec["input"]["inputBodyS3Path"]
    assert path.startswith("s3://logbook-archive/AWSLogs/000000000000/BedrockModelInvocationLogs/us-east-1/")
    assert path.endswith(f"/data/{rid(r)}_input.json.gz")
    assert "inputBodyJson" not in rec["input"]
    import gzip
    import os
    local = os.path.join(server.data_dir, "archive", path.split("/", 3)[3])
    with gzip.open(local, "rt") as f:
        assert json.load(f)["messages"][0]["content"][0]["text"] == prompt
    # The (small) output stays inline.
    assert "outputBodyJson" in rec["output"]


def test_each_retry_is_its_own_record(server):
    c = server.bedrock(retries=2)
    with pytest.raises(botocore.exceptions.ClientError):
        c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "x [mock:error=ThrottlingException]"}]}])
    recs = wait_records(server, 3)
    assert len({r["requestId"] for r in recs}) == 3
    seqs = sorted(r["logbook"]["sequence"] for r in recs)
    assert seqs == list(range(seqs[0], seqs[0] + 3))


def test_count_tokens_counts_as_the_model_reports_and_records_no_invocation(server):
    """CountTokens (issue #12: it answered 404): through boto3, for a Converse request and
    for an InvokeModel body; the mock counts as it reports usage, so the count equals the
    inputTokens of the same request's answer. Nothing is invoked, so nothing is recorded."""
    c = server.bedrock()
    msgs = [{"role": "user", "content": [{"text": "count these words for me, please"}]}]
    n = c.count_tokens(modelId="amazon.nova-lite-v1:0", input={"converse": {"messages": msgs}})["inputTokens"]
    r = c.converse(modelId="amazon.nova-lite-v1:0", messages=msgs)
    assert n > 0 and n == r["usage"]["inputTokens"], (n, r["usage"])
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20,
                       "messages": [{"role": "user", "content": "hello there, how many tokens is this?"}]})
    n2 = c.count_tokens(modelId=CLAUDE, input={"invokeModel": {"body": body}})["inputTokens"]
    out = json.loads(c.invoke_model(modelId=CLAUDE, body=body)["body"].read())
    assert n2 > 0 and n2 == out["usage"]["input_tokens"], (n2, out["usage"])
    # Two invocations, two records: the counts wrote none.
    recs = wait_records(server, 2)
    time.sleep(0.5)
    assert sorted(x["operation"] for x in read_records(server.data_dir)) == ["Converse", "InvokeModel"]
    # Bad input (boto3 refuses these itself, so sent raw): AWS's ValidationException, and
    # still nothing recorded.
    for bad in [b"{}", b'{"input": {}}', b"not json", b'{"input": {"converse": {"messages": []}, "invokeModel": {"body": "e30="}}}',
                b'{"input": {"invokeModel": {"body": "!!!"}}}', b'{"input": {"converse": {"messages": "x"}}}']:
        r = requests.post(f"{server.url}/model/amazon.nova-lite-v1:0/count-tokens", data=bad, headers=server.auth_headers())
        assert r.status_code == 400 and aws_error(r)[0] == "ValidationException", (bad, r.text)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.count_tokens(modelId=CLAUDE, input={"invokeModel": {"body": b"not json"}})
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert len(read_records(server.data_dir)) == len(recs)


def test_the_mock_refuses_native_bodies_bedrock_would_refuse(server):
    """Issue #12: an Anthropic body with no messages got a 200 from the mock; Bedrock
    answers ValidationException. Each refusal is one record, as any failed call."""
    c = server.bedrock()
    good = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    bad = [
        (dict(good, messages=[]), "at least one message"),
        ({k: v for k, v in good.items() if k != "max_tokens"}, "required key [max_tokens]"),
        (dict(good, messages=[{"role": "system", "content": "x"}]), "'user' or 'assistant'"),
        (dict(good, messages=[{"role": "assistant", "content": "x"}]), "first message"),
    ]
    for body, words in bad:
        for call in (c.invoke_model, c.invoke_model_with_response_stream):
            with pytest.raises(botocore.exceptions.ClientError) as e:
                call(modelId=CLAUDE, body=json.dumps(body))
            err = e.value.response["Error"]
            assert err["Code"] == "ValidationException" and words in err["Message"], (body, err)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.count_tokens(modelId=CLAUDE, input={"invokeModel": {"body": json.dumps(dict(good, messages=[]))}})
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert json.loads(c.invoke_model(modelId=CLAUDE, body=json.dumps(good))["body"].read())["type"] == "message"
    recs = wait_records(server, 2 * len(bad) + 1)
    assert sorted(r.get("errorCode", "ok") for r in recs) == ["ValidationException"] * (2 * len(bad)) + ["ok"]


WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "hourly": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "where": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]},
    },
    "required": ["city", "days", "unit"],
    "additionalProperties": False,
}


def test_mock_tool_calls_satisfy_the_tools_json_schema_on_every_api(server):
    """Issue #12: the mock's tool input was always {"query": ...}, so structured-output
    helpers that validate it failed. Now it satisfies the tool's schema: through Converse,
    the OpenAI chat API, and an Anthropic InvokeModel body (where [mock:tool] was ignored)."""
    import jsonschema
    c = server.bedrock()
    r = c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "weather in Oslo [mock:tool=get_weather]"}]}],
                   toolConfig={"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": WEATHER_SCHEMA}}}]})
    (block,) = r["output"]["message"]["content"]
    assert r["stopReason"] == "tool_use" and block["toolUse"]["name"] == "get_weather"
    jsonschema.validate(block["toolUse"]["input"], WEATHER_SCHEMA)

    o = server.openai().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "weather [mock:tool=get_weather]"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}])
    jsonschema.validate(json.loads(o.choices[0].message.tool_calls[0].function.arguments), WEATHER_SCHEMA)

    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
            "tools": [{"name": "get_weather", "description": "w", "input_schema": WEATHER_SCHEMA}],
            "messages": [{"role": "user", "content": "weather in Oslo [mock:tool=get_weather]"}]}
    out = json.loads(c.invoke_model(modelId=CLAUDE, body=json.dumps(body))["body"].read())
    assert out["stop_reason"] == "tool_use"
    (use,) = out["content"]
    assert use["type"] == "tool_use" and use["name"] == "get_weather" and use["id"].startswith("toolu_")
    jsonschema.validate(use["input"], WEATHER_SCHEMA)
    # After the tool's result, the mock answers in text.
    body["messages"] += [{"role": "assistant", "content": [use]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": "sunny"}]}]
    out = json.loads(c.invoke_model(modelId=CLAUDE, body=json.dumps(body))["body"].read())
    assert out["stop_reason"] == "end_turn" and out["content"][0]["type"] == "text"
    # A directive naming a tool that is not offered: text, as before.
    body = dict(body, messages=[{"role": "user", "content": "x [mock:tool=other]"}])
    assert json.loads(c.invoke_model(modelId=CLAUDE, body=json.dumps(body))["body"].read())["content"][0]["type"] == "text"


def test_a_guardrail_intervention_is_answered_and_recorded_as_bedrock_does(server):
    """With a guardrailConfig, the mock's guardrail can block the input: stopReason
    guardrail_intervened and the guardrail's message, in the answer and in the record;
    without one there is nothing to intervene."""
    rt = server.bedrock()
    msgs = [{"role": "user", "content": [{"text": "a customer's address please [mock:guardrail=intervene]"}]}]
    r = rt.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=msgs,
                    guardrailConfig={"guardrailIdentifier": "pii-guard", "guardrailVersion": "1"})
    assert r["stopReason"] == "guardrail_intervened"
    assert r["output"]["message"]["content"][0]["text"] == "Sorry, the model cannot answer this question."
    assert r["usage"]["outputTokens"] == 0
    rec = wait_record(server, r["ResponseMetadata"]["RequestId"])
    assert rec["output"]["outputBodyJson"]["stopReason"] == "guardrail_intervened"
    # Streamed, the stop reason arrives in messageStop.
    events = list(rt.converse_stream(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=msgs,
                                     guardrailConfig={"guardrailIdentifier": "pii-guard", "guardrailVersion": "1"})["stream"])
    assert [e["messageStop"]["stopReason"] for e in events if "messageStop" in e] == ["guardrail_intervened"]
    plain = rt.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=msgs)
    assert plain["stopReason"] == "end_turn"

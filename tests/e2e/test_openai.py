"""The openai Python SDK against a running Logbook, and translation through an
OpenAI-compatible upstream (a local fake speaking the real wire format)."""

import json

import botocore.exceptions
import openai
import pytest
import requests

from conftest import wait_record, wait_records
from fake_openai import FakeOpenAI


def test_chat_completion_and_record(server):
    c = server.openai()
    r = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        max_tokens=200, metadata={"team": "search"},
    )
    resp = r.parse()
    assert resp.choices[0].message.content.startswith("[mock]")
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == "gpt-4o-mini"
    rec = wait_record(server, r.headers["x-request-id"])
    assert rec["operation"] == "ChatCompletions" and rec["modelId"] == "gpt-4o-mini"
    assert rec["input"]["inputBodyJson"]["messages"][1] == {"role": "user", "content": "hello"}
    assert rec["output"]["outputBodyJson"]["choices"][0]["message"]["content"] == resp.choices[0].message.content
    assert rec["input"]["inputTokenCount"] == resp.usage.prompt_tokens
    assert rec["output"]["outputTokenCount"] == resp.usage.completion_tokens
    assert rec["requestMetadata"] == {"team": "search"}
    assert rec["logbook"]["api"] == "openai" and rec["logbook"]["auth"] == "bearer"
    assert server.admin["apiKey"] not in json.dumps(rec) and server.admin["apiKey"] not in server.stderr()
    with pytest.raises(openai.AuthenticationError) as e:
        server.openai(key="sk-wrong").chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"


def test_chat_stream_with_usage(server):
    c = server.openai()
    stream = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "stream [mock:chunks=5]"}],
                                       stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    recs = wait_records(server, 1)
    rec = recs[0]
    assert rec["operation"] == "ChatCompletions" and rec["logbook"]["stream"] is True
    assert rec["output"]["outputBodyJson"]["choices"][0]["message"]["content"] == text
    assert rec["output"]["outputTokenCount"] == chunks[-1].usage.completion_tokens
    assert rec["requestId"].replace("-", "") in chunks[0].id


def test_stream_without_usage_has_no_usage_chunk(server):
    chunks = list(server.openai().chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True))
    assert all(ch.usage is None for ch in chunks)


def test_tool_calls_through_the_mock(server):
    c = server.openai()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
    r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "find it [mock:tool=lookup]"}], tools=tools)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and json.loads(call.function.arguments)["query"]
    assert r.choices[0].finish_reason == "tool_calls"
    r2 = c.chat.completions.create(model="m", tools=tools, messages=[
        {"role": "user", "content": "find it [mock:tool=lookup]"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "found"},
    ])
    assert r2.choices[0].message.content.startswith("[mock]")


def test_embeddings_float_and_base64(server):
    c = server.openai()
    r = c.embeddings.create(model="text-embedding-3-small", input=["a", "b"], dimensions=8)  # SDK asks for base64
    assert len(r.data) == 2 and len(r.data[0].embedding) == 8
    r2 = c.embeddings.create(model="text-embedding-3-small", input="a", dimensions=8, encoding_format="float")
    assert r2.data[0].embedding == pytest.approx(r.data[0].embedding)
    recs = wait_records(server, 2)
    assert {x["operation"] for x in recs} == {"Embeddings"}
    assert all(x["input"]["inputTokenCount"] >= 1 for x in recs)


def test_models_lists_routes(make_server):
    s = make_server('[[providers]]\nname = "m"\ntype = "mock"\n[[routes]]\nmodel = "team-model"\nprovider = "m"\n[[routes]]\nmodel = "gpt-*"\nprovider = "m"\n')
    ids = [m.id for m in s.openai().models.list()]
    assert ids[0] == "team-model" and "gpt-4o-mini" in ids and "amazon.nova-lite-v1:0" not in ids
    # One model by id (GET /v1/models/{id}), as the SDK's retrieve asks for it.
    m = s.openai().models.retrieve("gpt-4o-mini")
    assert m.id == "gpt-4o-mini" and m.object == "model" and m.owned_by == "m"
    assert s.openai().models.retrieve("team-model").id == "team-model"
    with pytest.raises(openai.NotFoundError) as e:
        s.openai().models.retrieve("amazon.nova-lite-v1:0")
    assert e.value.code == "model_not_found"


def test_openai_errors(make_server):
    s = make_server('[[providers]]\nname = "m"\ntype = "mock"\n[[routes]]\nmodel = "gpt-*"\nprovider = "m"\n')
    c = s.openai()
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="gpt-4o", messages=[])
    assert e.value.param == "messages"
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x [mock:error=ThrottlingException]"}])
    r = requests.post(f"{s.url}/v1/chat/completions", data=b"{oops", headers=s.auth_headers({"Content-Type": "application/json"}))
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = requests.post(f"{s.url}/v1/nothing", json={}, headers=s.auth_headers())
    assert r.status_code == 404 and "error" in r.json()
    recs = wait_records(s, 4)
    assert sorted(x.get("errorCode") for x in recs) == ["ResourceNotFoundException", "ThrottlingException", "ValidationException", "ValidationException"]


def upstream_config(url):
    return f"""
[[providers]]
name = "up"
type = "openai"
base_url = "{url}"
api_key = "${{UPSTREAM_KEY}}"

[[providers]]
name = "mock"
type = "mock"

[[routes]]
model = "gpt-*"
provider = "up"

[[routes]]
model = "us.anthropic.*"
provider = "up"
upstream_model = "gpt-4o-mini"

[[routes]]
model = "*"
provider = "mock"
"""


def test_boto3_converse_served_by_openai_upstream(make_server):
    with FakeOpenAI() as up:
        s = make_server(upstream_config(up.url), env={"UPSTREAM_KEY": "sk-upstream-secret"})
        c = s.bedrock()
        r = c.converse(modelId="us.anthropic.claude-sonnet-4-v1:0",
                       messages=[{"role": "user", "content": [{"text": "hi"}]}],
                       system=[{"text": "sys"}], inferenceConfig={"maxTokens": 33, "stopSequences": ["END"]})
        path, headers, body = up.requests[-1]
        assert path == "/v1/chat/completions" and body["model"] == "gpt-4o-mini"
        assert body["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
        assert body["max_tokens"] == 33 and body["stop"] == ["END"]
        assert headers["authorization"] == "Bearer sk-upstream-secret"
        assert r["output"]["message"]["content"] == [{"text": "upstream says hi"}]
        # OpenAI's prompt_tokens (11) include its 2 cached tokens; Bedrock counts them apart:
        # inputTokens is the uncached 9, totalTokens still counts every token.
        assert r["usage"] == {"inputTokens": 9, "outputTokens": 4, "totalTokens": 15, "cacheReadInputTokens": 2}
        first = [x for x in wait_records(s, 1) if x["operation"] == "Converse"][0]
        assert first["input"]["inputTokenCount"] == 9 and first["input"]["cacheReadInputTokenCount"] == 2
        # gpt-4o-mini: 9 × 0.15 + 2 × 0.075 + 4 × 0.60 per 1M tokens.
        assert first["logbook"]["cost"] == "0.0000039"
        # Streaming, with a tool call.
        tools = {"tools": [{"toolSpec": {"name": "weather", "inputSchema": {"json": {"type": "object"}}}}]}
        st = c.converse_stream(modelId="gpt-4o", messages=[{"role": "user", "content": [{"text": "weather?"}]}], toolConfig=tools)
        events = list(st["stream"])
        start = [e for e in events if "contentBlockStart" in e][0]["contentBlockStart"]
        assert start["start"]["toolUse"]["name"] == "weather"
        args = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e)
        assert json.loads(args) == {"city": "Oslo"}
        assert [e for e in events if "messageStop" in e][0]["messageStop"]["stopReason"] == "tool_use"
        assert events[-1]["metadata"]["usage"]["outputTokens"] == 4
        assert up.requests[-1][2]["tools"][0]["function"]["name"] == "weather"
        recs = wait_records(s, 2)
        rec = [x for x in recs if x["operation"] == "ConverseStream"][0]
        tu = rec["output"]["outputBodyJson"]["output"]["message"]["content"][0]["toolUse"]
        assert tu["input"] == {"city": "Oslo"} and rec["output"]["outputBodyJson"]["stopReason"] == "tool_use"
        assert rec["logbook"]["providerType"] == "openai" and rec["logbook"]["mock"] is False
        assert all("sk-upstream-secret" not in json.dumps(x) for x in recs)
        assert "sk-upstream-secret" not in s.stderr()


def test_openai_sdk_through_openai_upstream_and_upstream_errors(make_server):
    with FakeOpenAI() as up:
        s = make_server(upstream_config(up.url), env={"UPSTREAM_KEY": "k"})
        c = s.openai()
        chunks = list(c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True,
                                                stream_options={"include_usage": True}))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "upstream says hi"
        assert chunks[-1].usage.total_tokens == 15
        e = c.embeddings.create(model="gpt-embed", input=["x", "y"], dimensions=4, encoding_format="float")
        assert e.data[1].embedding == [0.5] * 4 and e.usage.prompt_tokens == 6
        up.fail_next = (429, {"error": {"message": "slow down", "type": "rate_limit"}})
        with pytest.raises(botocore.exceptions.ClientError) as err:
            s.bedrock().converse(modelId="gpt-4o", messages=[{"role": "user", "content": [{"text": "x"}]}])
        assert err.value.response["Error"]["Code"] == "ThrottlingException"
        assert "slow down" in err.value.response["Error"]["Message"]
        rec = wait_record(s, err.value.response["ResponseMetadata"]["RequestId"])
        assert rec["errorCode"] == "ThrottlingException"
        ids = [m.id for m in c.models.list()]
        assert "gpt-4o-mini" in ids


def test_invoke_model_on_openai_route_is_a_clear_validation_error(make_server):
    with FakeOpenAI() as up:
        s = make_server(upstream_config(up.url), env={"UPSTREAM_KEY": "k"})
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s.bedrock().invoke_model(modelId="gpt-4o", body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "messages": []}))
        assert e.value.response["Error"]["Code"] == "ValidationException"
        assert "Converse" in e.value.response["Error"]["Message"]

"""The `bedrock` (SigV4-signed) and `anthropic` providers, tested with real clients in front
of Logbook and local fakes speaking each provider's real wire format behind it."""

import json

import botocore.exceptions
import pytest

from conftest import wait_record
from fake_upstreams import FakeAnthropic, FakeBedrock

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


def bedrock_config(url, with_keys=True):
    keys = 'access_key_id = "AKIAUPSTREAM"\nsecret_access_key = "upstream-secret-do-not-log"\n' if with_keys else ""
    return f"""
[[providers]]
name = "aws"
type = "bedrock"
base_url = "{url}"
region = "us-west-2"
{keys}
[[routes]]
model = "*"
provider = "aws"
"""


def test_bedrock_provider_signs_and_passes_every_operation(make_server):
    with FakeBedrock("AKIAUPSTREAM", "upstream-secret-do-not-log", "us-west-2") as up:
        s = make_server(bedrock_config(up.url))
        c = s.bedrock()
        r = c.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "hi"}]}], inferenceConfig={"maxTokens": 10})
        assert r["output"]["message"]["content"][0]["text"] == f"bedrock {CLAUDE} says hi"
        assert r["usage"]["cacheReadInputTokens"] == 3
        action, model, body = up.requests[-1]
        assert (action, model) == ("converse", CLAUDE)
        assert body["messages"][0]["content"][0]["text"] == "hi" and body["inferenceConfig"] == {"maxTokens": 10}
        rec = wait_record(s, r["ResponseMetadata"]["RequestId"])
        assert rec["input"]["cacheReadInputTokenCount"] == 3 and rec["logbook"]["providerType"] == "bedrock"

        events = list(c.converse_stream(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "s"}]}])["stream"])
        assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e) == "bedrock streams hi"
        assert events[-1]["metadata"]["usage"]["outputTokens"] == 3

        r = c.invoke_model(modelId=CLAUDE, body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        assert json.loads(r["body"].read())["content"][0]["text"].startswith("bedrock")
        assert r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "6"

        r = c.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": []}))
        chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
        assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 2
        rec = wait_record(s, r["ResponseMetadata"]["RequestId"])
        assert rec["output"]["outputBodyJson"] == chunks and rec["output"]["outputTokenCount"] == 2

        chat = s.openai().chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "from openai"}])
        assert chat.choices[0].message.content == f"bedrock {CLAUDE} says hi" and chat.usage.total_tokens == 15 and chat.usage.prompt_tokens == 10 and chat.usage.prompt_tokens_details.cached_tokens == 3
        assert up.requests[-1][2]["messages"] == [{"role": "user", "content": [{"text": "from openai"}]}]
        e = s.openai().embeddings.create(model="amazon.titan-embed-text-v2:0", input=["a", "b"], dimensions=4, encoding_format="float")
        assert e.data[0].embedding == [0.25] * 4 and e.usage.prompt_tokens == 4

        # CountTokens is Bedrock's own, signed, the body's blob base64 as restJson sends it.
        n = c.count_tokens(modelId=CLAUDE, input={"converse": {"messages": [{"role": "user", "content": [{"text": "count"}]}]}})
        assert n["inputTokens"] == 11
        assert up.requests[-1][:2] == ("count-tokens", CLAUDE)
        assert up.requests[-1][2]["input"]["converse"]["messages"][0]["content"][0]["text"] == "count"
        body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
        assert c.count_tokens(modelId=CLAUDE, input={"invokeModel": {"body": body}})["inputTokens"] == 21

        up.fail_next = ("ThrottlingException", 429, "Too many requests, please wait before trying again.")
        with pytest.raises(botocore.exceptions.ClientError) as err:
            c.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "x"}]}])
        assert err.value.response["Error"]["Code"] == "ThrottlingException"
        assert "Too many requests" in err.value.response["Error"]["Message"]
        assert "upstream-secret-do-not-log" not in s.stderr()


def test_bedrock_provider_credentials_from_environment_and_bad_signature(make_server):
    with FakeBedrock("AKIAENV", "env-secret", "us-west-2") as up:
        s = make_server(bedrock_config(up.url, with_keys=False), env={"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "env-secret"})
        r = s.bedrock().converse(modelId="arn:aws:bedrock:us-west-2:111122223333:inference-profile/us.anthropic.x-v1:0",
                                 messages=[{"role": "user", "content": [{"text": "hi"}]}])
        assert r["stopReason"] == "end_turn"
        assert up.requests[-1][1] == "arn:aws:bedrock:us-west-2:111122223333:inference-profile/us.anthropic.x-v1:0"
    with FakeBedrock("AKIAENV", "a-different-secret", "us-west-2") as up:
        s = make_server(bedrock_config(up.url, with_keys=False), name="data2", env={"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "env-secret"})
        with pytest.raises(botocore.exceptions.ClientError) as err:
            s.bedrock().converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "hi"}]}])
        assert err.value.response["Error"]["Code"] == "AccessDeniedException"
        assert "signature mismatch" in err.value.response["Error"]["Message"]


def anthropic_config(url):
    return f"""
[[providers]]
name = "claude"
type = "anthropic"
base_url = "{url}"
api_key = "${{ANTHROPIC_KEY}}"

[[routes]]
model = "*"
provider = "claude"
upstream_model = "claude-sonnet-4-5"
"""


def test_anthropic_provider_converse_tools_invoke_and_openai(make_server):
    with FakeAnthropic("sk-ant-secret") as up:
        s = make_server(anthropic_config(up.url), env={"ANTHROPIC_KEY": "sk-ant-secret"})
        c = s.bedrock()
        r = c.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "hi"}]}], system=[{"text": "sys"}])
        assert r["output"]["message"]["content"] == [{"text": "anthropic says hi"}]
        # Bedrock's totalTokens counts the cache reads and writes too: 8 + 5 + 2 + 1.
        assert r["usage"] == {"inputTokens": 8, "outputTokens": 5, "totalTokens": 16, "cacheReadInputTokens": 2, "cacheWriteInputTokens": 1}
        path, headers, body = up.requests[-1]
        # An upstream that cannot count tokens says so; it does not guess.
        sent = len(up.requests)
        with pytest.raises(botocore.exceptions.ClientError) as err:
            c.count_tokens(modelId=CLAUDE, input={"converse": {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}})
        assert err.value.response["Error"]["Code"] == "ValidationException" and "cannot count tokens" in err.value.response["Error"]["Message"]
        assert len(up.requests) == sent
        assert path == "/v1/messages" and body["model"] == "claude-sonnet-4-5" and body["system"] == "sys" and body["max_tokens"] == 4096

        tools = {"tools": [{"toolSpec": {"name": "weather", "inputSchema": {"json": {"type": "object"}}}}]}
        events = list(c.converse_stream(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "w?"}]}], toolConfig=tools)["stream"])
        start = [e for e in events if "contentBlockStart" in e][0]["contentBlockStart"]["start"]["toolUse"]
        assert start == {"toolUseId": "toolu_1", "name": "weather"}
        assert [e for e in events if "messageStop" in e][0]["messageStop"]["stopReason"] == "tool_use"
        assert events[-1]["metadata"]["usage"]["inputTokens"] == 8

        body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20, "messages": [{"role": "user", "content": "native"}]}
        r = c.invoke_model(modelId=CLAUDE, body=json.dumps(body))
        assert json.loads(r["body"].read())["content"][0]["text"] == "anthropic says hi"
        sent = up.requests[-1][2]
        assert "anthropic_version" not in sent and sent["model"] == "claude-sonnet-4-5"
        r = c.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(body))
        chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
        assert chunks[-1]["type"] == "message_stop"
        m = chunks[-1]["amazon-bedrock-invocationMetrics"]
        assert (m["inputTokenCount"], m["outputTokenCount"]) == (8, 5)
        assert all(ch["type"] != "ping" for ch in chunks)
        rec = wait_record(s, r["ResponseMetadata"]["RequestId"])
        assert rec["input"]["inputTokenCount"] == 8 and rec["output"]["outputTokenCount"] == 5

        o = s.openai()
        chunks = list(o.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "anthropic streams"
        # OpenAI counts the cached tokens inside prompt_tokens: 8 uncached + 2 cache reads.
        assert chunks[-1].usage.prompt_tokens == 10 and chunks[-1].usage.prompt_tokens_details.cached_tokens == 2

        up.fail_next = (529, "overloaded_error")
        with pytest.raises(botocore.exceptions.ClientError) as err:
            c.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "x"}]}])
        assert err.value.response["Error"]["Code"] == "ThrottlingException"
        for x in up.requests:
            assert x[1]["x-api-key"] == "sk-ant-secret"
        assert "sk-ant-secret" not in s.stderr()

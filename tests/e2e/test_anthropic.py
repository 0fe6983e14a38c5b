"""The Anthropic Messages API front door (issue #12) through the real anthropic SDK: plain,
streamed (the SDK's stream helper), tool use, the API key in x-api-key, errors in
Anthropic's shape, and one record per call."""

import time

import anthropic
import pytest

from conftest import read_records, sdk_http_client


def client(server, key=None):
    return anthropic.Anthropic(base_url=server.url, api_key=key or server.admin["apiKey"], max_retries=0,
                               http_client=sdk_http_client())


def records(server, op="Messages", n=1, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        recs = [r for r in read_records(server.data_dir) if r["operation"] == op]
        if len(recs) >= n:
            return recs
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} {op} records")


def test_a_message_with_the_sdk_is_recorded(server):
    c = client(server)
    m = c.messages.create(model="claude-3-5-haiku-20241022", max_tokens=64, system="Be brief.",
                          messages=[{"role": "user", "content": "Hello, Claude"}])
    assert m.type == "message" and m.role == "assistant" and m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens") and m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    rec = records(server)[0]
    assert rec["modelId"] == "claude-3-5-haiku-20241022"
    assert rec["input"]["inputBodyJson"]["messages"][0]["content"] == "Hello, Claude"
    assert rec["input"]["inputTokenCount"] == m.usage.input_tokens
    assert rec["output"]["outputTokenCount"] == m.usage.output_tokens
    assert rec["output"]["outputBodyJson"]["content"][0]["text"] == m.content[0].text
    # The key sent in x-api-key is in no record and no log line.
    import json as _json
    key = server.admin["apiKey"]
    assert key not in _json.dumps(read_records(server.data_dir)) and key not in server.stderr()


def test_a_streamed_message_and_its_record(server):
    c = client(server)
    text = ""
    with c.messages.stream(model="claude-3-5-haiku-20241022", max_tokens=64,
                           messages=[{"role": "user", "content": "Tell me a story"}]) as s:
        for t in s.text_stream:
            text += t
        final = s.get_final_message()
    assert text and final.content[0].text == text
    assert final.usage.output_tokens > 0
    rec = records(server)[0]
    assert rec["logbook"]["stream"] is True
    assert rec["output"]["outputTokenCount"] == final.usage.output_tokens
    events = rec["output"]["outputBodyJson"]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"


def test_tool_use_round_trip(server):
    c = client(server)
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    m = c.messages.create(model="claude-3-5-haiku-20241022", max_tokens=128, tools=tools,
                          messages=[{"role": "user", "content": "[mock:tool=get_weather] weather in Oslo?"}])
    use = [b for b in m.content if b.type == "tool_use"]
    assert m.stop_reason == "tool_use" and use and use[0].name == "get_weather" and isinstance(use[0].input["city"], str)
    follow = c.messages.create(model="claude-3-5-haiku-20241022", max_tokens=128, tools=tools, messages=[
        {"role": "user", "content": "[mock:tool=get_weather] weather in Oslo?"},
        {"role": "assistant", "content": [b.model_dump() for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use[0].id, "content": "3 C"}]},
    ])
    assert follow.content[0].type == "text"
    # Streamed: the tool call arrives as a tool_use block with input_json_delta fragments.
    with c.messages.stream(model="claude-3-5-haiku-20241022", max_tokens=128, tools=tools,
                           messages=[{"role": "user", "content": "[mock:tool=get_weather] and Bergen?"}]) as s:
        kinds = [e.type for e in s]
        final = s.get_final_message()
    assert "input_json" in kinds, kinds
    assert final.stop_reason == "tool_use" and final.content[0].type == "tool_use"
    assert isinstance(final.content[0].input["city"], str)


def test_count_tokens_counts_and_writes_no_record(server):
    c = client(server)
    r = c.messages.count_tokens(model="claude-3-5-haiku-20241022", system="Be brief.",
                                messages=[{"role": "user", "content": "Hello, Claude, how are you today?"}])
    assert r.input_tokens > 0
    # It agrees with what a call would be counted, and no record was written.
    m = c.messages.create(model="claude-3-5-haiku-20241022", max_tokens=16, system="Be brief.",
                          messages=[{"role": "user", "content": "Hello, Claude, how are you today?"}])
    assert m.usage.input_tokens == r.input_tokens
    assert len(records(server)) == 1
    with pytest.raises(anthropic.BadRequestError):
        c.messages.count_tokens(model="claude-3-5-haiku-20241022", messages="not a list")


def test_errors_are_in_anthropics_shape(server):
    with pytest.raises(anthropic.AuthenticationError) as e:
        client(server, key="sk-wrong").messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "authentication_error"
    c = client(server)
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model="claude-3-5-haiku-20241022", max_tokens=5, messages=[])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    recs = records(server)
    assert [r.get("errorCode") for r in recs] == ["ValidationException"]


def test_anthropic_bedrock_client_signs_invoke_model(server):
    """anthropic[bedrock]: the same SDK pointed at Bedrock (SigV4, InvokeModel) instead."""
    c = anthropic.AnthropicBedrock(aws_access_key=server.admin["accessKeyId"], aws_secret_key=server.admin["secretAccessKey"],
                                   aws_region="us-east-1", base_url=server.url, max_retries=0)
    model = "anthropic.claude-3-5-haiku-20241022-v1:0"
    m = c.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": "via bedrock"}])
    assert m.content[0].type == "text" and "via bedrock" in m.content[0].text
    with c.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": "via bedrock stream"}]) as s:
        text = "".join(s.text_stream)
    assert "via bedrock stream" in text
    recs = records(server, op="InvokeModel") + records(server, op="InvokeModelWithResponseStream")
    assert sorted((r["operation"], r["modelId"]) for r in recs) == [
        ("InvokeModel", model), ("InvokeModelWithResponseStream", model)]


def test_messages_reach_an_openai_compatible_upstream_through_converse(make_server):
    """A provider that takes no native Claude body is reached through the Converse
    translation: the Anthropic SDK talks Messages, the upstream hears OpenAI chat, and the
    answer, stream, tool call and record come back in the Messages API's shape."""
    from fake_openai import FakeOpenAI
    from test_openai import upstream_config

    with FakeOpenAI() as up:
        s = make_server(upstream_config(up.url), env={"UPSTREAM_KEY": "sk-upstream-secret"})
        c = client(s)
        m = c.messages.create(model="gpt-4o-mini", max_tokens=50, system="Be brief.",
                              messages=[{"role": "user", "content": "hello upstream"}])
        path, _, body = up.requests[-1]
        assert path == "/v1/chat/completions" and body["model"] == "gpt-4o-mini" and body["max_tokens"] == 50
        assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello upstream"}]
        assert m.type == "message" and m.content[0].text == "upstream says hi" and m.stop_reason == "end_turn"
        assert m.usage.input_tokens == 9 and m.usage.output_tokens == 4  # OpenAI's 11 less its 2 cached
        with c.messages.stream(model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": "stream it"}]) as st:
            text = "".join(st.text_stream)
            final = st.get_final_message()
        assert text == "upstream says hi" and final.usage.output_tokens == 4
        tools = [{"name": "weather", "description": "w", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
        t = c.messages.create(model="gpt-4o", max_tokens=50, tools=tools, messages=[{"role": "user", "content": "weather?"}])
        assert t.stop_reason == "tool_use" and t.content[0].type == "tool_use" and t.content[0].input == {"city": "Oslo"}
        recs = records(s, n=3)
        assert [r["modelId"] for r in recs] == ["gpt-4o-mini", "gpt-4o", "gpt-4o"]
        assert recs[0]["output"]["outputBodyJson"]["content"][0]["text"] == "upstream says hi"
        assert recs[0]["input"]["inputTokenCount"] == 9 and recs[0]["logbook"]["provider"] == "up"
        assert recs[1]["logbook"]["stream"] is True and recs[1]["output"]["outputTokenCount"] == 4
        assert [e["type"] for e in recs[1]["output"]["outputBodyJson"]][-1] == "message_stop"
        assert all("errorCode" not in r for r in recs)

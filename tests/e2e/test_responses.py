"""The OpenAI Responses API (`POST /v1/responses`) through the real openai SDK: plain,
streamed, function calling round trips, structured output, refusals of what Logbook does
not keep (response state, built-in tools), and a record per call."""

import json

import openai
import pytest

from conftest import read_records


def test_a_response_with_the_sdk_is_recorded(server):
    c = server.openai()
    r = c.responses.create(model="gpt-4o-mini", instructions="Be brief.", input="Say hello", max_output_tokens=64)
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert r.output_text, r
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    rid = r.id.removeprefix("resp_")
    recs = [x for x in _wait_all(server) if x["requestId"].replace("-", "") == rid]
    assert len(recs) == 1
    rec = recs[0]
    assert rec["operation"] == "Responses"
    assert rec["input"]["inputBodyJson"]["input"] == "Say hello"
    assert rec["output"]["outputBodyJson"]["output"][0]["content"][0]["text"] == r.output_text
    assert rec["input"]["inputTokenCount"] == r.usage.input_tokens
    assert rec["output"]["outputTokenCount"] == r.usage.output_tokens


def _wait_all(server, timeout=20):
    import time
    end = time.time() + timeout
    while time.time() < end:
        recs = read_records(server.data_dir)
        if recs:
            return recs
        time.sleep(0.1)
    return []


def test_a_streamed_response_is_sequenced_and_recorded_whole(server):
    c = server.openai()
    kinds, text = [], ""
    with c.responses.stream(model="gpt-4o-mini", input=[{"role": "user", "content": [{"type": "input_text", "text": "Tell me a story"}]}]) as s:
        for ev in s:
            kinds.append(ev.type)
            if ev.type == "response.output_text.delta":
                text += ev.delta
        final = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert "response.output_text.delta" in kinds and "response.output_item.done" in kinds
    assert final.output_text == text and text
    assert final.usage.output_tokens > 0
    rid = final.id.removeprefix("resp_")
    import time
    end = time.time() + 20
    while time.time() < end:
        recs = [x for x in read_records(server.data_dir) if x["requestId"].replace("-", "") == rid]
        if recs:
            break
        time.sleep(0.1)
    assert len(recs) == 1 and recs[0]["logbook"]["stream"] is True
    assert recs[0]["output"]["outputBodyJson"]["output"][0]["content"][0]["text"] == text


def test_function_calls_round_trip(server):
    c = server.openai()
    tools = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    r = c.responses.create(model="gpt-4o-mini", input="[mock:tool=get_weather] weather in Oslo?", tools=tools)
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    args = json.loads(calls[0].arguments)
    assert isinstance(args.get("city"), str)
    follow = c.responses.create(model="gpt-4o-mini", tools=tools, input=[
        {"role": "user", "content": "[mock:tool=get_weather] weather in Oslo?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": json.dumps({"celsius": 3})},
    ])
    assert follow.status == "completed" and follow.output_text
    # Streamed function call arguments arrive as deltas and a done event.
    kinds = []
    with c.responses.stream(model="gpt-4o-mini", input="[mock:tool=get_weather] and Bergen?", tools=tools) as s:
        for ev in s:
            kinds.append(ev.type)
        final = s.get_final_response()
    assert "response.function_call_arguments.done" in kinds
    assert [o.type for o in final.output].count("function_call") == 1


def test_what_logbook_does_not_keep_is_refused_precisely(server):
    c = server.openai()
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="gpt-4o-mini", input="x", previous_response_id="resp_123")
    assert e.value.body["param"] == "previous_response_id" and "no response state" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="gpt-4o-mini", input="x", tools=[{"type": "web_search"}])
    assert e.value.body["param"] == "tools[0].type"
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="gpt-4o-mini", input=[{"type": "item_reference", "id": "x"}])
    assert e.value.body["param"] == "input[0].type"
    # Each refusal is recorded once, as a ValidationException.
    import time
    end = time.time() + 20
    while time.time() < end:
        bad = [x for x in read_records(server.data_dir) if x.get("errorCode") == "ValidationException" and x["operation"] == "Responses"]
        if len(bad) >= 3:
            break
        time.sleep(0.1)
    assert len(bad) == 3


def test_legacy_completions_with_the_sdk(server):
    c = server.openai()
    r = c.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon a time", max_tokens=20)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].text and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    text = "".join(ch.choices[0].text for ch in c.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Once upon a time", max_tokens=20, stream=True) if ch.choices)
    assert text
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="gpt-3.5-turbo-instruct", prompt="x", echo=True)
    assert e.value.body["param"] == "echo"
    import time
    end = time.time() + 20
    while time.time() < end:
        recs = [x for x in read_records(server.data_dir) if x["operation"] == "Completions"]
        if len(recs) >= 3:
            break
        time.sleep(0.1)
    ok = [x for x in recs if "errorCode" not in x]
    assert len(ok) == 2 and all(x["output"]["outputBodyJson"]["object"] == "text_completion" for x in ok)
    streamed = next(x for x in ok if x["logbook"]["stream"])
    assert streamed["output"]["outputBodyJson"]["choices"][0]["text"] == text

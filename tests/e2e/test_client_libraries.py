"""Client libraries nobody here wrote (issue #12 point 5): langchain-aws (ChatBedrockConverse,
ChatBedrock, BedrockEmbeddings) and litellm used as a client library (Bedrock Converse,
streamed and not, and OpenAI-compatible chat and embeddings), each against the real binary
with only an endpoint change. Each call must parse, and leave exactly one record with the
right operation and model."""

import os
import time

import pytest
from pydantic import BaseModel, Field

from conftest import read_records

# litellm must not fetch its model price map from the internet (there is none here).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


def new_records(server, before, n, timeout=20):
    """Wait until the archive holds `n` records more than `before`; return the new ones."""
    deadline = time.time() + timeout
    while True:
        recs = read_records(server.data_dir)
        if len(recs) >= before + n:
            assert len(recs) == before + n, f"{len(recs) - before} records for {n} calls"
            seen = {r["requestId"] for r in recs[:before]}
            return [r for r in recs if r["requestId"] not in seen]
        assert time.time() < deadline, f"{len(recs) - before} of {n} records"
        time.sleep(0.1)


def creds(server):
    return dict(aws_access_key_id=server.admin["accessKeyId"], aws_secret_access_key=server.admin["secretAccessKey"])


class Weather(BaseModel):
    """The weather in a city."""

    city: str = Field(description="the city")
    celsius: int = Field(description="temperature in degrees Celsius")


def test_langchain_aws_chat_tools_structured_output_and_embeddings(server):
    from langchain_aws import BedrockEmbeddings, ChatBedrock, ChatBedrockConverse

    kw = dict(region_name="us-east-1", endpoint_url=server.url, **creds(server))
    before = len(read_records(server.data_dir))
    chat = ChatBedrockConverse(model=HAIKU, **kw)
    m = chat.invoke("hello from langchain")
    assert "[mock]" in m.content and m.usage_metadata["input_tokens"] > 0
    streamed = "".join(c.content if isinstance(c.content, str) else "".join(p.get("text", "") for p in c.content)
                       for c in chat.stream("stream please"))
    assert "[mock]" in streamed
    # Tools: the mock calls the named tool with input that satisfies its schema.
    tool_msg = chat.bind_tools([Weather]).invoke("weather in Paris? [mock:tool=Weather]")
    assert tool_msg.tool_calls and tool_msg.tool_calls[0]["name"] == "Weather"
    Weather(**tool_msg.tool_calls[0]["args"])
    structured = chat.with_structured_output(Weather).invoke("weather in Oslo [mock:tool=Weather]")
    assert isinstance(structured, Weather)
    # ChatBedrock speaks InvokeModel with the model's native body.
    native = ChatBedrock(model_id=HAIKU, **kw).invoke("native body please")
    assert "[mock]" in native.content
    vec = BedrockEmbeddings(model_id="amazon.titan-embed-text-v2:0", **kw).embed_query("embed me")
    assert len(vec) > 0 and all(isinstance(x, float) for x in vec)
    recs = new_records(server, before, 6)
    ops = sorted((r["operation"], r["modelId"]) for r in recs)
    assert ops == sorted([("Converse", HAIKU), ("ConverseStream", HAIKU), ("Converse", HAIKU), ("Converse", HAIKU),
                          ("InvokeModel", HAIKU), ("InvokeModel", "amazon.titan-embed-text-v2:0")]), ops
    assert all("errorCode" not in r for r in recs), [r.get("errorCode") for r in recs]


def test_litellm_as_a_client_library_for_bedrock_and_openai(server):
    import litellm

    before = len(read_records(server.data_dir))
    bedrock = dict(aws_bedrock_runtime_endpoint=server.url, aws_region_name="us-east-1", **creds(server))
    msgs = [{"role": "user", "content": "hello from litellm"}]
    r = litellm.completion(model=f"bedrock/converse/{HAIKU}", messages=msgs, **bedrock)
    assert "[mock]" in r.choices[0].message.content and r.usage.prompt_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in
                   litellm.completion(model=f"bedrock/converse/{HAIKU}", messages=msgs, stream=True, **bedrock))
    assert "[mock]" in text
    openai_kw = dict(api_base=server.url + "/v1", api_key=server.admin["apiKey"])
    r = litellm.completion(model="openai/gpt-4o-mini", messages=msgs, **openai_kw)
    assert "[mock]" in r.choices[0].message.content
    e = litellm.embedding(model="openai/text-embedding-3-small", input=["embed me"], **openai_kw)
    assert len(e.data[0]["embedding"]) > 0
    recs = new_records(server, before, 4)
    ops = sorted((r["operation"], r["modelId"]) for r in recs)
    assert ops == sorted([("Converse", HAIKU), ("ConverseStream", HAIKU), ("ChatCompletions", "gpt-4o-mini"),
                          ("Embeddings", "text-embedding-3-small")]), ops
    assert all("errorCode" not in r for r in recs), [r.get("errorCode") for r in recs]

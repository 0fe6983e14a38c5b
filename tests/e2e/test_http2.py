"""The SDKs whose transport can speak HTTP/2 (httpx2 under the OpenAI and Anthropic SDKs),
run over HTTP/2 with prior knowledge against the same port that serves HTTP/1.1: plain
and streamed calls, each recorded once (issue #12, point 6)."""

import time

import anthropic
import httpx2 as httpx  # the transport these SDK versions use (a fork of httpx)
import openai

from conftest import read_records


def h2_client():
    # http1=False: prior knowledge, no upgrade dance (what the JS SDK's Node handler does).
    return httpx.Client(http1=False, http2=True, timeout=30)


def wait_ops(server, n, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        recs = read_records(server.data_dir)
        if len(recs) >= n:
            return recs
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} records")


def test_openai_and_anthropic_sdks_over_http2(server):
    with h2_client() as http:
        o = openai.OpenAI(base_url=server.url + "/v1", api_key=server.admin["apiKey"], http_client=http, max_retries=0)
        chat = o.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "h2 chat"}])
        assert "h2 chat" in chat.choices[0].message.content
        text = "".join(c.choices[0].delta.content or "" for c in o.chat.completions.create(
            model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "h2 stream"}]) if c.choices)
        assert "h2 stream" in text
        with o.responses.stream(model="gpt-4o-mini", input="h2 responses") as s:
            final = s.get_final_response()
        assert "h2 responses" in final.output_text
        a = anthropic.Anthropic(base_url=server.url, api_key=server.admin["apiKey"], http_client=http, max_retries=0)
        m = a.messages.create(model="claude-3-5-haiku-20241022", max_tokens=64, messages=[{"role": "user", "content": "h2 messages"}])
        assert "h2 messages" in m.content[0].text
        with a.messages.stream(model="claude-3-5-haiku-20241022", max_tokens=64,
                               messages=[{"role": "user", "content": "h2 messages stream"}]) as s:
            assert "h2 messages stream" in "".join(s.text_stream)
        # It really was HTTP/2.
        r = http.get(server.url + "/healthz")
        assert r.http_version == "HTTP/2" and r.status_code == 200
    ops = sorted(r["operation"] for r in wait_ops(server, 5))
    assert ops == ["ChatCompletions", "ChatCompletions", "Messages", "Messages", "Responses"], ops

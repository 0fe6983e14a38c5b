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


def test_an_idle_http2_connection_does_not_hold_up_the_shutdown(server):
    """A client that keeps its HTTP/2 connection open and reads nothing (as SDKs pool
    them) must not make SIGTERM wait out the 30 s drain meant for calls in flight."""
    import signal
    http = h2_client()
    o = openai.OpenAI(base_url=server.url + "/v1", api_key=server.admin["apiKey"], http_client=http, max_retries=0)
    o.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "then idle"}])
    t = time.time()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=60)
    took = time.time() - t
    http.close()
    assert server.proc.returncode == 0
    assert took < 15, f"shutdown took {took:.1f} s with an idle HTTP/2 connection"
    assert len(read_records(server.data_dir)) == 1


def test_a_stream_in_flight_finishes_before_the_shutdown_on_both_versions(server):
    """SIGTERM waits for calls in flight, streams included (their bodies are counted until
    they end), over HTTP/1.1 and HTTP/2 alike."""
    import signal
    import threading
    http2 = h2_client()
    results = {}

    def run(name, http_client):
        o = openai.OpenAI(base_url=server.url + "/v1", api_key=server.admin["apiKey"], http_client=http_client,
                          max_retries=0)
        text = "".join(c.choices[0].delta.content or "" for c in o.chat.completions.create(
            model="gpt-4o-mini", stream=True,
            messages=[{"role": "user", "content": f"{name} [mock:chunks=6] [mock:chunk_delay_ms=300]"}]) if c.choices)
        results[name] = text

    threads = [threading.Thread(target=run, args=("h1", None)), threading.Thread(target=run, args=("h2", http2))]
    for t in threads:
        t.start()
    time.sleep(0.5)  # both streams are under way
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=60)
    server.proc.wait(timeout=60)
    http2.close()
    assert server.proc.returncode == 0
    assert "h1" in results.get("h1", "") and "h2" in results.get("h2", ""), results
    recs = read_records(server.data_dir)
    assert len(recs) == 2 and all("errorCode" not in r for r in recs), recs

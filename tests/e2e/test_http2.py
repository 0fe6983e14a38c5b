"""The SDKs whose transport can speak HTTP/2 (httpx2 under the OpenAI and Anthropic SDKs),
run over HTTP/2 with prior knowledge against the same port that serves HTTP/1.1: plain
and streamed calls, each recorded once (issue #12, point 6)."""

import json
import socket
import time

import anthropic
import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx2 as httpx  # the transport these SDK versions use (a fork of httpx)
import openai

from conftest import read_records, wait_records


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


class Frames:
    """A frame-level HTTP/2 client (the `h2` state machine over a socket), for what SDK
    transports cannot do: stop sending mid-body, reset one stream and keep the connection."""

    def __init__(self, url):
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.streams = {}

    def flush(self):
        self.sock.sendall(self.conn.data_to_send())

    def request(self, sid, method, path, auth, body=b"", length=None, end=True):
        headers = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "logbook.test"),
                   ("authorization", auth), ("content-type", "application/json"),
                   ("content-length", str(len(body) if length is None else length))]
        self.conn.send_headers(sid, headers, end_stream=end and not body)
        self.streams[sid] = {"status": None, "headers": {}, "data": b"", "ended": False, "reset": None}
        self.flush()
        if body:
            # As a real client does: wait for flow control to let the body through (the
            # connection's window may be spent by an earlier stream until the server hands
            # it back with WINDOW_UPDATE).
            self.until(lambda: self.conn.local_flow_control_window(sid) >= len(body), f"window for stream {sid}")
            self.conn.send_data(sid, body, end_stream=end)
            self.flush()

    def pump(self):
        """Read one batch of frames and apply them; False when the connection closed."""
        data = self.sock.recv(65536)
        if not data:
            return False
        for e in self.conn.receive_data(data):
            st = self.streams.get(getattr(e, "stream_id", None))
            if isinstance(e, h2.events.ResponseReceived):
                st["headers"] = {k.decode(): v.decode() for k, v in e.headers}
                st["status"] = int(st["headers"][":status"])
            elif isinstance(e, h2.events.DataReceived):
                st["data"] += e.data
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                st["ended"] = True
            elif isinstance(e, h2.events.StreamReset) and st is not None:
                st["reset"] = e.error_code
        self.flush()
        return True

    def until(self, cond, what):
        end = time.time() + 20
        while not cond():
            assert time.time() < end, f"timed out waiting for {what}: {self.streams}"
            assert self.pump(), f"connection closed while waiting for {what}"

    def close(self):
        self.sock.close()


def test_an_oversize_http2_body_gets_its_400_early_and_the_connection_lives_on(server):
    """Over HTTP/2 a 25 MB body is refused as over HTTP/1.1 (ValidationException, before
    the model), while most of it is still unsent: the answer comes first and the stream is
    then reset with NO_ERROR (RFC 9113 §8.1), so a client never has to push the rest. The
    connection serves the next call. (httpx's HTTP/2 client cannot read an early answer,
    so the SDK-level run of the oversize test is HTTP/1.1 only.)"""
    auth = "Bearer " + server.admin["apiKey"]
    f = Frames(server.url)
    total = 25_000_020
    f.request(1, "POST", "/model/amazon.titan-text-express-v1/invoke", auth, length=total, end=False)
    sent = 0
    end = time.time() + 20
    while f.streams[1]["reset"] is None:
        assert time.time() < end, f.streams
        window = f.conn.local_flow_control_window(1)
        if window > 0 and sent < total and f.streams[1]["status"] is None:
            n = min(window, 16384, total - sent)
            f.conn.send_data(1, b"a" * n)
            f.flush()
            sent += n
        else:
            assert f.pump()
    one = f.streams[1]
    assert one["status"] == 400 and one["ended"] and one["reset"] == 0, one
    assert one["headers"]["x-amzn-errortype"].startswith("ValidationException")
    assert "25000000" in json.loads(one["data"])["message"]
    assert sent < total // 10, f"the answer came after {sent} of {total} bytes"
    f.request(3, "POST", "/model/amazon.titan-text-express-v1/invoke", auth, json.dumps({"inputText": "next"}).encode())
    f.until(lambda: f.streams[3]["ended"], "the next call")
    assert f.streams[3]["status"] == 200 and b"next" in f.streams[3]["data"]
    f.close()
    recs = wait_records(server, 2)
    assert sorted(r.get("errorCode", "ok") for r in recs) == ["ValidationException", "ok"], recs


def test_a_refused_body_that_spent_the_connection_window_is_handed_back_and_the_connection_lives_on(server):
    """A client that pushed a refused body up to HTTP/2's flow-control limit before reading
    a frame (a fast client, a busy server) has spent the connection's whole window on a
    stream the server then reset. The server must hand back what it discarded (WINDOW_UPDATE
    on the connection, RFC 9113 §6.9), or no stream on that connection could send a body
    again: one refused upload would wedge a pooled connection for good."""
    auth = "Bearer " + server.admin["apiKey"]
    path = "/model/amazon.titan-text-express-v1/invoke"
    f = Frames(server.url)
    # A first call settles the connection's settings and the server's initial window.
    f.request(1, "POST", path, auth, json.dumps({"inputText": "first"}).encode())
    f.until(lambda: f.streams[1]["ended"], "the first call")
    assert f.streams[1]["status"] == 200, f.streams[1]
    assert f.conn.outbound_flow_control_window > 65_535, "the server's connection window was not raised"
    f.request(3, "POST", path, auth, length=25_000_020, end=False)
    sent = 0
    while (window := f.conn.local_flow_control_window(3)) > 0:
        n = min(window, 16384)
        f.conn.send_data(3, b"a" * n)
        f.flush()
        sent += n
    assert f.conn.outbound_flow_control_window == 0 and sent > 65_535, sent
    f.until(lambda: f.streams[3]["reset"] is not None, "the refusal and its reset")
    assert f.streams[3]["status"] == 400 and f.streams[3]["reset"] == 0, f.streams[3]
    body = json.dumps({"inputText": "after"}).encode()
    f.until(lambda: f.conn.outbound_flow_control_window >= len(body), "the connection window handed back")
    f.request(5, "POST", path, auth, body)
    f.until(lambda: f.streams[5]["ended"], "the call after the refusal")
    assert f.streams[5]["status"] == 200 and b"after" in f.streams[5]["data"], f.streams[5]
    f.close()
    recs = wait_records(server, 3)
    assert sorted(r.get("errorCode", "ok") for r in recs) == ["ValidationException", "ok", "ok"], recs


def test_a_reset_http2_stream_is_recorded_as_a_client_disconnect_and_its_neighbours_carry_on(server):
    """RST_STREAM(CANCEL) on one streamed call, the way the JavaScript SDK aborts a
    request: that call is recorded once as ClientDisconnected (499), while a second call
    multiplexed on the same connection completes normally."""
    auth = "Bearer " + server.admin["apiKey"]
    f = Frames(server.url)
    slow = {"messages": [{"role": "user", "content": [{"text": "x [mock:chunks=50] [mock:chunk_delay_ms=50]"}]}]}
    f.request(1, "POST", "/model/amazon.nova-lite-v1:0/converse-stream", auth, json.dumps(slow).encode())
    f.until(lambda: len(f.streams[1]["data"]) > 0, "the first event of the stream")
    assert f.streams[1]["status"] == 200
    f.request(3, "POST", "/model/amazon.nova-lite-v1:0/converse", auth,
              json.dumps({"messages": [{"role": "user", "content": [{"text": "neighbour"}]}]}).encode())
    f.conn.reset_stream(1, error_code=h2.errors.ErrorCodes.CANCEL)
    f.flush()
    f.until(lambda: f.streams[3]["ended"], "the neighbouring call")
    assert f.streams[3]["status"] == 200 and b"neighbour" in f.streams[3]["data"]
    f.close()
    recs = wait_records(server, 2)
    by_op = {r["operation"]: r for r in recs}
    assert by_op["ConverseStream"]["errorCode"] == "ClientDisconnected", by_op["ConverseStream"]
    assert by_op["ConverseStream"]["logbook"]["httpStatus"] == 499
    assert "errorCode" not in by_op["Converse"]

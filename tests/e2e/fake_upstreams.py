"""Local fakes of Amazon Bedrock and Anthropic that speak the real wire formats, for testing
Logbook's `bedrock` and `anthropic` providers (the real services cannot be reached here).

FakeBedrock verifies each request's SigV4 signature by recomputing it with botocore's own
signer, and answers with JSON or binary event-stream frames (CRC-32 framed, as AWS does).
FakeAnthropic checks the `x-api-key` / `anthropic-version` headers and streams SSE."""

import binascii
import json
import threading
from http.server import BaseHTTPRequestHandler

from loopback_http import LoopbackHTTPServer
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def es_frame(headers, payload):
    hb = b""
    for k, v in headers.items():
        kb, vb = k.encode(), v.encode()
        hb += bytes([len(kb)]) + kb + bytes([7]) + len(vb).to_bytes(2, "big") + vb
    total = 12 + len(hb) + len(payload) + 4
    prelude = total.to_bytes(4, "big") + len(hb).to_bytes(4, "big")
    msg = prelude + binascii.crc32(prelude).to_bytes(4, "big") + hb + payload
    return msg + binascii.crc32(msg).to_bytes(4, "big")


def es_event(kind, obj):
    return es_frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"}, json.dumps(obj).encode())


class _Base:
    def __init__(self, handler_cls):
        self.requests = []
        self.fail_next = None
        self.httpd = LoopbackHTTPServer(("127.0.0.1", 0), handler_cls)
        self.httpd.fake = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send_json(self, status, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_chunked(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class FakeBedrock(_Base):
    def __init__(self, access_key, secret_key, region):
        self.creds = Credentials(access_key, secret_key)
        self.region = region
        super().__init__(BedrockHandler)

    def verify(self, handler, body):
        auth = handler.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return "missing SigV4 Authorization"
        parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
        signed = parts["SignedHeaders"].split(";")
        scope = parts["Credential"].split("/")
        if scope[0] != self.creds.access_key or scope[2] != self.region or scope[3] != "bedrock":
            return f"wrong credential scope {parts['Credential']}"
        headers = {h: handler.headers[h] for h in signed if handler.headers.get(h) is not None}
        req = AWSRequest(method="POST", url=f"http://{handler.headers['Host']}{handler.path}", data=body, headers=headers)
        req.context["timestamp"] = handler.headers["X-Amz-Date"]
        signer = SigV4Auth(self.creds, "bedrock", self.region)
        canonical = signer.canonical_request(req)
        expected = signer.signature(signer.string_to_sign(req, canonical), req)
        if expected != parts["Signature"]:
            return "signature mismatch"
        return None


class BedrockHandler(_Handler):
    def do_POST(self):
        fake = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        err = fake.verify(self, body)
        _, _, model, action = self.path.split("/", 3)
        model = unquote(model)
        fake.requests.append((action, model, json.loads(body or b"{}")))
        if err:
            return self.send_json(403, {"message": err}, {"x-amzn-ErrorType": "InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/"})
        if fake.fail_next:
            code, status, msg = fake.fail_next
            fake.fail_next = None
            return self.send_json(status, {"message": msg}, {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"})
        text = f"bedrock {model} says hi"
        if action == "converse":
            return self.send_json(200, {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
                                        "usage": {"inputTokens": 7, "outputTokens": 5, "totalTokens": 15, "cacheReadInputTokens": 3, "cacheWriteInputTokens": 0},
                                        "metrics": {"latencyMs": 42}})
        if action == "converse-stream":
            self.start_chunked("application/vnd.amazon.eventstream")
            self.chunk(es_event("messageStart", {"role": "assistant", "p": "abc"}))
            for piece in ["bedrock ", "streams ", "hi"]:
                self.chunk(es_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}, "p": "xy"}))
            self.chunk(es_event("contentBlockStop", {"contentBlockIndex": 0}))
            self.chunk(es_event("messageStop", {"stopReason": "end_turn"}))
            self.chunk(es_event("metadata", {"usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}, "metrics": {"latencyMs": 9}}))
            return self.end_chunked()
        if action == "invoke":
            req = json.loads(body)
            if "inputText" in req:
                out = {"embedding": [0.25] * req.get("dimensions", 4), "inputTextTokenCount": 2}
                return self.send_json(200, out, {"X-Amzn-Bedrock-Input-Token-Count": "2", "X-Amzn-Bedrock-Output-Token-Count": "0"})
            out = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [{"type": "text", "text": text}],
                   "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 6, "output_tokens": 4}}
            return self.send_json(200, out, {"X-Amzn-Bedrock-Input-Token-Count": "6", "X-Amzn-Bedrock-Output-Token-Count": "4",
                                             "X-Amzn-Bedrock-Invocation-Latency": "12"})
        if action == "count-tokens":
            req = json.loads(body)["input"]
            if "converse" in req:
                return self.send_json(200, {"inputTokens": 11})
            import base64
            inner = json.loads(base64.b64decode(req["invokeModel"]["body"]))
            return self.send_json(200, {"inputTokens": 20 + len(inner.get("messages", []))})
        if action == "invoke-with-response-stream":
            self.start_chunked("application/vnd.amazon.eventstream")
            chunks = [{"type": "message_start", "message": {"usage": {"input_tokens": 6, "output_tokens": 1}}},
                      {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
                      {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
                      {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 6, "outputTokenCount": 2, "invocationLatency": 5, "firstByteLatency": 1}}]
            import base64
            for c in chunks:
                self.chunk(es_event("chunk", {"bytes": base64.b64encode(json.dumps(c).encode()).decode(), "p": "pad"}))
            return self.end_chunked()
        self.send_json(404, {"message": "unknown action"}, {"x-amzn-ErrorType": "UnknownOperationException"})


class FakeAnthropic(_Base):
    def __init__(self, api_key):
        self.api_key = api_key
        super().__init__(AnthropicHandler)


class AnthropicHandler(_Handler):
    def do_POST(self):
        fake = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        fake.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.headers.get("x-api-key") != fake.api_key or self.headers.get("anthropic-version") != "2023-06-01":
            return self.send_json(401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        if fake.fail_next:
            status, etype = fake.fail_next
            fake.fail_next = None
            return self.send_json(status, {"type": "error", "error": {"type": etype, "message": "try later"}})
        wants_tool = bool(body.get("tools")) and not any(
            isinstance(m["content"], list) and any(b.get("type") == "tool_result" for b in m["content"]) for m in body["messages"])
        usage = {"input_tokens": 8, "output_tokens": 5, "cache_read_input_tokens": 2, "cache_creation_input_tokens": 1}
        if not body.get("stream"):
            content = [{"type": "tool_use", "id": "toolu_1", "name": body["tools"][0]["name"], "input": {"city": "Oslo"}}] if wants_tool \
                else [{"type": "text", "text": "anthropic says hi"}]
            return self.send_json(200, {"id": "msg_a", "type": "message", "role": "assistant", "model": body["model"], "content": content,
                                        "stop_reason": "tool_use" if wants_tool else "end_turn", "stop_sequence": None, "usage": usage})
        self.start_chunked("text/event-stream")

        def ev(name, obj):
            self.chunk(f"event: {name}\ndata: {json.dumps(obj)}\n\n".encode())

        ev("message_start", {"type": "message_start", "message": {"id": "msg_a", "type": "message", "role": "assistant", "model": body["model"], "content": [],
                                                                "stop_reason": None, "usage": {"input_tokens": 8, "output_tokens": 1, "cache_read_input_tokens": 2}}})
        ev("ping", {"type": "ping"})
        if wants_tool:
            ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": body["tools"][0]["name"], "input": {}}})
            for part in ['{"city"', ': "Oslo"}']:
                ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": part}})
        else:
            ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            for part in ["anthropic ", "streams"]:
                ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": part}})
        ev("content_block_stop", {"type": "content_block_stop", "index": 0})
        ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use" if wants_tool else "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 5}})
        ev("message_stop", {"type": "message_stop"})
        self.end_chunked()

"""A local fake of an OpenAI-compatible upstream that speaks the real wire format
(chat completions with and without SSE streaming, tool calls, usage; embeddings; models),
and remembers what it was sent. Tests only: a real provider cannot be reached here."""

import json
import threading
from http.server import BaseHTTPRequestHandler

from loopback_http import LoopbackHTTPServer


class FakeOpenAI:
    def __init__(self):
        self.requests = []  # (path, headers, body)
        self.fail_next = None  # (status, body)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}, {"id": "gpt-4o", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "no"}})

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n) or b"{}")
                outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if outer.fail_next:
                    status, err = outer.fail_next
                    outer.fail_next = None
                    return self._send(status, err)
                if self.path == "/v1/embeddings":
                    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                    dims = body.get("dimensions", 4)
                    return self._send(200, {"object": "list", "model": body["model"],
                                            "data": [{"object": "embedding", "index": i, "embedding": [0.5] * dims} for i, _ in enumerate(inputs)],
                                            "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)}})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "unknown path"}})
                wants_tool = bool(body.get("tools")) and not any(m.get("role") == "tool" for m in body["messages"])
                text = "upstream says hi"
                usage = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15,
                         "prompt_tokens_details": {"cached_tokens": 2}}
                if not body.get("stream"):
                    msg = {"role": "assistant", "content": None if wants_tool else text}
                    if wants_tool:
                        msg["tool_calls"] = [{"id": "call_1", "type": "function", "function": {"name": body["tools"][0]["function"]["name"], "arguments": "{\"city\": \"Oslo\"}"}}]
                    return self._send(200, {"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": body["model"],
                                            "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if wants_tool else "stop"}],
                                            "usage": usage})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def chunk(obj):
                    data = b"data: " + json.dumps(obj).encode() + b"\n\n"
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()

                base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
                chunk({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
                if wants_tool:
                    name = body["tools"][0]["function"]["name"]
                    chunk({**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}]}, "finish_reason": None}]})
                    for part in ["{\"city\"", ": \"Oslo\"}"]:
                        chunk({**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}, "finish_reason": None}]})
                    finish = "tool_calls"
                else:
                    for part in ["upstream ", "says ", "hi"]:
                        chunk({**base, "choices": [{"index": 0, "delta": {"content": part}, "finish_reason": None}]})
                    finish = "stop"
                chunk({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
                chunk({**base, "choices": [], "usage": usage})
                data = b"data: [DONE]\n\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
                self.wfile.flush()

        self.httpd = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()

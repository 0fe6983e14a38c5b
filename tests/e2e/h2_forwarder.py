"""A test-only front that lets HTTP/1.1-only clients (boto3, the AWS CLI, requests,
langchain-aws, litellm) reach Logbook over HTTP/2 (issue #12, point 6).

Each HTTP/1.1 connection gets its own cleartext HTTP/2 connection to Logbook (prior
knowledge, as the JavaScript SDK's Node handler speaks it), and its requests are
forwarded with their headers unchanged: the client's `Host` becomes `:authority`, so a
SigV4 signature made for this front's address still verifies at Logbook, which checks
what it received. The response streams back as it arrives (event streams, server-sent
events), chunked when Logbook gave no length. A connection that opens with the HTTP/2
preface (an SDK already speaking HTTP/2) is tunnelled byte for byte, so one URL serves
both kinds of client.

One upstream connection per client connection, and not one shared: httpcore never resets
an HTTP/2 stream whose response it stops reading, so a client that leaves mid-stream
would go unnoticed. Closing the client's own upstream connection is what tells Logbook.
Logbook's handling of a single reset stream (RST_STREAM) is tested at the frame level in
test_http2.py.

Every forwarded response's HTTP version is counted; `stop()` fails if any was not HTTP/2,
so a run that quietly fell back to HTTP/1.1 cannot pass as an HTTP/2 run.
"""

import http.server
import os
import socket
import sys
import threading
import traceback

import httpx2 as httpx

from loopback_http import LoopbackHTTPServer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "expect"}


class _Server(LoopbackHTTPServer):
    """socketserver prints an escaped exception's traceback to stderr, where it is lost
    among the other tests' output; keep it (and in LOGBOOK_H2_FRONT_ERRORS if set), so a
    test that fails through the front says why."""

    def __init__(self, addr, handler, errors):
        self.errors = errors
        super().__init__(addr, handler)

    def handle_error(self, request, client_address):
        text = traceback.format_exc()
        self.errors.append(text)
        path = os.environ.get("LOGBOOK_H2_FRONT_ERRORS")
        if path:
            with open(path, "a") as f:
                f.write(text + "\n")
        sys.stderr.write("h2 front: a connection failed:\n" + text)


class H2Forwarder:
    def __init__(self, upstream_url):
        self.upstream = upstream_url.rstrip("/")
        host, port = self.upstream.split("://", 1)[1].split(":")
        self.upstream_addr = (host, int(port))
        self.versions = {}
        self.lock = threading.Lock()
        self.errors = []
        self.httpd = _Server(("127.0.0.1", 0), self._handler(), self.errors)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def count(self, version):
        with self.lock:
            self.versions[version] = self.versions.get(version, 0) + 1

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        others = {v: n for v, n in self.versions.items() if v not in ("HTTP/2", "tunnel")}
        assert not others, f"the HTTP/2 front forwarded over {others}, not HTTP/2"

    def _handler(self):
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle(self):
                if self._starts_with_preface():
                    front.count("tunnel")
                    self._tunnel()
                    return
                self.h2 = httpx.Client(http1=False, http2=True, timeout=httpx.Timeout(120, connect=10))
                try:
                    super().handle()
                finally:
                    self.h2.close()

            def _starts_with_preface(self):
                self.request.settimeout(30)
                try:
                    while True:
                        seen = self.request.recv(len(PREFACE), socket.MSG_PEEK)
                        if not seen or not PREFACE.startswith(seen):
                            return False
                        if len(seen) == len(PREFACE):
                            return True
                        # A partial preface: wait for more of it.
                        threading.Event().wait(0.005)
                except OSError:
                    return False
                finally:
                    self.request.settimeout(None)

            def _tunnel(self):
                try:
                    up = socket.create_connection(front.upstream_addr, timeout=10)
                except OSError:
                    return
                up.settimeout(None)

                def pump(src, dst):
                    try:
                        while True:
                            data = src.recv(65536)
                            if not data:
                                break
                            dst.sendall(data)
                    except OSError:
                        pass
                    finally:
                        for s in (src, dst):
                            try:
                                s.shutdown(socket.SHUT_RDWR)
                            except OSError:
                                pass

                t = threading.Thread(target=pump, args=(up, self.request), daemon=True)
                t.start()
                pump(self.request, up)
                t.join()
                up.close()

            def _body(self):
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _forward(self):
                body = self._body()
                headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
                if self.headers.get("Content-Length") is None and body:
                    headers.append(("Content-Length", str(len(body))))
                req = self.h2.build_request(self.command, front.upstream + self.path, headers=headers,
                                                 content=body)
                try:
                    resp = self.h2.send(req, stream=True)
                except httpx.HTTPError as e:
                    msg = f"h2 front: upstream failed: {e}".encode()
                    self.send_response(502)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                try:
                    front.count(resp.http_version)
                    self.send_response_only(resp.status_code)
                    length = None
                    for k, v in resp.headers.multi_items():
                        if k.lower() in HOP_BY_HOP:
                            continue
                        if k.lower() == "content-length":
                            length = v
                        self.send_header(k, v)
                    bodyless = self.command == "HEAD" or resp.status_code in (204, 304)
                    chunked = length is None and not bodyless
                    if chunked:
                        self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    if bodyless:
                        return
                    for part in resp.iter_raw():
                        if not part:
                            continue
                        if chunked:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                        else:
                            self.wfile.write(part)
                        self.wfile.flush()
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (OSError, httpx.HTTPError):
                    self.close_connection = True  # the client left, or Logbook reset the stream
                finally:
                    resp.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _forward

        return Handler

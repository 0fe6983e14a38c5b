"""Real object-store servers on loopback for the remote-destination tests: moto's server
(S3 and CloudWatch Logs), started and stopped by the test that needs it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import boto3
import requests

MOTO = os.path.join(os.path.dirname(sys.executable), "moto_server")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A server process the test started: paused, resumed and stopped by its PID."""

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def s3(self):
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)


class Moto(_Server):
    name = "moto"
    access_key, secret_key = "testing", "testing"
    sse = True  # answers with the ServerSideEncryption it was asked for

    def __init__(self, log_dir, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(str(log_dir), f"moto-{self.port}.log"), "ab")
        self.proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=self.log, env=dict(os.environ, **(env or {})))
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                requests.get(self.url + "/moto-api/", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start")


    def logs(self):
        return boto3.client("logs", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")



class S3rver(_Server):
    """s3rver (npm), a second S3 implementation that keeps objects in a folder and checks
    SigV4 signatures; installed by scripts/test.sh (S3RVER_BIN)."""
    name = "s3rver"
    access_key, secret_key = "S3RVER", "S3RVER"
    sse = False  # accepts the header, does not echo it

    def __init__(self, log_dir):
        binary = os.environ.get("S3RVER_BIN") or os.path.expanduser(
            "~/.cache/logbook/node-clients/node_modules/.bin/s3rver")
        if not os.path.exists(binary):
            raise RuntimeError("s3rver is not installed: run scripts/test.sh (it installs it with npm)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = os.path.join(str(log_dir), f"s3rver-{self.port}")
        os.makedirs(self.dir)
        self.log = open(os.path.join(str(log_dir), f"s3rver-{self.port}.log"), "ab")
        self.proc = subprocess.Popen([binary, "-d", self.dir, "-a", "127.0.0.1", "-p", str(self.port), "--silent"],
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("s3rver did not start")




S3_SERVERS = {"moto": Moto, "s3rver": S3rver}


def bucket_config(name, moto, remote=None, **extra):
    """A [[buckets]] entry for a bucket on `moto` (or any server in S3_SERVERS)."""
    lines = ["[[buckets]]", f'name = "{name}"', f'url = "s3://{remote or name}"',
             f'endpoint = "{moto.url}"', "path_style = true", 'region = "us-east-1"',
             f'access_key_id = "{moto.access_key}"', f'secret_access_key = "{moto.secret_key}"']
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def log_group_config(name, moto, secret="testing", **extra):
    """A [[log_groups]] entry for a log group in moto's CloudWatch Logs."""
    lines = ["[[log_groups]]", f'name = "{name}"', f'endpoint = "{moto.url}"', 'region = "us-east-1"',
             'access_key_id = "testing"', f'secret_access_key = "{secret}"']
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def log_events(logs, group, stream="aws/bedrock/modelinvocations"):
    """Every event of a stream, oldest first, through boto3's own paging."""
    out, token = [], None
    while True:
        kw = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kw["nextToken"] = token
        r = logs.get_log_events(**kw)
        out += r["events"]
        if r.get("nextForwardToken") in (None, token) or not r["events"]:
            return out
        token = r["nextForwardToken"]


async def _pipe(reader, writer, budget=None):
    """Copy `reader` to `writer` until either side ends (at most `budget` bytes when
    given), then close `writer`."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if budget is not None:
                if budget <= 0:
                    break
                data = data[:budget]
                budget -= len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


class _LoopFront:
    """A loopback TCP front on its own asyncio loop and thread: `_start(handle)` listens
    on `self.port`, `stop()` closes it and cancels its connections."""

    def _start(self, handle):
        import asyncio
        import threading
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def main():
            self.server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            ready.set()
            try:
                while True:
                    await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()), daemon=True)
        self.thread.start()
        ready.wait(10)

    def stop(self):
        def _close():
            self.server.close()
            for t in __import__("asyncio").all_tasks(self.loop):
                t.cancel()
        self.loop.call_soon_threadsafe(_close)
        self.thread.join(timeout=10)


class FaultyProxy(_LoopFront):
    """A TCP proxy on loopback that, per connection and at random (seeded), passes traffic,
    delays it, resets the connection at once, or cuts it after some bytes."""

    def __init__(self, target_port, seed=7, p_reset=0.1, p_cut=0.1, p_delay=0.2):
        import asyncio
        import random
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rng = random.Random(seed)
        self.target_port = target_port
        self.p = (p_reset, p_cut, p_delay)
        self.counts = {"pass": 0, "reset": 0, "cut": 0, "delay": 0}
        self.enabled = True

        async def handle(cr, cw):
            import socket as _s
            r = self.rng.random()
            p_reset, p_cut, p_delay = self.p
            if not self.enabled:
                r = 1.0
            if r < p_reset:
                self.counts["reset"] += 1
                sock = cw.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(_s.SOL_SOCKET, _s.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                cw.close()
                return
            try:
                ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                cw.close()
                return
            budget = None
            if r < p_reset + p_cut:
                self.counts["cut"] += 1
                budget = self.rng.randint(1, 2000)
            elif r < p_reset + p_cut + p_delay:
                self.counts["delay"] += 1
                await asyncio.sleep(self.rng.uniform(0.2, 1.5))
            else:
                self.counts["pass"] += 1
            await asyncio.gather(_pipe(cr, uw), _pipe(ur, cw, budget))

        self._handle = handle

        self._start(handle)

    def down(self):
        """Stop listening: connections are refused, as if the endpoint's process died."""
        import asyncio
        asyncio.run_coroutine_threadsafe(self._down(), self.loop).result(10)

    async def _down(self):
        self.server.close()
        await self.server.wait_closed()

    def up(self):
        """Listen again on the same port."""
        import asyncio
        asyncio.run_coroutine_threadsafe(self._up(), self.loop).result(10)

    async def _up(self):
        import asyncio
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)


class KmsGate(_LoopFront):
    """An HTTP front for an S3 server that plays a KMS key the credentials cannot use
    (moto stores SSE-KMS objects without asking KMS). While `refuse` is set, a request
    carrying `x-amz-server-side-encryption-aws-kms-key-id: <key>` gets S3's answer for
    that case: 400 with `KMS.NotFoundException` (what S3 says for a key it cannot find or
    use). Everything else passes to the server untouched, one request per connection
    (`Connection: close` is set on the way), so a kept-alive connection cannot slip a
    request past the gate."""

    def __init__(self, target_port, key):
        import asyncio
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = key.lower().encode()
        self.refuse = True
        self.refused = 0
        self.passed = 0

        async def handle(cr, cw):
            try:
                head = await cr.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                cw.close()
                return
            lines = head.split(b"\r\n")
            wanted = any(l.lower().startswith(b"x-amz-server-side-encryption-aws-kms-key-id:")
                         and l.split(b":", 1)[1].strip().lower() == self.key for l in lines)
            if wanted and self.refuse:
                self.refused += 1
                body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>KMS.NotFoundException</Code>'
                        b"<Message>Invalid keyId " + self.key + b"</Message><RequestId>KMSGATE</RequestId></Error>")
                cw.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
                try:
                    await cw.drain()
                finally:
                    cw.close()
                return
            self.passed += 1
            kept = [l for l in lines[:-2] if not l.lower().startswith(b"connection:")]
            head = b"\r\n".join(kept) + b"\r\nConnection: close\r\n\r\n"
            try:
                ur, uw = await asyncio.open_connection("127.0.0.1", target_port)
            except OSError:
                cw.close()
                return
            uw.write(head)
            await asyncio.gather(_pipe(cr, uw), _pipe(ur, cw))

        self._start(handle)


class FakeImds:
    """The EC2 instance metadata service (IMDSv2) on loopback, serving one role's
    temporary credentials: `PUT /latest/api/token` first, then the role name and its
    credentials with that token; a request without the token gets 401, as IMDSv2 answers.
    Counts what it was asked."""

    def __init__(self, role, creds):
        import http.server
        import threading
        from datetime import datetime, timedelta, timezone

        from loopback_http import LoopbackHTTPServer
        imds = self
        self.hits = {"token": 0, "role": 0, "credentials": 0, "refused": 0}
        token = "imds-token-" + str(free_port())
        expires = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = json.dumps({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": creds["AccessKeyId"],
                           "SecretAccessKey": creds["SecretAccessKey"], "Token": creds["SessionToken"],
                           "Expiration": expires, "LastUpdated": expires}).encode()

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, code, data=b""):
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):
                if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    imds.hits["token"] += 1
                    return self.reply(200, token.encode())
                self.reply(400)

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") != token:
                    imds.hits["refused"] += 1
                    return self.reply(401)
                base = "/latest/meta-data/iam/security-credentials/"
                if self.path == base:
                    imds.hits["role"] += 1
                    return self.reply(200, role.encode())
                if self.path == base + role:
                    imds.hits["credentials"] += 1
                    return self.reply(200, body)
                self.reply(404)

        self.httpd = LoopbackHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

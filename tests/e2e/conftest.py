"""Shared fixtures: start the real `logbook` binary on a free loopback port and stop it."""

import glob
import gzip
import json
import os
import signal
import subprocess
import threading
import time

import boto3
import pytest
import requests
from botocore.config import Config as BotoConfig

BIN = os.environ.get("LOGBOOK_BIN", "target/debug/logbook")
# LOGBOOK_E2E_HTTP=2: every call reaches Logbook over HTTP/2 with prior knowledge.
# The SDKs whose transport can (OpenAI, Anthropic) speak it themselves; every other client
# (boto3, the AWS CLI, requests, ...) goes through h2_forwarder.H2Forwarder, which
# `Server.url` then names. scripts/test.sh runs the protocol tests once more so.
HTTP2 = os.environ.get("LOGBOOK_E2E_HTTP") == "2"


def http1_only(reason):
    """Skip a test in the HTTP/2 run, saying why (the HTTP/2 side is tested elsewhere)."""
    return pytest.mark.skipif(HTTP2, reason=reason)


def sdk_http_client():
    """The SDKs' own transport (httpx2), over HTTP/2 when LOGBOOK_E2E_HTTP=2; else None
    (the SDK's default, HTTP/1.1)."""
    if not HTTP2:
        return None
    import httpx2
    return httpx2.Client(http1=False, http2=True, timeout=60)


class Server:
    def __init__(self, data_dir, config_text=None, extra_args=(), env=None):
        self.data_dir = str(data_dir)
        self.config_path = None
        if config_text is not None:
            self.config_path = os.path.join(self.data_dir, "logbook.toml")
            os.makedirs(self.data_dir, exist_ok=True)
            with open(self.config_path, "w") as f:
                f.write(config_text)
        self.extra_args = list(extra_args)
        self.env = env
        self.proc = None
        self.url = None
        self.stderr_path = os.path.join(self.data_dir, "server.stderr")

    def start(self):
        args = [BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir] + self.extra_args
        if "--archive-max-age-ms" not in self.extra_args:
            args += ["--archive-max-age-ms", "200"]
        if self.config_path:
            args += ["--config", self.config_path]
        env = dict(os.environ)
        for k, v in (self.env or {}).items():
            if v is None:
                env.pop(k, None)  # None: not set at all
            else:
                env[k] = v
        os.makedirs(self.data_dir, exist_ok=True)
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._err, env=env)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            self.proc.kill()
            self.proc.wait()  # release its files (and any mount they live on)
            self._err.close()
            raise RuntimeError(f"server did not start: {line!r}; stderr: {open(self.stderr_path).read()}")
        self.direct_url = line.split("listening on ", 1)[1].strip()
        self.url = self.direct_url
        self.front = None
        if HTTP2:
            from h2_forwarder import H2Forwarder
            self.front = H2Forwarder(self.direct_url)
            self.url = self.front.url
        # Keep draining stdout so the server never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.admin = None
        path = os.path.join(self.data_dir, "admin-credentials.json")
        if os.path.exists(path):
            with open(path) as f:
                self.admin = json.load(f)
        return self

    def _stop_front(self):
        front, self.front = getattr(self, "front", None), None
        if front:
            front.stop()

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_err", None):
            self._err.close()
        self._stop_front()

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._err.close()
        self._stop_front()

    def health(self):
        return requests.get(self.url + "/healthz", timeout=5).json()

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def auth_headers(self, extra=None):
        """Bearer auth with the generated admin API key, for raw HTTP calls."""
        h = {"Authorization": f"Bearer {self.admin['apiKey']}"} if self.admin else {}
        h.update(extra or {})
        return h

    def bedrock(self, region="us-east-1", key=None, secret=None, retries=0):
        if key is None and self.admin:
            key, secret = self.admin["accessKeyId"], self.admin["secretAccessKey"]
        return boto3.client(
            "bedrock-runtime", endpoint_url=self.url, region_name=region,
            aws_access_key_id=key or "AKIDTESTCALLER", aws_secret_access_key=secret or "test-secret",
            config=BotoConfig(retries={"total_max_attempts": retries + 1, "mode": "standard"}, read_timeout=60),
        )

    def openai(self, key=None):
        import openai
        if key is None:
            key = self.admin["apiKey"] if self.admin else "sk-test-key"
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, http_client=sdk_http_client())


def archive_files(data_dir, bucket_dir="archive"):
    root = os.path.join(data_dir, bucket_dir)
    return sorted(glob.glob(os.path.join(root, "**", "*.json.gz"), recursive=True))


def read_records(data_dir, bucket_dir="archive"):
    out = []
    root = os.path.join(data_dir, bucket_dir)
    for p in archive_files(data_dir, bucket_dir):
        rel = "/" + os.path.relpath(p, root)
        if "/data/" in rel or "/BedrockModelInvocationLogs/" not in rel:
            continue  # an offloaded body or another log (CloudTrail), not a batch of records
        with gzip.open(p, "rt") as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line))
    return out


def wait_records(server, n, timeout=20, bucket_dir="archive"):
    """Wait until the archive holds at least n records; return them."""
    deadline = time.time() + timeout
    recs = []
    while time.time() < deadline:
        recs = read_records(server.data_dir, bucket_dir)
        if len(recs) >= n:
            return recs
        time.sleep(0.1)
    raise AssertionError(f"archive has {len(recs)} records, expected {n}")


def wait_record(server, request_id, timeout=20, bucket_dir="archive"):
    """Wait until the record of `request_id` is in the archive; return it (exactly one)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [r for r in read_records(server.data_dir, bucket_dir) if r["requestId"] == request_id]
        if found:
            assert len(found) == 1, f"{len(found)} records for {request_id}"
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no record for {request_id}")


def record_for(records, request_id):
    found = [r for r in records if r["requestId"] == request_id]
    assert len(found) == 1, f"{len(found)} records for {request_id}"
    return found[0]


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data").start()
    yield s
    s.stop()


@pytest.fixture
def make_server(tmp_path):
    started = []

    def make(config_text=None, extra_args=(), name="data", env=None):
        s = Server(tmp_path / name, config_text, extra_args, env).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def pytest_terminal_summary(terminalreporter):
    """Name the folder the console tests saved their screenshots in."""
    shots = os.environ.get("LOGBOOK_SCREENSHOTS") or os.path.join("/tmp", "logbook-console-screenshots")
    if os.path.isdir(shots) and os.listdir(shots):
        terminalreporter.write_line(f"console screenshots: {shots}")

"""/metrics scrape time with 200 models (issue #10: <= 10 ms), against the Prometheus
project's own Python client rendering the same series in the same run.

    bench/metrics.sh      (builds logbook in release, then runs this)

Starts a release Logbook on loopback, makes one call to each of 200 model ids (so every
per-model family has 200 series: counters, two histograms), then times GET /metrics."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import boto3
import requests
from botocore.config import Config as BotoConfig

BIN = os.environ["LOGBOOK_BIN"]
MODELS = int(os.environ.get("MODELS", "200"))
SCRAPES = int(os.environ.get("SCRAPES", "200"))

data = tempfile.mkdtemp(prefix="logbook-metrics-bench-")
srv = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", data], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
try:
    url = srv.stdout.readline().decode().split("listening on ", 1)[1].strip()
    creds = json.load(open(os.path.join(data, "admin-credentials.json")))
    c = boto3.client("bedrock-runtime", endpoint_url=url, region_name="us-east-1",
                     aws_access_key_id=creds["accessKeyId"], aws_secret_access_key=creds["secretAccessKey"],
                     config=BotoConfig(retries={"total_max_attempts": 1}))
    for i in range(MODELS):
        c.converse(modelId=f"us.amazon.nova-lite-v{i}:0", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    sess = requests.Session()
    h = {"Authorization": f"Bearer {creds['apiKey']}"}
    body = sess.get(url + "/metrics", headers=h).text
    series = sum(1 for l in body.splitlines() if l and not l.startswith("#"))
    ts = []
    for _ in range(SCRAPES):
        t = time.perf_counter()
        r = sess.get(url + "/metrics", headers=h)
        r.raise_for_status()
        ts.append((time.perf_counter() - t) * 1000)
finally:
    srv.terminate()
    srv.wait()

# The peer: prometheus_client (Python) rendering the same families and series.
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
reg = CollectorRegistry()
names = ["invocations", "invocation_client_errors", "invocation_server_errors", "invocation_throttles", "input_tokens",
         "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens", "estimated_tpm_quota_usage"]
counters = [Counter(f"bedrock_{n}", n, ["model_id"], registry=reg) for n in names]
hists = [Histogram("bedrock_invocation_latency_seconds", "l", ["model_id"], registry=reg,
                   buckets=[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 160.0]),
         Histogram("bedrock_time_to_first_token_seconds", "t", ["model_id"], registry=reg,
                   buckets=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])]
for i in range(MODELS):
    m = f"us.amazon.nova-lite-v{i}:0"
    for k in counters:
        k.labels(m).inc()
    for hh in hists:
        hh.labels(m).observe(0.2)
peer = []
for _ in range(SCRAPES):
    t = time.perf_counter()
    generate_latest(reg)
    peer.append((time.perf_counter() - t) * 1000)

q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]
print(json.dumps({"what": "metrics_scrape", "models": MODELS, "series_lines": series, "bytes": len(body),
                  "logbook_http_ms_median": round(statistics.median(ts), 2), "logbook_http_ms_p99": round(q(ts, 0.99), 2),
                  "prometheus_client_python_render_ms_median": round(statistics.median(peer), 2),
                  "prometheus_client_python_render_ms_p99": round(q(peer, 0.99), 2)}))

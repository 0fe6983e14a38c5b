"""The README, followed as written: the two-minute tour's code blocks run in order against
a running server (as a newcomer would, in a fresh folder), and the example configuration
file validates and starts."""

import os
import re
import signal
import subprocess
import sys
import time

import boto3
from botocore.config import Config as BotoConfig

from conftest import BIN, Server

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")
STOP = "<!-- tour: stop the server -->"


def section(start, end):
    text = open(README).read()
    return text[text.index(start):text.index(end)]


def blocks(text):
    """(language, code, stop the server first) for each fenced block, in order."""
    out, stop = [], False
    for m in re.finditer(r"(<!-- tour: stop the server -->)|```(\w+)\n(.*?)```", text, re.S):
        if m.group(1):
            stop = True
            continue
        out.append((m.group(2), m.group(3), stop))
        stop = False
    return out


def test_the_tour_runs_as_written(tmp_path):
    tour = blocks(section("## A two-minute tour", "## What gets recorded"))
    assert len(tour) >= 10 and [b for b in tour if b[2]], "the tour lost its blocks or its stop marker"
    work = tmp_path / "fresh"
    work.mkdir()
    server = Server(work / "logbook-data", extra_args=["--archive-max-age-ms", "60000"]).start()
    addr = server.url.replace("http://", "")
    env = dict(os.environ)
    # The venv's python3 (boto3, awscli, duckdb installed) comes first, as after `pip install`.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    env_file = tmp_path / "env"
    outputs = []
    try:
        for lang, code, stop in tour:
            if stop:
                server.stop(signal.SIGINT)  # Ctrl-C
                assert server.proc.returncode == 0
            code = (code.replace("cargo run --release --", BIN)
                    .replace("127.0.0.1:4700", addr).replace("localhost:4700", addr))
            if lang == "sh":
                script = code + f"\nenv -0 > {env_file}\n"
                p = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env, capture_output=True,
                                   text=True, timeout=300)
                assert p.returncode == 0, (code, p.stdout[-2000:], p.stderr[-2000:])
                env = dict(kv.split("=", 1) for kv in open(env_file).read().split("\0") if "=" in kv)
            elif lang == "python":
                p = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True,
                                   text=True, timeout=300)
                assert p.returncode == 0, (code, p.stdout[-2000:], p.stderr[-2000:])
            elif lang == "yaml":
                continue  # another program's configuration (Prometheus), shown, not run
            else:
                raise AssertionError(f"the tour has a {lang} block the test does not know how to run")
            outputs.append((code, p.stdout))
    finally:
        server.stop()
    out = {code.strip().splitlines()[0]: stdout for code, stdout in outputs}
    text = "\n".join(stdout for _, stdout in outputs)
    assert "[mock]" in text  # the boto3 call printed its answer
    logs_out = next(s for c, s in outputs if "start_query" in c)
    assert logs_out.startswith("Complete") and "calls" in logs_out and "[]" not in logs_out, logs_out
    assert '"rows"' in next(s for c, s in outputs if "/logbook/query" in c)
    # The chargeback commands printed a table, CSV, and the HTTP report a JSON total.
    charge = next(s for c, s in outputs if "report chargeback --by team" in c)
    assert "Chargeback by team" in charge and "total" in charge and "cost_usd" in charge, charge
    # The overview's JSON, from the same block: exact totals, approximate latency.
    assert '"latencyApproximate":true' in charge and '"top":{' in charge, charge
    assert (work / "focus.csv").read_text().startswith("AvailabilityZone,BilledCost,")
    # The archive holds the tour's calls, read by DuckDB and by `logbook query` over `archive`.
    archive_out = next(s for c, s in outputs if "duckdb.sql" in c)
    assert "anthropic.claude-3-haiku-20240307-v1:0" in archive_out and "amazon.nova-lite-v1:0" in archive_out
    assert any(k.startswith("find logbook-data/archive") for k in out)


def test_the_example_configuration_validates_and_starts(tmp_path):
    toml = blocks(section("## Configuration (optional)", "Permissions:"))
    (lang, text, _), = [b for b in toml if b[0] == "toml"]
    path = tmp_path / "logbook.toml"
    path.write_text(text)
    env = dict(os.environ, ALICE_SECRET="alice-secret", APP_KEY="app-key")
    # The example names an AWS bucket, and there is no AWS here: the file alone.
    p = subprocess.run([BIN, "validate", "--offline", str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr
    # Online, the unreachable bucket is named.
    p = subprocess.run([BIN, "validate", str(path)], env=dict(env, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y"),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and 'bucket "corp-bedrock-logs"' in p.stderr, p.stderr
    # Without the variables it names, it is refused, by validate as by serve.
    bare = {k: v for k, v in os.environ.items() if k not in ("ALICE_SECRET", "APP_KEY")}
    p = subprocess.run([BIN, "validate", "--offline", str(path)], env=bare, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "ALICE_SECRET" in p.stderr
    s = Server(tmp_path / "data", text, env={"ALICE_SECRET": "alice-secret", "APP_KEY": "app-key"}).start()
    try:
        alice = dict(endpoint_url=s.url, region_name="us-east-1", aws_access_key_id="AKIAALICE",
                     aws_secret_access_key="alice-secret", config=BotoConfig(retries={"total_max_attempts": 1}))
        rt = boto3.client("bedrock-runtime", **alice)
        rid = rt.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                          messages=[{"role": "user", "content": [{"text": "hi"}]}])["ResponseMetadata"]["RequestId"]
        logs = boto3.client("logs", **alice)
        q = logs.start_query(logGroupName="/aws/bedrock/modelinvocations", startTime=0, endTime=2**31,
                             queryString=f"filter requestId = '{rid}' | fields requestMetadata.team")
        deadline = time.time() + 30
        while (r := logs.get_query_results(queryId=q["queryId"]))["status"] in ("Scheduled", "Running"):
            assert time.time() < deadline
            time.sleep(0.05)
        assert r["status"] == "Complete" and len(r["results"]) == 1, r
    finally:
        s.stop()
    # config diff: the same file is no drift; a missing file is trouble (2), not drift (1).
    diff = [BIN, "config", "diff", "--data-dir", str(tmp_path / "data"), "--config"]
    p = subprocess.run(diff + [str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "no drift" in p.stdout, (p.stdout, p.stderr)
    p = subprocess.run(diff + [str(tmp_path / "missing.toml")], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "missing.toml" in p.stderr

"""Redaction per destination (issue #11 point 6): the archive keeps full content while the
log groups (what queries and analysts read) get masked text; counts per detector are kept;
bad profiles are refused with a precise error."""

import json
import os
import subprocess
import time

import boto3
from botocore.config import Config as BotoConfig

from conftest import BIN, Server, wait_records

CONFIG = """
[redaction.pii]
detectors = ["email", "card", "aws_access_key"]
custom = [{ name = "EMPLOYEE", pattern = "E-[0-9]{6}" }]

[store]
redact = "pii"
"""

SECRET = "mail bob@example.com, card 4111 1111 1111 1111, badge E-123456, key AKIAIOSFODNN7EXAMPLE"


def test_log_groups_get_masked_text_while_the_archive_keeps_it(tmp_path):
    s = Server(tmp_path / "data", CONFIG).start()
    try:
        rid = s.bedrock().converse(modelId="m", messages=[{"role": "user", "content": [{"text": SECRET}]}])[
            "ResponseMetadata"]["RequestId"]
        # The archive (no profile): the prompt as sent.
        rec = next(r for r in wait_records(s, 1) if r["requestId"] == rid)
        assert rec["input"]["inputBodyJson"]["messages"][0]["content"][0]["text"] == SECRET
        # The log group: masked, identity and metadata kept.
        logs = boto3.client("logs", endpoint_url=s.url, region_name="us-east-1",
                            aws_access_key_id=s.admin["accessKeyId"], aws_secret_access_key=s.admin["secretAccessKey"],
                            config=BotoConfig(retries={"total_max_attempts": 1}))
        deadline = time.time() + 20
        while not (ev := logs.filter_log_events(logGroupName="/aws/bedrock/modelinvocations")["events"]):
            assert time.time() < deadline
            time.sleep(0.2)
        msg = json.loads(ev[0]["message"])
        text = msg["input"]["inputBodyJson"]["messages"][0]["content"][0]["text"]
        assert text == "mail [EMAIL], card [CARD], badge [EMPLOYEE], key [AWS_ACCESS_KEY]", text
        assert msg["requestId"] == rid and msg["identity"]["arn"] == rec["identity"]["arn"]
        for needle in ("bob@example.com", "4111 1111", "E-123456", "AKIAIOSFODNN7EXAMPLE"):
            assert needle not in ev[0]["message"]
        counts = s.health()["redactions"]["log-groups"]
        assert counts["email"] >= 1 and counts["card"] >= 1 and counts["EMPLOYEE"] >= 1 and counts["aws_access_key"] >= 1, counts
        # The same counts in /metrics, as Prometheus reads them.
        import requests
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
        text = requests.get(s.url + "/metrics", headers=s.auth_headers(), timeout=10).text
        fam = {f.name: f for f in text_string_to_metric_families(text)}["logbook_redactions"]
        got = {(x.labels["destination"], x.labels["detector"]): x.value for x in fam.samples if x.name.endswith("_total")}
        assert got[("log-groups", "email")] == counts["email"] and got[("log-groups", "EMPLOYEE")] == counts["EMPLOYEE"], got
    finally:
        s.stop()


def test_bad_profiles_are_refused_precisely(tmp_path):
    cases = [
        ('[redaction.p]\ndetectors = ["emails"]\n', 'unknown detector "emails"'),
        ('[redaction.p]\ncustom = [{ name = "X", pattern = "(" }]\n', 'custom pattern "X"'),
        ('[redaction.p]\ncustom = [{ name = "has space", pattern = "a" }]\n', 'custom pattern name "has space"'),
        ('[store]\nredact = "nope"\n', 'redaction profile "nope" is not declared'),
        ('[redaction.p]\ndetectors = ["email"]\nbogus = 1\n', "unknown field"),
    ]
    for i, (text, want) in enumerate(cases):
        path = tmp_path / f"c{i}.toml"
        path.write_text(text)
        r = subprocess.run([BIN, "validate", "--offline", str(path)], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and want in r.stderr + r.stdout, (text, r.stderr, r.stdout)
    # The server refuses to start with one, naming it.
    try:
        Server(tmp_path / "data", cases[0][0]).start()
        raise AssertionError("started with a bad redaction profile")
    except RuntimeError as e:
        assert "unknown detector" in str(e)


def test_an_archive_with_a_profile_is_masked_and_still_verifies(tmp_path):
    s = Server(tmp_path / "data", CONFIG.replace("[store]\nredact", "[archive]\nredact")).start()
    try:
        rid = s.bedrock().converse(modelId="m", messages=[{"role": "user", "content": [{"text": SECRET}]}])[
            "ResponseMetadata"]["RequestId"]
        rec = next(r for r in wait_records(s, 1) if r["requestId"] == rid)
        assert rec["input"]["inputBodyJson"]["messages"][0]["content"][0]["text"].startswith("mail [EMAIL], card [CARD]")
        assert s.health()["redactions"]["archive-logbook-archive"]["email"] >= 1
    finally:
        s.stop()
    # The Merkle log holds the lines as delivered (masked): the bucket verifies.
    v = subprocess.run([BIN, "verify", "--data-dir", s.data_dir, "--config", s.config_path],
                       capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr

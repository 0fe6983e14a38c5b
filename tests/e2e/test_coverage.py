"""`logbook coverage` (issue #13, point 6): for every account/region a data folder knows
of, logging on, destinations declared and delivering (asked of the running server), no
drift from the file, and the alarms that catch failing calls; table or JSON; exit 1 on
any gap, 2 on trouble. Each gap is made real here, then closed."""

import json
import subprocess

import boto3

from conftest import BIN, Server

ALARMS = """
[[alarms]]
name = "client-errors"
metric = "InvocationClientErrors"
statistic = "Sum"
period = 60
evaluation_periods = 1
threshold = 10
comparison = "GreaterThanThreshold"

[[alarms]]
name = "throttles"
metric = "InvocationThrottles"
statistic = "Sum"
period = 60
evaluation_periods = 1
threshold = 10
comparison = "GreaterThanThreshold"
"""

DECLARED = """
[logging_config."us-west-2"]
s3Config = { bucketName = "logbook-archive", keyPrefix = "west/" }
"""


def coverage(s, *extra, url=None):
    p = subprocess.run([BIN, "coverage", "--data-dir", s.data_dir, "--config", s.config_path,
                        "--url", url or s.url, "--format", "json", *extra],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else None), p.stderr


def region(c, name):
    return next(r for r in c["regions"] if r["region"] == name)


def test_coverage_finds_each_gap_and_passes_when_there_is_none(tmp_path):
    s = Server(tmp_path / "data", ALARMS + DECLARED).start()
    try:
        code, c, err = coverage(s)
        assert code == 0, (c, err)
        assert c["gaps"] == [] and c["server"] == "ok"
        east, west = region(c, "us-east-1"), region(c, "us-west-2")
        assert east["logging"] and not east["drift"]
        assert {(d["kind"], d["name"], d["ok"]) for d in east["destinations"]} == {
            ("s3", "logbook-archive", True), ("log-group", "/aws/bedrock/modelinvocations", True)}
        assert [(d["kind"], d["ok"]) for d in west["destinations"]] == [("s3", True)]
        assert [a["metric"] for a in c["alarms"]] == ["InvocationClientErrors", "InvocationThrottles"]
        table = subprocess.run([BIN, "coverage", "--data-dir", s.data_dir, "--config", s.config_path, "--url", s.url],
                               capture_output=True, text=True, timeout=60)
        assert table.returncode == 0 and "no gap" in table.stdout, table.stdout

        # Drift: an API change where the file declares otherwise.
        a = s.admin
        west_ctl = boto3.client("bedrock", endpoint_url=s.url, region_name="us-west-2",
                                aws_access_key_id=a["accessKeyId"], aws_secret_access_key=a["secretAccessKey"])
        west_ctl.put_model_invocation_logging_configuration(loggingConfig={
            "s3Config": {"bucketName": "logbook-archive", "keyPrefix": "elsewhere/"}})
        # Logging off: a region where calls are no longer recorded.
        east_ctl = boto3.client("bedrock", endpoint_url=s.url, region_name="us-east-1",
                                aws_access_key_id=a["accessKeyId"], aws_secret_access_key=a["secretAccessKey"])
        east_ctl.delete_model_invocation_logging_configuration()
        code, c, _ = coverage(s, "--require-alarm", "InvocationServerErrors")
        assert code == 1
        gaps = "\n".join(c["gaps"])
        assert region(c, "us-west-2")["drift"] and "us-west-2: the configuration in force differs" in gaps
        assert not region(c, "us-east-1")["logging"] and "us-east-1: logging is off" in gaps
        assert "no alarm on InvocationServerErrors" in gaps, gaps
        assert len(c["gaps"]) == 3, gaps
    finally:
        s.stop()
    # The server is gone: delivery cannot be vouched for.
    code, c, _ = coverage(s)
    assert code == 1 and c["server"] == "unreachable"
    assert any(g.startswith("delivery not checked") for g in c["gaps"]), c["gaps"]


def test_no_alarms_and_bad_input(tmp_path):
    s = Server(tmp_path / "data", "").start()
    try:
        code, c, _ = coverage(s)
        assert code == 1
        assert sorted(c["gaps"]) == ["no alarm on InvocationClientErrors", "no alarm on InvocationThrottles"]
    finally:
        s.stop()
    # A configuration that does not load is trouble (2), not a gap.
    bad = tmp_path / "bad.toml"
    bad.write_text("[nope]\n")
    p = subprocess.run([BIN, "coverage", "--data-dir", s.data_dir, "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "nope" in p.stderr, p.stderr

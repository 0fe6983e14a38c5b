"""CloudWatch Logs as a destination: records delivered to a real CloudWatch Logs service
(moto's, on loopback) are read back with boto3 and compared with what the clients were
served; large bodies go to the large-data bucket; a missing log group is reported without
holding back the other destinations."""

import gzip
import json
import time

import pytest

from remote import Moto, bucket_config, log_events, log_group_config

GROUP = "/aws/bedrock/modelinvocations"


@pytest.fixture
def moto(tmp_path):
    m = Moto(tmp_path)
    yield m
    m.stop()


def cw_logging(group, large_bucket=None, s3_bucket=None):
    large = f', largeDataDeliveryS3Config = {{ bucketName = "{large_bucket}", keyPrefix = "large/" }}' if large_bucket else ""
    s3 = f's3Config = {{ bucketName = "{s3_bucket}" }}\n' if s3_bucket else ""
    return ("[logging_config.default]\n" + s3 +
            f'cloudWatchConfig = {{ logGroupName = "{group}", roleArn = "arn:aws:iam::123456789012:role/bedrock-logs"{large} }}\n')


def wait_events(logs, group, n, timeout=30):
    deadline = time.time() + timeout
    got = []
    while time.time() < deadline:
        try:
            got = log_events(logs, group)
        except logs.exceptions.ResourceNotFoundException:
            got = []
        if len(got) >= n:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{group} holds {len(got)} events, expected {n}")


def wait_health(server, pred, timeout=30):
    deadline = time.time() + timeout
    h = None
    while time.time() < deadline:
        h = server.health()
        if pred(h):
            return h
        time.sleep(0.2)
    raise AssertionError(json.dumps(h, indent=1))


def test_records_land_in_cloudwatch_logs_exactly_as_served(make_server, moto):
    logs, s3 = moto.logs(), moto.s3()
    logs.create_log_group(logGroupName=GROUP)
    s3.create_bucket(Bucket="large-data")
    config = (bucket_config("large-data", moto) + log_group_config(GROUP, moto)
              + cw_logging(GROUP, large_bucket="large-data") + "[archive]\nmax_object_age_ms = 200\n")
    s = make_server(config)
    c = s.bedrock()
    served = {}
    for i in range(15):
        r = c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"hello {i}"}]}])
        served[r["ResponseMetadata"]["RequestId"]] = r["output"]["message"]["content"][0]["text"]
    big = "x" * 150_000
    r = c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": big}]}])
    big_id = r["ResponseMetadata"]["RequestId"]
    served[big_id] = r["output"]["message"]["content"][0]["text"]

    events = wait_events(logs, GROUP, 16)
    recs = {}
    for e in events:
        rec = json.loads(e["message"])
        assert rec["requestId"] not in recs, "each call once"
        recs[rec["requestId"]] = (e, rec)
    assert set(recs) == set(served) and len(events) == 16
    for rid, text in served.items():
        e, rec = recs[rid]
        assert rec["schemaType"] == "ModelInvocationLog"
        assert rec["output"]["outputBodyJson"]["output"]["message"]["content"][0]["text"] == text
        # The event's time is the record's.
        assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e["timestamp"] / 1000)) == rec["timestamp"]
    # The one stream Bedrock writes to.
    streams = [st["logStreamName"] for st in logs.describe_log_streams(logGroupName=GROUP)["logStreams"]]
    assert streams == ["aws/bedrock/modelinvocations"]

    # The large body went to the large-data bucket, and the event points at it.
    _, rec = recs[big_id]
    assert "inputBodyJson" not in rec["input"]
    path = rec["input"]["inputBodyS3Path"]
    assert path.startswith("s3://large-data/large/AWSLogs/"), path
    key = path[len("s3://large-data/"):]
    body = json.loads(gzip.decompress(s3.get_object(Bucket="large-data", Key=key)["Body"].read()))
    assert body["messages"][0]["content"][0]["text"] == big

    h = wait_health(s, lambda h: h["destinations"][f"cloudwatch-{GROUP}"]["records"] == 16)
    d = h["destinations"][f"cloudwatch-{GROUP}"]
    assert d["kind"] == "cloudwatch" and d["failures"] == 0 and d["backlog"]["entries"] == 0
    assert d["metrics"]["ModelInvocationLogsCloudWatchDeliverySuccess"] == 16
    assert d["metrics"]["ModelInvocationLargeDataS3DeliverySuccess"] == 1
    assert h["status"] == "ok"


def test_a_missing_log_group_is_reported_and_holds_back_nothing_else(make_server, moto):
    logs = moto.logs()
    secret = "Sec-9f2c41d7e0b4-never-printed"
    config = (log_group_config(GROUP, moto, secret=secret) + cw_logging(GROUP, s3_bucket="logbook-archive")
              + "[archive]\nmax_object_age_ms = 200\npermanent_retry_ms = 300\n")
    s = make_server(config)
    c = s.bedrock()
    ids = [c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"q{i}"}]}])
           ["ResponseMetadata"]["RequestId"] for i in range(5)]
    name = f"cloudwatch-{GROUP}"
    h = wait_health(s, lambda h: h["destinations"][name]["consecutiveFailures"] >= 3
                    and h["destinations"]["archive-logbook-archive"]["records"] == 5)
    d = h["destinations"][name]
    assert d["permanentFailure"] is True and d["stalled"] is True
    assert "ResourceNotFoundException" in d["lastError"], d["lastError"]
    assert d["backlog"]["entries"] >= 5 and d["backlog"]["oldestAgeSeconds"] is not None
    assert h["status"] == "degraded" and name in h["stalledDestinations"]
    # The archive delivered everything meanwhile.
    assert h["destinations"]["archive-logbook-archive"]["failures"] == 0
    assert secret not in json.dumps(h), "no credential in health"
    # `logbook status` says the same to a person, and fails while a destination is stalled.
    import subprocess
    from conftest import BIN
    p = subprocess.run([BIN, "status", "--url", s.url], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    line = next(l for l in p.stdout.splitlines() if l.startswith(name))
    assert line.split()[1] == "cloudwatch" and line.endswith("stalled (permanent)"), line
    assert "last error: CloudWatch Logs" in p.stdout and "ResourceNotFoundException" in p.stdout, p.stdout
    assert "ModelInvocationLogsCloudWatchDeliveryFailure" in p.stdout, p.stdout

    # The group appears: the backlog drains, every record once, the alarm clears.
    logs.create_log_group(logGroupName=GROUP)
    events = wait_events(logs, GROUP, 5)
    assert sorted(json.loads(e["message"])["requestId"] for e in events) == sorted(ids)
    h = wait_health(s, lambda h: h["destinations"][name]["consecutiveFailures"] == 0)
    assert h["destinations"][name]["permanentFailure"] is False
    assert h["status"] == "ok"
    p = subprocess.run([BIN, "status", "--url", s.url], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("status: ok\n"), p.stdout + p.stderr
    line = next(l for l in p.stdout.splitlines() if l.startswith(name))
    assert line.split()[2] == "5" and line.endswith(" ok"), line
    assert "ResourceNotFoundException" in s.stderr()
    assert secret not in s.stderr(), "no credential in a log line"


def test_put_logging_configuration_checks_the_remote_group_as_bedrock_does(make_server, moto):
    import boto3
    import botocore.exceptions
    from botocore.config import Config as BotoConfig
    logs = moto.logs()
    group = "/corp/bedrock"
    s = make_server(log_group_config(group, moto))
    k = s.admin
    bedrock = boto3.client("bedrock", endpoint_url=s.url, region_name="us-east-1",
                           aws_access_key_id=k["accessKeyId"], aws_secret_access_key=k["secretAccessKey"],
                           config=BotoConfig(retries={"total_max_attempts": 1}))
    cfg = {"cloudWatchConfig": {"logGroupName": group, "roleArn": "arn:aws:iam::123456789012:role/r"}}
    before = bedrock.get_model_invocation_logging_configuration()["loggingConfig"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bedrock.put_model_invocation_logging_configuration(loggingConfig=cfg)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    msg = e.value.response["Error"]["Message"]
    assert msg.startswith(f"Failed to validate permissions for log group: {group}, with role: "), msg
    assert "does not exist" in msg, msg
    # Nothing changed.
    assert bedrock.get_model_invocation_logging_configuration()["loggingConfig"] == before
    logs.create_log_group(logGroupName=group)
    bedrock.put_model_invocation_logging_configuration(loggingConfig=cfg)
    rid = s.bedrock().converse(modelId="m", messages=[{"role": "user", "content": [{"text": "x"}]}])["ResponseMetadata"]["RequestId"]
    events = wait_events(logs, group, 1)
    assert [json.loads(e["message"])["requestId"] for e in events] == [rid]


def test_validate_names_each_remote_destination_that_cannot_be_used(moto, tmp_path):
    import subprocess
    from conftest import BIN
    from remote import free_port
    s3, logs = moto.s3(), moto.logs()
    s3.create_bucket(Bucket="good-logs")
    logs.create_log_group(logGroupName="/good")
    dead = f"http://127.0.0.1:{free_port()}"
    path = tmp_path / "logbook.toml"
    path.write_text(
        bucket_config("good-logs", moto) + bucket_config("missing-logs", moto)
        + bucket_config("far-logs", moto).replace(moto.url, dead)
        + log_group_config("/good", moto) + log_group_config("/missing", moto))
    p = subprocess.run([BIN, "validate", str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    err = p.stderr
    assert 'bucket "missing-logs"' in err and "NoSuchBucket" in err, err
    assert 'bucket "far-logs"' in err and "unreachable" in err, err
    assert 'log group "/missing"' in err and "does not exist" in err, err
    assert '"good-logs"' not in err and '"/good"' not in err, err
    # The working bucket took Bedrock's permission-check object.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="good-logs").get("Contents", [])]
    assert keys == ["AWSLogs/000000000000/BedrockModelInvocationLogs/amazon-bedrock-logs-permission-check"], keys
    p = subprocess.run([BIN, "validate", "--offline", str(path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_cloudwatch_exports_and_cli_output_are_imported_once_each(make_server, moto, tmp_path):
    """Bedrock logs that live only in CloudWatch Logs come in: a CreateExportTask export
    (read from the bucket it was exported to) and `aws logs filter-log-events` output,
    de-duplicated on requestId; a source with nothing recognisable is an error that
    changes nothing."""
    import os
    import subprocess
    import sys
    from conftest import BIN
    logs, s3 = moto.logs(), moto.s3()
    logs.create_log_group(logGroupName=GROUP)
    s3.create_bucket(Bucket="exports")
    config = (bucket_config("exports", moto) + log_group_config(GROUP, moto) + cw_logging(GROUP)
              + "[archive]\nmax_object_age_ms = 200\n")
    s = make_server(config)
    c = s.bedrock()
    ids = {c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"q{i}"}]}])
           ["ResponseMetadata"]["RequestId"] for i in range(12)}
    wait_events(logs, GROUP, 12)
    s.stop()

    def run(*args, data):
        return subprocess.run([BIN, *args, "--data-dir", str(data), "--config", s.config_path],
                              capture_output=True, text=True, timeout=120)

    def ids_in(group, data):
        p = run("query", "--log-group", group, "--format", "json", "--limit", "1000",
                "fields requestId", data=data)
        assert p.returncode == 0, p.stderr
        return [json.loads(l)["requestId"] for l in p.stdout.splitlines()]

    # 1. A CloudWatch Logs export to S3, as CreateExportTask lays it out.
    now = int(time.time() * 1000)
    logs.create_export_task(logGroupName=GROUP, fromTime=0, to=now + 60_000,
                            destination="exports", destinationPrefix="exp")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="exports")["Contents"]]
    assert any(k.startswith("exp/") and k.endswith("/000000.gz") for k in keys), keys
    data = tmp_path / "imports"
    p = run("import", "s3://exports/exp", "--log-group", "from-export", data=data)
    assert p.returncode == 0, p.stderr
    assert "imported 12 records into from-export" in p.stdout, p.stdout
    assert sorted(ids_in("from-export", data)) == sorted(ids)

    # 2. What the AWS CLI prints, twice over (two overlapping pulls): each record once.
    folder = tmp_path / "cli-output"
    folder.mkdir()
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1")
    out = subprocess.run([aws, "logs", "filter-log-events", "--log-group-name", GROUP,
                          "--endpoint-url", moto.url, "--output", "json"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    (folder / "monday.json").write_text(out.stdout)
    (folder / "monday-again.json").write_text(out.stdout)
    p = run("import", str(folder), "--log-group", "from-cli", data=data)
    assert p.returncode == 0, p.stderr
    assert "imported 12 records into from-cli" in p.stdout and "12 already present" in p.stdout, p.stdout
    assert sorted(ids_in("from-cli", data)) == sorted(ids)

    # 3. Nothing recognisable: an error naming the layouts looked for; no group appears.
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    (junk / "settings.json").write_text('{"a": 1}')
    p = run("import", str(junk), "--log-group", "nothing", data=data)
    assert p.returncode == 1, p.stdout
    assert "no invocation records found" in p.stderr and "CloudWatch Logs export" in p.stderr \
        and "filter-log-events" in p.stderr and "BedrockModelInvocationLogs" in p.stderr, p.stderr
    p = run("query", "--log-group", "nothing", "fields requestId", data=data)
    assert p.returncode != 0 and "nothing" in p.stderr, p.stdout + p.stderr

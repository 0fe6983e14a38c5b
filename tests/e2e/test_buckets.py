"""S3-compatible buckets as destinations: records delivered to a real S3 server (moto's,
on loopback) are read back with boto3 and compared with what the clients were served."""

import gzip
import json
import os
import time

import duckdb

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config as BotoConfig

from remote import S3_SERVERS, bucket_config


@pytest.fixture(params=sorted(S3_SERVERS))
def moto(request, tmp_path):
    """The bucket conformance tests run on two S3 implementations: moto's server and
    s3rver (the fixture keeps moto's name for the first)."""
    m = S3_SERVERS[request.param](tmp_path)
    yield m
    m.stop()


def s3_records(s3, bucket, prefix=""):
    """(key, record) for every record in the bucket's Bedrock invocation-log objects."""
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            k = o["Key"]
            if "/BedrockModelInvocationLogs/" not in k or "/data/" in k or not k.endswith(".json.gz"):
                continue
            body = s3.get_object(Bucket=bucket, Key=k)["Body"].read()
            for line in gzip.decompress(body).decode().splitlines():
                if line.strip():
                    out.append((k, json.loads(line)))
    return out


def wait_s3_records(s3, bucket, n, prefix="", timeout=30):
    deadline = time.time() + timeout
    recs = []
    while time.time() < deadline:
        recs = s3_records(s3, bucket, prefix)
        if len(recs) >= n:
            return recs
        time.sleep(0.2)
    raise AssertionError(f"{bucket} holds {len(recs)} records, expected {n}")


def control(server):
    k = server.admin
    return boto3.client("bedrock", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=k["accessKeyId"], aws_secret_access_key=k["secretAccessKey"],
                        config=BotoConfig(retries={"total_max_attempts": 1}))


def test_records_land_in_an_s3_compatible_bucket_exactly_as_served(make_server, moto, tmp_path):
    s3 = moto.s3()
    s3.create_bucket(Bucket="corp-logs")
    config = bucket_config("corp-logs", moto, sse="AES256") + "parquet = true\n" + (
        '[logging_config.default]\ns3Config = { bucketName = "corp-logs", keyPrefix = "bedrock/" }\n')
    s = make_server(config)
    c = s.bedrock()
    served = {}
    for i in range(20):
        r = c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"hello {i}"}]}])
        served[r["ResponseMetadata"]["RequestId"]] = r["output"]["message"]["content"][0]["text"]
    recs = wait_s3_records(s3, "corp-logs", 20, prefix="bedrock/")
    got = {r["requestId"]: r for _, r in recs}
    assert len(recs) == 20 and set(got) == set(served), "every call once, nothing else"
    for rid, text in served.items():
        assert got[rid]["output"]["outputBodyJson"]["output"]["message"]["content"][0]["text"] == text
        assert got[rid]["input"]["inputBodyJson"]["messages"][0]["content"][0]["text"].startswith("hello ")
    for key, r in recs:
        assert key.startswith(f"bedrock/AWSLogs/{r['accountId']}/BedrockModelInvocationLogs/us-east-1/"), key
        if moto.sse:
            assert s3.head_object(Bucket="corp-logs", Key=key)["ServerSideEncryption"] == "AES256"
    # Nothing of it went to the local archive.
    assert s.health()["status"] == "ok"
    # The open layout is in the same bucket: Parquet under Hive partitions, each call once.
    s.stop()
    local = tmp_path / "copy"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="corp-logs", Prefix="bedrock/logbook-parquet/v1/").get("Contents", [])]
    assert keys and all(k.endswith(".parquet") and "/account_id=" in k and "/dt=" in k for k in keys), keys
    for k in keys:
        if moto.sse:
            assert s3.head_object(Bucket="corp-logs", Key=k)["ServerSideEncryption"] == "AES256"
        dest = local / k
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(s3.get_object(Bucket="corp-logs", Key=k)["Body"].read())
    con = duckdb.connect()
    con.execute(open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "open-layout", "duckdb.sql")).read()
                .replace("<location>", str(local / "bedrock")))
    got = sorted(r[0] for r in con.execute("SELECT request_id FROM invocations WHERE region = 'us-east-1'").fetchall())
    assert got == sorted(served)


def test_the_permission_check_writes_to_the_remote_bucket_as_bedrock_does(make_server, moto):
    s3 = moto.s3()
    # Declared, but not (yet) created on the remote: Bedrock's ValidationException.
    s = make_server(bucket_config("later-logs", moto))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        control(s).put_model_invocation_logging_configuration(
            loggingConfig={"s3Config": {"bucketName": "later-logs", "keyPrefix": "p"}})
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "Failed to validate permissions for S3 bucket: later-logs" in e.value.response["Error"]["Message"]
    s3.create_bucket(Bucket="later-logs")
    control(s).put_model_invocation_logging_configuration(
        loggingConfig={"s3Config": {"bucketName": "later-logs", "keyPrefix": "p"}})
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="later-logs").get("Contents", [])]
    assert len(keys) == 1 and keys[0].startswith("p/AWSLogs/"), keys
    assert keys[0].endswith("/BedrockModelInvocationLogs/amazon-bedrock-logs-permission-check"), keys
    rid = s.bedrock().converse(modelId="m", messages=[{"role": "user", "content": [{"text": "x"}]}])["ResponseMetadata"]["RequestId"]
    recs = wait_s3_records(s3, "later-logs", 1, prefix="p/")
    assert [r["requestId"] for _, r in recs] == [rid]


def test_a_remote_archive_bucket_is_read_back_by_sql_trail_and_import(make_server, moto, tmp_path):
    """The archive bucket itself on S3: the SQL `archive` table, `logbook trail` and
    `logbook import s3://...` read it through the same object store."""
    import subprocess
    import requests
    from conftest import BIN
    s3 = moto.s3()
    s3.create_bucket(Bucket="corp-archive")
    config = bucket_config("corp-archive", moto) + '[archive]\nbucket = "corp-archive"\n'
    s = make_server(config)
    c = s.bedrock()
    ids = {c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"q{i}"}]}])
           ["ResponseMetadata"]["RequestId"] for i in range(12)}
    # A control-plane call: its audit event goes to the archive bucket's CloudTrail prefix.
    control(s).put_model_invocation_logging_configuration(
        loggingConfig={"s3Config": {"bucketName": "corp-archive", "keyPrefix": "x"}})
    wait_s3_records(s3, "corp-archive", 12)
    r = requests.post(s.url + "/logbook/query", headers=s.auth_headers(), timeout=60, json={
        "language": "sql", "query": "select count(*) as n, count(distinct request_id) as d from archive"})
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [["12", "12"]], r.json()
    s.stop()  # the trail's last objects are delivered at stop
    trail_keys = [o["Key"] for o in s3.list_objects_v2(Bucket="corp-archive", Prefix="AWSLogs/").get("Contents", [])
                  if "/CloudTrail/" in o["Key"]]
    assert trail_keys, "the audit event was delivered to the remote bucket"
    out = subprocess.run([BIN, "trail", "--data-dir", s.data_dir, "--config", s.config_path, "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    names = [json.loads(line)["eventName"] for line in out.stdout.splitlines() if line.strip()]
    assert "PutModelInvocationLoggingConfiguration" in names, names
    out = subprocess.run([BIN, "import", "s3://corp-archive/AWSLogs", "--log-group", "imported",
                          "--data-dir", s.data_dir, "--config", s.config_path],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "imported 12 records" in out.stdout, out.stdout
    # The checkpoints were written to the S3 bucket beside the logs, and the bucket
    # verifies offline through the S3 client (the /logbook/query above is a data event
    # in the trail log too).
    cps = [o["Key"] for o in s3.list_objects_v2(Bucket="corp-archive", Prefix="LogbookCheckpoints/").get("Contents", [])]
    assert any("/records/" in k for k in cps) and any("/trail/" in k for k in cps), cps
    out = subprocess.run([BIN, "verify", "--data-dir", s.data_dir, "--config", s.config_path],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "/records: 12 leaves" in out.stdout, out.stdout

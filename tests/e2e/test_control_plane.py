"""Bedrock's logging-configuration API (boto3 `bedrock` client and the AWS CLI), the
configuration driving capture, and the CloudTrail-format audit trail."""

import gzip
import json
import os
import subprocess
import sys
import time

import boto3
import botocore.exceptions
import pytest
import requests
from botocore.config import Config as BotoConfig

from conftest import BIN, read_records, wait_record

CONFIG = """
[server]
account_id = "123456789012"

[[buckets]]
name = "logbook-archive"
path = "archive"

[[buckets]]
name = "team-logs"
path = "team-bucket"

[[principals]]
arn = "arn:aws:iam::123456789012:user/ops-admin"
access_key_id = "AKIAOPSADMIN"
secret_access_key = "ops-secret"
api_key = "ops-api-key"
permissions = ["logging:manage", "invoke:*"]

[[principals]]
arn = "arn:aws:iam::123456789012:user/app"
access_key_id = "AKIAAPP"
secret_access_key = "app-secret"
"""


def control(server, region="us-east-1", key="AKIAOPSADMIN", validate=True, secret="ops-secret"):
    return boto3.client("bedrock", endpoint_url=server.url, region_name=region, aws_access_key_id=key,
                        aws_secret_access_key=secret, config=BotoConfig(parameter_validation=validate, retries={"total_max_attempts": 1}))


def converse(server, text="hi", region="us-east-1"):
    return server.bedrock(region=region, key="AKIAAPP", secret="app-secret").converse(
        modelId="m", messages=[{"role": "user", "content": [{"text": text}]}])["ResponseMetadata"]["RequestId"]


def files_under(root):
    out = []
    for d, _, fs in os.walk(root):
        out += [os.path.join(d, f) for f in fs]
    return sorted(out)


def trail_records(server):
    out = []
    for f in files_under(os.path.join(server.data_dir, "archive", "AWSLogs")):
        # object_store stages writes as "<key>#<n>" and renames them into place.
        if "/CloudTrail/" in f and f.endswith(".json.gz"):
            with gzip.open(f, "rt") as g:
                out += json.load(g)["Records"]
    return out


def wait_trail(server, n, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        recs = trail_records(server)
        if len(recs) >= n:
            return recs
        time.sleep(0.1)
    raise AssertionError(f"{len(trail_records(server))} trail events, expected {n}")


def test_put_get_delete_drive_capture(make_server):
    s = make_server(CONFIG)
    c = control(s)
    # Default: logging on, to the archive bucket, every data type.
    cfg = c.get_model_invocation_logging_configuration()["loggingConfig"]
    assert cfg["s3Config"] == {"bucketName": "logbook-archive"} and cfg["textDataDeliveryEnabled"] is True

    c.put_model_invocation_logging_configuration(loggingConfig={"s3Config": {"bucketName": "team-logs", "keyPrefix": "invocation-logs/"}})
    cfg = c.get_model_invocation_logging_configuration()["loggingConfig"]
    assert cfg["s3Config"] == {"bucketName": "team-logs", "keyPrefix": "invocation-logs/"}
    for f in ["textDataDeliveryEnabled", "imageDataDeliveryEnabled", "embeddingDataDeliveryEnabled", "videoDataDeliveryEnabled", "audioDataDeliveryEnabled"]:
        assert cfg[f] is True, f
    marker = os.path.join(s.data_dir, "team-bucket", "invocation-logs", "AWSLogs", "123456789012", "BedrockModelInvocationLogs", "amazon-bedrock-logs-permission-check")
    assert os.path.exists(marker) and os.path.getsize(marker) == 0

    rid = converse(s, "to the team bucket")
    rec = wait_record(s, rid, bucket_dir="team-bucket")
    assert rec["logbook"]["destination"] == {"bucket": "team-logs", "keyPrefix": "invocation-logs/"}
    key = [f for f in files_under(os.path.join(s.data_dir, "team-bucket")) if f.endswith(".json.gz")][0]
    assert "/team-bucket/invocation-logs/AWSLogs/123456789012/BedrockModelInvocationLogs/us-east-1/" in key

    # Another region is its own singleton: unaffected.
    rid_west = converse(s, "west", region="us-west-2")
    assert wait_record(s, rid_west)["region"] == "us-west-2"

    # Delete: calls are still served but no longer recorded (as in Bedrock).
    c.delete_model_invocation_logging_configuration()
    assert "loggingConfig" not in c.get_model_invocation_logging_configuration()
    # A record would be in the journal before the answer: the journal did not move.
    committed = s.health()["journal"]["committed"]
    rid_off = converse(s, "unlogged")
    assert s.health()["journal"]["committed"] == committed
    after = read_records(s.data_dir, "team-bucket") + read_records(s.data_dir)
    assert rid_off not in {r["requestId"] for r in after}

    # Text delivery off: metadata and token counts stay, bodies go.
    c.put_model_invocation_logging_configuration(loggingConfig={"s3Config": {"bucketName": "logbook-archive"}, "textDataDeliveryEnabled": False})
    rid = converse(s, "secret prompt")
    rec = wait_record(s, rid)
    assert "inputBodyJson" not in rec["input"] and "outputBodyJson" not in rec["output"]
    assert rec["input"]["inputTokenCount"] >= 1 and rec["output"]["outputTokenCount"] >= 1
    assert rec["logbook"]["bodiesOmitted"] == "textDataDeliveryEnabled=false"
    # ...but embeddings still carry theirs (embedding flag on).
    r = s.openai(key="ops-api-key").embeddings.create(model="text-embedding-3-small", input="e", dimensions=4, encoding_format="float")
    emb = [x for x in read_records(s.data_dir) if x["operation"] == "Embeddings"] or [None]
    deadline = time.time() + 10
    while emb == [None] and time.time() < deadline:
        time.sleep(0.1)
        emb = [x for x in read_records(s.data_dir) if x["operation"] == "Embeddings"] or [None]
    assert emb[0]["output"]["outputBodyJson"]["data"][0]["embedding"] == r.data[0].embedding
    assert "secret prompt" not in json.dumps(read_records(s.data_dir))


def test_validation_errors_change_nothing(make_server):
    s = make_server(CONFIG)
    c = control(s, validate=False)
    before = control(s).get_model_invocation_logging_configuration()
    cases = [
        ({"s3Config": {"bucketName": "no-such-bucket"}}, "Failed to validate permissions for S3 bucket: no-such-bucket"),
        ({"s3Config": {"bucketName": "ab"}}, "Member must have length greater than or equal to 3"),
        ({"s3Config": {"bucketName": "team-logs", "keyPrefix": "../../etc"}}, "'..' path segments"),
        ({"s3Config": {"bucketName": "team-logs", "keyPrefix": "/abs"}}, "relative key prefix"),
        ({"s3Config": {"bucketName": "team-logs", "keyPrefix": "a\u0001b"}}, "control characters"),
        ({"s3Config": {"bucketName": "team-logs", "keyPrefix": "x" * 1025}}, "less than or equal to 1024"),
        ({"cloudWatchConfig": {"logGroupName": "/aws/bedrock", "roleArn": "arn:aws:iam::123456789012:role/BedrockLogs"}},
         "Failed to validate permissions for log group: /aws/bedrock, with role: arn:aws:iam::123456789012:role/BedrockLogs"),
        ({"cloudWatchConfig": {"logGroupName": "g", "roleArn": "not-an-arn"}}, "regular expression pattern"),
    ]
    for cfg, expect in cases:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            c.put_model_invocation_logging_configuration(loggingConfig=cfg)
        assert e.value.response["Error"]["Code"] == "ValidationException", cfg
        assert expect in e.value.response["Error"]["Message"], (cfg, e.value.response["Error"]["Message"])
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    for raw, expect in [(b"{oops", "Malformed input request"), (b'{"loggingConfig": {"s3Config": {"bucketName": 5}}}', "must be a string"),
                        (b'{"loggingConfig": {}, "extra": 1}', "not a known field"), (b"{}", "'loggingConfig' failed to satisfy constraint: Member must not be null"),
                        (b'{"loggingConfig": {"textDataDeliveryEnabled": "yes"}}', "must be a boolean")]:
        r = requests.put(f"{s.url}/logging/modelinvocations", data=raw, headers={"Content-Type": "application/json", "Authorization": "Bearer ops-api-key"})
        assert r.status_code == 400 and r.headers["x-amzn-errortype"].startswith("ValidationException:")
        assert expect in r.json()["message"], (raw, r.json())
    assert control(s).get_model_invocation_logging_configuration()["loggingConfig"] == before["loggingConfig"]
    assert not os.path.exists(os.path.join(s.data_dir, "team-bucket", "AWSLogs"))
    # Every call, invalid ones included, is in the trail.
    events = wait_trail(s, len(cases) + 5 + 2)
    errors = [e for e in events if e["eventName"] == "PutModelInvocationLoggingConfiguration"]
    assert len(errors) == len(cases) + 5 and all(e["errorCode"] == "ValidationException" for e in errors)


def test_aws_cli_and_the_trail(make_server):
    s = make_server(CONFIG)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIAOPSADMIN", AWS_SECRET_ACCESS_KEY="ops-secret", AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_MAX_ATTEMPTS="1")
    aws = [os.path.join(os.path.dirname(sys.executable), "aws"), "--endpoint-url", s.url, "--output", "json", "bedrock"]
    p = subprocess.run(aws + ["put-model-invocation-logging-configuration", "--logging-config",
                              json.dumps({"s3Config": {"bucketName": "team-logs", "keyPrefix": "cli"}, "imageDataDeliveryEnabled": False})],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(aws + ["get-model-invocation-logging-configuration"], capture_output=True, text=True, env=env)
    cfg = json.loads(p.stdout)["loggingConfig"]
    assert cfg["s3Config"]["keyPrefix"] == "cli" and cfg["imageDataDeliveryEnabled"] is False and cfg["textDataDeliveryEnabled"] is True
    p = subprocess.run(aws + ["put-model-invocation-logging-configuration", "--logging-config", json.dumps({"s3Config": {"bucketName": "nope-bucket"}})],
                       capture_output=True, text=True, env=env)
    assert p.returncode != 0 and "ValidationException" in p.stderr and "nope-bucket" in p.stderr
    p = subprocess.run(aws + ["delete-model-invocation-logging-configuration"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    # CloudTrail objects in CloudTrail's layout.
    events = wait_trail(s, 4)
    names = sorted(e["eventName"] for e in events)
    assert names == ["DeleteModelInvocationLoggingConfiguration", "GetModelInvocationLoggingConfiguration",
                     "PutModelInvocationLoggingConfiguration", "PutModelInvocationLoggingConfiguration"]
    put = [e for e in events if e["eventName"] == "PutModelInvocationLoggingConfiguration" and "errorCode" not in e][0]
    get = [e for e in events if e["eventName"] == "GetModelInvocationLoggingConfiguration"][0]
    bad = [e for e in events if e.get("errorCode")][0]
    assert put["eventVersion"] == "1.09" and put["eventSource"] == "bedrock.amazonaws.com" and put["eventType"] == "AwsApiCall"
    assert put["userIdentity"] == {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/ops-admin", "accountId": "123456789012", "accessKeyId": "AKIAOPSADMIN"}
    assert put["requestParameters"]["loggingConfig"]["s3Config"] == {"bucketName": "team-logs", "keyPrefix": "cli"}
    assert put["readOnly"] is False and get["readOnly"] is True and put["awsRegion"] == "us-east-1"
    assert bad["errorCode"] == "ValidationException" and "nope-bucket" in bad["errorMessage"]
    assert "aws-cli" in put["userAgent"] and put["sourceIPAddress"] == "127.0.0.1"
    key = [f for f in files_under(os.path.join(s.data_dir, "archive")) if "/CloudTrail/" in f and f.endswith(".json.gz")][0]
    rel = key.split("/archive/", 1)[1]
    assert rel.startswith("AWSLogs/123456789012/CloudTrail/us-east-1/") and "/123456789012_CloudTrail_us-east-1_" in rel
    # The seed question: who changed the logging configuration?
    cli = [BIN, "trail", "--data-dir", s.data_dir, "--config", s.config_path]
    out = subprocess.run(cli + ["--since", "7d", "--event-name", "DeleteModelInvocationLoggingConfiguration"], capture_output=True, text=True, check=True).stdout
    assert "arn:aws:iam::123456789012:user/ops-admin" in out and out.count("DeleteModelInvocationLoggingConfiguration") == 1
    js = subprocess.run(cli + ["--format", "json", "--principal", "arn:aws:iam::123456789012:user/*"], capture_output=True, text=True, check=True).stdout
    assert len(js.strip().splitlines()) == 4
    none = subprocess.run(cli + ["--principal", "arn:aws:iam::123456789012:user/app"], capture_output=True, text=True, check=True).stdout
    assert len(none.strip().splitlines()) == 1  # header only
    import datetime
    today = datetime.datetime.now(datetime.timezone.utc).date()
    day = subprocess.run(cli + ["--format", "json", "--start", str(today), "--end", str(today + datetime.timedelta(days=1))], capture_output=True, text=True, check=True).stdout
    assert len(day.strip().splitlines()) == 4
    past = subprocess.run(cli + ["--format", "json", "--start", "2020-01-01", "--end", "2020-01-02"], capture_output=True, text=True, check=True).stdout
    assert past.strip() == ""


def test_trail_lists_events_not_yet_delivered(make_server):
    s = make_server(CONFIG, extra_args=["--archive-max-age-ms", "600000"])
    control(s).delete_model_invocation_logging_configuration()
    assert trail_records(s) == []
    out = subprocess.run([BIN, "trail", "--data-dir", s.data_dir, "--config", s.config_path, "--format", "json"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip())["eventName"] == "DeleteModelInvocationLoggingConfiguration"


DECLARED = CONFIG + """
[logging_config.us-west-2]
s3Config = { bucketName = "team-logs", keyPrefix = "west/" }
textDataDeliveryEnabled = false
"""


def test_declarative_config_drift_and_require_logging(make_server, tmp_path):
    s = make_server(DECLARED)
    west = control(s, region="us-west-2")
    cfg = west.get_model_invocation_logging_configuration()["loggingConfig"]
    assert cfg["s3Config"] == {"bucketName": "team-logs", "keyPrefix": "west/"} and cfg["textDataDeliveryEnabled"] is False
    diff = [BIN, "config", "diff", "--data-dir", s.data_dir, "--config", s.config_path]
    assert subprocess.run(diff, capture_output=True, text=True).returncode == 0
    assert s.health()["drift"] == []
    west.put_model_invocation_logging_configuration(loggingConfig={"s3Config": {"bucketName": "logbook-archive"}})
    p = subprocess.run(diff, capture_output=True, text=True)
    assert p.returncode == 1 and "123456789012/us-west-2" in p.stdout
    assert s.health()["drift"] == [{"accountId": "123456789012", "region": "us-west-2"}]  # no configuration details on the open endpoint
    # A restart with the same file does not silently revert the API change.
    s.stop()
    s.start()
    assert control(s, region="us-west-2").get_model_invocation_logging_configuration()["loggingConfig"]["s3Config"] == {"bucketName": "logbook-archive"}

    strict = make_server(CONFIG.replace('[server]', '[logging]\nrequire_logging = true\n\n[server]'), name="strict")
    control(strict).delete_model_invocation_logging_configuration()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        converse(strict)
    assert e.value.response["Error"]["Code"] == "AccessDeniedException" and "logging is off" in e.value.response["Error"]["Message"]


def test_control_plane_authorization_and_auth_failures_are_audited(make_server):
    s = make_server(CONFIG)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        control(s, key="AKIAAPP", secret="app-secret").put_model_invocation_logging_configuration(loggingConfig={"s3Config": {"bucketName": "team-logs"}})
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "user/app is not authorized to perform: bedrock:PutModelInvocationLoggingConfiguration" in e.value.response["Error"]["Message"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        control(s, key="AKIAAPP", secret="app-secret").get_model_invocation_logging_configuration()
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        control(s, key="AKIAOPSADMIN", secret="wrong").delete_model_invocation_logging_configuration()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        control(s, key="AKIAUNKNOWN", secret="x").get_model_invocation_logging_configuration()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    # Nothing changed, and all four attempts are in the trail.
    assert control(s).get_model_invocation_logging_configuration()["loggingConfig"]["s3Config"]["bucketName"] == "logbook-archive"
    events = wait_trail(s, 5)
    codes = sorted(x.get("errorCode", "") for x in events)
    assert codes == ["", "AccessDeniedException", "AccessDeniedException", "InvalidSignatureException", "UnrecognizedClientException"]
    unknown = [x for x in events if x.get("errorCode") == "UnrecognizedClientException"][0]
    assert unknown["userIdentity"]["type"] == "Unknown" and unknown["userIdentity"]["accessKeyId"] == "AKIAUNKNOWN"
    denied = [x for x in events if x.get("errorCode") == "AccessDeniedException"]
    assert all(x["userIdentity"]["arn"] == "arn:aws:iam::123456789012:user/app" for x in denied)


def test_converse_images_go_to_data_objects_or_are_dropped_by_the_flag(make_server):
    s = make_server(CONFIG)
    png = b"\x89PNG\r\n\x1a\n" + b"fake-image-bytes" * 10
    pdf = b"%PDF-1.4 fake document"
    c = s.bedrock(key="AKIAAPP", secret="app-secret")
    msgs = [{"role": "user", "content": [{"text": "what is this?"}, {"image": {"format": "png", "source": {"bytes": png}}},
                                         {"document": {"format": "pdf", "name": "spec", "source": {"bytes": pdf}}}]}]
    r = c.converse(modelId="m", messages=msgs)
    rec = wait_record(s, r["ResponseMetadata"]["RequestId"])
    rid = rec["requestId"]
    blocks = rec["input"]["inputBodyJson"]["messages"][0]["content"]
    uri = blocks[1]["image"]["source"]["s3Uri"]
    assert uri.startswith("s3://logbook-archive/AWSLogs/123456789012/BedrockModelInvocationLogs/us-east-1/") and uri.endswith(f"/data/{rid}_input_media_00.png")
    assert blocks[2]["document"]["source"]["s3Uri"].endswith(f"/data/{rid}_input_media_01.pdf")
    with open(os.path.join(s.data_dir, "archive", uri.split("/", 3)[3]), "rb") as f:
        assert f.read() == png
    # Image delivery off: the media bytes are not delivered anywhere.
    control(s).put_model_invocation_logging_configuration(loggingConfig={"s3Config": {"bucketName": "logbook-archive"}, "imageDataDeliveryEnabled": False})
    r = c.converse(modelId="m", messages=msgs)
    rec = wait_record(s, r["ResponseMetadata"]["RequestId"])
    blocks = rec["input"]["inputBodyJson"]["messages"][0]["content"]
    assert blocks[0] == {"text": "what is this?"} and blocks[1] == {"image": {"format": "png"}}
    assert rec["logbook"]["bodiesOmitted"] == "imageDataDeliveryEnabled=false"
    assert not any(rec["requestId"] in f for f in files_under(os.path.join(s.data_dir, "archive")))


def test_audit_events_survive_kill9_exactly_once(make_server, tmp_path):
    from conftest import Server
    data = tmp_path / "crash"
    s = Server(data, CONFIG, extra_args=["--archive-max-age-ms", "600000"]).start()
    c = control(s)
    acked = set()
    for i in range(10):
        r = c.put_model_invocation_logging_configuration(loggingConfig={"s3Config": {"bucketName": "team-logs", "keyPrefix": f"p{i}"}})
        acked.add(r["ResponseMetadata"]["RequestId"])
    s.kill9()  # nothing was delivered yet: every event is only in the journal
    s = Server(data, CONFIG).start()
    try:
        events = wait_trail(s, 10)
        ids = [e["requestID"] for e in events]
        assert len(ids) == len(set(ids)) == 10 and set(ids) == acked
        # The configuration survived too: the last Put is in force.
        assert control(s).get_model_invocation_logging_configuration()["loggingConfig"]["s3Config"]["keyPrefix"] == "p9"
    finally:
        s.stop()


def test_aws_cli_gets_each_auth_error_code(make_server):
    s = make_server(CONFIG)
    cli = os.path.join(os.path.dirname(sys.executable), "aws")

    def run(key, secret, *args):
        env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION="us-east-1",
                   AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_MAX_ATTEMPTS="1")
        return subprocess.run([cli, "--endpoint-url", s.url, "bedrock", *args], capture_output=True, text=True, env=env)

    get = ["get-model-invocation-logging-configuration"]
    put = ["put-model-invocation-logging-configuration", "--logging-config", json.dumps({"s3Config": {"bucketName": "team-logs"}})]
    for (key, secret, args), code in [
        (("AKIANOBODY", "x", get), "UnrecognizedClientException"),
        (("AKIAOPSADMIN", "wrong", get), "InvalidSignatureException"),
        (("AKIAAPP", "app-secret", put), "AccessDeniedException"),
        (("AKIAOPSADMIN", "ops-secret", ["put-model-invocation-logging-configuration", "--logging-config", json.dumps({"s3Config": {"bucketName": "team-logs", "keyPrefix": "a/../b"}})]), "ValidationException"),
    ]:
        p = run(key, secret, *args)
        assert p.returncode != 0 and f"({code})" in p.stderr, (code, p.stderr)
    assert run("AKIAOPSADMIN", "ops-secret", *get).returncode == 0


def test_unwritable_bucket_is_a_validation_error(make_server, tmp_path):
    ro = tmp_path / "ro-bucket"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        s = make_server(CONFIG + f'\n[[buckets]]\nname = "ro-bucket"\npath = "{ro}"\n')
        with pytest.raises(botocore.exceptions.ClientError) as e:
            control(s).put_model_invocation_logging_configuration(loggingConfig={"s3Config": {"bucketName": "ro-bucket"}})
        assert e.value.response["Error"]["Code"] == "ValidationException"
        assert "Failed to validate permissions for S3 bucket: ro-bucket" in e.value.response["Error"]["Message"]
        assert control(s).get_model_invocation_logging_configuration()["loggingConfig"]["s3Config"]["bucketName"] == "logbook-archive"
        s.stop()
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)

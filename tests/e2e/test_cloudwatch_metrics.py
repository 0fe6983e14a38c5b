"""The CloudWatch metrics API (GetMetricStatistics, GetMetricData, ListMetrics; namespace
AWS/Bedrock) through boto3's `cloudwatch` client and the AWS CLI, which speak the
protocol botocore declares for CloudWatch (smithy-rpc-v2-cbor). The values come from the
records, so they equal what the records say and survive a restart."""

import datetime
import json
import os
import subprocess
import sys

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config as BotoConfig

from conftest import wait_records

MODEL = "amazon.nova-lite-v1:0"
CONFIG = """
[server]
account_id = "123456789012"

[[principals]]
arn = "arn:aws:iam::123456789012:user/alice"
access_key_id = "AKIAALICE0000000000"
secret_access_key = "alice-secret"

[[principals]]
arn = "arn:aws:iam::123456789012:user/reader"
access_key_id = "AKIAREADER000000000"
secret_access_key = "reader-secret"
permissions = ["logs:read"]
"""


def cw(s, key="AKIAREADER000000000", secret="reader-secret"):
    return boto3.client("cloudwatch", endpoint_url=s.url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=BotoConfig(retries={"total_max_attempts": 1}))


def msg(text):
    return [{"role": "user", "content": [{"text": text}]}]


def window():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(hours=1)


def total(c, metric, stat="Sum"):
    start, end = window()
    r = c.get_metric_statistics(Namespace="AWS/Bedrock", MetricName=metric, Dimensions=[{"Name": "ModelId", "Value": MODEL}],
                                StartTime=start, EndTime=end, Period=3600, Statistics=[stat])
    return sum(p[stat] for p in r["Datapoints"]), r


def test_bedrock_metrics_through_boto3_and_the_cli(make_server, tmp_path):
    s = make_server(CONFIG)
    b = s.bedrock(key="AKIAALICE0000000000", secret="alice-secret")
    for i in range(3):
        b.converse(modelId=MODEL, messages=msg(f"ok {i} [mock:cache_read=10]"))
    list(b.converse_stream(modelId=MODEL, messages=msg("stream [mock:chunks=3]"))["stream"])
    for err in ["ThrottlingException", "InternalServerException"]:
        with pytest.raises(botocore.exceptions.ClientError):
            b.converse(modelId=MODEL, messages=msg(f"[mock:error={err}]"))
    recs = wait_records(s, 6)
    c = cw(s)
    n, r = total(c, "Invocations")
    assert n == 5, r  # 4 answered + the server error; the throttle is only a throttle
    assert r["Label"] == "Invocations" and r["Datapoints"][0]["Unit"] == "Count"
    assert total(c, "InvocationThrottles")[0] == 1
    assert total(c, "InvocationServerErrors")[0] == 1
    assert total(c, "InvocationClientErrors")[0] == 0
    ok = [x for x in recs if "errorCode" not in x]
    assert total(c, "InputTokenCount")[0] == sum(x["input"]["inputTokenCount"] for x in ok)
    assert total(c, "OutputTokenCount")[0] == sum(x["output"]["outputTokenCount"] for x in ok)
    assert total(c, "CacheReadInputTokens")[0] == 30
    assert total(c, "TimeToFirstToken", "SampleCount")[0] == 1
    # Percentiles.
    start, end = window()
    r = c.get_metric_statistics(Namespace="AWS/Bedrock", MetricName="InvocationLatency", Dimensions=[{"Name": "ModelId", "Value": MODEL}],
                                StartTime=start, EndTime=end, Period=3600, ExtendedStatistics=["p99"], Statistics=["Maximum"])
    p = r["Datapoints"][0]
    assert p["Unit"] == "Milliseconds" and 0 <= p["ExtendedStatistics"]["p99"] <= p["Maximum"] + 1e-9
    # ListMetrics: every metric for the model.
    names = {m["MetricName"] for m in c.list_metrics(Namespace="AWS/Bedrock")["Metrics"]
             if m["Dimensions"] == [{"Name": "ModelId", "Value": MODEL}]}
    assert {"Invocations", "InvocationLatency", "InvocationThrottles", "EstimatedTPMQuotaUsage"} <= names
    # GetMetricData, two queries at once, newest first.
    r = c.get_metric_data(StartTime=start, EndTime=end, MetricDataQueries=[
        {"Id": "inv", "MetricStat": {"Metric": {"Namespace": "AWS/Bedrock", "MetricName": "Invocations",
                                                "Dimensions": [{"Name": "ModelId", "Value": MODEL}]}, "Period": 60, "Stat": "Sum"}},
        {"Id": "thr", "MetricStat": {"Metric": {"Namespace": "AWS/Bedrock", "MetricName": "InvocationThrottles",
                                                "Dimensions": [{"Name": "ModelId", "Value": MODEL}]}, "Period": 60, "Stat": "Sum"}},
    ])
    res = {x["Id"]: x for x in r["MetricDataResults"]}
    assert sum(res["inv"]["Values"]) == 5 and sum(res["thr"]["Values"]) == 1
    assert res["inv"]["StatusCode"] == "Complete" and res["inv"]["Timestamps"] == sorted(res["inv"]["Timestamps"], reverse=True)
    # Unknown model or namespace: no data, not an error (as CloudWatch).
    assert c.get_metric_statistics(Namespace="AWS/Bedrock", MetricName="Invocations", Dimensions=[{"Name": "ModelId", "Value": "nope"}],
                                   StartTime=start, EndTime=end, Period=60, Statistics=["Sum"])["Datapoints"] == []
    # Bad input: the API's own errors.
    for kw, code in [
        (dict(Period=7, Statistics=["Sum"]), "InvalidParameterValue"),
        (dict(Period=60), "InvalidParameterCombination"),
        (dict(Period=60, Statistics=["Median"]), "InvalidParameterValue"),
        (dict(Period=1, Statistics=["Sum"]), "InvalidParameterValue"),  # 7,200 datapoints > 1,440
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            c.get_metric_statistics(Namespace="AWS/Bedrock", MetricName="Invocations", StartTime=start, EndTime=end,
                                    Dimensions=[{"Name": "ModelId", "Value": MODEL}], **kw)
        assert e.value.response["Error"]["Code"] == code, (kw, e.value.response)
    # A caller without logs:read may not read metrics.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cw(s, "AKIAALICE0000000000", "alice-secret").list_metrics(Namespace="AWS/Bedrock")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # A bad signature is refused in the API's own (CBOR) error shape.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cw(s, "AKIAREADER000000000", "wrong-secret").list_metrics(Namespace="AWS/Bedrock")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "Signature" in e.value.response["Error"]["Code"] + e.value.response["Error"]["Message"], e.value.response
    # The AWS CLI, unchanged.
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIAREADER000000000", AWS_SECRET_ACCESS_KEY="reader-secret", AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    aws = os.path.join(os.path.dirname(os.path.realpath(sys.executable)), "aws")
    p = subprocess.run([aws, "--endpoint-url", s.url, "--output", "json", "cloudwatch", "get-metric-statistics",
                        "--namespace", "AWS/Bedrock", "--metric-name", "Invocations", "--dimensions", f"Name=ModelId,Value={MODEL}",
                        "--start-time", start.isoformat(), "--end-time", end.isoformat(), "--period", "3600", "--statistics", "Sum"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert sum(x["Sum"] for x in json.loads(p.stdout)["Datapoints"]) == 5
    # The series come from the records: a restart keeps them.
    s.stop()
    s.start()
    assert total(cw(s), "Invocations")[0] == 5


def test_the_rpc_v2_cbor_protocol_parsed_by_botocores_own_cbor_parser(make_server):
    """Newer SDKs speak smithy-rpc-v2-cbor to CloudWatch: a signed CBOR ListMetrics and
    GetMetricStatistics, answered in CBOR that botocore's RpcV2CBORParser reads."""
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    import botocore.parsers
    import botocore.session
    import requests
    s = make_server(CONFIG)
    s.bedrock(key="AKIAALICE0000000000", secret="alice-secret").converse(modelId=MODEL, messages=msg("hi"))
    wait_records(s, 1)
    model = botocore.session.get_session().get_service_model("cloudwatch")

    def text(t):
        b = t.encode()
        assert len(b) < 24
        return bytes([0x60 + len(b)]) + b

    def call(op, body, secret="reader-secret"):
        req = botocore.awsrequest.AWSRequest(
            method="POST", url=f"{s.url}/service/GraniteServiceVersion20100801/operation/{op}", data=body,
            headers={"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor", "Accept": "application/cbor"})
        botocore.auth.SigV4Auth(botocore.credentials.Credentials("AKIAREADER000000000", secret), "monitoring", "us-east-1").add_auth(req)
        r = requests.post(req.url, data=body, headers=dict(req.headers.items()), timeout=10)
        assert r.headers["smithy-protocol"] == "rpc-v2-cbor" and r.headers["content-type"] == "application/cbor"
        return botocore.parsers.RpcV2CBORParser().parse(
            {"body": r.content, "headers": r.headers, "status_code": r.status_code}, model.operation_model(op).output_shape)

    out = call("ListMetrics", b"\xa1" + text("Namespace") + text("AWS/Bedrock"))
    assert {m["MetricName"] for m in out["Metrics"]} >= {"Invocations", "InputTokenCount"}
    now = int(__import__("time").time())
    # {"Namespace", "MetricName", "Dimensions": [{"Name", "Value"}], "StartTime": tag1, "EndTime": tag1, "Period": 3600, "Statistics": ["Sum"]}
    def tag1(n):
        return b"\xc1\x1a" + n.to_bytes(4, "big")
    body = (b"\xa7" + text("Namespace") + text("AWS/Bedrock") + text("MetricName") + text("Invocations")
            + text("Dimensions") + b"\x81\xa2" + text("Name") + text("ModelId") + text("Value") + text(MODEL)
            + text("StartTime") + tag1(now - 3600) + text("EndTime") + tag1(now + 3600)
            + text("Period") + b"\x19\x0e\x10" + text("Statistics") + b"\x81" + text("Sum"))
    out = call("GetMetricStatistics", body)
    assert sum(p["Sum"] for p in out["Datapoints"]) == 1 and out["Datapoints"][0]["Unit"] == "Count"
    assert isinstance(out["Datapoints"][0]["Timestamp"], datetime.datetime)
    # Errors, in CBOR, with the query-compatible code.
    bad = call("GetMetricStatistics", body.replace(b"\x19\x0e\x10", b"\x07"))
    assert bad["Error"]["Code"] == "InvalidParameterValue", bad
    denied = call("ListMetrics", b"\xa0", secret="wrong")
    assert denied["ResponseMetadata"]["HTTPStatusCode"] == 403 and denied["Error"]["Code"], denied

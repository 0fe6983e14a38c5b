"""CloudWatch-style alarms on Bedrock's metrics, with real clients: the seed's two alarms
created with `aws cloudwatch put-metric-alarm` exactly as written for AWS; real traffic
through the gateway (the mock's throttle directive) fires an alarm at a local webhook
receiver (an SNS-notification-shaped body, and a Slack-compatible one), a failed delivery
is retried and every attempt is in the alarm's history, and the alarm recovers to OK."""

import http.server
import json
import os
import subprocess
import sys
import threading
import time

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config as BotoConfig

from conftest import BIN
from loopback_http import LoopbackHTTPServer

MODEL = "amazon.nova-lite-v1:0"
ONCALL = "arn:aws:sns:us-east-1:123456789012:bedrock-oncall"
SLACK = "arn:aws:sns:us-east-1:123456789012:bedrock-slack"


class Receiver:
    """A local webhook: records every POST; the first `fail_first` answers are 500s."""

    def __init__(self, fail_first=0):
        self.bodies, self.fail_first, self.calls = [], fail_first, 0
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(n))
                outer.calls += 1
                if outer.calls <= outer.fail_first:
                    self.send_response(500)
                else:
                    outer.bodies.append((self.path, body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = LoopbackHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()


def config(url):
    return f"""
[server]
account_id = "123456789012"

[[principals]]
arn = "arn:aws:iam::123456789012:user/ops"
access_key_id = "AKIAOPS000000000000"
secret_access_key = "ops-secret"
permissions = ["invoke:*", "logs:read", "logging:manage"]

[[principals]]
arn = "arn:aws:iam::123456789012:user/reader"
access_key_id = "AKIAREADER000000000"
secret_access_key = "reader-secret"
permissions = ["logs:read"]

[alarm_evaluation]
every_ms = 300

[[alarm_actions]]
arn = "{ONCALL}"
url = "{url}/sns"

[[alarm_actions]]
arn = "{SLACK}"
url = "{url}/slack"
format = "slack"
"""


def cw(s, key="AKIAOPS000000000000", secret="ops-secret"):
    return boto3.client("cloudwatch", endpoint_url=s.url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=BotoConfig(retries={"total_max_attempts": 1}))


def wait_for(pred, timeout=30, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def state(c, name):
    return c.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]


def test_seed_alarms_fire_at_a_webhook_retry_and_recover(make_server, tmp_path):
    rx = Receiver(fail_first=1)
    try:
        s = make_server(config(rx.url))
        env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIAOPS000000000000", AWS_SECRET_ACCESS_KEY="ops-secret",
                   AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
        aws = os.path.join(os.path.dirname(os.path.realpath(sys.executable)), "aws")

        def cli(*args):
            p = subprocess.run([aws, "--endpoint-url", s.url, "--output", "json", "cloudwatch", *args], capture_output=True, text=True, env=env)
            assert p.returncode == 0, p.stderr
            return json.loads(p.stdout) if p.stdout.strip() else {}

        # The seed's two alarms, as written for AWS.
        cli("put-metric-alarm", "--alarm-name", "bedrock-client-errors", "--namespace", "AWS/Bedrock",
            "--metric-name", "InvocationClientErrors", "--dimensions", f"Name=ModelId,Value={MODEL}", "--statistic", "Sum",
            "--period", "300", "--evaluation-periods", "2", "--threshold", "50", "--comparison-operator", "GreaterThanThreshold",
            "--alarm-actions", ONCALL)
        cli("put-metric-alarm", "--alarm-name", "bedrock-throttles", "--namespace", "AWS/Bedrock",
            "--metric-name", "InvocationThrottles", "--dimensions", f"Name=ModelId,Value={MODEL}", "--statistic", "Sum",
            "--period", "60", "--evaluation-periods", "1", "--threshold", "10", "--comparison-operator", "GreaterThanThreshold",
            "--alarm-actions", ONCALL, SLACK)
        # A fast one that recovers on its own (10-second periods, no data = not breaching).
        c = cw(s)
        c.put_metric_alarm(AlarmName="throttles-fast", Namespace="AWS/Bedrock", MetricName="InvocationThrottles",
                           Dimensions=[{"Name": "ModelId", "Value": MODEL}], Statistic="Sum", Period=10, EvaluationPeriods=1,
                           Threshold=3, ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching",
                           AlarmActions=[ONCALL], OKActions=[ONCALL])
        listed = {a["AlarmName"]: a for a in cli("describe-alarms")["MetricAlarms"]}
        assert set(listed) == {"bedrock-client-errors", "bedrock-throttles", "throttles-fast"}
        assert listed["bedrock-throttles"]["AlarmActions"] == [ONCALL, SLACK] and listed["bedrock-throttles"]["Threshold"] == 10
        # Real traffic: 11 throttled calls (and some good ones).
        b = s.bedrock(key="AKIAOPS000000000000", secret="ops-secret")
        for i in range(11):
            with pytest.raises(botocore.exceptions.ClientError):
                b.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": f"[mock:error=ThrottlingException] {i}"}]}])
            b.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": f"fine {i}"}]}])
        wait_for(lambda: state(c, "bedrock-throttles") == "ALARM", what="the throttles alarm")
        assert state(c, "bedrock-client-errors") in ("OK", "INSUFFICIENT_DATA")
        # The SNS-shaped notification (after one failed attempt) and the Slack message.
        sns = wait_for(lambda: [b for p, b in rx.bodies if p == "/sns" and "bedrock-throttles" in b.get("Message", "")], what="the SNS notification")
        note = sns[0]
        assert note["Type"] == "Notification" and note["TopicArn"] == ONCALL and note["Subject"].startswith('ALARM: "bedrock-throttles"')
        msg = json.loads(note["Message"])
        assert msg["NewStateValue"] == "ALARM" and msg["AlarmName"] == "bedrock-throttles" and msg["Trigger"]["MetricName"] == "InvocationThrottles"
        assert msg["Trigger"]["Threshold"] == 10 and msg["Trigger"]["Dimensions"] == [{"value": MODEL, "name": "ModelId"}]
        assert "Threshold Crossed" in msg["NewStateReason"]
        slack = wait_for(lambda: [b for p, b in rx.bodies if p == "/slack"], what="the Slack message")
        assert "ALARM" in slack[0]["text"] and "bedrock-throttles" in slack[0]["text"]
        # Every attempt is visible: the first failed (HTTP 500) and was retried.
        # (The failed one may be any of the first notifications; its retry follows after a
        # backoff, so wait for it.)
        def summaries():
            return [h["HistorySummary"] for h in c.describe_alarm_history(HistoryItemType="Action", MaxRecords=100)["AlarmHistoryItems"]]
        wait_for(lambda: any("Failed to execute" in x and "HTTP 500" in x for x in summaries())
                 and any("Successfully executed" in x and "attempt 2" in x for x in summaries()), what="the retried delivery")
        states = c.describe_alarm_history(AlarmName="bedrock-throttles", HistoryItemType="StateUpdate")["AlarmHistoryItems"]
        assert any("to ALARM" in h["HistorySummary"] for h in states)
        # The fast alarm fires, then recovers to OK when the throttles stop, and says so.
        wait_for(lambda: any(json.loads(b["Message"])["AlarmName"] == "throttles-fast" and json.loads(b["Message"])["NewStateValue"] == "ALARM"
                             for p, b in rx.bodies if p == "/sns"), timeout=60, what="the fast alarm")
        wait_for(lambda: state(c, "throttles-fast") == "OK", timeout=40, what="recovery to OK")
        wait_for(lambda: any(json.loads(b["Message"])["AlarmName"] == "throttles-fast" and json.loads(b["Message"])["NewStateValue"] == "OK"
                             for p, b in rx.bodies if p == "/sns"), what="the OK notification")
        # SetAlarmState and DeleteAlarms; readers may look but not change. A state set by hand
        # lasts until the next evaluation moves it (as in CloudWatch: the seed's alarms, with
        # no client errors, go back to INSUFFICIENT_DATA within 300 ms here), so the drill is
        # on an alarm whose evaluation keeps it: no data, treatMissingData "ignore".
        c.put_metric_alarm(AlarmName="pager-drill", Namespace="AWS/Bedrock", MetricName="InvocationServerErrors",
                           Dimensions=[{"Name": "ModelId", "Value": MODEL}], Statistic="Sum", Period=60, EvaluationPeriods=1,
                           Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="ignore")
        c.set_alarm_state(AlarmName="pager-drill", StateValue="ALARM", StateReason="testing the pager")
        assert state(c, "pager-drill") == "ALARM"
        reader = cw(s, "AKIAREADER000000000", "reader-secret")
        assert len(reader.describe_alarms()["MetricAlarms"]) == 4
        with pytest.raises(botocore.exceptions.ClientError) as e:
            reader.delete_alarms(AlarmNames=["throttles-fast"])
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        # Alarms and their state survive a restart: on disk at the stop, and read back at
        # the start (the evaluator, which runs at once, keeps the drill's state: no data).
        s.stop()
        with open(os.path.join(s.data_dir, "control", "alarms.json")) as f:
            stored = json.load(f)["alarms"]["pager-drill"]
        # (The reason is the hand-set one, or the evaluator's "state kept" once it ran.)
        assert stored["state"] == "ALARM", stored
        assert stored["reason"] == "testing the pager" or "state kept (treatMissingData: ignore)" in stored["reason"], stored
        s.start()
        assert state(cw(s), "pager-drill") == "ALARM"
        manual = [h for h in cw(s).describe_alarm_history(AlarmName="pager-drill", HistoryItemType="StateUpdate")["AlarmHistoryItems"]
                  if "testing the pager" in h["HistoryData"] or "to ALARM" in h["HistorySummary"]]
        assert manual, "the state set before the restart is in the history read after it"
        cw(s).delete_alarms(AlarmNames=["throttles-fast"])
        assert {a["AlarmName"] for a in cw(s).describe_alarms()["MetricAlarms"]} == {"bedrock-client-errors", "bedrock-throttles", "pager-drill"}
        # `logbook alarms` lists states and history offline.
        s.stop()
        out = subprocess.run([BIN, "alarms", "--data-dir", s.data_dir], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "bedrock-throttles" in out.stdout and "ALARM" in out.stdout and "Successfully executed" in out.stdout
    finally:
        rx.close()


@pytest.mark.parametrize("kw,code", [
    (dict(ComparisonOperator="Bigger"), "InvalidParameterValue"),
    (dict(Period=45), "InvalidParameterValue"),
    (dict(DatapointsToAlarm=5), "InvalidParameterValue"),
    (dict(TreatMissingData="sometimes"), "InvalidParameterValue"),
    (dict(AlarmActions=["arn:aws:sns:us-east-1:123456789012:undeclared"]), "InvalidParameterValue"),
])
def test_a_malformed_alarm_gets_the_apis_error_and_changes_nothing(make_server, kw, code):
    s = make_server(config("http://127.0.0.1:9"))
    c = cw(s)
    args = dict(AlarmName="bad", Namespace="AWS/Bedrock", MetricName="InvocationThrottles", Dimensions=[{"Name": "ModelId", "Value": MODEL}],
                Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=10, ComparisonOperator="GreaterThanThreshold")
    args.update(kw)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.put_metric_alarm(**args)
    assert e.value.response["Error"]["Code"] == code, e.value.response
    assert c.describe_alarms()["MetricAlarms"] == []


def test_declared_alarms_and_bad_declarations(tmp_path):
    from conftest import Server
    good = config("http://127.0.0.1:9") + f"""
[[alarms]]
name = "declared-throttles"
metric = "InvocationThrottles"
model_id = "{MODEL}"
statistic = "Sum"
period = 60
evaluation_periods = 1
threshold = 10
comparison = "GreaterThanThreshold"
alarm_actions = ["{ONCALL}"]
"""
    s = Server(tmp_path / "ok", good).start()
    try:
        c = cw(s)
        a = c.describe_alarms()["MetricAlarms"]
        assert [x["AlarmName"] for x in a] == ["declared-throttles"] and a[0]["StateValue"] in ("INSUFFICIENT_DATA", "OK")
        with pytest.raises(botocore.exceptions.ClientError):
            c.delete_alarms(AlarmNames=["declared-throttles"])
    finally:
        s.stop()
    for bad, why in [(good.replace('comparison = "GreaterThanThreshold"', 'comparison = "Bigger"'), "ComparisonOperator"),
                     (good.replace(f'alarm_actions = ["{ONCALL}"]', 'alarm_actions = ["arn:nope"]'), "not declared"),
                     (good.replace('url = "http://127.0.0.1:9/sns"', 'url = "ftp://x"'), "http")]:
        with pytest.raises(RuntimeError) as e:
            Server(tmp_path / "bad", bad).start()
        assert why in str(e.value)

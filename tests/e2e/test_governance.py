"""The built-in governance alarms ([governance]): logging turned off in a region, a call
to a model with no price; and budget warning thresholds notifying alarm actions. Each
fires at a local webhook receiver in the SNS notification shape."""

import json

import boto3
from botocore.config import Config as BotoConfig

from conftest import wait_records
from test_alarms import ONCALL, Receiver, config, cw, state, wait_for

MODEL = "amazon.nova-lite-v1:0"


def notified(rx, name, new_state):
    return any(p == "/sns" and "Message" in b and json.loads(b["Message"]).get("AlarmName") == name
               and json.loads(b["Message"]).get("NewStateValue") == new_state for p, b in rx.bodies)


def test_governance_alarms_and_budget_warnings_notify(make_server):
    rx = Receiver()
    try:
        s = make_server(config(rx.url) + f"""
[governance]
alarm_actions = ["{ONCALL}"]

[[budgets]]
name = "ops-daily"
request_metadata = "app=budgeted"
period = "day"
limit_usd = "0.0001"
warn_at = [10]
warn_actions = ["{ONCALL}"]
""")
        c = cw(s)
        names = {a["AlarmName"] for a in c.describe_alarms()["MetricAlarms"]}
        assert {"logbook-logging-stopped", "logbook-delivery-stalled", "logbook-unpriced-calls"} <= names
        assert {(m["Namespace"], m["MetricName"]) for m in c.list_metrics(Namespace="Logbook/Governance")["Metrics"]} == {
            ("Logbook/Governance", "UnpricedInvocations"), ("Logbook/Governance", "RegionsNotRecording"),
            ("Logbook/Governance", "StalledDestinationSeconds")}
        # Logging turned off in us-west-2: the region records nothing; the alarm fires.
        ctl = boto3.client("bedrock", endpoint_url=s.url, region_name="us-west-2", aws_access_key_id="AKIAOPS000000000000",
                           aws_secret_access_key="ops-secret", config=BotoConfig(retries={"total_max_attempts": 1}))
        ctl.delete_model_invocation_logging_configuration()
        wait_for(lambda: state(c, "logbook-logging-stopped") == "ALARM", what="the logging-stopped alarm")
        wait_for(lambda: notified(rx, "logbook-logging-stopped", "ALARM"), what="its notification")
        # Turned back on: OK, and notified.
        ctl.put_model_invocation_logging_configuration(loggingConfig={"s3Config": {"bucketName": "logbook-archive"}})
        wait_for(lambda: state(c, "logbook-logging-stopped") == "OK", what="recovery")
        wait_for(lambda: notified(rx, "logbook-logging-stopped", "OK"), what="the OK notification")
        # A call the catalog cannot price (no eu-west-3 price for Nova Lite).
        b = s.bedrock(region="eu-west-3", key="AKIAOPS000000000000", secret="ops-secret")
        b.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "unpriced"}]}])
        wait_for(lambda: state(c, "logbook-unpriced-calls") == "ALARM", what="the unpriced alarm")
        wait_for(lambda: notified(rx, "logbook-unpriced-calls", "ALARM"), what="its notification")
        assert state(c, "logbook-delivery-stalled") in ("OK", "INSUFFICIENT_DATA")
        # Budget warnings: priced calls pass 10% of the budget; the action is notified.
        us = s.bedrock(key="AKIAOPS000000000000", secret="ops-secret")
        for i in range(3):
            us.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": f"priced {i}"}]}],
                        requestMetadata={"app": "budgeted"}, inferenceConfig={"maxTokens": 100})
        note = wait_for(lambda: [b for p, b in rx.bodies if p == "/sns" and b["Subject"].startswith('Budget "ops-daily" passed 10%')],
                        what="the budget warning")
        body = json.loads(note[0]["Message"])
        assert body["BudgetName"] == "ops-daily" and body["ThresholdPercent"] == 10 and body["LimitUsd"] == "0.0001"
        # The attempt's outcome is written to the history once the receiver has answered,
        # so it may follow the body the receiver already holds: wait for it.
        wait_for(lambda: [h for h in c.describe_alarm_history(AlarmName="budget:ops-daily")["AlarmHistoryItems"]
                          if "Successfully executed" in h["HistorySummary"]],
                 what="the warning's delivery in the alarm history")
    finally:
        rx.close()

"""Scoped reads (issue #11 point 4): permissions name read actions and log groups (names or
ARNs, with globs) and a content level; a caller never reads a group it was not granted,
never another account's, and never more of a body than its level allows, whatever the
query says."""

import json
import subprocess
import time

import boto3
import pytest
import requests
from botocore.config import Config as BotoConfig

from conftest import BIN, Server

CONFIG = """
[server]
account_id = "123456789012"

[[principals]]
arn = "arn:aws:iam::123456789012:user/app"
access_key_id = "AKIAAPP000000000000"
secret_access_key = "app-secret"
permissions = ["role:app"]

[[principals]]
arn = "arn:aws:iam::123456789012:user/analyst"
access_key_id = "AKIAANALYST00000000"
secret_access_key = "analyst-secret"
api_key = "sk-analyst"
permissions = ["role:analyst"]

[[principals]]
arn = "arn:aws:iam::123456789012:user/finops"
access_key_id = "AKIAFINOPS000000000"
secret_access_key = "finops-secret"
api_key = "sk-finops"
permissions = ["logs:read", "content:metadata"]

[[principals]]
arn = "arn:aws:iam::123456789012:user/team-a"
access_key_id = "AKIATEAMA0000000000"
secret_access_key = "team-a-secret"
permissions = ["logs:FilterLogEvents:/team/a*", "logs:DescribeLogGroups:arn:aws:logs:*:123456789012:log-group:/team/*"]

[[principals]]
arn = "arn:aws:iam::123456789012:user/other-account"
access_key_id = "AKIAOTHER0000000000"
secret_access_key = "other-secret"
permissions = ["logs:*:arn:aws:logs:*:999999999999:log-group:*"]

[[principals]]
arn = "arn:aws:iam::123456789012:user/auditor"
access_key_id = "AKIAAUDITOR00000000"
secret_access_key = "auditor-secret"
api_key = "sk-auditor"
permissions = ["role:auditor"]

[logging_config.default]
cloudWatchConfig = { logGroupName = "/team/a/calls", roleArn = "arn:aws:iam::123456789012:role/x" }
"""

GROUP = "/team/a/calls"
PROMPT = "contact jane@example.com about card 4111 1111 1111 1111"


def client(s, service, key, secret):
    return boto3.client(service, endpoint_url=s.url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=BotoConfig(retries={"total_max_attempts": 1}))


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data", CONFIG).start()
    rt = client(s, "bedrock-runtime", "AKIAAPP000000000000", "app-secret")
    rt.converse(modelId="m", messages=[{"role": "user", "content": [{"text": PROMPT}]}])
    auditor = client(s, "logs", "AKIAAUDITOR00000000", "auditor-secret")
    deadline = time.time() + 20
    while not auditor.filter_log_events(logGroupName=GROUP)["events"]:
        assert time.time() < deadline
        time.sleep(0.2)
    yield s
    s.stop()


def denied(call):
    with pytest.raises(Exception) as e:
        call()
    assert getattr(e.value, "response", {}).get("Error", {}).get("Code") == "AccessDeniedException", e.value
    return e.value.response["Error"]["Message"]


def prompt_of(message):
    return json.loads(message)["input"]["inputBodyJson"]["messages"][0]["content"][0]["text"]


def test_content_levels_hold_whatever_the_query_says(server):
    s = server
    auditor = client(s, "logs", "AKIAAUDITOR00000000", "auditor-secret")
    assert prompt_of(auditor.filter_log_events(logGroupName=GROUP)["events"][0]["message"]) == PROMPT

    analyst = client(s, "logs", "AKIAANALYST00000000", "analyst-secret")
    msg = analyst.filter_log_events(logGroupName=GROUP)["events"][0]["message"]
    assert prompt_of(msg) == "contact [EMAIL] about card [CARD]" and "jane@" not in msg
    # A query that filters on the raw text finds nothing: masking happens before the plan.
    q = analyst.start_query(logGroupName=GROUP, startTime=0, endTime=int(time.time()) + 60,
                            queryString="filter input.inputBodyJson.messages.0.content.0.text like /jane@example/ | stats count(*) as n")
    while (r := analyst.get_query_results(queryId=q["queryId"]))["status"] in ("Scheduled", "Running"):
        time.sleep(0.1)
    assert r["results"] == [] or r["results"][0][0]["value"] == "0", r["results"]
    # SQL over the bodies, aliased: still masked; the raw archive is not there for it.
    rows = requests.post(s.url + "/logbook/query", headers={"Authorization": "Bearer sk-analyst"},
                         json={"query": "SELECT input_body_json AS x FROM invocations", "language": "sql",
                               "logGroups": [GROUP], "start": 0}).json()["rows"]
    assert "[EMAIL]" in rows[0][0] and "jane@" not in rows[0][0]
    r = requests.post(s.url + "/logbook/query", headers={"Authorization": "Bearer sk-analyst"},
                      json={"query": "SELECT count(*) FROM archive", "language": "sql", "logGroups": [GROUP], "start": 0})
    assert r.status_code == 400 and "archive" in r.text

    finops = client(s, "logs", "AKIAFINOPS000000000", "finops-secret")
    rec = json.loads(finops.filter_log_events(logGroupName=GROUP)["events"][0]["message"])
    assert "inputBodyJson" not in rec["input"] and "outputBodyJson" not in rec.get("output", {})
    assert rec["modelId"] == "m" and rec["identity"]["arn"].endswith("user/app") and "inputTokenCount" in rec["input"]
    rows = requests.post(s.url + "/logbook/query", headers={"Authorization": "Bearer sk-finops"},
                         json={"query": "SELECT input_body_json, model_id FROM invocations", "language": "sql",
                               "logGroups": [GROUP], "start": 0}).json()["rows"]
    assert rows == [[None, "m"]], rows


def test_actions_groups_and_accounts_are_scoped(server):
    s = server
    team = client(s, "logs", "AKIATEAMA0000000000", "team-a-secret")
    assert len(team.filter_log_events(logGroupName=GROUP)["events"]) == 1
    msg = denied(lambda: team.filter_log_events(logGroupName="/aws/bedrock/modelinvocations"))
    assert "arn:aws:logs:us-east-1:123456789012:log-group:/aws/bedrock/modelinvocations" in msg
    denied(lambda: team.start_query(logGroupName=GROUP, startTime=0, endTime=1, queryString="fields @timestamp"))
    names = [g["logGroupName"] for g in team.describe_log_groups()["logGroups"]]
    assert names == [GROUP], names

    other = client(s, "logs", "AKIAOTHER0000000000", "other-secret")
    denied(lambda: other.filter_log_events(logGroupName=GROUP))
    assert other.describe_log_groups()["logGroups"] == []

    app = client(s, "logs", "AKIAAPP000000000000", "app-secret")
    denied(lambda: app.filter_log_events(logGroupName=GROUP))


def test_unknown_permissions_are_refused_with_the_known_ones(tmp_path):
    for perm in ["logs:Delete:/x", "content:partial", "role:root", "logs:FilterLogEvents:"]:
        path = tmp_path / "c.toml"
        path.write_text(f'[[principals]]\narn = "arn:aws:iam::1:user/x"\napi_key = "k"\npermissions = ["{perm}"]\n')
        r = subprocess.run([BIN, "validate", "--offline", str(path)], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and f'unknown permission "{perm}"' in r.stderr + r.stdout, (perm, r.stderr)
        assert "role:admin|auditor|analyst|app" in r.stderr + r.stdout

"""Budgets that hold, through the real clients: a call that would pass a budget is refused
before its model is called (Bedrock ThrottlingException, OpenAI 429) and the refusal is
recorded and counted; 50 concurrent calls at a nearly spent budget overspend by at most
their reservations; the spend survives kill -9; crossing a warning threshold is a trail
event; bad budgets are config errors."""

import concurrent.futures
import json
import subprocess
from decimal import Decimal

import botocore.exceptions
import openai
import pytest
import requests

from conftest import BIN, Server, read_records, wait_records

MODEL = "amazon.nova-lite-v1:0"


def config(limit, warn="[50]", period="day"):
    return f"""
[server]
account_id = "123456789012"

[[principals]]
arn = "arn:aws:iam::123456789012:user/alice"
access_key_id = "AKIAALICE0000000000"
secret_access_key = "alice-secret"
api_key = "sk-alice-key"
tags = {{ team = "search" }}

[[principals]]
arn = "arn:aws:iam::123456789012:user/bob"
access_key_id = "AKIABOB000000000000"
secret_access_key = "bob-secret"
tags = {{ team = "ads" }}

[[principals]]
arn = "arn:aws:iam::123456789012:user/auditor"
api_key = "sk-auditor"
permissions = ["logs:read"]

[[budgets]]
name = "search-{period}"
principal_tag = "team=search"
period = "{period}"
limit_usd = "{limit}"
warn_at = {warn}
"""


def alice(s):
    return s.bedrock(key="AKIAALICE0000000000", secret="alice-secret")


def call(client, i):
    return client.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": f"question {i}"}]}],
                           inferenceConfig={"maxTokens": 100})


def status(s):
    r = requests.get(s.url + "/logbook/budgets", headers={"Authorization": "Bearer sk-auditor"}, timeout=10)
    assert r.status_code == 200, r.text
    return {b["name"]: b for b in r.json()["budgets"]}


def spent_in_records(recs):
    return sum(Decimal(r["logbook"]["cost"]) for r in recs
               if (r["logbook"].get("principalTags") or {}).get("team") == "search" and r["logbook"].get("cost"))


def test_a_budget_refuses_before_the_model_and_records_the_refusal(make_server):
    s = make_server(config("0.00005"))
    c = alice(s)
    served, refusal = 0, None
    for i in range(60):
        try:
            call(c, i)
            served += 1
        except botocore.exceptions.ClientError as e:
            refusal = e
            break
    assert refusal is not None and served >= 2, served
    err = refusal.response
    assert err["Error"]["Code"] == "ThrottlingException" and err["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert "search-day" in err["Error"]["Message"] and "the call was not made" in err["Error"]["Message"]
    # Other teams are not held back by it.
    call(s.bedrock(key="AKIABOB000000000000", secret="bob-secret"), 0)
    # The OpenAI API refuses the same caller with a 429 the SDK understands.
    with pytest.raises(openai.RateLimitError) as e:
        s.openai(key="sk-alice-key").chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], max_tokens=100)
    assert e.value.status_code == 429 and e.value.code == "insufficient_quota" and "search-day" in str(e.value)
    # A model the catalog cannot price cannot be held by a budget: refused, saying so.
    with pytest.raises(openai.RateLimitError) as e:
        s.openai(key="sk-alice-key").chat.completions.create(model="gpt-unknown-1", messages=[{"role": "user", "content": "x"}])
    assert "cannot hold" in str(e.value) and "[pricing]" in str(e.value)
    recs = wait_records(s, served + 4)
    refused = [r for r in recs if r.get("errorCode") == "ThrottlingException"]
    assert len(refused) == 3 and all(r["logbook"]["cost"] == "0" for r in refused)
    assert all(r["logbook"].get("provider") for r in refused)  # routed, then refused before the model
    spent = spent_in_records(recs)
    assert Decimal(0) < spent <= Decimal("0.00005")
    b = status(s)["search-day"]
    assert Decimal(b["spent"]) == spent and b["reserved"] == "0" and b["limit"] == "0.00005"
    # Counted as throttles.
    m = requests.get(s.url + "/metrics", headers={"Authorization": "Bearer sk-auditor"}, timeout=10).text
    assert 'bedrock_invocation_throttles_total{model_id="amazon.nova-lite-v1:0"} 1' in m
    assert 'bedrock_invocation_throttles_total{model_id="gpt-4o-mini"} 1' in m


def test_fifty_concurrent_calls_overspend_at_most_their_reservations(make_server):
    limit = Decimal("0.0003")
    s = make_server(config(str(limit)))

    def one(i):
        try:
            call(alice(s), i)
            return "ok"
        except botocore.exceptions.ClientError as e:
            return e.response["Error"]["Code"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    ok = results.count("ok")
    assert ok + results.count("ThrottlingException") == 50, results
    assert 0 < ok < 50, results
    recs = wait_records(s, 50)
    spent = spent_in_records(recs)
    # Every estimate (input size / 4 + maxTokens) is at least the call's actual cost, so
    # the in-flight reservations cover every call admitted: the budget holds exactly.
    assert spent <= limit, (spent, ok)
    assert Decimal(status(s)["search-day"]["spent"]) == spent


def test_spend_survives_kill_9_and_a_threshold_is_a_trail_event(make_server):
    s = make_server(config("0.0001", warn="[10, 50]"))
    c = alice(s)
    for i in range(6):
        call(c, i)
    before = Decimal(status(s)["search-day"]["spent"])
    assert before > 0
    s.kill9()
    s.start()
    assert Decimal(status(s)["search-day"]["spent"]) == before
    # More spend after the restart adds to it; a clean stop keeps it too.
    call(alice(s), 99)
    after = Decimal(status(s)["search-day"]["spent"])
    assert after > before
    s.stop()
    s.start()
    assert Decimal(status(s)["search-day"]["spent"]) == after
    assert spent_in_records(wait_records(s, 7)) == after
    s.stop()
    out = subprocess.run([BIN, "trail", "--data-dir", s.data_dir, "--config", s.config_path, "--format", "json",
                          "--event-name", "BudgetThresholdCrossed"], capture_output=True, text=True, check=True).stdout
    events = [json.loads(l) for l in out.splitlines() if l.strip()]
    crossed = sorted(e["requestParameters"]["thresholdPercent"] for e in events)
    assert crossed[:1] == [10] and all(e["requestParameters"]["budget"] == "search-day" for e in events), events


@pytest.mark.parametrize("budget,why", [
    ('[[budgets]]\nname = "b"\nlimit_usd = "1"\n', "exactly one of"),
    ('[[budgets]]\nname = "b"\nmodel = "x"\nprincipal = "y"\nlimit_usd = "1"\n', "exactly one of"),
    ('[[budgets]]\nname = "b"\nmodel = "x"\nlimit_usd = "abc"\n', "limit_usd"),
    ('[[budgets]]\nname = "b"\nmodel = "x"\nlimit_usd = "0"\n', "limit_usd"),
    ('[[budgets]]\nname = "b"\nmodel = "x"\nlimit_usd = "1"\nperiod = "year"\n', "period"),
    ('[[budgets]]\nname = "b"\nmodel = "x"\nlimit_usd = "1"\nwarn_at = [0]\n', "warn_at"),
    ('[[budgets]]\nname = "b"\nprincipal_tag = "team"\nlimit_usd = "1"\n', "key=value"),
    ('[[budgets]]\nname = "b"\nmodel = "x"\nlimit_usd = "1"\n[[budgets]]\nname = "b"\nmodel = "y"\nlimit_usd = "1"\n', "declared twice"),
])
def test_a_bad_budget_is_a_config_error(tmp_path, budget, why):
    with pytest.raises(RuntimeError) as e:
        Server(tmp_path / "d", budget).start()
    assert why in str(e.value)

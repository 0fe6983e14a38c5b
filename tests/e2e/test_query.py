"""Log groups and queries with real clients: boto3's `logs` client and the AWS CLI against
the CloudWatch Logs API, the `logbook query` / `logbook import` commands, and a
differential check of Logbook's answers (Insights and SQL) against DuckDB's over the same
Bedrock-format files."""

import gzip
import json
import os
import random
import subprocess
import time
import uuid

import boto3
import botocore.exceptions
import duckdb
import pytest
import requests
from botocore.config import Config as BotoConfig

from conftest import BIN, Server

GROUP = "/aws/bedrock/modelinvocations"
MODELS = ["amazon.nova-lite-v1:0", "anthropic.claude-3-haiku-20240307-v1:0", "meta.llama3-8b-instruct-v1:0"]


def logs(server):
    a = server.admin
    return boto3.client("logs", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=a["accessKeyId"], aws_secret_access_key=a["secretAccessKey"],
                        config=BotoConfig(retries={"total_max_attempts": 1}))


def insights(client, query, group=GROUP, start=0, end=None, **kw):
    end = end if end is not None else int(time.time()) + 3600
    qid = client.start_query(logGroupName=group, startTime=start, endTime=end, queryString=query, **kw)["queryId"]
    for _ in range(200):
        r = client.get_query_results(queryId=qid)
        if r["status"] not in ("Scheduled", "Running"):
            return r
        time.sleep(0.05)
    raise AssertionError("query did not finish")


def rows(result):
    return [{c["field"]: c["value"] for c in row} for row in result["results"]]


def cli(*args, data_dir):
    p = subprocess.run([BIN, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p


def test_logs_api_with_boto3(server):
    c = server.bedrock()
    served = {}
    ptr_rid = None
    for n in range(9):
        model = MODELS[n % 3]
        r = c.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "tell me " * (n + 1)}]}],
                       requestMetadata={"team": ["search", "ads"][n % 2]})
        a, b = served.get(model, (0, 0))
        served[model] = (a + r["usage"]["inputTokens"], b + r["usage"]["outputTokens"])
        ptr_rid = r["ResponseMetadata"]["RequestId"]
    lg = logs(server)
    groups = lg.describe_log_groups()["logGroups"]
    assert [g["logGroupName"] for g in groups] == [GROUP]
    assert groups[0]["arn"].endswith(f":log-group:{GROUP}:*") and "retentionInDays" not in groups[0]

    # Every record is queryable right after its call (the in-memory tail), no flush needed.
    r = insights(lg, "stats sum(inputTokenCount) as totalInput, sum(outputTokenCount) as totalOutput, count(*) as calls by modelId")
    assert r["status"] == "Complete" and r["queryLanguage"] == "CWLI"
    got = {row["modelId"]: (int(row["totalInput"]), int(row["totalOutput"])) for row in rows(r)}
    assert got == served
    assert r["statistics"]["recordsScanned"] == 9.0

    r = insights(lg, "fields @timestamp, modelId, requestId, input.inputTokenCount | filter requestId = '%s'" % ptr_rid)
    (row,) = rows(r)
    assert set(row) == {"@timestamp", "modelId", "requestId", "input.inputTokenCount", "@ptr"}
    rec = lg.get_log_record(logRecordPointer=row["@ptr"])["logRecord"]
    assert rec["requestId"] == ptr_rid and json.loads(rec["@message"])["requestId"] == ptr_rid
    assert rec["@logStream"] == "aws/bedrock/modelinvocations"

    ev = lg.filter_log_events(logGroupName=GROUP, filterPattern='{ $.modelId = "%s" }' % MODELS[0])["events"]
    assert len(ev) == 3 and all(json.loads(e["message"])["modelId"] == MODELS[0] for e in ev)
    assert ev == sorted(ev, key=lambda e: e["timestamp"])
    ev = lg.filter_log_events(logGroupName=GROUP, filterPattern='"tell me tell me tell me tell me tell me tell me tell me tell me tell me"')["events"]
    assert len(ev) == 1
    page = lg.filter_log_events(logGroupName=GROUP, limit=4)
    assert len(page["events"]) == 4 and page["nextToken"]
    rest = lg.filter_log_events(logGroupName=GROUP, limit=10, nextToken=page["nextToken"])
    assert len(rest["events"]) == 5 and "nextToken" not in rest
    got = lg.get_log_events(logGroupName=GROUP, logStreamName="aws/bedrock/modelinvocations", startFromHead=True)
    assert len(got["events"]) == 9 and got["nextForwardToken"]

    # Group management and retention.
    lg.create_log_group(logGroupName="/team/search")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lg.create_log_group(logGroupName="/team/search")
    assert e.value.response["Error"]["Code"] == "ResourceAlreadyExistsException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lg.put_retention_policy(logGroupName="/team/search", retentionInDays=2)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    lg.put_retention_policy(logGroupName="/team/search", retentionInDays=30)
    g = lg.describe_log_groups(logGroupNamePrefix="/team/")["logGroups"]
    assert [(x["logGroupName"], x["retentionInDays"]) for x in g] == [("/team/search", 30)]
    lg.delete_retention_policy(logGroupName="/team/search")
    assert "retentionInDays" not in lg.describe_log_groups(logGroupNamePrefix="/team/")["logGroups"][0]
    lg.delete_log_group(logGroupName="/team/search")
    for call, code in [
        (lambda: lg.delete_log_group(logGroupName="/team/search"), "ResourceNotFoundException"),
        (lambda: lg.start_query(logGroupName="/nope", startTime=0, endTime=1, queryString="fields @message"), "ResourceNotFoundException"),
        (lambda: lg.start_query(logGroupName=GROUP, startTime=0, endTime=1, queryString="fields a || limit 3"), "MalformedQueryException"),
        (lambda: lg.get_query_results(queryId="nope"), "ResourceNotFoundException"),
        (lambda: lg.create_log_group(logGroupName="bad name"), "InvalidParameterException"),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == code
    # StopQuery: only a running query can be stopped.
    done = lg.start_query(logGroupName=GROUP, startTime=0, endTime=2**31, queryString="fields @message")["queryId"]
    while lg.get_query_results(queryId=done)["status"] == "Running":
        time.sleep(0.02)
    for qid, code in [(done, "InvalidParameterException"), ("no-such-query", "ResourceNotFoundException")]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lg.stop_query(queryId=qid)
        assert e.value.response["Error"]["Code"] == code
    # A semantic error is reported through the query's status.
    r = insights(lg, "stats nosuchfn(x)")
    assert r["status"] == "Failed"
    # Log group management is audited in the trail, failures included.
    out = subprocess.run([BIN, "trail", "--data-dir", server.data_dir, "--format", "json"], capture_output=True, text=True, check=True).stdout
    evs = [json.loads(l) for l in out.splitlines() if '"logs.amazonaws.com"' in l]
    names = [(e["eventName"], e.get("errorCode")) for e in evs]
    assert ("PutRetentionPolicy", None) in names and ("CreateLogGroup", "ResourceAlreadyExistsException") in names
    put = next(e for e in evs if e["eventName"] == "PutRetentionPolicy" and not e.get("errorCode"))
    assert put["requestParameters"] == {"logGroupName": "/team/search", "retentionInDays": 30}
    assert put["userIdentity"]["arn"] == server.admin["arn"]



def test_log_event_paging_is_stable_and_follows_the_service(server):
    """21 events in the same second, paged 3 at a time by boto3's paginators: every event
    once, in one order on every call (issue #12: offsets over a sort that ties lost 8 of
    21). GetLogEvents without startFromHead returns the last events, oldest first, and
    pages backward; DescribeLogStreams lists the one stream."""
    c = server.bedrock()
    ids = []
    for i in range(21):
        r = c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"event {i}"}]}])
        ids.append(r["ResponseMetadata"]["RequestId"])
    lg = logs(server)
    stream = "aws/bedrock/modelinvocations"

    def rid(e):
        return json.loads(e["message"])["requestId"]

    pages = list(lg.get_paginator("filter_log_events").paginate(logGroupName=GROUP, PaginationConfig={"PageSize": 3}))
    got = [rid(e) for p in pages for e in p["events"]]
    assert sorted(got) == sorted(ids) and len(got) == 21, (len(got), len(set(got)))
    assert all(len(p["events"]) <= 3 for p in pages)
    # The same order on every call, ties included: by timestamp, then request id.
    again = [rid(e) for e in lg.filter_log_events(logGroupName=GROUP)["events"]]
    assert again == got
    ts = [(e["timestamp"], rid(e)) for p in pages for e in p["events"]]
    assert ts == sorted(ts)

    # GetLogEvents from the head, forward, 3 at a time, until the token repeats (how the
    # AWS SDKs' paginators for it stop; boto3 has none).
    fwd, kw = [], {"startFromHead": True}
    for _ in range(20):
        p = lg.get_log_events(logGroupName=GROUP, logStreamName=stream, limit=3, **kw)
        fwd += [rid(e) for e in p["events"]]
        if kw.get("nextToken") == p["nextForwardToken"]:
            break
        kw = {"nextToken": p["nextForwardToken"]}
    assert fwd == got
    # Without startFromHead: the last 3, oldest first (as the service and moto do).
    tail = lg.get_log_events(logGroupName=GROUP, logStreamName=stream, limit=3)
    assert [rid(e) for e in tail["events"]] == got[-3:]
    # ... and backward from there, page by page, to the head; then the token stays.
    back, token = [], tail["nextBackwardToken"]
    for _ in range(10):
        p = lg.get_log_events(logGroupName=GROUP, logStreamName=stream, limit=3, nextToken=token)
        if not p["events"]:
            assert p["nextBackwardToken"] == lg.get_log_events(logGroupName=GROUP, logStreamName=stream, limit=3,
                                                               nextToken=p["nextBackwardToken"])["nextBackwardToken"]
            break
        back = [rid(e) for e in p["events"]] + back
        token = p["nextBackwardToken"]
    assert back + [rid(e) for e in tail["events"]] == got
    # Forward from the tail: nothing newer, the same token back.
    end = lg.get_log_events(logGroupName=GROUP, logStreamName=stream, nextToken=tail["nextForwardToken"])
    assert end["events"] == [] and end["nextForwardToken"] == tail["nextForwardToken"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lg.get_log_events(logGroupName=GROUP, logStreamName=stream, nextToken="x/1")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"

    # DescribeLogStreams: the one stream, with its first and last event times.
    (s,) = lg.describe_log_streams(logGroupName=GROUP)["logStreams"]
    assert s["logStreamName"] == stream and s["arn"].endswith(f":log-group:{GROUP}:log-stream:{stream}")
    assert s["firstEventTimestamp"] == pages[0]["events"][0]["timestamp"]
    assert s["lastEventTimestamp"] == pages[-1]["events"][-1]["timestamp"]
    assert lg.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix="other")["logStreams"] == []
    assert len(list(lg.get_paginator("describe_log_streams").paginate(logGroupName=GROUP))) == 1
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lg.describe_log_streams(logGroupName="/no/such/group")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    # The AWS CLI lists it too.
    a = server.admin
    env = dict(os.environ, AWS_ACCESS_KEY_ID=a["accessKeyId"], AWS_SECRET_ACCESS_KEY=a["secretAccessKey"],
               AWS_DEFAULT_REGION="us-east-1")
    import sys
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    p = subprocess.run([aws, "logs", "describe-log-streams", "--log-group-name", GROUP, "--endpoint-url", server.url],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["logStreams"][0]["logStreamName"] == stream

def test_logging_config_routes_records_to_a_created_group(server):
    lg = logs(server)
    lg.create_log_group(logGroupName="/team/ads")
    a = server.admin
    ctl = boto3.client("bedrock", endpoint_url=server.url, region_name="us-east-1",
                       aws_access_key_id=a["accessKeyId"], aws_secret_access_key=a["secretAccessKey"])
    ctl.put_model_invocation_logging_configuration(loggingConfig={
        "cloudWatchConfig": {"logGroupName": "/team/ads", "roleArn": "arn:aws:iam::123456789012:role/BedrockLogs"}})
    r = server.bedrock().converse(modelId=MODELS[0], messages=[{"role": "user", "content": [{"text": "hi"}]}])
    rid = r["ResponseMetadata"]["RequestId"]
    got = rows(insights(lg, "fields requestId", group="/team/ads"))
    assert [x["requestId"] for x in got] == [rid]
    assert rid not in [x["requestId"] for x in rows(insights(lg, "fields requestId"))]


def test_aws_cli_start_query(server, tmp_path):
    server.bedrock().converse(modelId=MODELS[1], messages=[{"role": "user", "content": [{"text": "hello"}]}])
    env = dict(os.environ, AWS_ACCESS_KEY_ID=server.admin["accessKeyId"], AWS_SECRET_ACCESS_KEY=server.admin["secretAccessKey"],
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    aws = os.path.join(os.path.dirname(os.path.realpath(__import__("sys").executable)), "aws")

    def run(*args):
        p = subprocess.run([aws, "--endpoint-url", server.url, "--output", "json", "logs", *args], capture_output=True, text=True, env=env)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    qid = run("start-query", "--log-group-name", GROUP, "--start-time", "0", "--end-time", str(int(time.time()) + 60),
              "--query-string", "stats count(*) as n by modelId")["queryId"]
    for _ in range(100):
        r = run("get-query-results", "--query-id", qid)
        if r["status"] == "Complete":
            break
        time.sleep(0.05)
    assert r["results"] == [[{"field": "modelId", "value": MODELS[1]}, {"field": "n", "value": "1"}]]
    assert run("describe-log-groups")["logGroups"][0]["logGroupName"] == GROUP


def test_query_cli_sees_flushed_and_unflushed_records(make_server):
    s = make_server()
    c = s.bedrock()
    for n in range(4):
        c.converse(modelId=MODELS[n % 2], messages=[{"role": "user", "content": [{"text": "x" * (n + 1)}]}])
    s.stop()  # graceful: the tail is flushed to Parquet
    parquet = [f for _, _, fs in os.walk(os.path.join(s.data_dir, "store")) for f in fs if f.endswith(".parquet")]
    assert parquet
    # SQL's `archive` table reads the delivered Bedrock-format objects directly.
    csv = cli("query", "--sql", "--format", "csv", "SELECT count(*) AS n, count(DISTINCT model_id) AS m FROM archive", data_dir=s.data_dir).stdout
    assert csv.splitlines() == ["n,m", "4,2"]
    s.start()
    c = s.bedrock()
    c.converse(modelId=MODELS[2], messages=[{"role": "user", "content": [{"text": "after restart"}]}])
    s.kill9()  # the last record is only in the journal now
    out = cli("query", "--format", "json", "stats count(*) as n by modelId | sort modelId asc", data_dir=s.data_dir).stdout
    got = {json.loads(l)["modelId"]: json.loads(l)["n"] for l in out.splitlines()}
    assert got == {MODELS[0]: "2", MODELS[1]: "2", MODELS[2]: "1"}
    table = cli("query", "fields modelId, input.inputTokenCount | sort @timestamp asc | limit 2", data_dir=s.data_dir).stdout
    assert "modelId" in table.splitlines()[0] and "(2 rows;" in table
    csv = cli("query", "--sql", "--format", "csv", "SELECT count(*) AS n FROM invocations", data_dir=s.data_dir).stdout
    assert csv.splitlines() == ["n", "5"]
    # Time ranges: --since, and --start/--end (a day with nothing in it).
    out = cli("query", "--since", "1h", "--format", "csv", "stats count(*) as n", data_dir=s.data_dir).stdout
    assert out.splitlines() == ["n", "5"]
    out = cli("query", "--start", "2000-01-01", "--end", "2000-01-02", "--format", "csv", "stats count(*) as n", data_dir=s.data_dir).stdout
    assert out.splitlines() == ["n", "0"]
    # A restart after the crash delivers the journal's record into the store exactly once.
    s.start()
    r = rows(insights(logs(s), "stats count(*) as n"))
    assert r == [{"n": "5"}]
    s.stop()
    p = subprocess.run([BIN, "query", "--data-dir", s.data_dir, "filter x like"], capture_output=True, text=True)
    assert p.returncode == 1 and "line 1, column 14" in p.stderr


def test_token_stats_of_flushed_files_come_from_their_rollups(make_server):
    """Once records are in store files, a token question over boto3 is answered from the
    files' rollups (nothing read) and says what the calls used, to the token."""
    s = make_server()
    c = s.bedrock()
    served = {}
    for n in range(9):
        model = MODELS[n % 3]
        r = c.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "count me " * (n + 2)}]}])
        a, b, k = served.get(model, (0, 0, 0))
        served[model] = (a + r["usage"]["inputTokens"], b + r["usage"]["outputTokens"], k + 1)
    s.stop()  # graceful: the tail is flushed to Parquet, with its rollup
    s.start()
    lg = logs(s)
    now = int(time.time())
    q = "stats sum(inputTokenCount) as i, sum(outputTokenCount) as o, count(*) as n by modelId | sort n desc"
    r = insights(lg, q, start=now - 3600, end=now + 3600)
    assert r["status"] == "Complete"
    got = {row["modelId"]: (int(row["i"]), int(row["o"]), int(row["n"])) for row in rows(r)}
    assert got == served
    assert r["statistics"]["recordsScanned"] == 0.0, r["statistics"]
    assert r["statistics"]["recordsMatched"] == 9.0, r["statistics"]
    # By hour, from the rollup's 15-minute buckets.
    r = insights(lg, "stats count(*) as n, sum(outputTokenCount) as o by bin(1h)", start=now - 3600, end=now + 3600)
    assert sum(int(row["n"]) for row in rows(r)) == 9
    assert sum(int(row["o"]) for row in rows(r)) == sum(v[1] for v in served.values())
    assert r["statistics"]["recordsScanned"] == 0.0
    # A question the rollups do not hold reads the records, and agrees.
    r = insights(lg, "filter outputTokenCount >= 0 | stats sum(inputTokenCount) as i by modelId", start=now - 3600, end=now + 3600)
    assert {row["modelId"]: int(row["i"]) for row in rows(r)} == {m: v[0] for m, v in served.items()}
    assert r["statistics"]["recordsScanned"] == 9.0


def generate(folder, n, seed=7, bad_lines=True):
    """Bedrock-layout archive objects with realistic variety, one offloaded body, one malformed line."""
    rnd = random.Random(seed)
    arns = [f"arn:aws:sts::123456789012:assumed-role/{r}/s{i}" for i, r in enumerate(["ci-runner", "analytics", "batch", "web"])]
    recs = []
    base = 1_741_651_200  # 2025-03-11T00:00:00Z
    for i in range(n):
        t = base + rnd.randint(0, 3 * 86400)
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        prompt = " ".join(rnd.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(rnd.randint(3, 40)))
        if i == 17:
            prompt += " the rare-phrase appears once"
        rec = {"schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "timestamp": ts, "accountId": "123456789012",
               "identity": {"arn": rnd.choice(arns)}, "region": "us-east-1", "requestId": str(uuid.UUID(int=rnd.getrandbits(128))),
               "operation": rnd.choice(["Converse", "ConverseStream", "InvokeModel"]), "modelId": rnd.choice(MODELS),
               "input": {"inputContentType": "application/json", "inputTokenCount": rnd.randint(1, 5000),
                         "inputBodyJson": {"messages": [{"role": "user", "content": [{"text": prompt}]}]}},
               "output": {"outputContentType": "application/json", "outputTokenCount": rnd.randint(1, 3000),
                          "outputBodyJson": {"stopReason": "end_turn", "metrics": {"latencyMs": rnd.randint(50, 9000)}}},
               "requestMetadata": {"team": f"team-{rnd.randint(0, 5)}"}}
        if rnd.random() < 0.05:
            rec["errorCode"] = rnd.choice(["ThrottlingException", "ValidationException"])
        recs.append(rec)
    by_hour = {}
    for r in recs:
        by_hour.setdefault(r["timestamp"][:13], []).append(r)
    prefix = "AWSLogs/123456789012/BedrockModelInvocationLogs/us-east-1"
    for k, (hour, rs) in enumerate(sorted(by_hour.items())):
        y, m, d, h = hour[0:4], hour[5:7], hour[8:10], hour[11:13]
        path = os.path.join(folder, prefix, y, m, d, h)
        os.makedirs(path, exist_ok=True)
        lines = []
        for r in rs:
            line = dict(r)
            if r is recs[3]:
                # A body offloaded to data/, as Bedrock does above 100 KB.
                key = f"{prefix}/{y}/{m}/{d}/{h}/data/{r['requestId']}_input.json.gz"
                os.makedirs(os.path.join(folder, os.path.dirname(key)), exist_ok=True)
                with gzip.open(os.path.join(folder, key), "wt") as f:
                    json.dump(r["input"]["inputBodyJson"], f)
                line = json.loads(json.dumps(r))
                del line["input"]["inputBodyJson"]
                line["input"]["inputBodyS3Path"] = f"s3://archive/{key}"
            lines.append(json.dumps(line))
        if bad_lines and k == 0:
            lines.insert(1, "{not json")
        with gzip.open(os.path.join(path, f"{y}{m}{d}T{h}0000000Z_{k:016x}.json.gz"), "wt") as f:
            f.write("\n".join(lines) + "\n")
    return recs


def test_import_is_idempotent_and_answers_match_duckdb(tmp_path):
    src = tmp_path / "bucket"
    recs = generate(str(src), 3000)
    data = tmp_path / "data"
    p = cli("import", str(src), "--log-group", "imported", data_dir=data)
    assert f"imported {len(recs)} records into imported" in p.stdout and "1 malformed" in p.stdout
    assert ".json.gz:2:" in p.stderr, p.stderr  # file and line of the malformed line
    assert "records/s" in p.stderr  # the progress line
    p = cli("import", str(src), "--log-group", "imported", data_dir=data)
    assert "imported 0 records" in p.stdout and f"{len(recs)} already present" in p.stdout

    db = duckdb.connect()
    db.execute(f"""CREATE VIEW r AS SELECT * FROM read_json('{src}/AWSLogs/**/*.json.gz', format='newline_delimited',
                   ignore_errors=true, union_by_name=true, maximum_object_size=100000000) WHERE requestId IS NOT NULL""")

    def q(query, sql=False):
        args = ["query", "--log-group", "imported", "--format", "json", "--limit", "100000"] + (["--sql"] if sql else []) + [query]
        return [json.loads(l) for l in cli(*args, data_dir=data).stdout.splitlines()]

    def num(v):
        return None if v is None else round(float(v), 6)

    # 1. Token totals per model (the seed's query, unqualified names).
    ours = {r["modelId"]: (num(r["i"]), num(r["o"]), num(r["n"])) for r in q("stats sum(inputTokenCount) as i, sum(outputTokenCount) as o, count(*) as n by modelId")}
    theirs = {m: (num(i), num(o), num(n)) for m, i, o, n in db.execute(
        "SELECT modelId, sum(input.inputTokenCount), sum(output.outputTokenCount), count(*) FROM r GROUP BY 1").fetchall()}
    assert ours == theirs
    sql = {r["model_id"]: (num(r["i"]), num(r["o"]), num(r["n"])) for r in q(
        "SELECT model_id, sum(input_token_count) AS i, sum(output_token_count) AS o, count(*) AS n FROM invocations GROUP BY 1", sql=True)}
    assert sql == theirs
    # 2. Filter by role regex, count per operation.
    ours = {r["operation"]: r["n"] for r in q("filter identity.arn like /assumed-role\\/analytics/ | stats count(*) as n by operation")}
    theirs = {o: str(n) for o, n in db.execute(
        "SELECT operation, count(*) FROM r WHERE regexp_matches(identity.arn, 'assumed-role/analytics') GROUP BY 1").fetchall()}
    assert ours == theirs
    # 3. Hourly buckets.
    ours = {r["bin(1h)"]: r["count(*)"] for r in q("stats count(*) by bin(1h)")}
    theirs = {t.strftime("%Y-%m-%d %H:%M:%S.000"): str(n) for t, n in db.execute(
        "SELECT date_trunc('hour', CAST(timestamp AS TIMESTAMP)), count(*) FROM r GROUP BY 1").fetchall()}
    assert ours == theirs
    # 4. Top 10 by output tokens (ties broken by request id on both sides).
    ours = [r["requestId"] for r in q("fields requestId, outputTokenCount | sort outputTokenCount desc, requestId asc | limit 10")]
    theirs = [x for (x,) in db.execute("SELECT requestId::VARCHAR AS id FROM r ORDER BY output.outputTokenCount DESC, id ASC LIMIT 10").fetchall()]
    assert ours == theirs
    # 5. The needle in the prompts (including the offloaded body, followed on import).
    ours = [r["requestId"] for r in q("filter input.inputBodyJson like /rare-phrase/ | fields requestId")]
    assert ours == [recs[17]["requestId"]]
    offloaded = q(f"filter requestId = '{recs[3]['requestId']}' | fields input.inputBodyJson.messages.0.content.0.text as p")
    assert offloaded[0]["p"] == recs[3]["input"]["inputBodyJson"]["messages"][0]["content"][0]["text"]
    # 6. Errors per model, distinct callers, averages, percentiles of a nested field.
    ours = {(r["errorCode"], r["modelId"]): r["n"] for r in q("filter ispresent(errorCode) | stats count(*) as n by errorCode, modelId")}
    theirs = {(e, m): str(n) for e, m, n in db.execute("SELECT errorCode, modelId, count(*) FROM r WHERE errorCode IS NOT NULL GROUP BY 1, 2").fetchall()}
    assert ours == theirs
    ours = {r["modelId"]: (r["c"], num(r["a"]), num(r["p"])) for r in q(
        "stats count_distinct(identity.arn) as c, avg(outputTokenCount) as a, pct(output.outputBodyJson.metrics.latencyMs, 95) as p by modelId")}
    theirs = {m: (str(c), num(a), num(p)) for m, c, a, p in db.execute(
        "SELECT modelId, count(DISTINCT identity.arn), avg(output.outputTokenCount), quantile_cont(output.outputBodyJson.metrics.latencyMs, 0.95) FROM r GROUP BY 1").fetchall()}
    assert ours == theirs
    # 7. Per-team totals from requestMetadata.
    ours = {r["team"]: num(r["t"]) for r in q("stats sum(outputTokenCount) as t by requestMetadata.team as team")}
    theirs = {t: num(s) for t, s in db.execute("SELECT requestMetadata.team, sum(output.outputTokenCount) FROM r GROUP BY 1").fetchall()}
    assert ours == theirs
    sql = {r["team"]: num(r["t"]) for r in q(
        "SELECT json_get(request_metadata, 'team') AS team, sum(output_token_count) AS t FROM invocations GROUP BY 1", sql=True)}
    assert sql == theirs


PERMS_CONFIG = """
[server]
account_id = "123456789012"

[[buckets]]
name = "logbook-archive"
path = "archive"

[[principals]]
arn = "arn:aws:iam::123456789012:user/analyst"
access_key_id = "AKIAANALYST"
secret_access_key = "analyst-secret"
permissions = ["logs:read"]

[[principals]]
arn = "arn:aws:iam::123456789012:user/app"
access_key_id = "AKIAAPP"
secret_access_key = "app-secret"
api_key = "app-key"
"""


def test_reading_logs_needs_logs_read(make_server):
    s = make_server(PERMS_CONFIG)

    def client(key, secret):
        return boto3.client("logs", endpoint_url=s.url, region_name="us-east-1", aws_access_key_id=key,
                            aws_secret_access_key=secret, config=BotoConfig(retries={"total_max_attempts": 1}))

    s.bedrock(key="AKIAAPP", secret="app-secret").converse(modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    app, analyst = client("AKIAAPP", "app-secret"), client("AKIAANALYST", "analyst-secret")
    for call in [lambda c: c.describe_log_groups(), lambda c: c.filter_log_events(logGroupName=GROUP),
                 lambda c: c.start_query(logGroupName=GROUP, startTime=0, endTime=2**31, queryString="fields @message")]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call(app)
        assert e.value.response["Error"]["Code"] == "AccessDeniedException"
        assert "arn:aws:iam::123456789012:user/app" in e.value.response["Error"]["Message"]
    r = rows(insights(analyst, "fields @log, @logStream, modelId"))
    assert r[0]["@log"] == f"123456789012:{GROUP}" and r[0]["@logStream"] == "aws/bedrock/modelinvocations"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        analyst.create_log_group(logGroupName="/mine")
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    # A wrong signature is refused before anything else.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client("AKIAANALYST", "wrong").describe_log_groups()
    assert e.value.response["Error"]["Code"] in ("InvalidSignatureException", "UnrecognizedClientException")
    # The native endpoint follows the same rule.
    r = requests.post(s.url + "/logbook/query", json={"query": "stats count(*)"}, headers={"Authorization": "Bearer app-key"})
    assert r.status_code == 403 and r.json()["__type"] == "AccessDeniedException"


def test_import_of_an_object_larger_than_a_parse_chunk_loses_and_repeats_nothing(tmp_path):
    """An object of 2,600 lines is handed on in chunks of 1,024 parsed records while it is
    read: duplicates on either side of a chunk's edge are found, every record lands once."""
    src = tmp_path / "bucket"
    path = src / "AWSLogs/123456789012/BedrockModelInvocationLogs/us-east-1/2025/03/11/10"
    path.mkdir(parents=True)
    recs = [{"schemaType": "ModelInvocationLog", "schemaVersion": "1.0",
             "timestamp": f"2025-03-11T10:{i // 60 % 60:02d}:{i % 60:02d}Z", "accountId": "123456789012",
             "identity": {"arn": "arn:aws:iam::123456789012:user/u"}, "region": "us-east-1",
             "requestId": str(uuid.UUID(int=i + 1)), "operation": "Converse", "modelId": "m",
             "input": {"inputContentType": "application/json", "inputTokenCount": i,
                       "inputBodyJson": {"messages": [{"role": "user", "content": [{"text": f"prompt {i}"}]}]}}}
            for i in range(2500)]
    lines = [json.dumps(r) for r in recs]
    # 99 repeats: of records in the first chunk, placed in the second and third.
    lines[1100:1100] = [json.dumps(recs[i]) for i in range(0, 990, 10)]
    lines.insert(2000, "{not json")
    with gzip.open(path / "20250311T100000000Z_0000000000000001.json.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    data = tmp_path / "data"
    p = cli("import", str(src), "--log-group", "big", data_dir=data)
    assert "imported 2500 records into big" in p.stdout, p.stdout
    assert "99 already present, 1 malformed" in p.stdout, p.stdout
    out = cli("query", "--log-group", "big", "--format", "json",
              "stats count(*) as n, count_distinct(requestId) as d, sum(inputTokenCount) as t", data_dir=data).stdout
    got = json.loads(out)
    assert (int(got["n"]), int(got["d"]), int(float(got["t"]))) == (2500, 2500, sum(range(2500))), got
    p = cli("import", str(src), "--log-group", "big", data_dir=data)
    assert "imported 0 records" in p.stdout and "2599 already present" in p.stdout, p.stdout


def test_import_reads_past_a_line_longer_than_any_record_without_holding_it(tmp_path):
    """A hostile object: 96 KB of gzip that decompresses to one 80 MiB line between two
    records. The line is reported as malformed with its number (never held whole: the
    reader keeps at most 64 MiB of a line), and the records around it are imported."""
    src = tmp_path / "bucket"
    path = src / "AWSLogs/123456789012/BedrockModelInvocationLogs/us-east-1/2025/03/11/10"
    path.mkdir(parents=True)
    recs = [{"schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "timestamp": "2025-03-11T10:00:0%dZ" % i,
             "accountId": "123456789012", "identity": {"arn": "arn:aws:iam::123456789012:user/u"},
             "region": "us-east-1", "requestId": str(uuid.UUID(int=i + 1)), "operation": "Converse",
             "modelId": "m", "input": {"inputTokenCount": 1}} for i in range(2)]
    with gzip.open(path / "20250311T100000000Z_0000000000000001.json.gz", "wb") as f:
        f.write(json.dumps(recs[0]).encode() + b"\n")
        chunk = b"A" * (1 << 20)
        for _ in range(80):
            f.write(chunk)
        f.write(b"\n" + json.dumps(recs[1]).encode() + b"\n")
    assert (path / "20250311T100000000Z_0000000000000001.json.gz").stat().st_size < 200_000
    p = cli("import", str(src), "--log-group", "hostile", data_dir=tmp_path / "data")
    assert "imported 2 records into hostile" in p.stdout and "1 malformed" in p.stdout, p.stdout
    assert ".json.gz:2: a line longer than 64 MiB" in p.stderr, p.stderr


def test_import_from_a_declared_bucket_by_s3_uri(tmp_path):
    data = tmp_path / "data"
    bucket = data / "archive"
    recs = generate(str(bucket / "old-logs"), 50, seed=3, bad_lines=False)
    p = cli("import", "s3://logbook-archive/old-logs", "--log-group", "old", data_dir=data)
    assert f"imported {len(recs)} records into old" in p.stdout
    p = subprocess.run([BIN, "import", "s3://nope/x", "--data-dir", str(data)], capture_output=True, text=True)
    assert p.returncode == 1 and "not declared" in p.stderr
    out = cli("query", "--log-group", "old", "--format", "json", "stats count(*) as n", data_dir=data).stdout
    assert json.loads(out) == {"n": str(len(recs))}


def test_bad_logs_api_input_gets_precise_errors(server):
    def call(target, body):
        return requests.post(server.url + "/", data=body, headers=server.auth_headers(
            {"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"}))

    for target, body, code, text in [
        ("Logs_20140328.StartQuery", b"{}", "InvalidParameterException", "'queryString'"),
        ("Logs_20140328.StartQuery", b'{"queryString": "fields @message", "startTime": 0}', "InvalidParameterException", "'endTime'"),
        ("Logs_20140328.StartQuery", b'{"queryString": 5}', "InvalidParameterException", "must be a string"),
        ("Logs_20140328.GetLogRecord", b"{}", "InvalidParameterException", "'logRecordPointer'"),
        ("Logs_20140328.PutRetentionPolicy", b'{"logGroupName": "/aws/bedrock/modelinvocations"}', "InvalidParameterException", "'retentionInDays'"),
        ("Logs_20140328.CreateLogGroup", b"not json", "SerializationException", "not a JSON object"),
        ("Logs_20140328.PutLogEvents", b"{}", "UnknownOperationException", "PutLogEvents"),
    ]:
        r = call(target, body)
        assert r.status_code == 400, (target, body, r.text)
        assert r.json()["__type"] == code and r.headers["x-amzn-errortype"] == code, r.text
        assert text in r.json()["message"], r.text
    # Nothing changed: the groups are as they were, and no retention was set.
    groups = logs(server).describe_log_groups()["logGroups"]
    assert [g["logGroupName"] for g in groups] == [GROUP] and "retentionInDays" not in groups[0]

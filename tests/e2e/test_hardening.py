"""Attacks by Logbook's own least-privileged users, reproduced against the real binary.

A principal with only `logs:read` tries to write files with SQL, crash the process with
deep queries, and starve model calls with heavy ones; anonymous clients try to stall the
front door. Each attack must fail with a precise error and change nothing."""

import json
import os
import socket
import threading
import time

import boto3
import botocore.exceptions
import pytest
import requests
from botocore.config import Config as BotoConfig

from conftest import read_records

GROUP = "/aws/bedrock/modelinvocations"

READER_CONFIG = """
[server]
account_id = "123456789012"

[[buckets]]
name = "logbook-archive"
path = "archive"

[[principals]]
arn = "arn:aws:iam::123456789012:user/reader"
access_key_id = "AKIAREADER"
secret_access_key = "reader-secret"
api_key = "reader-key"
permissions = ["logs:read"]

[[principals]]
arn = "arn:aws:iam::123456789012:user/app"
access_key_id = "AKIAAPP"
secret_access_key = "app-secret"
api_key = "app-key"
permissions = ["invoke:*"]
"""

READER = {"Authorization": "Bearer reader-key"}


def reader_logs(server):
    return boto3.client("logs", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id="AKIAREADER", aws_secret_access_key="reader-secret",
                        config=BotoConfig(retries={"total_max_attempts": 1}, read_timeout=120))


def app_bedrock(server):
    return server.bedrock(key="AKIAAPP", secret="app-secret")


def converse(client, text="hello"):
    return client.converse(modelId="amazon.nova-lite-v1:0",
                           messages=[{"role": "user", "content": [{"text": text}]}])


def http_query(server, query, language="sql", timeout=120, **kw):
    body = {"query": query, "language": language, "start": 0, "end": int(time.time() * 1000) + 3_600_000}
    body.update(kw)
    return requests.post(server.url + "/logbook/query", json=body, headers=READER, timeout=timeout)


def wait_query(client, qid, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = client.get_query_results(queryId=qid)
        if r["status"] not in ("Scheduled", "Running"):
            return r
        time.sleep(0.05)
    raise AssertionError("query did not finish")


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def seed(server, n):
    c = app_bedrock(server)
    ids = [converse(c, f"record {i}")["ResponseMetadata"]["RequestId"] for i in range(n)]
    # Queryable once ingested into the log group's tail.
    wait_for(lambda: server.health()["store"]["records"] >= n, what=f"{n} records in the store")
    return ids


def files_under(root):
    out = set()
    for d, _, fs in os.walk(root):
        for f in fs:
            out.add(os.path.join(d, f))
    return out


# -- 1. SQL is read-only -------------------------------------------------------------------

WRITES = [
    "COPY (SELECT request_id FROM invocations) TO '{target}/stolen.csv' STORED AS CSV",
    "COPY (SELECT 1 AS x) TO '{target}/one.parquet'",
    "EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{target}/explained.csv' STORED AS CSV",
    "CREATE EXTERNAL TABLE pw (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
    "CREATE TABLE t AS SELECT 1 AS x",
    "CREATE VIEW v AS SELECT 1 AS x",
    "INSERT INTO invocations (request_id) VALUES ('forged')",
    "SET datafusion.execution.target_partitions = 1",
    "PREPARE p AS SELECT 1",
    "DROP TABLE invocations",
]


def test_a_reader_cannot_write_with_sql(make_server, tmp_path):
    s = make_server(READER_CONFIG)
    seed(s, 3)
    target = tmp_path / "exfil"
    target.mkdir()
    before = files_under(s.data_dir)
    lg = reader_logs(s)
    for stmt in WRITES:
        q = stmt.format(target=target)
        r = http_query(s, q)
        assert r.status_code == 400, (q, r.status_code, r.text)
        body = r.json()
        assert body["__type"] == "MalformedQueryException" and body["message"], (q, body)
        assert r.headers["x-amzn-errortype"] == "MalformedQueryException"
        # The same through the CloudWatch Logs API (StartQuery with SQL).
        qid = lg.start_query(logGroupName=GROUP, startTime=0, endTime=2**31, queryString=q,
                             queryLanguage="SQL")["queryId"]
        assert wait_query(lg, qid)["status"] == "Failed", q
    assert os.listdir(target) == []
    # Nothing appeared in the data folder either (store files, journal segments aside).
    new = {f for f in files_under(s.data_dir) - before
           if "/journal/" not in f and "/store/" not in f and "/archive/" not in f and not f.endswith("server.stderr")}
    assert new == set()
    # Reading still works, and the table was not replaced.
    r = http_query(s, "SELECT count(*) AS n FROM invocations")
    assert r.status_code == 200 and r.json()["rows"] == [["3"]], r.text
    # No URL tables: a path in FROM is not a table.
    r = http_query(s, "SELECT * FROM '/etc/passwd'")
    assert r.status_code == 400 and r.json()["__type"] == "MalformedQueryException"


# -- 2. Deep queries are refused, not fatal ------------------------------------------------

DEEP_INSIGHTS = [
    ("600 filter stages", "fields @message" + " | filter modelId = 'x'" * 600),
    ("1,000 parentheses", "filter " + "(" * 1000 + "modelId = 'x'" + ")" * 1000),
    ("2,000 nots", "filter " + "not " * 2000 + "modelId = 'x'"),
    ("3,000 minus signs", "fields " + "-" * 3000 + "1 as x"),
    ("1,200 operators", "filter " + " and ".join(["modelId = 'x'"] * 600)),
    ("5,000 nots (over the length limit)", "filter " + "not " * 5000 + "modelId = 'x'"),
]

DEEP_SQL = [
    ("1,000 parentheses", "SELECT " + "(" * 1000 + "1" + ")" * 1000),
    ("a 9,000-character chain", "SELECT 1" + "+1" * 4500),
    ("300 nested subqueries", "SELECT * FROM " + "(SELECT * FROM " * 300 + "invocations" + ") s" * 300),
    ("2,000 nots", "SELECT " + "NOT " * 2000 + "true"),
    ("the longest chain allowed", "SELECT 1" + "+1" * 500),
    ("the most subqueries allowed", "SELECT * FROM " + "(SELECT * FROM " * 63 + "invocations" + ") s" * 63),
]


def test_deep_queries_get_precise_errors_and_the_gateway_lives(make_server):
    s = make_server(READER_CONFIG)
    t0 = time.time()
    seed(s, 2)
    lg = reader_logs(s)
    app = app_bedrock(s)
    for name, q in DEEP_INSIGHTS:
        r = http_query(s, q, language="insights")
        assert r.status_code == 400, (name, r.status_code, r.text[:300])
        assert r.json()["__type"] == "MalformedQueryException", name
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lg.start_query(logGroupName=GROUP, startTime=0, endTime=2**31, queryString=q)
        assert e.value.response["Error"]["Code"] in ("MalformedQueryException", "InvalidParameterException"), name
        assert s.proc.poll() is None, f"the server died on {name}"
        converse(app)
    for name, q in DEEP_SQL:
        r = http_query(s, q)
        # Either answered or refused with a precise error; never a dead process.
        assert r.status_code in (200, 400), (name, r.status_code, r.text[:300])
        if r.status_code == 400:
            assert r.json()["__type"] in ("MalformedQueryException", "LimitExceededException"), (name, r.text[:300])
        assert s.proc.poll() is None, f"the server died on {name}"
        converse(app)
        print(name, round(time.time() - t0, 1), r.status_code, r.text[:100])
    # The limits name themselves.
    r = http_query(s, "filter " + "not " * 2000 + "modelId = 'x'", language="insights")
    assert "nests deeper than 64" in r.json()["message"]
    r = http_query(s, "fields @message" + " | filter a=1" * 150, language="insights")
    assert "more than 100 commands" in r.json()["message"]
    r = http_query(s, "SELECT 1" + " " * 10_001)
    assert "at most 10000" in r.json()["message"]


# -- 3. Heavy queries run apart from calls, under limits, and can be cancelled -------------

# A cross join feeding a filter and an aggregate: operators that produce batch after batch
# without ever waiting, the shape that only stops if execution yields (CooperativeExec).
HEAVY_SQL = ("SELECT count(*) AS n FROM invocations a, invocations b, invocations c, invocations d, invocations e "
             "WHERE a.input_token_count + b.input_token_count + c.input_token_count + d.input_token_count > 0")


def heavy_config(**query):
    lines = "\n".join(f"{k} = {v}" for k, v in query.items())
    return READER_CONFIG + "\n[query]\n" + lines + "\n"


def test_a_heavy_query_does_not_stop_calls_and_is_stopped_by_its_time_limit(make_server):
    s = make_server(heavy_config(http_timeout_secs=4))
    seed(s, 60)
    results = {}

    def heavy(i):
        results[i] = http_query(s, HEAVY_SQL, timeout=120)

    threads = [threading.Thread(target=heavy, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: s.health()["queries"]["inFlight"] >= 3, what="the heavy queries to start")
    app = app_bedrock(s)
    served = 0
    while any(t.is_alive() for t in threads):
        # Calls and health keep being answered while every query thread is busy.
        converse(app, f"during {served}")
        assert requests.get(s.url + "/healthz", timeout=10).status_code == 200
        served += 1
    for t in threads:
        t.join()
    assert served >= 3
    for r in results.values():
        assert r.status_code == 400, r.text
        assert r.json()["__type"] == "LimitExceededException"
        assert "time limit of 4 s" in r.json()["message"]
    h = wait_for(lambda: (lambda h: h if h["queries"]["inFlight"] == 0 else None)(s.health()),
                 what="the queries to end")
    assert h["queries"]["timedOut"] >= 3


def cpu_seconds_over(pid, seconds):
    """CPU time (user + system, all threads) the process spends in the next `seconds`."""
    def cpu():
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    before = cpu()
    time.sleep(seconds)
    return cpu() - before


def import_records(data_dir, n):
    """n Bedrock records imported into the default log group before the server starts."""
    import gzip
    import subprocess
    import uuid
    from conftest import BIN
    folder = os.path.join(os.path.dirname(str(data_dir)), "import-src")
    hour = time.strftime("%Y/%m/%d/%H", time.gmtime())
    path = os.path.join(folder, "AWSLogs/123456789012/BedrockModelInvocationLogs/us-east-1", hour)
    os.makedirs(path, exist_ok=True)
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with gzip.open(os.path.join(path, "records.json.gz"), "wt") as f:
        for i in range(n):
            f.write(json.dumps({
                "schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "timestamp": ts,
                "accountId": "123456789012", "identity": {"arn": "arn:aws:iam::123456789012:user/app"},
                "region": "us-east-1", "requestId": str(uuid.uuid4()), "operation": "Converse",
                "modelId": "amazon.nova-lite-v1:0",
                "input": {"inputContentType": "application/json", "inputTokenCount": 1 + i % 7},
                "output": {"outputContentType": "application/json", "outputTokenCount": 1 + i % 5}}) + "\n")
    p = subprocess.run([BIN, "import", folder, "--log-group", GROUP, "--data-dir", str(data_dir)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


# Over thousands of records, a cross join produces output far faster than anything waits:
# without cooperative execution its task never yields, and no abort reaches it.
BIG_SQL = ("SELECT count(*) AS n FROM invocations a, invocations b, invocations c "
           "WHERE a.input_token_count + b.input_token_count + c.input_token_count > 0")


def test_stop_query_and_a_client_that_leaves_cancel_the_query(make_server, tmp_path):
    import_records(tmp_path / "data", 3000)
    s = make_server(heavy_config(http_timeout_secs=600, start_query_timeout_secs=3600))
    lg = reader_logs(s)
    qid = lg.start_query(logGroupName=GROUP, startTime=0, endTime=2**31, queryString=BIG_SQL,
                         queryLanguage="SQL")["queryId"]
    wait_for(lambda: s.health()["queries"]["inFlight"] == 1, what="the query to start")
    assert lg.stop_query(queryId=qid)["success"] is True
    assert lg.get_query_results(queryId=qid)["status"] == "Cancelled"
    wait_for(lambda: s.health()["queries"]["inFlight"] == 0, what="StopQuery to end the query")
    # A client that disconnects cancels its synchronous query.
    host, port = s.url.replace("http://", "").split(":")
    body = json.dumps({"query": BIG_SQL, "language": "sql", "start": 0,
                       "end": int(time.time() * 1000) + 3_600_000}).encode()
    c = socket.create_connection((host, int(port)), timeout=10)
    c.sendall(b"POST /logbook/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer reader-key\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    wait_for(lambda: s.health()["queries"]["inFlight"] == 1, what="the synchronous query to start")
    c.close()
    wait_for(lambda: s.health()["queries"]["inFlight"] == 0, what="the disconnect to end the query")
    assert s.health()["queries"]["cancelled"] >= 2
    # Really stopped, not just forgotten: an idle server burns next to no CPU, a query
    # left running burns one or two cores.
    assert cpu_seconds_over(s.proc.pid, 2.0) < 0.8


def test_concurrency_and_memory_limits_refuse_with_clear_errors(make_server):
    s = make_server(heavy_config(max_running=2, max_queued=2, query_memory_mb=4, total_memory_mb=8,
                                 http_timeout_secs=600, start_query_timeout_secs=3600))
    seed(s, 40)
    lg = reader_logs(s)
    # Four heavy queries fill every place; the fifth is refused at once, as CloudWatch does.
    qids = [lg.start_query(logGroupName=GROUP, startTime=0, endTime=2**31, queryString=HEAVY_SQL,
                           queryLanguage="SQL")["queryId"] for _ in range(4)]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lg.start_query(logGroupName=GROUP, startTime=0, endTime=2**31, queryString="stats count(*)")
    assert e.value.response["Error"]["Code"] == "LimitExceededException"
    assert "concurrency limit of [4]" in e.value.response["Error"]["Message"]
    r = http_query(s, "SELECT 1 AS x")
    assert r.status_code == 400 and r.json()["__type"] == "LimitExceededException"
    for q in qids:
        lg.stop_query(queryId=q)
    wait_for(lambda: s.health()["queries"]["inFlight"] == 0, what="the stopped queries to end")
    # A query that needs more memory than its limit fails with a message that says so.
    r = http_query(s, "SELECT a.message, b.message FROM invocations a, invocations b ORDER BY a.message, b.message")
    assert r.status_code == 400, r.text[:300]
    assert r.json()["__type"] == "LimitExceededException" and "memory limit" in r.json()["message"], r.text[:300]
    assert s.health()["queries"]["memoryBytes"] == 0
    # And the service is whole again.
    r = http_query(s, "SELECT count(*) AS n FROM invocations")
    assert r.status_code == 200 and r.json()["rows"] == [["40"]]


def test_shutdown_is_not_held_up_by_a_running_query(make_server):
    s = make_server(heavy_config(start_query_timeout_secs=3600))
    seed(s, 60)
    lg = reader_logs(s)
    lg.start_query(logGroupName=GROUP, startTime=0, endTime=2**31, queryString=HEAVY_SQL, queryLanguage="SQL")
    wait_for(lambda: s.health()["queries"]["inFlight"] == 1, what="the query to start")
    s.proc.send_signal(2)  # SIGINT
    assert s.proc.wait(timeout=60) == 0


# -- 4. Poisoned regions and prefixes cannot wedge delivery --------------------------------

def signed(url, method, path, region, body=b"", key="AKIAAPP", secret="app-secret", service="bedrock",
           headers=None):
    """A request signed by botocore's own signer, for any credential-scope region."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method=method, url=url + path, data=body, headers=dict(headers or {}))
    SigV4Auth(Credentials(key, secret), service, region).add_auth(req)
    return requests.request(method, url + path, data=body, headers=dict(req.headers), timeout=30)


def delivered(server):
    """Every destination's cursor has reached the journal's end."""
    h = server.health()
    end = h["journal"]["committed"] + 1
    return h if all(d["cursor"] >= end for d in h["destinations"].values()) else None


def trail_events(server):
    return trail_events_in(os.path.join(server.data_dir, "archive"))


def trail_events_in(bucket_dir):
    import gzip
    out = []
    for f in files_under(os.path.join(bucket_dir, "AWSLogs")):
        if "/CloudTrail/" in f and f.endswith(".json.gz"):
            with gzip.open(f, "rt") as g:
                out += json.load(g)["Records"]
    return out


BAD_REGIONS = ["evil~region", "..", "a" * 300, "us-east-1/../../x", "US-EAST-1"]


def test_a_poisoned_region_is_refused_audited_and_cannot_wedge_delivery(make_server):
    s = make_server(READER_CONFIG)
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode()
    for region in BAD_REGIONS:
        # An authenticated principal with a bad scope: refused, nothing recorded.
        r = signed(s.url, "POST", "/model/amazon.nova-lite-v1:0/converse", region, body,
                   headers={"Content-Type": "application/json"})
        # (A scope with a '/' does not even parse: IncompleteSignatureException, as AWS says.)
        assert r.status_code in (400, 403), (region, r.text)
        assert r.headers["x-amzn-errortype"].split(":")[0] in ("InvalidSignatureException",
                                                             "IncompleteSignatureException")
        assert r.json()["message"].startswith("Credential should be scoped to a valid region.")
        # An unknown caller on the control plane: refused and audited, under a real region.
        r = signed(s.url, "GET", "/logging/modelinvocations", region, key="AKIDNOBODY", secret="x")
        assert r.status_code in (400, 403), (region, r.text)
        # The same on the CloudWatch Logs API's CreateLogGroup.
        r = signed(s.url, "POST", "/", region, b'{"logGroupName": "/evil"}', key="AKIDNOBODY", secret="x",
                   service="logs", headers={"X-Amz-Target": "Logs_20140328.CreateLogGroup",
                                            "Content-Type": "application/x-amz-json-1.1"})
        assert r.status_code in (400, 403) and r.json()["__type"] in (
            "InvalidSignatureException", "IncompleteSignatureException", "UnrecognizedClientException")
    converse(app_bedrock(s), "after the attack")
    h = wait_for(lambda: delivered(s), what="every destination to catch up")
    assert h["status"] == "ok"
    assert all(d["failures"] == 0 for d in h["destinations"].values()), h["destinations"]
    events = wait_for(lambda: (lambda e: e if len(e) >= 2 * len(BAD_REGIONS) else None)(trail_events(s)),
                      what="the audit events")
    assert {e["awsRegion"] for e in events} == {"us-east-1"}
    names = [e["eventName"] for e in events]
    assert names.count("GetModelInvocationLoggingConfiguration") == len(BAD_REGIONS)
    assert names.count("CreateLogGroup") == len(BAD_REGIONS)
    assert all(e["errorCode"] in ("InvalidSignatureException", "IncompleteSignatureException",
                                  "UnrecognizedClientException") for e in events)
    # The archive holds the one real call, under a real region.
    recs = read_records(s.data_dir)
    assert [r["region"] for r in recs] == ["us-east-1"]
    assert not any("evil" in f or "%7E" in f for f in files_under(s.data_dir))


def test_a_poisoned_key_prefix_is_refused(server):
    c = boto3.client("bedrock", endpoint_url=server.url, region_name="us-east-1",
                     aws_access_key_id=server.admin["accessKeyId"],
                     aws_secret_access_key=server.admin["secretAccessKey"],
                     config=BotoConfig(retries={"total_max_attempts": 1}))
    before = c.get_model_invocation_logging_configuration().get("loggingConfig")
    for prefix in ["~team/", "équipe/", "a//b/", "logs [x]/", "x%7E/", "a" * 201 + "/"]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            c.put_model_invocation_logging_configuration(loggingConfig={
                "s3Config": {"bucketName": "logbook-archive", "keyPrefix": prefix},
                "textDataDeliveryEnabled": True, "imageDataDeliveryEnabled": True,
                "embeddingDataDeliveryEnabled": True})
        assert e.value.response["Error"]["Code"] == "ValidationException", prefix
        assert "keyPrefix" in e.value.response["Error"]["Message"]
    assert c.get_model_invocation_logging_configuration().get("loggingConfig") == before


def test_a_session_token_with_a_permanent_key_is_refused(make_server):
    s = make_server(READER_CONFIG)
    c = boto3.client("bedrock-runtime", endpoint_url=s.url, region_name="us-east-1",
                     aws_access_key_id="AKIAAPP", aws_secret_access_key="app-secret",
                     aws_session_token="FwoGZXIvYXdzEJr//////////",
                     config=BotoConfig(retries={"total_max_attempts": 1}))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        converse(c)
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert s.health()["journal"]["committed"] == 0


# -- 5. Memory before authentication is bounded --------------------------------------------

def rss_kib(pid, field="VmHWM"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


def raw_post(url, path, headers, body_len, chunk=1 << 20, pause=0.0):
    """POST `body_len` bytes over a raw socket; return the status line (or None if cut)."""
    host, port = url.replace("http://", "").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {body_len}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        sent, block = 0, b"x" * chunk
        try:
            while sent < body_len:
                n = min(chunk, body_len - sent)
                sock.sendall(block[:n])
                sent += n
                if pause:
                    time.sleep(pause)
        except OSError:
            pass  # refused before the body was read: the server closed its side
        data = b""
        try:
            while b"\r\n" not in data:
                got = sock.recv(4096)
                if not got:
                    break
                data += got
        except OSError:
            return None
        return data.split(b"\r\n", 1)[0].decode() if data else None
    finally:
        sock.close()


def fake_sigv4(key):
    now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return {"Authorization": f"AWS4-HMAC-SHA256 Credential={key}/{now[:8]}/us-east-1/bedrock/aws4_request, "
                             "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
            "X-Amz-Date": now, "Content-Type": "application/json"}


def test_a_pre_auth_flood_is_refused_within_a_memory_bound(make_server):
    s = make_server(READER_CONFIG.replace('account_id = "123456789012"',
                                          'account_id = "123456789012"\nmax_buffered_bytes = 33554432'))
    base = rss_kib(s.proc.pid)
    path = "/model/amazon.nova-lite-v1:0/converse"
    statuses = []

    def flood(key):
        statuses.append(raw_post(s.url, path, fake_sigv4(key), 24_000_000))

    # An unknown key is refused from its headers alone; a known key id with a forged
    # signature is buffered only within the budget (32 MiB here), the rest refused at once.
    threads = [threading.Thread(target=flood, args=("AKIDUNKNOWN" if i % 2 else "AKIAAPP",)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grown_mib = (rss_kib(s.proc.pid) - base) / 1024
    print(f"pre-auth flood: peak RSS grew by {grown_mib:.0f} MiB; answers {sorted(set(statuses), key=str)}")
    assert grown_mib < 200, f"peak RSS grew by {grown_mib:.0f} MiB"
    codes = [st.split()[1] if st else "cut" for st in statuses]
    assert set(codes) <= {"403", "429", "cut"}, codes
    assert "403" in codes
    # Nothing was recorded, and real calls go through afterwards.
    assert s.health()["journal"]["committed"] == 0
    converse(app_bedrock(s))


# -- 6. Slow clients are closed ------------------------------------------------------------

def test_slow_clients_are_closed(make_server):
    s = make_server(READER_CONFIG.replace('account_id = "123456789012"',
                                          'account_id = "123456789012"\nheader_timeout_ms = 500\nbody_timeout_ms = 1500'))
    host, port = s.url.replace("http://", "").split(":")
    socks = []
    for i in range(100):
        c = socket.create_connection((host, int(port)), timeout=10)
        if i % 2:
            c.sendall(b"POST /model/m/converse HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        socks.append(c)
    # A real client is served meanwhile.
    converse(app_bedrock(s))
    closed = 0
    for c in socks:
        try:
            data = c.recv(4096)  # b"" (or an error status) once the server closes
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            data = None  # still open after 10 s: the attack works
        if data is not None and (data == b"" or data.startswith(b"HTTP/1.1 4")):
            closed += 1
        c.close()
    assert closed == len(socks)
    # A body that trickles in is cut at the body deadline with an error.
    start = time.time()
    status = raw_post(s.url, "/v1/chat/completions",
                      {"Authorization": "Bearer app-key", "Content-Type": "application/json"},
                      10_000, chunk=10, pause=0.2)
    assert status is None or status.split()[1] in ("400", "408"), status
    assert time.time() - start < 30


# -- 7. Errors keep the API's shape; files are private -------------------------------------

def test_over_size_bodies_and_wrong_methods_get_api_shaped_errors(make_server):
    s = make_server(READER_CONFIG)
    r = requests.post(s.url + "/logbook/query", data=b"{" + b" " * (2 << 20) + b"}",
                      headers={**READER, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["__type"] == "RequestEntityTooLargeException"
    r = requests.post(s.url + "/", data=b"{" + b" " * (2 << 20) + b"}",
                      headers={**READER, "X-Amz-Target": "Logs_20140328.DescribeLogGroups",
                               "Content-Type": "application/x-amz-json-1.1"})
    assert r.status_code == 413 and r.json()["__type"] == "RequestEntityTooLargeException"
    r = requests.get(s.url + "/model/m/converse", headers={"Authorization": "Bearer app-key"})
    assert r.status_code == 405 and r.headers["x-amzn-errortype"].startswith("UnknownOperationException")
    assert "message" in r.json()
    r = requests.delete(s.url + "/logbook/query", headers=READER)
    assert r.status_code == 405 and r.json()["__type"] == "UnknownOperationException"
    r = requests.put(s.url + "/v1/chat/completions", headers={"Authorization": "Bearer app-key"})
    assert r.status_code == 405 and r.json()["error"]["message"]


def test_data_files_are_private(make_server):
    s = make_server(READER_CONFIG)
    converse(app_bedrock(s))
    wait_for(lambda: delivered(s), what="delivery")
    s.stop()
    for d, dirs, fs in os.walk(s.data_dir):
        for name in dirs:
            mode = os.stat(os.path.join(d, name)).st_mode & 0o777
            assert mode & 0o077 == 0, (os.path.join(d, name), oct(mode))
        for name in fs:
            p = os.path.join(d, name)
            if p.endswith("server.stderr") or p.endswith("logbook.toml"):
                continue  # written by the test, not by Logbook
            mode = os.stat(p).st_mode & 0o777
            assert mode & 0o077 == 0, (p, oct(mode))
    assert os.stat(s.data_dir).st_mode & 0o777 == 0o700


def test_a_stuck_destination_makes_health_degraded_until_it_recovers(make_server, tmp_path):
    import subprocess
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(bucket)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        s = make_server(READER_CONFIG.replace('path = "archive"', f'path = "{bucket}"'))
        app = app_bedrock(s)
        first = converse(app, "before")["ResponseMetadata"]["RequestId"]
        wait_for(lambda: delivered(s), what="the first delivery")
        assert s.health()["status"] == "ok"
        assert subprocess.run(["mount", "-o", "remount,ro", str(bucket)], capture_output=True).returncode == 0
        second = converse(app, "while the bucket is read-only")["ResponseMetadata"]["RequestId"]
        h = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(s.health()),
                     what="health to say the archive is stuck")
        assert "archive-logbook-archive" in h["stalledDestinations"]
        assert h["destinations"]["archive-logbook-archive"]["consecutiveFailures"] >= 3
        # The stall is journaled as a trail event (one more journal entry) before recovery.
        stalled_at = wait_for(lambda: (lambda c: c if c > h["journal"]["committed"] else None)(
            s.health()["journal"]["committed"]), what="the stall's trail event")
        assert subprocess.run(["mount", "-o", "remount,rw", str(bucket)], capture_output=True).returncode == 0
        # The recovery's trail event is one more journal entry; it may be written before or
        # after the second record reaches the bucket, so wait for both, not in an order.
        h = wait_for(lambda: (lambda h: h if h and h["status"] == "ok"
                              and h["journal"]["committed"] > stalled_at else None)(delivered(s)),
                     timeout=60, what="delivery to resume and the recovery's trail event")
        s.stop()
        ids = [r["requestId"] for r in read_records(str(s.data_dir), bucket_dir=str(bucket))]
        assert sorted(ids) == sorted([first, second])
        # The stall and the recovery are service events in the trail.
        events = [e for e in trail_events_in(str(bucket)) if e["eventSource"] == "logbook"]
        assert sorted(e["eventName"] for e in events) == ["DeliveryResumed", "DeliveryStalled"], events
        stalled = next(e for e in events if e["eventName"] == "DeliveryStalled")
        assert stalled["requestParameters"]["destination"] == "archive-logbook-archive"
        assert "Read-only file system" in stalled["errorMessage"]
    finally:
        subprocess.run(["umount", str(bucket)], capture_output=True)


# -- 8. A stream is never answered without a record ----------------------------------------

def test_kill_9_mid_stream_leaves_a_record_of_the_interrupted_call(make_server):
    from conftest import Server, wait_record
    s = make_server(READER_CONFIG)
    app = app_bedrock(s)
    prompt = "tell me a long story [mock:chunks=60][mock:chunk_delay_ms=100]"
    r = app.converse_stream(modelId="amazon.nova-lite-v1:0",
                            messages=[{"role": "user", "content": [{"text": prompt}]}])
    rid = r["ResponseMetadata"]["RequestId"]
    received, start = "", time.time()
    for ev in r["stream"]:
        if "contentBlockDelta" in ev:
            received += ev["contentBlockDelta"]["delta"].get("text", "")
            if time.time() - start > 2.5:
                break  # the client has 2.5 s of model output in hand
    assert received
    s.kill9()
    s2 = Server(s.data_dir, READER_CONFIG, s.extra_args).start()
    try:
        rec = wait_record(s2, rid)
        assert rec["errorCode"] == "GatewayInterrupted"
        assert rec["operation"] == "ConverseStream" and rec["logbook"]["stream"] is True
        assert rec["input"]["inputBodyJson"]["messages"][0]["content"][0]["text"] == prompt
        assert rec["identity"]["arn"] == "arn:aws:iam::123456789012:user/app"
        # The output journaled while it streamed (about once a second) is in the record:
        # part of what the client received, never more.
        got = "".join(b.get("text", "") for b in rec["output"]["outputBodyJson"]["output"]["message"]["content"])
        assert got and received.startswith(got), (got, received)
        # The model never reported usage: the record carries an estimate of the input and
        # of what the client received (marked as such), and is priced from it.
        est = rec["logbook"]["estimatedUsage"]
        assert est["inputTokens"] > 0 and est["outputTokens"] >= len(got) // 4, (est, len(got))
        assert "inputTokenCount" not in rec["input"]
        assert float(rec["logbook"]["cost"]) > 0 and "unpriced" not in rec["logbook"], rec["logbook"]
        # A second restart does not record it again.
        s2.stop()
        s3 = Server(s.data_dir, READER_CONFIG, s.extra_args).start()
        converse(app_bedrock(s3), "after")
        s3.stop()
        recs = [x for x in read_records(str(s.data_dir)) if x["requestId"] == rid]
        assert len(recs) == 1
    finally:
        s2.stop()


def test_a_completed_stream_is_recorded_once_and_not_as_interrupted(make_server):
    from conftest import Server
    s = make_server(READER_CONFIG)
    app = app_bedrock(s)
    r = app.converse_stream(modelId="amazon.nova-lite-v1:0",
                            messages=[{"role": "user", "content": [{"text": "short [mock:chunks=3]"}]}])
    rid = r["ResponseMetadata"]["RequestId"]
    events = list(r["stream"])
    assert events and "metadata" in events[-1]
    s.kill9()  # after the stream completed: its record is durable, its start entry closed
    s2 = Server(s.data_dir, READER_CONFIG, s.extra_args).start()
    converse(app_bedrock(s2), "after")
    s2.stop()
    recs = [x for x in read_records(str(s.data_dir)) if x["requestId"] == rid]
    assert len(recs) == 1 and "errorCode" not in recs[0], recs


def test_a_stream_is_refused_up_front_when_the_journal_cannot_take_writes(tmp_path):
    import subprocess
    from conftest import Server
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    s = None
    try:
        s = Server(mnt / "data", extra_args=["--archive-max-age-ms", "600000"]).start()
        c = s.bedrock()
        for i in range(12):  # fill the disk with records until calls are refused
            try:
                c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"{i} " + "x" * 150_000}]}])
            except botocore.exceptions.ClientError:
                break
        big = "y" * 150_000 + " [mock:chunks=5]"
        with pytest.raises(botocore.exceptions.ClientError) as e:
            r = c.converse_stream(modelId="m", messages=[{"role": "user", "content": [{"text": big}]}])
            list(r["stream"])
        assert e.value.response["Error"]["Code"] == "InternalServerException"
        assert "could not be logged durably" in e.value.response["Error"]["Message"]
    finally:
        if s:
            s.kill9()
        subprocess.run(["umount", str(mnt)], capture_output=True)


# -- Read-your-writes: a record is queryable the moment its call returns -------------------

def test_a_call_is_in_the_answer_of_a_query_made_right_after_it(make_server):
    s = make_server(READER_CONFIG)
    app = app_bedrock(s)
    lg = reader_logs(s)
    for i in range(30):
        rid = converse(app, f"ryw {i}")["ResponseMetadata"]["RequestId"]
        # No waiting of our own: the query waits for ingest to reach the caller's writes.
        r = http_query(s, f"filter requestId = '{rid}' | fields requestId", language="insights")
        assert r.status_code == 200 and [row[0] for row in r.json()["rows"]] == [rid], (i, r.text)
        if i % 10 == 0:
            qid = lg.start_query(logGroupName=GROUP, startTime=0, endTime=2**31,
                                 queryString=f"filter requestId = '{rid}' | stats count(*) as n")["queryId"]
            res = wait_query(lg, qid)
            assert res["results"] == [[{"field": "n", "value": "1"}]], res


def test_a_reader_cannot_count_tokens_and_nobody_unauthenticated_can(make_server):
    """CountTokens needs the permission to invoke the model (bedrock:CountTokens is
    granted with it): a logs:read principal is refused, an unsigned request too, and
    neither writes anything."""
    s = make_server(READER_CONFIG)
    msgs = {"converse": {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s.bedrock(key="AKIAREADER", secret="reader-secret").count_tokens(modelId="amazon.nova-lite-v1:0", input=msgs)
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    r = requests.post(f"{s.url}/model/amazon.nova-lite-v1:0/count-tokens", json={"input": msgs})
    assert r.status_code in (401, 403) and r.headers.get("x-amzn-errortype"), r.text
    assert app_bedrock(s).count_tokens(modelId="amazon.nova-lite-v1:0", input=msgs)["inputTokens"] > 0
    assert read_records(str(s.data_dir)) == []

"""Tamper evidence through the real binary (issue #11): records and trail events delivered
by a running server are signed into Merkle logs; `logbook verify` checks the bucket
offline (no server), `logbook prove` and `verify --proof` prove one record, and every
bad input gets a precise error and a non-zero exit."""

import gzip
import json
import os
import subprocess

import boto3

from conftest import BIN, Server, archive_files, wait_records

CONFIG = """
[integrity]
checkpoint_every_ms = 1000
"""


def logbook(*args, **kw):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120, **kw)


def test_verify_prove_and_detect_tampering_offline(tmp_path):
    s = Server(tmp_path / "data", CONFIG).start()
    data = s.data_dir
    try:
        c = s.bedrock()
        ids = [c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"q{i}"}]}])
               ["ResponseMetadata"]["RequestId"] for i in range(6)]
        # Control-plane calls: events for the trail's log.
        bedrock = boto3.client("bedrock", endpoint_url=s.url, region_name="us-east-1",
                               aws_access_key_id=s.admin["accessKeyId"],
                               aws_secret_access_key=s.admin["secretAccessKey"])
        bedrock.get_model_invocation_logging_configuration()
        bedrock.delete_model_invocation_logging_configuration()
        wait_records(s, 6)
    finally:
        s.stop()
    pub = os.path.join(data, "integrity", "signing-key.pub.pem")
    assert os.path.exists(pub), "the public key is written beside the generated signing key"
    key = open(os.path.join(data, "integrity", "signing-key.pem")).read()
    assert "PRIVATE KEY" in key and oct(os.stat(os.path.join(data, "integrity", "signing-key.pem")).st_mode & 0o777) == "0o600"

    # Offline: the server is stopped; only the bucket and the public key are read.
    v = logbook("verify", "--bucket-dir", os.path.join(data, "archive"), "--public-key", pub)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "No problem found." in v.stdout
    assert "/records: 6 leaves" in v.stdout, v.stdout
    assert "/trail: " in v.stdout

    # An inclusion proof of one record, checked with nothing but the proof and the key.
    p = logbook("prove", ids[3], "--data-dir", data, "--config", os.path.join(data, "logbook.toml"))
    assert p.returncode == 0, p.stderr
    proof = json.loads(p.stdout)
    assert proof["type"] == "inclusion" and ids[3] in proof["line"]
    path = tmp_path / "proof.json"
    path.write_text(p.stdout)
    ok = logbook("verify", "--proof", str(path), "--public-key", pub)
    assert ok.returncode == 0 and ok.stdout.startswith("Inclusion proof valid"), ok.stdout + ok.stderr
    # The same proof with its line altered fails.
    proof["line"] = proof["line"].replace(ids[3], ids[2])
    path.write_text(json.dumps(proof))
    bad = logbook("verify", "--proof", str(path), "--public-key", pub)
    assert bad.returncode == 1 and "audit path" in bad.stderr, bad.stderr

    # A consistency proof from the first tree with records to the newest.
    sizes = sorted({int(os.path.basename(f).split("_")[0]) for f in
                    os.listdir(next(os.path.join(r, d) for r, ds, _ in os.walk(os.path.join(data, "archive", "LogbookCheckpoints")) for d in ds if d == "records"))})
    first = next(n for n in sizes if n > 0)
    cp = logbook("prove", "--consistency", str(first), "--data-dir", data, "--config", os.path.join(data, "logbook.toml"))
    assert cp.returncode == 0, cp.stderr
    path.write_text(cp.stdout)
    ok = logbook("verify", "--proof", str(path), "--public-key", pub)
    assert ok.returncode == 0 and ok.stdout.startswith("Consistency proof valid"), ok.stderr

    # A record altered in the archive: verify names the object and exits 1.
    obj = next(f for f in archive_files(data) if "/BedrockModelInvocationLogs/" in f)
    text = gzip.open(obj, "rt").read().replace("q1", "qX")
    with gzip.open(obj, "wt") as f:
        f.write(text)
    v = logbook("verify", "--bucket-dir", os.path.join(data, "archive"), "--public-key", pub)
    assert v.returncode == 1
    assert any(os.path.basename(obj) in l and "INVALID" in l for l in v.stdout.splitlines()), v.stdout
    assert "problems found" in v.stderr

    # Another key (a rotation without the old public key) refuses every checkpoint by id.
    other = tmp_path / "other.pem"
    g = logbook("keys", "generate", "--out", str(other))
    assert g.returncode == 0, g.stderr
    v = logbook("verify", "--bucket-dir", os.path.join(data, "archive"), "--public-key", str(tmp_path / "other.pub.pem"))
    assert v.returncode == 1 and "not among the public keys given" in v.stdout
    # Both keys given (old checkpoints with the old key): signatures pass, the altered object still fails.
    v = logbook("verify", "--bucket-dir", os.path.join(data, "archive"), "--public-key", str(tmp_path / "other.pub.pem"), "--public-key", pub)
    assert "not among" not in v.stdout and v.returncode == 1


def test_bad_keys_and_proofs_get_precise_errors(tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    r = logbook("verify", "--bucket-dir", str(tmp_path), "--public-key", str(garbage))
    assert r.returncode == 1 and "not a PEM PUBLIC KEY" in r.stderr, r.stderr
    priv = tmp_path / "k.pem"
    assert logbook("keys", "generate", "--out", str(priv)).returncode == 0
    r = logbook("verify", "--bucket-dir", str(tmp_path), "--public-key", str(priv))
    assert r.returncode == 1 and "private key" in r.stderr, r.stderr
    again = logbook("keys", "generate", "--out", str(priv))
    assert again.returncode == 1 and "not overwriting" in again.stderr
    pub = tmp_path / "k.pub.pem"
    assert logbook("keys", "public", str(priv)).stdout == pub.read_text()
    # A bucket with no checkpoint at all is a finding, not a pass.
    empty = tmp_path / "empty"
    empty.mkdir()
    r = logbook("verify", "--bucket-dir", str(empty), "--public-key", str(pub))
    assert r.returncode == 1 and "No valid checkpoint" in r.stdout
    # A file that is not a proof.
    notproof = tmp_path / "p.json"
    notproof.write_text('{"type": "inclusion"}')
    r = logbook("verify", "--proof", str(notproof), "--public-key", str(pub))
    assert r.returncode == 1 and "not a proof" in r.stderr, r.stderr
    # A corrupt signing key stops the server at start with the file named.
    bad = Server(tmp_path / "data", f'[integrity]\nsigning_key = "{garbage}"\n')
    try:
        bad.start()
        raise AssertionError("started with a corrupt signing key")
    except RuntimeError as e:
        assert "integrity signing key" in str(e) and "garbage.pem" in str(e), str(e)


READERS = """
[server]
account_id = "123456789012"

[integrity]
checkpoint_every_ms = 1000

[[principals]]
arn = "arn:aws:iam::123456789012:user/ops"
access_key_id = "AKIAOPS000000000000"
secret_access_key = "ops-secret"
api_key = "sk-ops-reader"
permissions = ["invoke:*", "logs:read"]

[[principals]]
arn = "arn:aws:iam::123456789012:user/app"
access_key_id = "AKIAAPP000000000000"
secret_access_key = "app-secret"
permissions = ["invoke:*"]
"""


def test_every_read_of_records_is_an_audited_data_event(tmp_path):
    import time

    import requests
    from botocore.config import Config as BotoConfig
    s = Server(tmp_path / "data", READERS).start()
    data = s.data_dir
    creds = dict(endpoint_url=s.url, region_name="us-east-1", config=BotoConfig(retries={"total_max_attempts": 1}))
    ops = dict(aws_access_key_id="AKIAOPS000000000000", aws_secret_access_key="ops-secret", **creds)
    app = dict(aws_access_key_id="AKIAAPP000000000000", aws_secret_access_key="app-secret", **creds)
    try:
        rt = boto3.client("bedrock-runtime", **ops)
        for i in range(3):
            rt.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"audit {i}"}]}])
        logs = boto3.client("logs", **ops)
        group = "/aws/bedrock/modelinvocations"
        deadline = time.time() + 20
        while len(logs.filter_log_events(logGroupName=group)["events"]) < 3:
            assert time.time() < deadline
            time.sleep(0.2)
        got = logs.get_log_events(logGroupName=group, logStreamName="aws/bedrock/modelinvocations", startFromHead=True)
        assert len(got["events"]) == 3
        q = logs.start_query(logGroupName=group, startTime=0, endTime=int(time.time()) + 60,
                             queryString="fields @timestamp, modelId | limit 2")
        while (res := logs.get_query_results(queryId=q["queryId"]))["status"] in ("Scheduled", "Running"):
            time.sleep(0.1)
        assert len(res["results"]) == 2
        ptr = next(f["value"] for f in res["results"][0] if f["field"] == "@ptr")
        assert "modelId" in logs.get_log_record(logRecordPointer=ptr)["logRecord"]
        r = requests.post(s.url + "/logbook/query", headers={"Authorization": "Bearer sk-ops-reader"},
                          json={"query": "SELECT count(*) AS n FROM invocations", "language": "sql", "start": 0})
        assert r.status_code == 200, r.text
        # The app principal may invoke but not read: denied, and the denial is audited too.
        denied = boto3.client("logs", **app)
        try:
            denied.filter_log_events(logGroupName=group)
            raise AssertionError("an invoke-only principal read the logs")
        except denied.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "AccessDeniedException"
    finally:
        s.stop()
    t = logbook("trail", "--data-dir", data, "--config", os.path.join(data, "logbook.toml"), "--category", "data", "--format", "json")
    assert t.returncode == 0, t.stderr
    events = [json.loads(l) for l in t.stdout.splitlines() if l.strip()]  # JSON Lines
    by = {}
    for e in events:
        by.setdefault(e["eventName"], []).append(e)
        assert e["eventCategory"] == "Data" and e["managementEvent"] is False and e["readOnly"] is True
        assert e["eventSource"] == "logs.amazonaws.com"
    refused = [e for e in by["FilterLogEvents"] if "errorCode" in e]
    assert [(e["userIdentity"]["arn"], e["errorCode"]) for e in refused] == [
        ("arn:aws:iam::123456789012:user/app", "AccessDeniedException")]
    ok = [e for e in by["FilterLogEvents"] if "errorCode" not in e]
    assert {"recordsReturned": 3} in [e["additionalEventData"] for e in ok]
    assert all(e["requestParameters"]["logGroupName"] == group for e in ok)
    assert by["GetLogEvents"][0]["additionalEventData"] == {"recordsReturned": 3}
    assert by["StartQuery"][0]["requestParameters"]["queryString"].startswith("fields @timestamp")
    assert any(e["additionalEventData"] == {"recordsReturned": 2} for e in by["GetQueryResults"])
    assert by["GetLogRecord"][0]["additionalEventData"] == {"recordsReturned": 1}
    assert by["LogbookQuery"][0]["requestParameters"]["query"] == "SELECT count(*) AS n FROM invocations"
    assert by["LogbookQuery"][0]["additionalEventData"] == {"recordsReturned": 1}
    # Management events are not data events.
    m = [json.loads(l) for l in logbook("trail", "--data-dir", data, "--config", os.path.join(data, "logbook.toml"),
                                        "--category", "management", "--format", "json").stdout.splitlines() if l.strip()]
    assert all(e["eventCategory"] == "Management" for e in m)
    # The audit events are in the signed trail: the bucket verifies.
    v = logbook("verify", "--data-dir", data, "--config", os.path.join(data, "logbook.toml"))
    assert v.returncode == 0, v.stdout + v.stderr

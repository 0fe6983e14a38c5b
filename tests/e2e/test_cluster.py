"""Replicas that share a home bucket (issue #13, points 1 and 7): node-id claims, and a
bucket that cannot do conditional writes refused at start. Real S3 servers (moto's and
s3rver) on loopback, real `logbook serve` processes."""

import json
import os
import shutil
import signal
import time

import pytest
import requests

from conftest import Server
from remote import Moto, S3rver, bucket_config

CLAIMS = "logbook/cluster/nodes/"


def cluster_config(bucket, s3_server, ttl=30):
    return bucket_config("shared", s3_server, remote=bucket) + (
        f'[cluster]\nhome = "shared"\nclaim_ttl_secs = {ttl}\n')


def converse(server, text):
    return server.bedrock().converse(
        modelId="m", messages=[{"role": "user", "content": [{"text": text}]}])


def claim_of(s3, bucket, node):
    body = s3.get_object(Bucket=bucket, Key=f"{CLAIMS}{node}.json")["Body"].read()
    return json.loads(body)


def start_fails(data_dir, config_text):
    s = Server(data_dir, config_text)
    with pytest.raises(RuntimeError) as e:
        s.start()
    return str(e.value)


@pytest.fixture
def moto(tmp_path):
    m = Moto(tmp_path)
    yield m
    m.stop()


def test_a_copy_of_a_running_replicas_data_folder_refuses_to_start(make_server, moto, tmp_path):
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    config = cluster_config("home", moto)
    a = make_server(config, name="a")
    node = open(tmp_path / "a" / "node-id").read().strip()
    for i in range(3):
        converse(a, f"before the copy {i}")
    held = claim_of(s3, "home", node)
    assert held["kind"] == "logbook-node-claim/1" and held["node"] == node
    assert held["dataDir"] == str((tmp_path / "a").resolve()) and not held["released"]
    assert a.health()["cluster"]["node"] == node

    # A copy of the live folder (a cloned VM, a copied volume): the same node id.
    shutil.copytree(tmp_path / "a", tmp_path / "copy", ignore=shutil.ignore_patterns("server.stderr"))
    err = start_fails(tmp_path / "copy", config)
    assert f"node id {node} is in use by a running replica" in err, err
    assert str((tmp_path / "a").resolve()) in err, err
    # The refused copy changed nothing: the original still holds the claim and serves.
    assert claim_of(s3, "home", node)["pid"] == held["pid"]
    converse(a, "after the refused copy")

    # A clean stop releases the claim with the journal's final position...
    for i in range(3):
        converse(a, f"after the copy {i}")
    a.stop()
    released = claim_of(s3, "home", node)
    assert released["released"] and released["journalNext"] > held["journalNext"], released
    # ...so the copy, which is behind it, is still refused: its next objects would take
    # keys the node already wrote.
    err = start_fails(tmp_path / "copy", config)
    assert "already wrote up to journal position" in err and "older copy or a restored backup" in err, err
    # The original starts again at once and serves.
    a2 = make_server(config, name="a")
    converse(a2, "back")
    assert not claim_of(s3, "home", node)["released"]


def test_replicas_with_their_own_node_ids_share_one_home(make_server, moto, tmp_path):
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    config = cluster_config("home", moto)
    servers = [make_server(config, name=f"r{i}") for i in range(3)]
    nodes = {open(tmp_path / f"r{i}" / "node-id").read().strip() for i in range(3)}
    assert len(nodes) == 3
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="home", Prefix=CLAIMS).get("Contents", [])}
    assert keys == {f"{CLAIMS}{n}.json" for n in nodes}
    for s in servers:
        converse(s, "hello")
        h = s.health()
        assert h["status"] == "ok" and h["cluster"]["home"] == "shared" and not h["cluster"]["lost"], h
    # The conditional-write probe leaves nothing behind.
    assert not s3.list_objects_v2(Bucket="home", Prefix="logbook/cluster/probe/").get("Contents")


def test_two_replicas_configured_with_one_node_id_cannot_both_run(make_server, moto, tmp_path):
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    config = cluster_config("home", moto) + '[server]\nnode_id = "gw-1"\n'
    make_server(config, name="one")
    err = start_fails(tmp_path / "two", config)
    assert "node id gw-1 is in use by a running replica" in err, err


def test_a_bucket_that_ignores_conditional_writes_is_refused_at_start(tmp_path):
    # s3rver accepts PutObject with If-None-Match / If-Match and ignores both: two replicas
    # on it would overwrite each other's shared state without noticing.
    srv = S3rver(tmp_path)
    try:
        srv.s3().create_bucket(Bucket="home")
        err = start_fails(tmp_path / "data", cluster_config("home", srv))
        assert "cannot hold state that replicas share" in err, err
        assert "conditional writes" in err and "If-None-Match" in err, err
        # Nothing of the probe, and no claim, is left in the bucket.
        assert not srv.s3().list_objects_v2(Bucket="home").get("Contents")
    finally:
        srv.stop()


def test_a_foreign_object_where_the_claim_belongs_is_reported_and_left_alone(moto, tmp_path):
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    config = cluster_config("home", moto) + '[server]\nnode_id = "gw-9"\n'
    s3.put_object(Bucket="home", Key=f"{CLAIMS}gw-9.json", Body=b'{"not": "a claim"}')
    err = start_fails(tmp_path / "data", config)
    assert "is not a Logbook node claim" in err, err
    body = s3.get_object(Bucket="home", Key=f"{CLAIMS}gw-9.json")["Body"].read()
    assert body == b'{"not": "a claim"}'


def test_a_home_that_is_not_a_declared_bucket_is_a_configuration_error(tmp_path):
    err = start_fails(tmp_path / "data", '[cluster]\nhome = "nowhere"\n')
    assert 'cluster.home "nowhere" is not declared in [[buckets]]' in err, err


def test_a_replica_whose_claim_was_taken_while_it_hung_stops_writing(make_server, moto, tmp_path):
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    config = cluster_config("home", moto, ttl=3)
    a = make_server(config, name="a")
    node = open(tmp_path / "a" / "node-id").read().strip()
    converse(a, "before the pause")
    # A hangs (SIGSTOP) past its lease; a copy of its folder, at the same journal
    # position, takes the node over.
    a.proc.send_signal(signal.SIGSTOP)
    try:
        shutil.copytree(tmp_path / "a", tmp_path / "b", ignore=shutil.ignore_patterns("server.stderr"))
        deadline = time.time() + 30
        while True:
            try:
                b = make_server(config, name="b")
                break
            except RuntimeError as e:
                assert "in use by a running replica" in str(e) and time.time() < deadline, e
                time.sleep(0.5)
        assert claim_of(s3, "home", node)["pid"] == b.proc.pid
    finally:
        a.proc.send_signal(signal.SIGCONT)
    # Back, A finds at its next renewal that the claim is not its own, and stops with an
    # error, without delivering anything more as that node.
    assert a.proc.wait(timeout=30) != 0
    err = a.stderr()
    assert "node-id claim lost" in err and "taken over by another replica" in err, err
    converse(b, "the new holder serves")
    assert claim_of(s3, "home", node)["pid"] == b.proc.pid


def bedrock_control(server, region):
    import boto3
    from botocore.config import Config as BotoConfig
    k = server.admin
    return boto3.client("bedrock", endpoint_url=server.url, region_name=region,
                        aws_access_key_id=k["accessKeyId"], aws_secret_access_key=k["secretAccessKey"],
                        config=BotoConfig(retries={"total_max_attempts": 1}))


def wait_for(check, timeout=15):
    deadline = time.time() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.time() < deadline, "not within the bound"
        time.sleep(0.1)


def logging_of(server, region):
    r = bedrock_control(server, region).get_model_invocation_logging_configuration()
    return r.get("loggingConfig")


def test_a_logging_change_through_one_replica_is_in_force_on_every_other(make_server, moto, tmp_path):
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    config = cluster_config("home", moto) + "poll_ms = 200\n"
    a, b = make_server(config, name="a"), make_server(config, name="b")
    bedrock_control(a, "us-east-1").put_model_invocation_logging_configuration(
        loggingConfig={"s3Config": {"bucketName": "logbook-archive"}, "textDataDeliveryEnabled": False})
    started = time.time()
    wait_for(lambda: (logging_of(b, "us-east-1") or {}).get("textDataDeliveryEnabled") is False)
    # Within a few poll intervals (the bound is poll_ms; 200 ms here), allowing for load.
    assert time.time() - started < 10
    # B now records as the shared configuration says: no bodies.
    r = converse(b, "a secret prompt")
    rid = r["ResponseMetadata"]["RequestId"]
    from conftest import wait_record
    rec = wait_record(b, rid)
    assert "inputBodyJson" not in rec["input"] and rec["logbook"]["bodiesOmitted"] == "textDataDeliveryEnabled=false"
    # A delete through B turns logging off on A.
    bedrock_control(b, "us-east-1").delete_model_invocation_logging_configuration()
    wait_for(lambda: logging_of(a, "us-east-1") is None)
    # The shared copy in the home holds the tombstone.
    doc = json.loads(s3.get_object(Bucket="home", Key="logbook/cluster/state/logging-configs.json")["Body"].read())
    assert doc["kind"] == "logbook-logging-configs/1"
    assert any(e["config"] is None for e in doc["entries"].values()), doc


def test_replicas_changing_logging_at_once_lose_no_update(make_server, moto, tmp_path):
    import threading
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    config = cluster_config("home", moto) + "poll_ms = 200\n"
    replicas = [make_server(config, name=f"r{i}") for i in range(3)]
    regions = ["us-west-2", "eu-west-1", "ap-south-1"]
    errors = []

    def writer(server, region):
        try:
            c = bedrock_control(server, region)
            for n in range(6):
                c.put_model_invocation_logging_configuration(loggingConfig={
                    "s3Config": {"bucketName": "logbook-archive", "keyPrefix": f"{region}/{n}/"}})
            # And all three at once on one region: one of them wins, none fails.
            bedrock_control(server, "us-east-2").put_model_invocation_logging_configuration(loggingConfig={
                "s3Config": {"bucketName": "logbook-archive", "keyPrefix": f"by-{region}/"}})
        except Exception as e:  # noqa: BLE001 - reported below, with the replica
            errors.append((region, repr(e)))

    threads = [threading.Thread(target=writer, args=(s, r)) for s, r in zip(replicas, regions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for s in replicas:
        for region in regions:
            wait_for(lambda: (logging_of(s, region) or {}).get("s3Config", {}).get("keyPrefix") == f"{region}/5/")
    winners = {logging_of(s, "us-east-2")["s3Config"]["keyPrefix"] for s in replicas}
    wait_for(lambda: len({logging_of(s, "us-east-2")["s3Config"]["keyPrefix"] for s in replicas}) == 1)
    assert winners <= {f"by-{r}/" for r in regions}


def test_every_replica_queries_every_replicas_records_within_the_stated_bound(make_server, moto, tmp_path):
    from test_query import insights, logs, rows
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    config = cluster_config("home", moto) + "poll_ms = 500\n"
    a, b, c = (make_server(config, name=n) for n in "abc")
    served = {}
    for i, s in enumerate((a, b, c)):
        for j in range(4):
            r = converse(s, f"replica {i} call {j}")
            served[r["ResponseMetadata"]["RequestId"]] = i
    # Each replica's queries see all twelve records (its own at once, the others' once
    # flushed and published: 5 s flush age + two 0.5 s polls, well inside 10 s).
    started = time.time()
    for s in (a, b, c):
        def seen():
            got = rows(insights(logs(s), "fields requestId | limit 100"))
            return {r["requestId"] for r in got} == set(served) and got
        wait_for(seen, timeout=30)
    assert time.time() - started < 15, time.time() - started
    # Aggregates count each record once across replicas.
    got = rows(insights(logs(b), "stats count(*) as n"))
    assert got == [{"n": "12"}], got
    # The others' files are copied to a local cache and read from there: the same answers.
    wait_for(lambda: b.health()["cluster"]["peerCache"]["copied"] >= 2, timeout=15)
    assert any(f.endswith(".parquet") for f in os.listdir(tmp_path / "b" / "cache" / "peers"))
    got = rows(insights(logs(b), "stats count(*) as n"))
    assert got == [{"n": "12"}], got
    assert {r["requestId"] for r in rows(insights(logs(b), "fields requestId | limit 100"))} == set(served)
    h = b.health()["cluster"]
    assert set(h["peers"]) == {open(tmp_path / n / "node-id").read().strip() for n in "ac"}, h
    assert h["published"]["published"] >= 1 and not h["skippedPeers"], h
    # The home holds each replica's files and manifest under its node id.
    node_a = open(tmp_path / "a" / "node-id").read().strip()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="home", Prefix=f"logbook/store/{node_a}/")["Contents"]]
    assert f"logbook/store/{node_a}/manifest.json" in keys
    assert any(k.endswith(".parquet") for k in keys), keys


def test_a_corrupt_or_foreign_store_manifest_in_the_home_is_skipped_and_reported(make_server, moto, tmp_path):
    from test_query import insights, logs, rows
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    # Planted before the replica starts: garbage, another kind, a manifest that lies about
    # its node, and one whose file path leaves its folder.
    s3.put_object(Bucket="home", Key="logbook/store/bad-json/manifest.json", Body=b"\x00garbage")
    s3.put_object(Bucket="home", Key="logbook/store/other-kind/manifest.json",
                  Body=json.dumps({"kind": "something/1"}).encode())
    lying = {"kind": "logbook-store-manifest/1", "node": "someone-else", "publishedMs": 0,
             "store": {"formatVersion": 3, "nextSeq": 1, "groups": {}}}
    s3.put_object(Bucket="home", Key="logbook/store/liar/manifest.json", Body=json.dumps(lying).encode())
    escaping = dict(lying, node="escape", store={"formatVersion": 3, "nextSeq": 2, "groups": {
        "/aws/bedrock/modelinvocations": {"creationTime": 0, "files": [
            {"path": "../../../etc/passwd", "minTs": 0, "maxTs": 9 * 10**15, "rows": 1, "bytes": 1}]}}})
    s3.put_object(Bucket="home", Key="logbook/store/escape/manifest.json", Body=json.dumps(escaping).encode())
    s = make_server(cluster_config("home", moto) + "poll_ms = 200\n", name="a")
    r = converse(s, "still answers")
    rid = r["ResponseMetadata"]["RequestId"]
    got = wait_for(lambda: rows(insights(logs(s), "fields requestId | limit 10")))
    assert [x["requestId"] for x in got] == [rid]
    skipped = s.health()["cluster"]["skippedPeers"]
    assert set(skipped) == {"bad-json", "other-kind", "liar", "escape"}, skipped
    assert "leaves the node's folder" in skipped["escape"] and "someone-else" in skipped["liar"], skipped


def test_log_groups_created_on_one_replica_exist_on_all_with_one_retention(make_server, moto, tmp_path):
    from test_query import logs
    import botocore.exceptions
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    config = cluster_config("home", moto) + "poll_ms = 200\n"
    a, b = make_server(config, name="a"), make_server(config, name="b")

    def groups(s):
        return {g["logGroupName"]: g.get("retentionInDays")
                for g in logs(s).describe_log_groups()["logGroups"]}

    logs(a).create_log_group(logGroupName="/team/payments")
    wait_for(lambda: "/team/payments" in groups(b))
    # "Already exists" holds across replicas.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        logs(b).create_log_group(logGroupName="/team/payments")
    assert e.value.response["Error"]["Code"] == "ResourceAlreadyExistsException"
    logs(b).put_retention_policy(logGroupName="/team/payments", retentionInDays=30)
    wait_for(lambda: groups(a).get("/team/payments") == 30)
    logs(a).delete_log_group(logGroupName="/team/payments")
    wait_for(lambda: "/team/payments" not in groups(b))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        logs(b).delete_log_group(logGroupName="/team/payments")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    doc = json.loads(s3.get_object(Bucket="home", Key="logbook/cluster/state/log-groups.json")["Body"].read())
    assert doc["groups"]["/team/payments"]["deleted"] is True, doc


def test_coverage_lists_every_replica_and_a_crashed_one_is_a_gap(make_server, moto, tmp_path):
    import subprocess
    from conftest import BIN
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    config = cluster_config("home", moto, ttl=3) + "poll_ms = 200\n"
    a, b = make_server(config, name="a"), make_server(config, name="b")

    def coverage():
        p = subprocess.run([BIN, "coverage", "--data-dir", a.data_dir, "--config", a.config_path, "--url", a.url,
                            "--format", "json"], capture_output=True, text=True, timeout=60)
        return p.returncode, json.loads(p.stdout)

    node_b = open(tmp_path / "b" / "node-id").read().strip()
    _, c = coverage()
    states = {r["node"]: r["state"] for r in c["replicas"]}
    assert sorted(states.values()) == ["running", "running"], c["replicas"]
    assert not [g for g in c["gaps"] if "replica" in g], c["gaps"]
    # B crashes: after its lease, coverage names it as a gap.
    b.kill9()
    time.sleep(3.5)
    code, c = coverage()
    assert code == 1
    assert {r["node"]: r["state"] for r in c["replicas"]}[node_b] == "lost", c["replicas"]
    assert any(g.startswith(f"replica {node_b}") and "without stopping cleanly" in g for g in c["gaps"]), c["gaps"]


def test_alarms_are_one_set_for_all_replicas_and_fire_once_over_all_their_calls(make_server, moto, tmp_path):
    import boto3
    import botocore.exceptions
    from botocore.config import Config as BotoConfig
    from test_alarms import MODEL, ONCALL, Receiver
    rx = Receiver()
    try:
        s3 = moto.s3()
        s3.create_bucket(Bucket="home")
        config = cluster_config("home", moto, ttl=6) + "poll_ms = 300\n" + f"""
[alarm_evaluation]
every_ms = 500

[[alarm_actions]]
arn = "{ONCALL}"
url = "{rx.url}/sns"
"""
        a, b = make_server(config, name="a"), make_server(config, name="b")

        def cw(s):
            k = s.admin
            return boto3.client("cloudwatch", endpoint_url=s.url, region_name="us-east-1",
                                aws_access_key_id=k["accessKeyId"], aws_secret_access_key=k["secretAccessKey"],
                                config=BotoConfig(retries={"total_max_attempts": 1}))

        def state(s, name):
            got = cw(s).describe_alarms(AlarmNames=[name])["MetricAlarms"]
            return got[0]["StateValue"] if got else None

        # Made through one replica, in force on the other within the poll.
        cw(a).put_metric_alarm(AlarmName="throttles", Namespace="AWS/Bedrock", MetricName="InvocationThrottles",
                               Dimensions=[{"Name": "ModelId", "Value": MODEL}], Statistic="Sum", Period=60,
                               EvaluationPeriods=1, Threshold=5, ComparisonOperator="GreaterThanThreshold",
                               AlarmActions=[ONCALL])
        wait_for(lambda: state(b, "throttles") is not None, timeout=5)
        # One evaluator, and both replicas name the same one.
        def evaluators():
            e = [s.health()["cluster"]["alarmEvaluator"] for s in (a, b)]
            return e if e[0]["node"] and e[0]["node"] == e[1]["node"] and e[0]["here"] != e[1]["here"] else None
        wait_for(evaluators, timeout=10)
        # Four throttles through each replica: neither alone crosses 5, together they do.
        # (Not in a minute's last 20 s, so all eight fall in one period.)
        if time.time() % 60 > 40:
            time.sleep(61 - time.time() % 60)
        for s in (a, b):
            rt = s.bedrock()
            for i in range(4):
                with pytest.raises(botocore.exceptions.ClientError):
                    rt.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": f"[mock:error=ThrottlingException] {i}"}]}])
        wait_for(lambda: state(a, "throttles") == "ALARM" and state(b, "throttles") == "ALARM", timeout=30)

        def alarms_sent():
            return [m for p, body in rx.bodies if p == "/sns"
                    for m in [json.loads(body["Message"])] if m["AlarmName"] == "throttles" and m["NewStateValue"] == "ALARM"]
        wait_for(alarms_sent, timeout=10)
        # Several evaluations later, still one notification, and one transition in the
        # history both replicas show.
        time.sleep(3)
        assert len(alarms_sent()) == 1, alarms_sent()
        assert "datapoints [8] were past the threshold (5)" in alarms_sent()[0]["NewStateReason"], alarms_sent()[0]
        for s in (a, b):
            h = cw(s).describe_alarm_history(AlarmName="throttles", HistoryItemType="StateUpdate")["AlarmHistoryItems"]
            assert len([x for x in h if x["HistorySummary"].endswith(" to ALARM")]) == 1, h
        # The evaluator stops cleanly: the other takes the job over at once.
        first, other = (a, b) if a.health()["cluster"]["alarmEvaluator"]["here"] else (b, a)
        first.stop()
        wait_for(lambda: other.health()["cluster"]["alarmEvaluator"]["here"], timeout=10)
        # A delete through the survivor is the cluster's: the home's copy has no alarm left.
        cw(other).delete_alarms(AlarmNames=["throttles"])
        doc = json.loads(s3.get_object(Bucket="home", Key="logbook/cluster/state/alarms.json")["Body"].read())
        assert doc["kind"] == "logbook-alarms/1" and doc["alarms"] == {}, doc
        # A shared copy this build cannot read: a change is the service's failure (500
        # InternalServiceError), not a bad parameter, and the object is left as it is.
        s3.put_object(Bucket="home", Key="logbook/cluster/state/alarms.json", Body=b'{"kind": "not-ours"}')
        with pytest.raises(botocore.exceptions.ClientError) as e:
            cw(other).put_metric_alarm(AlarmName="t2", Namespace="AWS/Bedrock", MetricName="InvocationThrottles",
                                       Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=5,
                                       ComparisonOperator="GreaterThanThreshold")
        err = e.value.response
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 500, err
        assert err["Error"]["Code"] == "InternalServiceError" and "left as it is" in err["Error"]["Message"], err
        body = s3.get_object(Bucket="home", Key="logbook/cluster/state/alarms.json")["Body"].read()
        assert body == b'{"kind": "not-ours"}'
    finally:
        rx.close()


class Redis:
    """Debian's redis-server on a free loopback port, which a test may stop, start again
    (same port, empty: no persistence) and pause (SIGSTOP: a Redis that stops answering)."""

    def __init__(self, tmp_path):
        import socket
        self.binary = os.environ.get("LOGBOOK_REDIS_SERVER", "/usr/bin/redis-server")
        if not os.path.exists(self.binary):
            raise RuntimeError(f"redis-server is not at {self.binary}: run scripts/test.sh (it installs Debian's redis-server)")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.cwd, self.proc = str(tmp_path), None
        self.url = f"redis://127.0.0.1:{self.port}/"
        self.start()

    def start(self):
        import socket
        import subprocess
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], cwd=self.cwd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.time() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path)
    yield r
    r.stop()


@pytest.fixture
def redis_server(redis):
    return redis.url


def test_a_budget_holds_across_three_replicas_through_redis(make_server, moto, redis_server, tmp_path):
    import concurrent.futures
    from decimal import Decimal
    import botocore.exceptions
    from conftest import read_records, wait_records
    from test_budgets import alice, call, config as budget_config, spent_in_records, status
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    limit = Decimal("0.0003")
    config = budget_config(str(limit)) + cluster_config("home", moto) + f'redis_url = "{redis_server}"\n'
    replicas = [make_server(config, name=f"r{i}") for i in range(3)]

    def one(args):
        s, i = args
        try:
            call(alice(s), i)
            return "ok"
        except botocore.exceptions.ClientError as e:
            return e.response["Error"]["Code"]

    work = [(replicas[i % 3], i) for i in range(60)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=30) as pool:
        results = list(pool.map(one, work))
    ok = results.count("ok")
    assert ok + results.count("ThrottlingException") == 60, results
    assert 0 < ok < 60, results
    recs = []
    for s in replicas:
        recs += wait_records(s, 20)
    spent = spent_in_records(recs)
    # Each replica alone would have let about the whole limit through (three times it in
    # all); the shared ledger holds the sum: every estimate is at least its call's cost,
    # so the reservations in flight on all replicas cover what they admit.
    assert spent <= limit, (spent, ok)
    # Every replica's refusals name the budget and say it is across replicas.
    # (What the limit has left may still admit one small call: it is counted below.)
    made = 0
    with pytest.raises(botocore.exceptions.ClientError) as e:
        for i in range(5):
            made += 1
            call(alice(replicas[i % 3]), 100 + i)
    assert "across replicas" in e.value.response["Error"]["Message"], e.value.response["Error"]["Message"]
    recs = []
    for j, s in enumerate(replicas):
        recs += wait_records(s, 20 + sum(1 for i in range(made) if i % 3 == j))
    spent = spent_in_records(recs)
    assert spent <= limit, (spent, ok)
    # Every replica reports the cluster's spend, which the records add up to.
    for s in replicas:
        shared = status(s)["search-day"]["cluster"]
        assert Decimal(shared["spent"]) == spent, (shared, spent)


def test_a_redis_outage_refuses_budgeted_calls_at_once_and_nothing_else(make_server, moto, redis, tmp_path):
    """The ledger down (stopped) or hung (SIGSTOP): calls a budget covers are refused
    within the ledger's answer timeout, with the reason, and recorded; calls no budget
    covers go on; when Redis is back, budgeted calls are admitted again, and a charge that
    failed meanwhile is retried, not lost until the next start."""
    import botocore.exceptions
    from conftest import read_records, wait_records
    from test_budgets import alice, call, config as budget_config, status
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    config = budget_config("10") + cluster_config("home", moto) + f'redis_url = "{redis.url}"\n'
    a = make_server(config, name="a")
    bob = a.bedrock(key="AKIABOB000000000000", secret="bob-secret")
    call(alice(a), 0)

    def refused(i):
        started = time.time()
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call(alice(a), i)
        return e.value.response, time.time() - started

    # Stopped: refused at once (connection refused), with the reason.
    redis.stop()
    r, took = refused(1)
    assert r["Error"]["Code"] == "ThrottlingException", r
    assert "shared budget ledger" in r["Error"]["Message"] and "cannot be reached" in r["Error"]["Message"], r
    assert "redis://127.0.0.1" in r["Error"]["Message"] and "the call was not made" in r["Error"]["Message"], r
    assert took < 10, took
    call(bob, 2)  # no budget covers bob: not held by the ledger
    # Back (empty: this Redis keeps nothing): admitted again, without a restart.
    redis.start()
    deadline = time.time() + 20
    while True:
        try:
            call(alice(a), 3)
            break
        except botocore.exceptions.ClientError as e:
            assert time.time() < deadline, e.response
            time.sleep(0.5)
    # Hung: refused within a bounded time, never held.
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        for i in range(3):
            r, took = refused(10 + i)
            # (The Redis client's own response timeout, or the ledger's 2 s one.)
            assert "cannot be reached" in r["Error"]["Message"] and "timed out" in r["Error"]["Message"] or \
                "no answer within 2 s" in r["Error"]["Message"], r
            assert took < 8, took
        call(bob, 20)
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    # A call admitted just before Redis goes down: its record is durable while the ledger
    # is unreachable, so its charge fails; it is retried and lands once Redis is back.
    # (A paused Redis would not show it: the command waits in its socket and runs on
    # SIGCONT.)
    import threading
    slow = threading.Thread(target=lambda: alice(a).converse(
        modelId="amazon.nova-lite-v1:0", messages=[{"role": "user", "content": [{"text": "[mock:delay_ms=1500] slow"}]}],
        inferenceConfig={"maxTokens": 100}))
    slow.start()
    time.sleep(0.5)
    redis.stop()
    slow.join(timeout=30)
    time.sleep(1)
    redis.start()
    # Every call, refused or served, has its record; the server stayed healthy.
    recs = wait_records(a, 9)
    throttled = [x for x in recs if x.get("errorCode") == "ThrottlingException"]
    assert len(throttled) == 4, [x.get("errorCode") for x in recs]
    assert a.health()["status"] == "ok"
    # Redis came back empty, twice: the replica rebuilt the ledger from its own spend (a
    # new epoch each time), so the ledger holds every served call of the period once,
    # the slow call among them (its charge retried, or in the rebuilt spend), not only
    # what was charged since the last restart.
    from decimal import Decimal
    from test_budgets import spent_in_records
    slow_rec = [x for x in recs if "[mock:delay_ms=1500] slow" in json.dumps(x["input"])]
    assert len(slow_rec) == 1 and not slow_rec[0].get("errorCode"), slow_rec
    want = spent_in_records(recs)
    assert want > Decimal(slow_rec[0]["logbook"]["cost"])
    wait_for(lambda: Decimal(status(a)["search-day"]["cluster"]["spent"]) == want, timeout=40)
    ledger = requests.get(a.url + "/logbook/budgets", headers={"Authorization": "Bearer sk-auditor"},
                          timeout=10).json()["ledger"]
    assert ledger["epoch"] and ledger["rebuilds"] >= 2, ledger
    # And that total holds across the replica's restart (replaying its journal adds
    # nothing: those records are in the spend it added).
    replays = a.stderr().count("shared budget ledger replayed from the journal")
    a.stop()
    a.start()
    wait_for(lambda: a.stderr().count("shared budget ledger replayed from the journal") > replays, timeout=30)
    assert Decimal(status(a)["search-day"]["cluster"]["spent"]) == want


def test_a_budget_warning_is_raised_once_for_the_cluster_when_their_spend_together_crosses_it(
        make_server, moto, redis, tmp_path):
    """Each call costs 0.00000666 USD; twelve over three replicas are 61 % of the limit, each
    replica's own four 20 %. So the cluster crosses 10 % and 50 % once each, and no replica
    alone reaches 50 %: the warnings come from the ledger, each from one replica."""
    import subprocess
    from decimal import Decimal
    from conftest import BIN, wait_records
    from test_budgets import alice, call, config as budget_config, spent_in_records, status
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    config = budget_config("0.00013", warn="[10, 50]") + cluster_config("home", moto) + f'redis_url = "{redis.url}"\n'
    replicas = [make_server(config, name=f"r{i}") for i in range(3)]
    for i in range(12):
        call(alice(replicas[i % 3]), i % 10)
    recs = []
    for s in replicas:
        recs += wait_records(s, 4)
    total = spent_in_records(recs)
    assert total == Decimal("0.00007992"), total
    wait_for(lambda: Decimal(status(replicas[0])["search-day"]["cluster"]["spent"]) == total, timeout=20)
    events = []
    for s in replicas:
        # The spend loop reports within a second; a clean stop reports what is left.
        s.stop()
        out = subprocess.run([BIN, "trail", "--data-dir", s.data_dir, "--config", s.config_path, "--format", "json",
                              "--event-name", "BudgetThresholdCrossed"], capture_output=True, text=True, check=True).stdout
        events += [json.loads(line)["requestParameters"] for line in out.splitlines() if line.strip()]
    assert sorted(e["thresholdPercent"] for e in events) == [10, 50], events
    fifty = [e for e in events if e["thresholdPercent"] == 50][0]
    # Reported with the cluster's spend at the crossing (the tenth call's), not a replica's.
    assert Decimal(fifty["spentUsd"]) == Decimal("0.0000666") and fifty["limitUsd"] == "0.00013", fifty


def test_an_unauthenticated_flood_of_healthz_lists_the_home_at_most_once_per_poll(make_server, moto, tmp_path):
    """`/healthz` needs no credentials and names the peers, which needs a listing of the
    home: a flood of it must not turn into a flood on the home (the listing is cached for
    `poll_ms`), nor stall the replica's calls and queries."""
    import concurrent.futures
    import re
    import requests
    from test_query import insights, logs, rows
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    config = cluster_config("home", moto) + "poll_ms = 1000\n"
    a, b = make_server(config, name="a"), make_server(config, name="b")
    converse(a, "from a")
    # moto logs the query as sent or decoded: "...&prefix=logbook/store/ HTTP/1.1".
    peers_listing = re.compile(r'prefix=logbook(/|%2F)store(/|%2F)(&|\s|")')

    def listings():
        with open(moto.log.name, "rb") as f:
            return sum(1 for line in f.read().decode(errors="replace").splitlines() if peers_listing.search(line))

    before = listings()
    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        flood = [pool.submit(lambda: requests.get(b.url + "/healthz", timeout=10).status_code) for _ in range(600)]
        # Meanwhile the replica serves calls and queries.
        converse(b, "during the flood")
        assert rows(insights(logs(b), "stats count(*) as n")), "query answered"
        codes = [f.result() for f in flood]
    took = time.time() - started
    assert set(codes) == {200}, set(codes)
    done = listings() - before
    # At most one listing per poll interval (plus the one in flight at each end), not one
    # per request; and the count is real (the flood did list at least once).
    assert 1 <= done <= took / 1.0 + 2, (done, took)


def test_a_budget_declared_by_one_replica_holds_on_all_and_a_restart_with_a_new_limit_changes_it_everywhere(
        make_server, moto, tmp_path):
    """Budgets' definitions live in the home: a replica whose config declares no budget
    still refuses a call past one another replica declares (before, it served every call:
    a budget leaked through any replica not given the same `[[budgets]]`); a replica
    restarted with a new limit changes it for all within the poll; a replica whose file
    says otherwise is drift in `/logbook/budgets` and a gap in `logbook coverage`; a
    budget no replica declares any more goes."""
    import subprocess
    import botocore.exceptions
    from conftest import BIN
    from test_budgets import alice, call, config as budget_config, status
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    cluster = cluster_config("home", moto) + "poll_ms = 200\n"
    principals = budget_config("1").split("[[budgets]]")[0]
    with_budget = lambda limit: budget_config(limit) + cluster  # noqa: E731
    a = make_server(with_budget("0.00005"), name="a")
    b = make_server(principals + cluster, name="b")
    node_a = open(tmp_path / "a" / "node-id").read().strip()
    held = status(b)["search-day"]
    assert held["limit"] == "0.00005" and held["declaredBy"] == [node_a] and held["changedBy"] == node_a, held
    # B declares nothing and still holds A's budget (over its own calls: no ledger here).
    served, refusal = 0, None
    for i in range(60):
        try:
            call(alice(b), i)
            served += 1
        except botocore.exceptions.ClientError as e:
            refusal = e.response
            break
    assert refusal is not None and served >= 2, served
    assert refusal["Error"]["Code"] == "ThrottlingException" and "search-day" in refusal["Error"]["Message"], refusal
    # A restarts with a higher limit: in force on B within the poll, without a restart.
    a.stop()
    with open(a.config_path, "w") as f:
        f.write(with_budget("0.5"))
    a.start()
    wait_for(lambda: status(b)["search-day"]["limit"] == "0.5")
    call(alice(b), 100)
    assert requests_json(b)["drift"] == []
    # C starts with the old limit: last start wins, so it is in force again everywhere...
    c = make_server(with_budget("0.00005"), name="c")
    wait_for(lambda: status(a)["search-day"]["limit"] == "0.00005")
    node_c = open(tmp_path / "c" / "node-id").read().strip()
    assert sorted(status(a)["search-day"]["declaredBy"]) == sorted([node_a, node_c])
    # ... and A's file now drifts: reported by A, and a gap for `logbook coverage`.
    drift = requests_json(a)["drift"]
    assert len(drift) == 1 and "search-day" in drift[0] and f"set by node {node_c}" in drift[0], drift
    p = subprocess.run([BIN, "coverage", "--data-dir", a.data_dir, "--config", a.config_path, "--url", a.url,
                        "--format", "json"], capture_output=True, text=True, timeout=60)
    cov = json.loads(p.stdout)
    assert p.returncode == 1 and cov["budgetDrift"] == drift, cov
    assert any("search-day" in g and "the cluster enforces its own" in g for g in cov["gaps"]), cov["gaps"]
    p = subprocess.run([BIN, "coverage", "--data-dir", c.data_dir, "--config", c.config_path, "--url", c.url,
                        "--format", "json"], capture_output=True, text=True, timeout=60)
    assert json.loads(p.stdout)["budgetDrift"] == [], p.stdout
    # A and C restart without it: no replica declares it, and it goes from B too.
    for s in (a, c):
        s.stop()
        with open(s.config_path, "w") as f:
            f.write(principals + cluster)
        s.start()
    wait_for(lambda: "search-day" not in status(b))
    call(alice(b), 200)
    doc = json.loads(s3.get_object(Bucket="home", Key="logbook/cluster/state/budgets.json")["Body"].read())
    assert doc["kind"] == "logbook-budgets/1" and doc["budgets"] == {}, doc


def requests_json(s):
    import requests
    r = requests.get(s.url + "/logbook/budgets", headers={"Authorization": "Bearer sk-auditor"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_replica_gone_for_good_is_forgotten_and_coverage_is_whole_again(make_server, moto, tmp_path):
    """A replica that crashed and will not come back stays a gap in `logbook coverage`
    (lost) and keeps declaring its budgets forever. `logbook forget-replica` releases its
    claim on its behalf (refused while it runs), removes it as a declarer (a budget only
    it declared goes), and leaves its records queryable."""
    import subprocess
    from conftest import BIN
    from test_budgets import alice, call, config as budget_config, status
    s3 = moto.s3()
    s3.create_bucket(Bucket="home")
    cluster = cluster_config("home", moto, ttl=3) + "poll_ms = 200\n"

    def ids(s):
        r = requests.post(s.url + "/logbook/query", headers={"Authorization": "Bearer sk-auditor"}, timeout=30,
                          json={"query": "fields requestId | limit 10", "language": "insights", "start": 0})
        assert r.status_code == 200, r.text
        return {row[0] for row in r.json()["rows"]}

    a = make_server(budget_config("1", period="day") + cluster, name="a")
    b = make_server(budget_config("1", period="week") + cluster, name="b")
    node_b = open(tmp_path / "b" / "node-id").read().strip()
    wait_for(lambda: set(status(a)) == {"search-day", "search-week"})
    rid = call(alice(b), 0)["ResponseMetadata"]["RequestId"]
    wait_for(lambda: ids(a) == {rid}, timeout=30)

    def forget(node):
        return subprocess.run([BIN, "forget-replica", "--data-dir", a.data_dir, "--config", a.config_path, node,
                               "--format", "json"], capture_output=True, text=True, timeout=60)

    def coverage():
        p = subprocess.run([BIN, "coverage", "--data-dir", a.data_dir, "--config", a.config_path, "--url", a.url,
                            "--format", "json"], capture_output=True, text=True, timeout=60)
        return p.returncode, json.loads(p.stdout)

    # While it runs, it cannot be forgotten; an unknown node is named as such.
    p = forget(node_b)
    assert p.returncode != 0 and "is running" in p.stderr, p.stderr
    p = forget("no-such-node")
    assert p.returncode != 0 and "no replica" in p.stderr, p.stderr
    # It crashes: a gap until forgotten.
    b.kill9()
    time.sleep(3.5)
    code, c = coverage()
    assert code == 1 and any(g.startswith(f"replica {node_b}") for g in c["gaps"]), c["gaps"]
    p = forget(node_b)
    assert p.returncode == 0, p.stderr
    done = json.loads(p.stdout)
    assert done["node"] == node_b and not done["wasReleased"] and done["budgetsGone"] == ["search-week"], done
    code, c = coverage()
    assert {r["node"]: r["state"] for r in c["replicas"]}[node_b] == "stopped", c["replicas"]
    assert not [g for g in c["gaps"] if "replica" in g], c["gaps"]
    # Its budget went from the cluster; the one A declares stays; its record is still there.
    wait_for(lambda: set(status(a)) == {"search-day"})
    assert ids(a) == {rid}
    # Forgetting again changes nothing.
    p = forget(node_b)
    assert p.returncode == 0 and json.loads(p.stdout)["wasReleased"] and json.loads(p.stdout)["budgetsGone"] == []

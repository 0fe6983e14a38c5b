"""Outages, crashes and a hostile network between Logbook and its remote destinations,
with real processes: moto's S3 and CloudWatch Logs on loopback, a TCP proxy that refuses,
delays, resets and cuts connections, and the gateway killed with SIGKILL. Afterwards the
bucket holds every acknowledged call exactly once and the log group every one at least
once (PutLogEvents cannot be made idempotent; the duplicates are counted)."""

import collections
import json
import random
import threading
import time

import pytest

from remote import S3_SERVERS, FaultyProxy, Moto, bucket_config, log_events, log_group_config
from test_buckets import s3_records
from test_cloudwatch import GROUP, cw_logging

BUCKET = "corp-logs"


@pytest.fixture
def moto(tmp_path):
    m = Moto(tmp_path)
    yield m
    m.stop()


class Load:
    """Calls made continuously from a thread; remembers what was acknowledged."""

    def __init__(self, server, rate=25):
        self.server, self.rate = server, rate
        self.acked, self.errors = [], 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        i = 0
        client = self.server.bedrock()
        while not self.stop_flag.is_set():
            try:
                r = client.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"call {i}"}]}])
                self.acked.append(r["ResponseMetadata"]["RequestId"])
            except Exception:
                self.errors += 1
                time.sleep(0.2)
                try:
                    client = self.server.bedrock()
                except Exception:
                    pass
            i += 1
            time.sleep(1 / self.rate)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(30)


def remote_config(s3_url, logs_url, moto):
    return (bucket_config(BUCKET, moto).replace(moto.url, s3_url)
            + log_group_config(GROUP, moto).replace(moto.url, logs_url)
            + cw_logging(GROUP, s3_bucket=BUCKET)
            + "[archive]\nmax_object_age_ms = 300\n")


def drained(server, timeout=180):
    deadline = time.time() + timeout
    h = None
    while time.time() < deadline:
        h = server.health()
        ds = h["destinations"]
        if all(d["backlog"]["entries"] == 0 and d["consecutiveFailures"] == 0 for d in ds.values()):
            return h
        time.sleep(0.5)
    raise AssertionError(json.dumps(h, indent=1))


def check_s3_exactly_once(moto, expected):
    recs = [r["requestId"] for _, r in s3_records(moto.s3(), BUCKET)]
    dup = [k for k, n in collections.Counter(recs).items() if n > 1]
    assert not dup, f"{len(dup)} records twice in S3"
    missing = set(expected) - set(recs)
    assert not missing, f"{len(missing)} acknowledged calls missing from S3"
    return set(recs)


def check_cloudwatch_at_least_once(moto, expected):
    ids = [json.loads(e["message"])["requestId"] for e in log_events(moto.logs(), GROUP)]
    missing = set(expected) - set(ids)
    assert not missing, f"{len(missing)} acknowledged calls missing from CloudWatch Logs"
    return len(ids) - len(set(ids))


def test_an_endpoint_stopped_then_gone_for_a_minute_loses_nothing(make_server, moto):
    moto.s3().create_bucket(Bucket=BUCKET)
    moto.logs().create_log_group(logGroupName=GROUP)
    proxy = FaultyProxy(moto.port, p_reset=0, p_cut=0, p_delay=0)
    try:
        s = make_server(remote_config(proxy.url, proxy.url, moto))
        with Load(s) as load:
            time.sleep(3)
            moto.pause()          # SIGSTOP: connections hang
            time.sleep(30)
            h = s.health()
            moto.resume()
            proxy.down()          # the endpoint is gone: connections refused
            time.sleep(30)
            h2 = s.health()
            proxy.up()
            time.sleep(3)
        # Calls were served all along: delivery never holds up a call.
        assert load.errors == 0 and len(load.acked) > 600, (load.errors, len(load.acked))
        for name in ("archive-" + BUCKET, f"cloudwatch-{GROUP}"):
            assert h["destinations"][name]["backlog"]["entries"] > 0, h
            assert h2["destinations"][name]["failures"] > 0, h2
            assert h2["destinations"][name]["lastError"], h2
        assert h2["status"] == "degraded", h2
        h = drained(s)
        assert h["status"] == "ok"
        check_s3_exactly_once(moto, load.acked)
        dups = check_cloudwatch_at_least_once(moto, load.acked)
        cw = h["destinations"][f"cloudwatch-{GROUP}"]
        assert cw["metrics"]["ModelInvocationLogsCloudWatchDeliveryFailure"] > 0
        print(f"\n{len(load.acked)} calls; CloudWatch duplicates after the outage: {dups}")
    finally:
        proxy.stop()


@pytest.fixture(params=sorted(S3_SERVERS))
def s3server(request, tmp_path):
    m = S3_SERVERS[request.param](tmp_path)
    yield m
    m.stop()


def test_kill_9_three_times_while_delivering_to_s3_keeps_exactly_the_acknowledged_calls(make_server, s3server):
    moto = s3server
    moto.s3().create_bucket(Bucket=BUCKET)
    s = make_server(bucket_config(BUCKET, moto) + f'[logging_config.default]\ns3Config = {{ bucketName = "{BUCKET}" }}\n')
    rng = random.Random(11)
    acked, errors = [], 0
    for _ in range(3):
        with Load(s, rate=50) as load:
            time.sleep(rng.uniform(1.5, 4))
            s.kill9()
        acked += load.acked
        errors += load.errors
        s.start()
    with Load(s, rate=50) as load:
        time.sleep(1)
    acked += load.acked
    drained(s)
    in_bucket = check_s3_exactly_once(moto, acked)
    # Beyond the acknowledged calls, only calls cut off by a kill (recorded, unanswered).
    assert len(in_bucket - set(acked)) <= errors, (len(in_bucket - set(acked)), errors)


def test_a_network_that_resets_cuts_and_delays_loses_nothing(make_server, moto):
    moto.s3().create_bucket(Bucket=BUCKET)
    moto.logs().create_log_group(logGroupName=GROUP)
    proxy = FaultyProxy(moto.port, seed=3, p_reset=0.15, p_cut=0.15, p_delay=0.2)
    try:
        s = make_server(remote_config(proxy.url, proxy.url, moto))
        with Load(s) as load:
            time.sleep(15)
        assert load.errors == 0
        h = drained(s)
        proxy.enabled = False
        check_s3_exactly_once(moto, load.acked)
        dups = check_cloudwatch_at_least_once(moto, load.acked)
        assert proxy.counts["reset"] > 0 and proxy.counts["cut"] > 0, proxy.counts
        failures = sum(d["failures"] for d in h["destinations"].values())
        print(f"\n{len(load.acked)} calls; proxy {proxy.counts}; delivery failures {failures}; CloudWatch duplicates {dups}")
    finally:
        proxy.stop()


def test_credentials_that_become_invalid_are_a_permanent_error_that_holds_back_nothing_else(make_server, tmp_path):
    import boto3
    # moto checks signatures against its IAM once the first few (setup) calls are made.
    moto = Moto(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": "5"})
    try:
        iam = boto3.client("iam", endpoint_url=moto.url, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        iam.create_user(UserName="logbook")
        arn = iam.create_policy(PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))["Policy"]["Arn"]
        iam.attach_user_policy(UserName="logbook", PolicyArn=arn)
        key = iam.create_access_key(UserName="logbook")["AccessKey"]
        as_user = dict(endpoint_url=moto.url, region_name="us-east-1",
                       aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        logs = boto3.client("logs", **as_user)
        logs.create_log_group(logGroupName=GROUP)
        config = (log_group_config(GROUP, moto).replace('"testing"\nsecret_access_key = "testing"',
                                                        f'"{key["AccessKeyId"]}"\nsecret_access_key = "{key["SecretAccessKey"]}"')
                  + cw_logging(GROUP, s3_bucket="logbook-archive")
                  + "[archive]\nmax_object_age_ms = 200\npermanent_retry_ms = 500\n")
        assert key["AccessKeyId"] in config
        s = make_server(config)
        c = s.bedrock()
        first = [c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"a{i}"}]}])
                 ["ResponseMetadata"]["RequestId"] for i in range(5)]
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if len(log_events(logs, GROUP)) >= 5:
                    break
            except logs.exceptions.ResourceNotFoundException:
                pass  # the stream is not there yet
            time.sleep(0.2)
        assert sorted(json.loads(e["message"])["requestId"] for e in log_events(logs, GROUP)) == sorted(first)
        # The key is revoked.
        boto3.client("iam", **as_user).delete_access_key(UserName="logbook", AccessKeyId=key["AccessKeyId"])
        for i in range(5):
            c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"b{i}"}]}])
        name = f"cloudwatch-{GROUP}"
        deadline = time.time() + 30
        while time.time() < deadline:
            h = s.health()
            d = h["destinations"][name]
            if d["consecutiveFailures"] >= 3 and h["destinations"]["archive-logbook-archive"]["records"] == 10:
                break
            time.sleep(0.2)
        assert d["permanentFailure"] is True and d["stalled"] is True, d
        assert "InvalidClientTokenId" in d["lastError"] or "UnrecognizedClient" in d["lastError"], d["lastError"]
        assert d["backlog"]["entries"] >= 5
        arch = h["destinations"]["archive-logbook-archive"]
        assert arch["records"] == 10 and arch["consecutiveFailures"] == 0, arch
        # Retried slowly, not hammered: at most a few attempts per permanent_retry period.
        f1 = d["failures"]
        time.sleep(2)
        f2 = s.health()["destinations"][name]["failures"]
        assert f2 - f1 <= 6, (f1, f2)
        assert key["SecretAccessKey"] not in s.stderr()
    finally:
        moto.stop()


def budget_config(moto, mode, seg=64 * 1024):
    return (bucket_config(BUCKET, moto)
            + f'[logging_config.default]\ns3Config = {{ bucketName = "{BUCKET}" }}\n'
            + f'[logging]\nsegment_bytes = {seg}\non_failure = "{mode}"\n'
            + f"[journal]\nmax_bytes = {6 * seg}\n[store]\nflush_age_ms = 200\n"
            + "[archive]\nmax_object_age_ms = 200\n")


def trail_events(server):
    import subprocess
    from conftest import BIN
    out = subprocess.run([BIN, "trail", "--data-dir", server.data_dir, "--config", server.config_path,
                          "--format", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [json.loads(l) for l in out.stdout.splitlines() if l.strip()]


def call(client, i):
    return client.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"call {i} " + "x" * 500}]}])


def test_an_exhausted_journal_budget_fails_closed_naming_the_destination_and_loses_nothing(make_server, moto):
    import botocore.exceptions
    moto.s3().create_bucket(Bucket=BUCKET)
    s = make_server(budget_config(moto, "fail-closed"))
    c = s.bedrock()
    acked = [call(c, i)["ResponseMetadata"]["RequestId"] for i in range(5)]
    moto.pause()
    refused = None
    for i in range(3000):
        try:
            acked.append(call(c, i)["ResponseMetadata"]["RequestId"])
        except botocore.exceptions.ClientError as e:
            refused = e
            break
        time.sleep(0.01)
    assert refused is not None, "the budget never ran out"
    err = refused.response["Error"]
    assert refused.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert err["Code"] == "ServiceUnavailableException", err
    assert f"archive-{BUCKET}" in err["Message"] and "journal.max_bytes" in err["Message"], err
    h = s.health()
    assert h["status"] == "over-budget" and h["journal"]["overBudget"] is True, h
    assert h["journal"]["bytes"] > h["journal"]["maxBytes"]
    # The OpenAI API says the same in its own shape.
    import openai
    with pytest.raises(openai.APIStatusError) as oe:
        s.openai().chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert oe.value.status_code == 503 and "journal.max_bytes" in str(oe.value)

    moto.resume()
    h = drained(s)
    deadline = time.time() + 30
    while time.time() < deadline and s.health()["status"] != "ok":
        time.sleep(0.2)
    assert s.health()["status"] == "ok"
    acked.append(call(c, 9999)["ResponseMetadata"]["RequestId"])
    drained(s)
    in_bucket = check_s3_exactly_once(moto, acked)
    assert in_bucket == set(acked), "nothing lost, nothing extra"
    s.stop()
    names = [e["eventName"] for e in trail_events(s)]
    assert "JournalBudgetExhausted" in names and "JournalBudgetRecovered" in names, names


def test_an_exhausted_journal_budget_fails_open_counting_and_auditing_the_loss(make_server, moto):
    moto.s3().create_bucket(Bucket=BUCKET)
    s = make_server(budget_config(moto, "fail-open"))
    c = s.bedrock()
    acked = [call(c, i)["ResponseMetadata"]["RequestId"] for i in range(5)]
    moto.pause()
    name = f"archive-{BUCKET}"
    for i in range(3000):
        acked.append(call(c, i)["ResponseMetadata"]["RequestId"])  # every call is served
        if i % 50 == 0 and s.health()["destinations"][name]["lost"] > 0 and i > 600:
            break
        time.sleep(0.005)
    h = s.health()
    lost = h["destinations"][name]["lost"]
    assert lost > 0 and h["journal"]["lostEntries"] == lost, h
    assert h["journal"]["bytes"] <= h["journal"]["maxBytes"] * 1.5, h["journal"]
    moto.resume()
    drained(s)
    recs = [r["requestId"] for _, r in s3_records(moto.s3(), BUCKET)]
    assert len(recs) == len(set(recs)), "none twice"
    missing = set(acked) - set(recs)
    assert set(recs) <= set(acked)
    assert 0 < len(missing) <= lost, (len(missing), lost)
    lost_now = s.health()["destinations"][name]["lost"]
    s.stop()
    events = [e for e in trail_events(s) if e["eventName"] == "DeliveryLoss"]
    assert events and sum(e["requestParameters"]["entries"] for e in events) == lost_now, events
    assert all(e["requestParameters"]["destination"] == name for e in events)
    assert "fail-open" in events[0]["errorMessage"]


def test_an_sse_kms_key_the_credentials_cannot_use_is_refused_reported_and_loses_nothing(make_server, tmp_path):
    """Issue #9, point 10: an SSE-KMS key that cannot be used (S3 answers 400
    `KMS.NotFoundException`, played by `remote.KmsGate` in front of moto). `logbook
    validate` names the bucket and the reason; PutModelInvocationLoggingConfiguration
    answers Bedrock's ValidationException (the permission-check write fails first) and
    changes nothing; a gateway started with it configured serves every call, reports a
    permanent failure on that sink only (CloudWatch Logs gets every record meanwhile), and
    once the key works the bucket gets every call exactly once, encrypted with that key."""
    import subprocess
    import botocore.exceptions
    from conftest import BIN
    from remote import KmsGate
    from test_buckets import control
    moto = Moto(tmp_path)
    gate = KmsGate(moto.port, "alias/unusable")
    try:
        s3, logs = moto.s3(), moto.logs()
        s3.create_bucket(Bucket="kms-logs")
        logs.create_log_group(logGroupName=GROUP)

        class ViaGate:
            url, access_key, secret_key = gate.url, moto.access_key, moto.secret_key

        kms = bucket_config("kms-logs", ViaGate, sse="aws:kms", sse_kms_key_id="alias/unusable")
        path = tmp_path / "kms.toml"
        path.write_text(kms)
        p = subprocess.run([BIN, "validate", str(path)], capture_output=True, text=True, timeout=120)
        assert p.returncode != 0
        assert 'bucket "kms-logs"' in p.stderr and "KMS.NotFoundException" in p.stderr, p.stderr
        assert "was refused" in p.stderr, p.stderr  # permanent, not "unreachable or failing"

        tail = log_group_config(GROUP, moto) + "[archive]\nmax_object_age_ms = 200\npermanent_retry_ms = 500\n"
        a = make_server(kms + tail, name="a")
        before = control(a).get_model_invocation_logging_configuration().get("loggingConfig")
        with pytest.raises(botocore.exceptions.ClientError) as e:
            control(a).put_model_invocation_logging_configuration(
                loggingConfig={"s3Config": {"bucketName": "kms-logs", "keyPrefix": "k"}})
        assert e.value.response["Error"]["Code"] == "ValidationException"
        assert "Failed to validate permissions for S3 bucket: kms-logs" in e.value.response["Error"]["Message"]
        assert control(a).get_model_invocation_logging_configuration().get("loggingConfig") == before
        a.stop()

        b = make_server(kms + tail + cw_logging(GROUP, s3_bucket="kms-logs"), name="b")
        c = b.bedrock()
        served = [c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"kms {i}"}]}])
                  ["ResponseMetadata"]["RequestId"] for i in range(6)]
        name = "archive-kms-logs"
        deadline = time.time() + 30
        while time.time() < deadline:
            h = b.health()
            d = h["destinations"][name]
            if d["consecutiveFailures"] >= 3 and h["destinations"][f"cloudwatch-{GROUP}"]["records"] == 6:
                break
            time.sleep(0.2)
        assert d["permanentFailure"] is True and d["stalled"] is True, d
        assert "KMS.NotFoundException" in d["lastError"], d["lastError"]
        assert d.get("parked", 0) == 0, d  # the key, not the entries: nothing is set aside
        assert h["destinations"][f"cloudwatch-{GROUP}"]["consecutiveFailures"] == 0
        assert sorted(json.loads(ev["message"])["requestId"] for ev in log_events(logs, GROUP)) == sorted(served)
        assert gate.refused >= 3

        gate.refuse = False  # the key policy is fixed
        deadline = time.time() + 30
        got = []
        while time.time() < deadline:
            got = s3_records(s3, "kms-logs")
            if len(got) >= 6:
                break
            time.sleep(0.2)
        assert sorted(r["requestId"] for _, r in got) == sorted(served), "every call once"
        for key in {k for k, _ in got}:
            head = s3.head_object(Bucket="kms-logs", Key=key)
            assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == "alias/unusable", head
        h = b.health()["destinations"][name]
        assert h["consecutiveFailures"] == 0 and h["records"] == 6, h
    finally:
        gate.stop()
        moto.stop()


def test_cloudwatch_logs_delivers_with_instance_credentials_from_imds(make_server, tmp_path):
    """Issue #9, point 1: a `[[log_groups]]` entry without keys, on a machine without
    AWS_* keys or a shared credentials file, takes the instance's role credentials from
    the metadata service (IMDSv2, `remote.FakeImds`), as the AWS SDKs do on EC2. moto
    checks every signature and the session token against the role session STS issued, so
    a call signed with anything else is refused. Without a metadata service the gateway
    refuses to start, naming the log group."""
    import boto3
    from remote import FakeImds
    moto = Moto(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    imds = None
    try:
        iam = boto3.client("iam", endpoint_url=moto.url, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        role = iam.create_role(RoleName="logbook-instance", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                    "Action": "sts:AssumeRole"}]}))["Role"]
        arn = iam.create_policy(PolicyName="logs", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))["Policy"]["Arn"]
        iam.attach_role_policy(RoleName="logbook-instance", PolicyArn=arn)
        sts = boto3.client("sts", endpoint_url=moto.url, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        creds = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="i-0123456789abcdef0")["Credentials"]
        assert creds["AccessKeyId"].startswith("ASIA")
        logs = boto3.client("logs", endpoint_url=moto.url, region_name="us-east-1",
                            aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                            aws_session_token=creds["SessionToken"])
        logs.create_log_group(logGroupName=GROUP)  # authenticated: the role session works
        imds = FakeImds("logbook-instance", creds)
        config = (f'[[log_groups]]\nname = "{GROUP}"\nendpoint = "{moto.url}"\nregion = "us-east-1"\n'
                  + cw_logging(GROUP) + "[archive]\nmax_object_age_ms = 200\n")
        no_keys = {k: None for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                     "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
                                     "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")}
        no_keys["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-such-file")
        s = make_server(config, env=dict(no_keys, AWS_METADATA_ENDPOINT=imds.url), name="imds")
        c = s.bedrock()
        served = [c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"ec2 {i}"}]}])
                  ["ResponseMetadata"]["RequestId"] for i in range(4)]
        deadline = time.time() + 30
        got = []
        while time.time() < deadline:
            try:
                got = [json.loads(e["message"])["requestId"] for e in log_events(logs, GROUP)]
            except logs.exceptions.ResourceNotFoundException:
                pass  # the stream is not there yet
            if len(got) >= 4:
                break
            time.sleep(0.2)
        assert sorted(got) == sorted(served)
        d = s.health()["destinations"][f"cloudwatch-{GROUP}"]
        assert d["consecutiveFailures"] == 0 and d["failures"] == 0, d
        assert imds.hits["token"] >= 1 and imds.hits["credentials"] >= 1 and imds.hits["refused"] == 0, imds.hits
        err = s.stderr()
        assert creds["SecretAccessKey"] not in err and creds["SessionToken"] not in err
        s.stop()

        # No metadata service answers: a precise error at start, not a failing sink later.
        from remote import free_port
        try:
            make_server(config, env=dict(no_keys, AWS_METADATA_ENDPOINT=f"http://127.0.0.1:{free_port()}"),
                        name="nothing")
            raise AssertionError("started without credentials")
        except RuntimeError as e:
            assert f'log group "{GROUP}": no credentials' in str(e), e
    finally:
        if imds:
            imds.stop()
        moto.stop()

"""Encryption at rest and the on-disk format through the real binary (issue #11, points 1
and 3): with a master key, the journal's segments and the store's Parquet files hold no
plaintext of a prompt, while the API, `logbook query`, `logbook trail` and the archive
(plain gz JSON, for DuckDB and Athena) all still answer; rotation reads old data with the
old key and rewrites nothing; a missing key stops the start with its id; a data folder of
the previous on-disk format (a kept fixture) opens, delivers and answers."""

import glob
import json
import os
import shutil
import subprocess
import time

import boto3
import duckdb
import pytest
from botocore.config import Config as BotoConfig

from conftest import BIN, Server, archive_files, read_records, wait_records

SECRET = "the-launch-code-is-4711"
GROUP = "/aws/bedrock/modelinvocations"
FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "data-v1")


def logbook(*args, **kw):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120, **kw)


def logs_client(s):
    a = s.admin
    return boto3.client("logs", endpoint_url=s.url, region_name="us-east-1",
                        aws_access_key_id=a["accessKeyId"], aws_secret_access_key=a["secretAccessKey"],
                        config=BotoConfig(retries={"total_max_attempts": 1}))


def insights_ids(s, query="fields requestId | limit 1000"):
    lg = logs_client(s)
    qid = lg.start_query(logGroupName=GROUP, startTime=0, endTime=int(time.time()) + 3600,
                         queryString=query)["queryId"]
    for _ in range(200):
        r = lg.get_query_results(queryId=qid)
        if r["status"] not in ("Scheduled", "Running"):
            break
        time.sleep(0.05)
    assert r["status"] == "Complete", r
    return sorted(c["value"] for row in r["results"] for c in row if c["field"] == "requestId")


def master_key(path):
    p = logbook("keys", "generate-master", "--out", str(path))
    assert p.returncode == 0, p.stderr
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    kid = p.stdout.split("master key id ", 1)[1].split()[0]
    assert logbook("keys", "master-id", str(path)).stdout.strip() == kid
    # Never overwritten: the data it sealed needs it.
    again = logbook("keys", "generate-master", "--out", str(path))
    assert again.returncode != 0 and "must not exist" in again.stderr
    return kid


def files_with(pattern, needle):
    return [p for p in glob.glob(pattern, recursive=True)
            if os.path.isfile(p) and needle.encode() in open(p, "rb").read()]


def converse(s, text):
    r = s.bedrock().converse(modelId="amazon.nova-lite-v1:0",
                             messages=[{"role": "user", "content": [{"text": text}]}])
    return r["ResponseMetadata"]["RequestId"]


def test_encrypted_at_rest_rotation_and_a_missing_key(tmp_path):
    data = tmp_path / "data"
    os.makedirs(data)
    k1 = master_key(data / "master-1.key")
    cfg = '[encryption]\nmaster_key_file = "master-1.key"\n[store]\nflush_age_ms = 200\n'
    s = Server(data, cfg).start()
    try:
        ids = [converse(s, f"{SECRET} #{i}") for i in range(4)]
        stream = s.bedrock().converse_stream(
            modelId="anthropic.claude-3-haiku-20240307-v1:0",
            messages=[{"role": "user", "content": [{"text": f"{SECRET} streamed"}]}])
        for _ in stream["stream"]:
            pass
        ids.append(stream["ResponseMetadata"]["RequestId"])
        wait_records(s, 5)
        assert insights_ids(s) == sorted(ids)
        # The prompt is nowhere in the journal or the store, but in the archive (plain,
        # as the archive must stay readable by DuckDB and Athena).
        assert files_with(f"{data}/journal/**/*", SECRET) == []
        assert glob.glob(f"{data}/store/**/*.parquet", recursive=True), "the store flushed"
        # `serve` gives the store its allocator's purge, called after each flush that wrote.
        store = s.health()["store"]
        assert store["flushes"] >= 1 and store["memoryReleases"] >= 1, store
        assert files_with(f"{data}/store/**/*", SECRET) == []
        assert files_with(f"{data}/journal/**/*", k1), "segments name their master key"
        manifest = json.load(open(data / "store" / "manifest.json"))
        kids = {f.get("keyId") for g in manifest["groups"].values() for f in g["files"]}
        assert kids == {k1} and manifest["formatVersion"] == 3
    finally:
        s.stop()
    recs = read_records(str(data))
    assert sorted(r["requestId"] for r in recs) == sorted(ids)
    assert any(SECRET in json.dumps(r) for r in recs)
    n = duckdb.connect().execute(
        f"select count(*) from read_json_auto('{data}/archive/**/*.json.gz', union_by_name=true) "
        "where schemaType = 'ModelInvocationLog'").fetchall()[0][0]
    assert n == 5

    # Offline commands read the encrypted store and journal with the same configuration.
    q = logbook("query", "--log-group", GROUP, "--format", "json", "--limit", "100",
                "fields requestId", "--data-dir", str(data), "--config", s.config_path)
    assert q.returncode == 0, q.stderr
    assert sorted(json.loads(l)["requestId"] for l in q.stdout.splitlines()) == sorted(ids)
    t = logbook("trail", "--data-dir", str(data), "--config", s.config_path, "--format", "json")
    assert t.returncode == 0, t.stderr

    # Without the key: the start stops, naming the key it needs; nothing is changed.
    before = {p: open(p, "rb").read() for p in glob.glob(f"{data}/journal/segments/*.seg")}
    no_key = Server(data, "[store]\nflush_age_ms = 200\n")
    with pytest.raises(RuntimeError) as e:
        no_key.start()
    assert k1 in str(e.value), str(e.value)
    assert {p: open(p, "rb").read() for p in glob.glob(f"{data}/journal/segments/*.seg")} == before
    # The offline query says the same.
    q = logbook("query", "--log-group", GROUP, "fields requestId", "--data-dir", str(data),
                "--config", no_key.config_path)
    assert q.returncode != 0 and k1 in q.stderr, q.stderr

    # Rotation: a new key from the environment, the old one kept for reading.
    master_key(tmp_path / "master-2.key")
    k2_text = open(tmp_path / "master-2.key").read().strip()
    k2 = logbook("keys", "master-id", str(tmp_path / "master-2.key")).stdout.strip()
    rotated_cfg = '[encryption]\nold_master_key_files = ["master-1.key"]\n[store]\nflush_age_ms = 200\n'
    s = Server(data, rotated_cfg, env={"LOGBOOK_MASTER_KEY": k2_text}).start()
    try:
        new = converse(s, f"{SECRET} after rotation")
        wait_records(s, 6)
        assert insights_ids(s) == sorted(ids + [new])
    finally:
        s.stop()
    for p, b in before.items():
        if os.path.exists(p):
            assert open(p, "rb").read() == b, f"{p} rewritten"
    assert files_with(f"{data}/journal/**/*", k2), "new segments use the new key"
    assert files_with(f"{data}/journal/**/*", SECRET) == []
    assert files_with(f"{data}/store/**/*", SECRET) == []
    # A bad key is refused with a precise error.
    (tmp_path / "bad.key").write_text("not a key")
    bad = Server(tmp_path / "other", '[encryption]\nmaster_key_file = "%s"\n' % (tmp_path / "bad.key"))
    with pytest.raises(RuntimeError) as e:
        bad.start()
    assert "invalid master key" in str(e.value) and "bad.key" in str(e.value), str(e.value)
    # The secret never reaches a log line.
    assert k2_text not in (open(os.path.join(data, "server.stderr")).read())


def test_a_data_folder_of_the_previous_format_opens_delivers_and_answers(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    want = set()
    for seg in sorted(glob.glob(f"{data}/journal/segments/*.seg")):
        b = open(seg, "rb").read()
        want |= {x.decode() for x in __import__("re").findall(rb'"requestId":"([0-9a-f-]{36})","operation"', b)}
    assert len(want) == 7  # six Converse calls and one stream (start entry and record)
    s = Server(data).start()
    try:
        # The archive cursor of the fixture is at 1: every record of the old journal is
        # delivered now, and the stream's start entry is not mistaken for a record.
        recs = wait_records(s, 7)
        got = sorted(r["requestId"] for r in recs)
        assert sorted(want) == got, got
        assert set(insights_ids(s)) == want
        new = converse(s, "after the upgrade")
        assert set(insights_ids(s)) == want | {new}
        t = logbook("trail", "--data-dir", str(data), "--format", "json")
        assert t.returncode == 0, t.stderr
        names = [json.loads(l)["eventName"] for l in t.stdout.splitlines()]
        assert "GetModelInvocationLoggingConfiguration" in names, names
    finally:
        s.stop()
    # The old segments were not rewritten: format 1 still, and what follows is format 2.
    segs = sorted(glob.glob(f"{data}/journal/segments/*.seg"))
    heads = [open(p, "rb").read(8) for p in segs]
    assert any(h == b"\x89LBJRNL\n" for h in heads)

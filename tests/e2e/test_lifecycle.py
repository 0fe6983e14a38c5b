"""Lifecycle rules for local buckets (issue #13 point 5): old objects move to a cold
bucket, older ones expire; every pass is in the trail before it acts; `logbook status`
shows the rules and what they did; `logbook verify` still proves a bucket whose objects
moved (it reads them in the cold bucket) and checkpoints never move."""

import json
import os
import subprocess
import time

import pytest

from conftest import BIN, Server, archive_files, wait_records

DAY = 86400

CONFIG = """
[[buckets]]
name = "cold"
path = "cold-storage"

[[buckets]]
name = "logbook-archive"
path = "archive"
lifecycle = { transition_after_days = 30, transition_to = "cold", expire_after_days = 365, interval_secs = 1 }
"""


def age(path, days):
    t = time.time() - days * DAY
    os.utime(path, (t, t))


def files(root):
    out = []
    for d, _, fs in os.walk(root):
        out += [os.path.relpath(os.path.join(d, f), root) for f in fs]
    return sorted(out)


def trail(data_dir, config):
    p = subprocess.run([BIN, "trail", "--data-dir", str(data_dir), "--config", config, "--format", "json"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def test_objects_move_then_expire_the_trail_says_so_and_verify_still_proves_the_bucket(tmp_path):
    data = tmp_path / "data"
    s = Server(data, CONFIG)
    s.start()
    try:
        c = s.bedrock()
        for i in range(2):
            # Two calls, two archive objects (each is written 200 ms after its first record).
            c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"call {i}"}]}])
            wait_records(s, i + 1)
        logs = archive_files(s.data_dir)
        assert len(logs) == 2, logs
        # Age the log objects: one past the transition, one past the expiry.
        old, ancient = logs
        age(old, 40)
        age(ancient, 400)
        # Checkpoints are never touched, however old.
        cps = [os.path.join(data, "archive", f) for f in files(data / "archive") if f.startswith("LogbookCheckpoints/")]
        for cp in cps:
            age(cp, 1000)
        deadline = time.time() + 20
        rel_old = os.path.relpath(old, data / "archive")
        while time.time() < deadline and not os.path.exists(data / "cold-storage" / rel_old):
            time.sleep(0.1)
        assert os.path.exists(data / "cold-storage" / rel_old), files(data / "cold-storage")
        assert not os.path.exists(old)
        assert not os.path.exists(ancient) and not os.path.exists(data / "cold-storage" / os.path.relpath(ancient, data / "archive"))
        for cp in cps:
            assert os.path.exists(cp)
        h = s.health()["lifecycle"]["logbook-archive"]
        assert h["transitioned"] >= 1 and h["passes"] >= 1 and h["transitionTo"] == "cold", h
        assert h["expireAfterDays"] == 365 and h["transitionAfterDays"] == 30
        # logbook status shows the rule and what it did.
        st = subprocess.run([BIN, "status", "--url", s.url], capture_output=True, text=True, timeout=30)
        assert st.returncode == 0 and "lifecycle" in st.stdout and "logbook-archive" in st.stdout, st.stdout
    finally:
        s.stop()
    config = os.path.join(data, "logbook.toml")
    events = [e for e in trail(data, config) if e.get("eventSource") == "logbook" and e["eventName"].startswith("Lifecycle")]
    moved = [e for e in events if e["eventName"] == "LifecycleTransition"]
    assert moved and rel_old in moved[0]["requestParameters"]["keys"], events
    assert any(e["eventName"] == "LifecycleExpiration" for e in events)
    # verify reads moved objects in the cold bucket (the rule's); the expired object is
    # reported missing, as CloudTrail's validation reports a deleted log file.
    p = subprocess.run([BIN, "verify", "--data-dir", str(data), "--config", config], capture_output=True, text=True, timeout=120)
    rel_ancient = os.path.relpath(ancient, data / "archive")
    missing = [l for l in p.stdout.splitlines() if l.startswith("Log object") and "INVALID" in l]
    assert p.returncode != 0 and len(missing) == 1 and rel_ancient in missing[0] and "not found" in missing[0], p.stdout
    assert not [l for l in p.stdout.splitlines() if "INVALID" in l and rel_old in l], p.stdout
    # Without the cold bucket, the moved object is missing.
    p = subprocess.run([BIN, "verify", "--bucket-dir", str(data / "archive"), "--public-key",
                        str(data / "integrity" / "signing-key.pub.pem")], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and rel_old in p.stdout
    p = subprocess.run([BIN, "verify", "--bucket-dir", str(data / "archive"), "--cold-dir", str(data / "cold-storage"),
                        "--public-key", str(data / "integrity" / "signing-key.pub.pem")], capture_output=True, text=True, timeout=120)
    assert not [l for l in p.stdout.splitlines() if "INVALID" in l and rel_old in l], p.stdout


@pytest.mark.parametrize("bad,msg", [
    ('lifecycle = { expire_after_days = 0 }', "expire_after_days"),
    ('lifecycle = { transition_after_days = 30 }', "transition_to"),
    ('lifecycle = { transition_after_days = 30, transition_to = "nowhere" }', "nowhere"),
    ('lifecycle = { transition_after_days = 30, transition_to = "logbook-archive" }', "itself"),
    ('lifecycle = { transition_after_days = 30, transition_to = "cold", expire_after_days = 10 }', "after"),
    ('lifecycle = { expire_after_days = 5, colour = 1 }', "colour"),
])
def test_a_bad_rule_is_refused_at_start(tmp_path, bad, msg):
    cfg = CONFIG.replace('lifecycle = { transition_after_days = 30, transition_to = "cold", expire_after_days = 365, interval_secs = 1 }', bad)
    s = Server(tmp_path / "data", cfg)
    with pytest.raises(Exception):
        s.start()
    assert msg in s.stderr(), s.stderr()


def test_a_rule_on_an_s3_bucket_is_refused(tmp_path):
    cfg = ('[[buckets]]\nname = "corp"\nurl = "s3://corp-logs"\nendpoint = "http://127.0.0.1:1"\npath_style = true\n'
           'lifecycle = { expire_after_days = 30 }\n')
    s = Server(tmp_path / "data", cfg)
    with pytest.raises(Exception):
        s.start()
    assert "lifecycle" in s.stderr() and "S3" in s.stderr(), s.stderr()

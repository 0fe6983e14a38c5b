"""Bodies and metadata with separate retention in log groups (issue #11, point 6): with
`[store] body_retention_days`, records older than that keep their metadata (who, when,
which model, tokens, cost) but lose their prompts and answers: hidden from every query at
once, and removed from the Parquet files by the store's retention pass (at start, then
every minute)."""

import glob
import json
import subprocess
import time

from conftest import BIN, Server
from test_query import generate


def cli(*args, data, config):
    p = subprocess.run([BIN, *args, "--data-dir", str(data), "--config", str(config)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_old_bodies_go_and_their_records_stay(tmp_path):
    src = tmp_path / "bucket"
    recs = generate(str(src), 300, seed=5, bad_lines=False)  # March 2025: long past 30 days
    data = tmp_path / "data"
    data.mkdir()
    plain = tmp_path / "plain.toml"
    plain.write_text("")
    cli("import", str(src), "--log-group", "old", data=data, config=plain)
    sql = "SELECT count(*) AS n, count(input_body_json) AS b, sum(input_token_count) AS t FROM invocations"

    def q(config):
        return json.loads(cli("query", "--log-group", "old", "--format", "json", "--sql", sql, data=data, config=config))

    tokens = str(sum(r["input"]["inputTokenCount"] for r in recs))
    assert q(plain) == {"n": "300", "b": "300", "t": tokens}
    cfg = tmp_path / "retention.toml"
    cfg.write_text('[store]\nbody_retention_days = 30\n[store.group_body_retention_days]\n"keep" = 3653\n')
    # Hidden at once (the files still hold them)...
    assert q(cfg) == {"n": "300", "b": "0", "t": tokens}
    words = [w for w in ("alpha", "gamma") if any(w.encode() in open(p, "rb").read()
                                                  for p in glob.glob(f"{data}/store/**/*.parquet", recursive=True))]
    assert words, "the imported prompts are in the files before the retention pass"
    # ...and gone from the files once a server has run its retention pass.
    s = Server(data, cfg.read_text()).start()
    try:
        for _ in range(100):
            m = json.load(open(data / "store" / "manifest.json"))
            files = m["groups"]["old"]["files"]
            if files and all(f.get("bodiesRemoved") for f in files):
                break
            time.sleep(0.1)
        assert all(f.get("bodiesRemoved") for f in files), files
    finally:
        s.stop()
    live = [p for p in glob.glob(f"{data}/store/**/*.parquet", recursive=True)
            if p.split("/store/", 1)[1] in {f["path"] for f in files}]
    assert live and not any(b"alpha" in open(p, "rb").read() or b"gamma" in open(p, "rb").read() for p in live)
    assert q(cfg) == {"n": "300", "b": "0", "t": tokens}
    assert q(plain) == {"n": "300", "b": "0", "t": tokens}, "removed, not only hidden"
    # A retention value CloudWatch does not allow is refused with a precise error.
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\nbody_retention_days = 2\n")
    p = subprocess.run([BIN, "validate", "--offline", str(bad)],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "body_retention_days = 2" in p.stderr, p.stderr

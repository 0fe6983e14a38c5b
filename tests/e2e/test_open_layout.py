"""The open layout (issue #13 point 2): the bucket's Hive-partitioned Parquet files are
queried by DuckDB with no Logbook process running, through the published DDL, and give
the same answers as Logbook's own SQL; a kill -9 neither loses nor duplicates a record;
the DDL for every engine matches the files' real schema."""

import decimal
import json
import os
import re
import subprocess
import time

import duckdb
import sqlglot
from sqlglot import exp

from conftest import BIN, Server, wait_records

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DDL = os.path.join(ROOT, "docs", "open-layout")
MODELS = ["amazon.nova-lite-v1:0", "anthropic.claude-3-haiku-20240307-v1:0", "meta.llama3-8b-instruct-v1:0"]

CONFIG = """
[archive]
parquet = true
[[buckets]]
name = "team-logs"
path = "team-bucket"
parquet = true
[logging_config."eu-west-1"]
s3Config = { bucketName = "team-logs", keyPrefix = "eu/" }
cloudWatchConfig = { logGroupName = "/aws/bedrock/modelinvocations", roleArn = "arn:aws:iam::123456789012:role/logbook" }
textDataDeliveryEnabled = true
"""

# One SQL text, run verbatim by Logbook (`logbook query --sql`) and by DuckDB over the
# published view.
QUESTIONS = {
    "per_model": "SELECT model_id, count(*) AS n, sum(input_token_count) AS i, sum(output_token_count) AS o, "
                 "sum(cost) AS c FROM invocations GROUP BY model_id ORDER BY model_id",
    "per_team": "SELECT request_metadata, count(*) AS n FROM invocations GROUP BY request_metadata ORDER BY request_metadata",
    "per_operation": "SELECT operation, count(*) AS n, sum(latency_ms) AS l FROM invocations GROUP BY operation ORDER BY operation",
    "errors": "SELECT error_code, count(*) AS n FROM invocations WHERE error_code IS NOT NULL GROUP BY error_code ORDER BY error_code",
    "where": "SELECT account_id, region, count(*) AS n FROM invocations GROUP BY account_id, region ORDER BY account_id, region",
    "needle": "SELECT request_id FROM invocations WHERE input_body_json LIKE '%needle-7f3a%' ORDER BY request_id",
    "ids": "SELECT request_id, stream FROM invocations ORDER BY request_id",
}


def parquet_files(data_dir):
    out = []
    for d, _, fs in os.walk(data_dir):
        out += [os.path.join(d, f) for f in fs if f.endswith(".parquet") and "/logbook-parquet/v1/" in os.path.join(d, f)]
    return sorted(out)


def norm(v):
    """Logbook's CSV text and DuckDB's Python values, made comparable."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, decimal.Decimal)):
        return decimal.Decimal(v).normalize()
    if isinstance(v, str) and re.fullmatch(r"-?\d+(\.\d+)?", v):
        return decimal.Decimal(v).normalize()
    return str(v)


def logbook_answer(data_dir, config, sql):
    p = subprocess.run([BIN, "query", "--sql", "--format", "json", "--data-dir", str(data_dir), "--config", config, sql],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return [{k: norm(v) for k, v in r.items() if norm(v) is not None} for r in rows]


def duckdb_answer(con, sql):
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [{k: norm(v) for k, v in zip(names, row) if norm(v) is not None} for row in cur.fetchall()]


def duckdb_view(location):
    with open(os.path.join(DDL, "duckdb.sql")) as f:
        ddl = f.read().replace("<location>", location)
    con = duckdb.connect()
    con.execute(ddl)
    return con


def calls(server, n0, count):
    """`count` calls of several kinds; returns their request ids."""
    c = server.bedrock()
    eu = server.bedrock(region="eu-west-1")
    ids = []
    for n in range(n0, n0 + count):
        model = MODELS[n % 3]
        text = f"question {n} " + ("needle-7f3a" if n % 5 == 0 else "")
        client = eu if n % 4 == 0 else c
        if n % 7 == 3:
            try:
                client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "[mock:error=ThrottlingException]"}]}])
            except client.exceptions.ThrottlingException as e:
                ids.append(e.response["ResponseMetadata"]["RequestId"])
            continue
        if n % 6 == 1:
            r = client.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": text}]}],
                                       requestMetadata={"team": "ads"})
            list(r["stream"])
            ids.append(r["ResponseMetadata"]["RequestId"])
            continue
        r = client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": text}]}],
                            requestMetadata={"team": ["search", "ads", "core"][n % 3]})
        ids.append(r["ResponseMetadata"]["RequestId"])
    return ids


def test_duckdb_over_the_open_layout_answers_as_logbook_with_no_logbook_running(tmp_path):
    data = tmp_path / "data"
    s = Server(data, CONFIG)
    s.start()
    try:
        ids = calls(s, 0, 24)
        # Calls 0, 4, 8, ... went to eu-west-1, whose configuration names the team bucket.
        wait_records(s, 24 - 6)
    finally:
        # kill -9: whatever was delivered stays, the rest is delivered again at the next
        # start, over the same keys.
        s.kill9()
    s2 = Server(data, CONFIG)
    s2.start()
    try:
        ids += calls(s2, 24, 18)
    finally:
        s2.stop()  # a clean stop delivers everything
    assert s2.proc.returncode == 0, s2.stderr()

    files = parquet_files(data)
    default_files = [f for f in files if "/team-bucket/" not in f]
    team_files = [f for f in files if "/team-bucket/eu/logbook-parquet/v1/" in f]
    assert default_files and team_files and len(default_files) + len(team_files) == len(files), files
    for f in files:
        rel = f.split("/logbook-parquet/v1/")[1]
        assert re.fullmatch(r"account_id=\d{12}/region=[a-z0-9-]+/dt=\d{4}-\d{2}-\d{2}/\d{8}T\d{9}Z_[0-9a-f]{16}\.parquet", rel), rel

    # No Logbook process is running now: DuckDB alone, through the published DDL.
    default = duckdb_view(str(data / "archive"))
    team = duckdb_view(str(data / "team-bucket" / "eu"))
    got = sorted(r[0] for r in default.execute("SELECT request_id FROM invocations").fetchall())
    got_team = sorted(r[0] for r in team.execute("SELECT request_id FROM invocations").fetchall())
    # Every call exactly once, in the bucket its region's logging configuration names.
    eu_ids = set(got_team)
    assert len(got_team) == len(eu_ids)
    assert sorted(got + got_team) == sorted(ids), "a record is missing or duplicated"
    assert eu_ids and all(
        r == ("eu-west-1",) for r in team.execute("SELECT DISTINCT region FROM invocations").fetchall()
    )
    # The partition columns come from the path with the published types.
    types = dict(default.execute("SELECT column_name, column_type FROM (DESCRIBE invocations)").fetchall())
    assert types["account_id"] == "VARCHAR" and types["dt"] == "DATE" and types["cost"] == "DECIMAL(38,12)"
    assert default.execute("SELECT count(*) FROM invocations WHERE dt <> CAST(timezone('UTC', timestamp) AS DATE)").fetchone() == (0,)
    # Each body once; `record` is the rest of the record.
    rid, body, rec = default.execute(
        "SELECT request_id, input_body_json, record FROM invocations WHERE input_body_json LIKE '%needle-7f3a%' LIMIT 1").fetchone()
    assert "needle-7f3a" not in rec and json.loads(rec)["requestId"] == rid
    assert json.loads(body)["messages"][0]["content"][0]["text"].endswith("needle-7f3a")
    answers = {name: duckdb_answer(default, sql) for name, sql in QUESTIONS.items()}
    default.close()
    team.close()

    # The same questions, asked of Logbook (its default log group holds every record; the
    # default bucket holds those of the regions without their own configuration).
    config = os.path.join(data, "logbook.toml")
    for name, sql in QUESTIONS.items():
        scoped = sql.replace("FROM invocations", "FROM (SELECT * FROM invocations WHERE region <> 'eu-west-1') t")
        assert logbook_answer(data, config, scoped) == answers[name], name
    assert answers["errors"] and answers["needle"] and len(answers["per_model"]) == 3


def ddl_columns(path, dialect):
    """(name, type) of the columns a DDL file declares, parsed by sqlglot as `dialect`."""
    with open(path) as f:
        text = f.read().replace("<location>", "s3://bucket/prefix")
    for stmt in sqlglot.parse(text, read=dialect):
        if isinstance(stmt, exp.Create) and isinstance(stmt.this, exp.Schema):
            cols = [(c.name, c.args["kind"].sql(dialect="duckdb").upper())
                    for c in stmt.this.expressions if isinstance(c, exp.ColumnDef)]
            parts = stmt.find(exp.PartitionedByProperty)
            if parts is not None and isinstance(parts.this, exp.Schema):
                cols += [(c.name, c.args["kind"].sql(dialect="duckdb").upper())
                         for c in parts.this.expressions if isinstance(c, exp.ColumnDef)]
            return cols
    raise AssertionError(f"no CREATE TABLE in {path}")


def test_the_published_ddl_matches_the_files(tmp_path):
    s = Server(tmp_path / "data", "[archive]\nparquet = true\n")
    s.start()
    try:
        calls(s, 1, 2)
        wait_records(s, 2)
        deadline = time.time() + 20
        while not parquet_files(s.data_dir) and time.time() < deadline:
            time.sleep(0.1)
    finally:
        s.stop()
    f = parquet_files(s.data_dir)[0]
    con = duckdb.connect()
    # The files' own schema, as DuckDB reads it (the partition columns are in the path).
    real = [(n, t) for n, t in con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet('{f}', hive_partitioning = false))").fetchall()]
    assert real[0] == ("timestamp", "TIMESTAMP WITH TIME ZONE")
    names = [n for n, _ in real]
    want_types = {"VARCHAR": "TEXT", "BIGINT": "BIGINT", "BOOLEAN": "BOOLEAN", "DECIMAL(38,12)": "DECIMAL(38, 12)"}
    for engine, dialect in [("athena.sql", "athena"), ("trino.sql", "trino"), ("spark.sql", "spark")]:
        cols = ddl_columns(os.path.join(DDL, engine), dialect)
        assert [n for n, _ in cols] == names + ["account_id", "region", "dt"], engine
        for (n, t), (_, real_t) in zip(cols[1:], real[1:]):
            assert t == want_types[real_t], (engine, n, t, real_t)
        assert cols[0][1].startswith("TIMESTAMP"), engine
        assert all(t == "TEXT" for _, t in cols[-3:]), engine
    # DuckDB's DDL is run for real by the other test; here: it names every column.
    con.execute(open(os.path.join(DDL, "duckdb.sql")).read().replace("<location>", s.data_dir + "/archive"))
    assert [r[0] for r in con.execute("DESCRIBE invocations").fetchall()] == names + ["account_id", "region", "dt"]

"""DuckDB reads the archive (gzipped JSON Lines in Bedrock's layout) and its sums match
what the gateway served to the clients."""

import json
import os

import duckdb

from conftest import wait_records

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


def test_duckdb_sums_match_what_clients_saw(server):
    c = server.bedrock()
    served_in = served_out = 0
    by_model = {}

    def add(model, i, o):
        nonlocal served_in, served_out
        served_in += i
        served_out += o
        a, b = by_model.get(model, (0, 0))
        by_model[model] = (a + i, b + o)

    for n in range(12):
        model = ["amazon.nova-lite-v1:0", CLAUDE, "meta.llama3-8b-instruct-v1:0"][n % 3]
        r = c.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "question " * (n + 1)}]}],
                       requestMetadata={"team": ["search", "ads"][n % 2]})
        add(model, r["usage"]["inputTokens"], r["usage"]["outputTokens"])
    for n in range(4):
        r = c.invoke_model(modelId=CLAUDE, body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                                                             "messages": [{"role": "user", "content": "x" * (10 * n + 1)}]}))
        h = r["ResponseMetadata"]["HTTPHeaders"]
        add(CLAUDE, int(h["x-amzn-bedrock-input-token-count"]), int(h["x-amzn-bedrock-output-token-count"]))
    for n in range(3):
        events = list(c.converse_stream(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "s" * (n + 3)}]}])["stream"])
        u = events[-1]["metadata"]["usage"]
        add(CLAUDE, u["inputTokens"], u["outputTokens"])
    o = server.openai()
    for n in range(3):
        r = o.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi " * (n + 2)}])
        add("gpt-4o-mini", r.usage.prompt_tokens, r.usage.completion_tokens)
    total = 22
    wait_records(server, total)

    glob = os.path.join(server.data_dir, "archive", "**", "*.json.gz")
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT count(*), sum(input.inputTokenCount), sum(output.outputTokenCount) FROM read_json_auto('{glob}', union_by_name=true)"
    ).fetchall()
    assert rows == [(total, served_in, served_out)]
    per_model = dict(
        (m, (i, o)) for m, i, o in con.execute(
            f"SELECT modelId, sum(input.inputTokenCount), sum(output.outputTokenCount) FROM read_json_auto('{glob}', union_by_name=true) GROUP BY modelId"
        ).fetchall()
    )
    assert per_model == by_model
    teams = dict(con.execute(
        f"SELECT requestMetadata.team, count(*) FROM read_json_auto('{glob}', union_by_name=true) WHERE requestMetadata IS NOT NULL GROUP BY 1"
    ).fetchall())
    assert teams == {"search": 6, "ads": 6}
    ops = dict(con.execute(f"SELECT operation, count(*) FROM read_json_auto('{glob}', union_by_name=true) GROUP BY 1").fetchall())
    assert ops == {"Converse": 12, "InvokeModel": 4, "ConverseStream": 3, "ChatCompletions": 3}

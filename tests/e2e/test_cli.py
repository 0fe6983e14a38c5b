"""The AWS CLI (from PyPI) against a running Logbook."""

import json
import os
import subprocess
import sys

from conftest import wait_record


def aws(server, *args, tmp=None):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=server.admin["accessKeyId"], AWS_SECRET_ACCESS_KEY=server.admin["secretAccessKey"], AWS_DEFAULT_REGION="us-west-2",
               AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_MAX_ATTEMPTS="1")
    cli = os.path.join(os.path.dirname(sys.executable), "aws")
    p = subprocess.run([cli, "--endpoint-url", server.url, "--output", "json", *args], capture_output=True, text=True, env=env, cwd=tmp)
    return p


def test_aws_cli_converse_and_invoke(server, tmp_path):
    p = aws(server, "bedrock-runtime", "converse", "--model-id", "amazon.nova-lite-v1:0",
            "--messages", json.dumps([{"role": "user", "content": [{"text": "hello from the cli"}]}]))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["output"]["message"]["content"][0]["text"].startswith("[mock]")
    out_file = tmp_path / "out.json"
    body = json.dumps({"inputText": "titan via cli"})
    p = aws(server, "bedrock-runtime", "invoke-model", "--model-id", "amazon.titan-text-express-v1",
            "--body", body, str(out_file))  # CLI v1 takes blob arguments raw
    assert p.returncode == 0, p.stderr
    assert json.loads(out_file.read_text())["results"][0]["outputText"].startswith("[mock]")
    p = aws(server, "bedrock-runtime", "converse", "--model-id", "m",
            "--messages", json.dumps([{"role": "user", "content": [{"text": "x [mock:error=ValidationException]"}]}]))
    assert p.returncode != 0 and "ValidationException" in p.stderr


def test_aws_cli_region_lands_in_record(server):
    p = aws(server, "bedrock-runtime", "converse", "--model-id", "m", "--messages",
            json.dumps([{"role": "user", "content": [{"text": "region?"}]}]), "--debug")
    assert p.returncode == 0
    rid = [line for line in p.stderr.splitlines() if "x-amzn-requestid" in line.lower()]
    assert rid
    import re
    m = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", rid[0])
    rec = wait_record(server, m.group(0))
    assert rec["region"] == "us-west-2" and rec["logbook"]["accessKeyId"] == server.admin["accessKeyId"]
    assert rec["identity"]["arn"] == "arn:aws:iam::000000000000:user/logbook-admin"

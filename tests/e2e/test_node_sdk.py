"""The AWS SDK for JavaScript v3 with its defaults (issue #12): against an http:// endpoint
its Node handler speaks HTTP/2 in cleartext and signs the `:authority` pseudo-header.
All four runtime operations must work, be recorded, and a client that stalls in the
HTTP/2 preface must not hold a connection."""

import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import Server, wait_records

MODULES = os.environ.get("LOGBOOK_NODE_MODULES", os.path.expanduser("~/.cache/logbook/node-clients/node_modules"))
HAVE_SDK = all(os.path.exists(os.path.join(MODULES, *p, "package.json")) for p in [("@aws-sdk", "client-bedrock-runtime"), ("@aws-sdk", "client-bedrock"), ("@aws-sdk", "client-cloudwatch-logs"), ("openai",)])

SCRIPT = r"""
const { BedrockRuntimeClient, ConverseCommand, ConverseStreamCommand, InvokeModelCommand,
        InvokeModelWithResponseStreamCommand } = require("@aws-sdk/client-bedrock-runtime");
(async () => {
  const c = new BedrockRuntimeClient({ endpoint: process.env.URL, region: "us-east-1",
    credentials: { accessKeyId: process.env.AK, secretAccessKey: process.env.SK } });
  const out = { ids: [] };
  const r = await c.send(new ConverseCommand({ modelId: "m", messages: [{ role: "user", content: [{ text: "node converse" }] }] }));
  out.converse = r.output.message.content[0].text; out.ids.push(r.$metadata.requestId);
  const s = await c.send(new ConverseStreamCommand({ modelId: "m", messages: [{ role: "user", content: [{ text: "node stream" }] }] }));
  let t = ""; for await (const ev of s.stream) { if (ev.contentBlockDelta) t += ev.contentBlockDelta.delta.text; }
  out.stream = t; out.ids.push(s.$metadata.requestId);
  const i = await c.send(new InvokeModelCommand({ modelId: "amazon.titan-text-express-v1", contentType: "application/json",
    body: JSON.stringify({ inputText: "node invoke" }) }));
  out.invoke = JSON.parse(new TextDecoder().decode(i.body)).results[0].outputText; out.ids.push(i.$metadata.requestId);
  const is = await c.send(new InvokeModelWithResponseStreamCommand({ modelId: "amazon.titan-text-express-v1",
    contentType: "application/json", body: JSON.stringify({ inputText: "node invoke stream" }) }));
  let n = 0; for await (const ev of is.body) { if (ev.chunk) n++; }
  out.chunks = n; out.ids.push(is.$metadata.requestId);
  try {
    const bad = new BedrockRuntimeClient({ endpoint: process.env.URL, region: "us-east-1",
      credentials: { accessKeyId: process.env.AK, secretAccessKey: "wrong" } });
    await bad.send(new ConverseCommand({ modelId: "m", messages: [{ role: "user", content: [{ text: "x" }] }] }));
    out.wrongSecret = "accepted";
  } catch (e) { out.wrongSecret = e.name; }
  console.log(JSON.stringify(out));
})().catch(e => { console.log(JSON.stringify({ error: `${e.name}: ${e.message}` })); });
"""


@pytest.mark.skipif(not HAVE_SDK or not shutil.which("node"), reason="scripts/test.sh installs the JS SDK")
def test_the_javascript_sdk_with_its_http2_default_calls_all_four_operations(tmp_path):
    s = Server(tmp_path / "data").start()
    try:
        script = tmp_path / "client.cjs"
        script.write_text(SCRIPT)
        env = dict(os.environ, NODE_PATH=MODULES, URL=s.url, AK=s.admin["accessKeyId"], SK=s.admin["secretAccessKey"],
                   AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE="1", NODE_NO_WARNINGS="1")
        p = subprocess.run(["node", str(script)], capture_output=True, text=True, env=env, timeout=120)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert "error" not in out, out
        assert "node converse" in out["converse"] and "node stream" in out["stream"]
        assert "node invoke" in out["invoke"] and out["chunks"] >= 1
        assert out["wrongSecret"] == "InvalidSignatureException", out
        recs = wait_records(s, 4)  # the refused call is not a model call
        by_id = {r["requestId"]: r for r in recs}
        assert all(i in by_id for i in out["ids"]), (out["ids"], list(by_id))
        assert [by_id[i]["operation"] for i in out["ids"]] == [
            "Converse", "ConverseStream", "InvokeModel", "InvokeModelWithResponseStream"]
    finally:
        s.stop()


def test_a_client_stalling_in_the_http2_preface_is_closed(tmp_path):
    s = Server(tmp_path / "data", "[server]\nheader_timeout_ms = 500\n").start()
    try:
        host, port = s.url.replace("http://", "").split(":")
        c = socket.create_connection((host, int(port)))
        c.sendall(b"PRI * HTTP/2.0\r\n")  # a third of the preface, then nothing
        c.settimeout(5)
        t = time.time()
        try:
            assert c.recv(1) == b""  # closed by the server...
        except ConnectionResetError:
            pass  # ...or reset: the unread preface bytes make the kernel send RST
        assert time.time() - t < 4
        c.close()
        # The server still serves HTTP/1.1 and HTTP/2 clients.
        assert s.health()["status"] == "ok"
    finally:
        s.stop()


NODE_CLIENTS = r"""
const { BedrockClient, PutModelInvocationLoggingConfigurationCommand, GetModelInvocationLoggingConfigurationCommand } = require("@aws-sdk/client-bedrock");
const { CloudWatchLogsClient, FilterLogEventsCommand, GetLogEventsCommand, DescribeLogStreamsCommand, DescribeLogGroupsCommand, paginateFilterLogEvents } = require("@aws-sdk/client-cloudwatch-logs");
const OpenAI = require("openai");
(async () => {
  const out = {};
  const aws = { endpoint: process.env.URL, region: "us-east-1", credentials: { accessKeyId: process.env.AK, secretAccessKey: process.env.SK } };
  // The bedrock control plane, default settings (HTTP/2 too).
  const b = new BedrockClient(aws);
  await b.send(new PutModelInvocationLoggingConfigurationCommand({ loggingConfig: {
    cloudWatchConfig: { logGroupName: "/aws/bedrock/modelinvocations", roleArn: "arn:aws:iam::000000000000:role/x" },
    s3Config: { bucketName: "logbook-archive" }, textDataDeliveryEnabled: true } }));
  const g = await b.send(new GetModelInvocationLoggingConfigurationCommand({}));
  out.logGroup = g.loggingConfig.cloudWatchConfig.logGroupName;
  // The OpenAI SDK for Node: chat (plain, streamed), Responses, embeddings, models.
  const o = new OpenAI({ baseURL: process.env.URL + "/v1", apiKey: process.env.KEY, maxRetries: 0 });
  const c = await o.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "node chat" }] });
  out.chat = c.choices[0].message.content;
  let t = ""; for await (const ch of await o.chat.completions.create({ model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: "node chat stream" }] })) { t += ch.choices[0]?.delta?.content || ""; }
  out.chatStream = t;
  const r = await o.responses.create({ model: "gpt-4o-mini", input: "node responses" });
  out.responses = r.output_text;
  const e = await o.embeddings.create({ model: "text-embedding-3-small", input: "node embed" });
  out.embedding = e.data[0].embedding.length;
  const models = await o.models.list();
  out.models = models.data.length;
  // CloudWatch Logs reads, with the SDK's paginator.
  const l = new CloudWatchLogsClient(aws);
  let seen = [];
  for await (const page of paginateFilterLogEvents({ client: l, pageSize: 2 }, { logGroupName: "/aws/bedrock/modelinvocations", limit: 2 })) {
    seen.push(...page.events.map(ev => ev.eventId));
  }
  out.filtered = seen.length; out.distinct = new Set(seen).size;
  const streams = await l.send(new DescribeLogStreamsCommand({ logGroupName: "/aws/bedrock/modelinvocations" }));
  out.stream = streams.logStreams[0].logStreamName;
  const ge = await l.send(new GetLogEventsCommand({ logGroupName: "/aws/bedrock/modelinvocations", logStreamName: out.stream, startFromHead: true }));
  out.getEvents = ge.events.length;
  const groups = await l.send(new DescribeLogGroupsCommand({}));
  out.groups = groups.logGroups.map(x => x.logGroupName);
  console.log(JSON.stringify(out));
})().catch(e => { console.log(JSON.stringify({ error: `${e.name}: ${e.message}` })); });
"""


@pytest.mark.skipif(not HAVE_SDK or not shutil.which("node"), reason="scripts/test.sh installs the Node clients")
def test_node_clients_bedrock_control_plane_openai_and_cloudwatch_logs(tmp_path):
    s = Server(tmp_path / "data").start()
    try:
        script = tmp_path / "clients.cjs"
        script.write_text(NODE_CLIENTS)
        env = dict(os.environ, NODE_PATH=MODULES, URL=s.url, AK=s.admin["accessKeyId"], SK=s.admin["secretAccessKey"],
                   KEY=s.admin["apiKey"], AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE="1", NODE_NO_WARNINGS="1")
        p = subprocess.run(["node", str(script)], capture_output=True, text=True, env=env, timeout=180)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert "error" not in out, (out, p.stderr[-2000:])
        assert out["logGroup"] == "/aws/bedrock/modelinvocations"
        assert "node chat" in out["chat"] and "node chat stream" in out["chatStream"] and "node responses" in out["responses"]
        assert out["embedding"] > 0 and out["models"] >= 1
        # Four model calls (chat, chat stream, responses, embeddings), each read back once,
        # paged two at a time without loss or repeat.
        assert out["filtered"] == out["distinct"] == 4, out
        assert out["stream"] == "aws/bedrock/modelinvocations" and out["getEvents"] == 4
        assert "/aws/bedrock/modelinvocations" in out["groups"]
        ops = sorted(r["operation"] for r in wait_records(s, 4))
        assert ops == ["ChatCompletions", "ChatCompletions", "Embeddings", "Responses"], ops
    finally:
        s.stop()

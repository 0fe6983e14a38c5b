"""`logbook demo` (issue #14 point 6) fills a fresh install through the real gateway; the
install (point 7): `--version` names the commit, completions for the usual shells, a
Dockerfile and a systemd unit that say what a user expects of them."""

import os
import re
import signal
import subprocess
import threading
import time

import requests

from conftest import BIN

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def test_demo_fills_a_fresh_install_and_prints_where_to_sign_in(tmp_path):
    data = tmp_path / "demo"
    p = subprocess.Popen([BIN, "demo", "--listen", "127.0.0.1:0", "--data-dir", str(data), "--calls", "150"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    try:
        deadline = time.time() + 240
        while not any(l.startswith("sign-in key:") for l in lines):
            assert time.time() < deadline and p.poll() is None, lines
            lines.append(p.stdout.readline().strip())
        threading.Thread(target=p.stdout.read, daemon=True).start()
        text = "\n".join(lines)
        url = re.search(r"console:\s+(\S+)/console", text).group(1)
        key = re.search(r"sign-in key:\s+(\S+)", text).group(1)
        sent = re.search(r"sent (\d+) calls: (\d+) answered, (\d+) client errors, (\d+) throttled", text)
        total, ok, client_errors, throttled = map(int, sent.groups())
        assert total == 150 and ok > 100 and client_errors > 0 and throttled > 0, text
        assert requests.get(url + "/console", timeout=5).status_code == 200
        # Sign in as the printed key, as a person would, and look at what the day left.
        r = requests.post(url + "/console/api/session", json={"apiKey": key}, timeout=5)
        assert r.status_code == 200, r.text
        jar, h = r.cookies, {"x-logbook-csrf": r.json()["csrf"]}
        report = requests.post(url + "/console/api/chargeback", json={"by": ["team"], "period": "day"},
                               cookies=jar, headers=h, timeout=30).json()
        assert report["total"]["calls"] == 150
        assert {row["values"][0] for row in report["rows"]} == {"search", "ads", "support"}
        q = requests.post(url + "/console/api/query", cookies=jar, headers=h, timeout=30, json={
            "query": "stats count(*) as n by operation, logbook.stream | sort n desc"}).json()
        ops = {(r[0], r[1]) for r in q["rows"]}
        assert {"Converse", "ConverseStream", "ChatCompletions", "Messages"} <= {o for o, _ in ops}, ops
        assert any(s == "true" for _, s in ops), ops  # streamed calls among them
        # The helpdesk's guardrail stepped in at least once, and the record says so.
        g = requests.post(url + "/console/api/query", cookies=jar, headers=h, timeout=30, json={
            "query": 'filter output.outputBodyJson.stopReason = "guardrail_intervened" | stats count(*) as n'}).json()
        assert int(g["rows"][0][0]) >= 1, g
        budgets = requests.get(url + "/console/api/budgets", cookies=jar, headers=h, timeout=5).json()["budgets"]
        assert budgets and budgets[0]["percent"] >= 50, budgets  # past its first warning threshold
        # The throttles alarm goes off (alarms are evaluated every 2 s in the demo).
        deadline = time.time() + 30
        while True:
            alarms = requests.get(url + "/console/api/alarms", cookies=jar, headers=h, timeout=5).json()
            states = {a["def"]["AlarmName"]: a["state"] for a in alarms["alarms"]}
            if states.get("throttles") == "ALARM":
                break
            assert time.time() < deadline, states
            time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    assert p.returncode == 0


def test_version_names_the_commit_and_completions_exist():
    out = subprocess.run([BIN, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.match(r"logbook \d+\.\d+\.\d+ \(commit ([0-9a-f]{12}|unknown)\)$", out.strip())
    assert m, out
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        # Built from this checkout: the commit is HEAD's, or an ancestor's when only
        # uncommitted changes followed the build.
        assert subprocess.run(["git", "merge-base", "--is-ancestor", m.group(1), "HEAD"], cwd=ROOT).returncode == 0
    for shell, marker in (("bash", "_logbook()"), ("zsh", "#compdef logbook"), ("fish", "complete -c logbook")):
        text = subprocess.run([BIN, "completions", shell], capture_output=True, text=True, check=True).stdout
        assert marker in text and "serve" in text and "demo" in text
    bad = subprocess.run([BIN, "completions", "tcsh"], capture_output=True, text=True)
    assert bad.returncode != 0 and "tcsh" in bad.stderr


def test_dockerfile_and_systemd_unit_are_what_an_operator_expects():
    docker = open(os.path.join(ROOT, "Dockerfile")).read()
    assert docker.count("FROM ") == 2  # multi-stage: build, then a slim runtime
    user = re.search(r"^USER (\S+)", docker, re.M).group(1)
    assert not user.startswith("root") and not user.startswith("0")
    assert 'VOLUME ["/data"]' in docker and "HEALTHCHECK" in docker and '"status"' in docker
    unit = open(os.path.join(ROOT, "packaging", "logbook.service")).read()
    for line in ("ExecStart=/usr/local/bin/logbook serve", "StateDirectory=logbook", "DynamicUser=yes",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "KillSignal=SIGTERM"):
        assert line in unit, line
    if subprocess.run(["which", "systemd-analyze"], capture_output=True).returncode == 0:
        # Point the unit at the binary under test and let systemd check it.
        path = os.path.join(os.path.dirname(BIN) or ".", "logbook-test.service")
        with open(path, "w") as f:
            f.write(unit.replace("/usr/local/bin/logbook", os.path.abspath(BIN)))
        r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True)
        os.remove(path)
        assert r.returncode == 0, r.stderr

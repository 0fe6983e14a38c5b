"""No lost record, no duplicate: the server is killed with SIGKILL under load, restarted on
the same data folder, and every call whose response a client received must be in the
archive exactly once."""

import json
import subprocess

import requests
import threading
import time
from collections import Counter

from conftest import BIN, Server, read_records


def load_then_kill(server, threads=8, kill_after=1.5):
    acked, wrong = [], []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(i):
        c = server.bedrock()
        n = 0
        while not stop.is_set():
            n += 1
            events = None
            try:
                if n % 3 == 0:
                    r = c.converse_stream(modelId="m", messages=[{"role": "user", "content": [{"text": f"w{i} n{n} [mock:chunks=3]"}]}])
                    events = list(r["stream"])
                else:
                    r = c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"w{i} n{n}"}]}])
            except Exception:  # noqa: BLE001 - any failure to talk means the server is gone
                return
            # Checked outside the try: a wrong answer must fail the test, not end the worker.
            if events is not None and (not events or "metadata" not in events[-1]):
                with lock:
                    wrong.append(f"stream {r['ResponseMetadata']['RequestId']} ended without metadata")
                return
            with lock:
                acked.append(r["ResponseMetadata"]["RequestId"])

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    time.sleep(kill_after)
    server.kill9()
    stop.set()
    for t in ts:
        t.join(timeout=60)
    assert not wrong, wrong
    return acked


def wait_for_ids(data_dir, ids, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        recs = read_records(data_dir)
        have = {r["requestId"] for r in recs}
        if ids <= have:
            return recs
        time.sleep(0.2)
    missing = ids - {r["requestId"] for r in read_records(data_dir)}
    raise AssertionError(f"{len(missing)} acknowledged calls have no record, e.g. {sorted(missing)[:3]}")


def test_kill9_under_load_loses_and_duplicates_nothing(tmp_path):
    data = tmp_path / "data"
    acked_all = set()
    # Two crashes in a row, each under load, then a clean restart to drain.
    for _round in range(2):
        s = Server(data).start()
        acked = load_then_kill(s)
        assert len(acked) > 20, f"only {len(acked)} calls completed before the kill"
        acked_all |= set(acked)
    s = Server(data).start()
    try:
        recs = wait_for_ids(str(data), acked_all)
        counts = Counter(r["requestId"] for r in recs)
        dups = [k for k, v in counts.items() if v > 1]
        assert not dups, f"duplicated records: {dups[:5]}"
        seqs = sorted(r["logbook"]["sequence"] for r in recs)
        assert len(seqs) == len(set(seqs))
        # Every journal entry reached the archive: the only sequences no record holds are
        # those of streams' own entries: a start entry for each streamed call (interrupted
        # ones too), and a progress entry for each second a stream ran.
        streams = sum(1 for r in recs if r["logbook"]["stream"])
        missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
        assert len(missing) >= streams, (len(missing), streams)
        # A stream cut off by a kill is recorded from its start entry, as interrupted.
        assert all(r["errorCode"] == "GatewayInterrupted" for r in recs
                   if r["logbook"]["stream"] and r["requestId"] not in acked_all and "errorCode" in r)
        # Records of calls cut off by the kill may exist (the record was durable first), but
        # every acknowledged call is there.
        assert acked_all <= set(counts)
        health = s.health()
        assert health["destinations"]["archive-logbook-archive"]["cursor"] == seqs[-1] + 1
    finally:
        s.stop()
    # Two kill -9s and a restart left the Merkle logs and their checkpoints consistent:
    # the offline verifier finds every archived record and trail event and no problem.
    v = subprocess.run([BIN, "verify", "--data-dir", str(data)], capture_output=True, text=True, timeout=120)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "No problem found." in v.stdout
    leaves = sum(int(l.split()[2]) for l in v.stdout.splitlines() if l.startswith("Log ") and "/records:" in l)
    assert leaves == len(recs), (leaves, len(recs), v.stdout)


def test_graceful_stop_flushes_the_archive(tmp_path):
    # A long object age: only the shutdown flush can deliver these records in time.
    s = Server(tmp_path / "data", extra_args=["--archive-max-age-ms", "600000"]).start()
    c = s.bedrock()
    ids = {c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": str(i)}]}])["ResponseMetadata"]["RequestId"] for i in range(5)}
    assert read_records(s.data_dir) == []
    s.stop()
    assert {r["requestId"] for r in read_records(s.data_dir)} == ids


def test_async_mode_records_everything(tmp_path):
    s = Server(tmp_path / "data", extra_args=["--mode", "async"]).start()
    try:
        c = s.bedrock()
        ids = {c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": str(i)}]}])["ResponseMetadata"]["RequestId"] for i in range(20)}
        recs = wait_for_ids(s.data_dir, ids)
        assert len(recs) == 20
        assert s.health()["mode"] == "async"
    finally:
        s.stop()


def test_full_disk_fails_closed(tmp_path):
    """On a real 1 MiB tmpfs, calls are answered only while their records fit: once the
    journal cannot append, the client gets InternalServerException, never the answer."""
    import subprocess

    import botocore.exceptions
    import pytest

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    s = None
    try:
        s = Server(mnt / "data", extra_args=["--archive-max-age-ms", "600000"]).start()
        c = s.bedrock()
        answered, refused = [], 0
        for i in range(12):
            try:
                r = c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"{i} " + "x" * 150_000}]}])
                answered.append(r["ResponseMetadata"]["RequestId"])
            except botocore.exceptions.ClientError as e:
                assert e.response["Error"]["Code"] == "InternalServerException"
                assert "could not be logged durably" in e.response["Error"]["Message"]
                assert "No space left" in e.response["Error"]["Message"]
                refused += 1
        assert answered and refused, (len(answered), refused)
        # Every answered call is in the journal; no refused one is.
        r = requests.get(s.url + "/healthz", timeout=5)
        h = r.json()
        assert h["journal"]["committed"] == len(answered)
        # A failed write is rolled back (only a failed fsync poisons the journal), but health
        # says the disk is full, so a load balancer stops sending calls here.
        assert h["status"] == "disk-full" and r.status_code == 503, h
        assert h["diskFreeBytes"] < 256 * 1024
    finally:
        if s:
            s.kill9()
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_one_process_per_data_folder(tmp_path):
    """A second `serve` (or `import`) on a live server's data folder is refused before it
    opens anything: the live server's journal is untouched and it keeps serving."""
    import subprocess
    from conftest import BIN
    s = Server(tmp_path / "data").start()
    try:
        c = s.bedrock()
        before = [c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": str(i)}]}])["ResponseMetadata"]["RequestId"]
                  for i in range(5)]
        # Under load: a client keeps calling while the second processes try their luck.
        stop, during, failures = threading.Event(), [], []

        def load():
            lc = s.bedrock()
            while not stop.is_set():
                try:
                    during.append(lc.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "load"}]}])
                                  ["ResponseMetadata"]["RequestId"])
                except Exception as e:  # noqa: BLE001 - the server must not fail here
                    failures.append(repr(e))
                    return

        t = threading.Thread(target=load)
        t.start()
        try:
            for args in (["serve", "--listen", "127.0.0.1:0"], ["import", str(tmp_path / "data" / "archive"), "--log-group", "/x"]):
                for _ in range(3):
                    p = subprocess.run([BIN, *args, "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=60)
                    assert p.returncode != 0 and "in use by another logbook process" in p.stderr, (args, p.stderr)
        finally:
            stop.set()
            t.join()
        assert not failures and during, (failures, len(during))
        after = [c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "after"}]}])["ResponseMetadata"]["RequestId"]]
        before += during
    finally:
        s.stop()
    assert {r["requestId"] for r in read_records(s.data_dir)} >= set(before + after)


def test_an_unreadable_node_id_stops_the_server(tmp_path):
    """Object keys depend on the node id: an id that cannot be read must not be replaced."""
    import pytest
    data = tmp_path / "data"
    s = Server(data).start()
    node = (data / "node-id").read_text()
    s.stop()
    (data / "node-id").unlink()
    (data / "node-id").mkdir()  # reading it now fails (EISDIR)
    with pytest.raises(RuntimeError) as e:
        Server(data).start()
    assert "node id" in str(e.value)
    (data / "node-id").rmdir()
    (data / "node-id").write_text("")
    with pytest.raises(RuntimeError) as e:
        Server(data).start()
    assert "is empty" in str(e.value)
    (data / "node-id").write_text(node)
    s = Server(data).start()
    s.stop()
    assert (data / "node-id").read_text() == node


def test_the_admin_credential_is_private_and_printed_once(tmp_path):
    import json
    import os
    import stat
    import subprocess
    from conftest import BIN
    data = tmp_path / "data"

    def run():
        p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = p.stdout.readline().decode()
        assert line.startswith("listening on "), line
        # Fully up (signal handlers installed) before it is asked to stop.
        url = line.split("listening on ", 1)[1].strip()
        deadline = time.time() + 30
        while requests.get(url + "/healthz", timeout=5).status_code != 200:
            assert time.time() < deadline
            time.sleep(0.05)
        p.terminate()
        assert p.wait(timeout=30) == 0
        return line + p.stdout.read().decode(), p.stderr.read().decode()

    out1, err1 = run()
    creds = json.loads((data / "admin-credentials.json").read_text())
    assert stat.S_IMODE(os.stat(data / "admin-credentials.json").st_mode) == 0o600
    secret = creds["secretAccessKey"]
    assert secret in out1 and secret not in err1  # printed on stdout, never through the logger
    out2, err2 = run()
    assert secret not in out2 + err2  # once
    assert json.loads((data / "admin-credentials.json").read_text()) == creds


def _tmpfs(path, size="1m"):
    import subprocess
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_fail_open_counts_and_reports_every_unrecorded_call(tmp_path):
    """fail-open serves calls it cannot record: each one is counted and named in the log."""
    import subprocess
    import pytest
    mnt = tmp_path / "tiny"
    if not _tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs here")
    s = None
    try:
        s = Server(mnt / "data", "[logging]\non_failure = \"fail-open\"\n",
                   extra_args=["--archive-max-age-ms", "600000"]).start()
        c = s.bedrock()
        ids = []
        for i in range(12):
            r = c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"{i} " + "x" * 150_000}]}])
            ids.append(r["ResponseMetadata"]["RequestId"])  # every call is answered
        h = s.health()
        lost = h["unrecordedCalls"]
        assert lost > 0 and h["journal"]["committed"] + lost == len(ids), h
        # One log line per unrecorded call, naming it.
        lines = [l for l in s.stderr().splitlines() if "served without a durable record" in l]
        assert len(lines) == lost
        assert all(any(rid in l for rid in ids) for l in lines)
    finally:
        if s:
            s.kill9()
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_stream_whose_record_cannot_be_made_durable_ends_with_an_error_frame(tmp_path):
    """The disk fills while a stream runs: the client gets its text, then an error frame,
    never messageStop/metadata (which would say the call completed and was recorded)."""
    import subprocess
    import botocore.exceptions
    import pytest
    mnt = tmp_path / "tiny"
    if not _tmpfs(mnt, "2m"):
        pytest.skip("cannot mount a tmpfs here")
    s = None
    try:
        s = Server(mnt / "data", extra_args=["--archive-max-age-ms", "600000"]).start()
        c = s.bedrock()
        r = c.converse_stream(modelId="m", messages=[{"role": "user", "content": [
            {"text": "[mock:chunks=30][mock:chunk_delay_ms=50][mock:output_chars=3000] go"}]}])
        events, filled = [], False
        with pytest.raises(botocore.exceptions.EventStreamError) as e:
            for ev in r["stream"]:
                events.append(ev)
                if not filled and "contentBlockDelta" in ev:
                    # Take every byte left on the disk while the stream is running.
                    with open(mnt / "filler", "wb") as f:
                        try:
                            while True:
                                f.write(b"\0" * 65536)
                                f.flush()
                        except OSError:
                            pass
                    filled = True
        assert filled and any("contentBlockDelta" in ev for ev in events)
        assert not any("messageStop" in ev or "metadata" in ev for ev in events), events[-3:]
        assert e.value.response["Error"]["Code"] == "internalServerException"
    finally:
        if s:
            s.kill9()
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_gc_waits_for_every_sink_and_collects_rolled_segments(tmp_path):
    """Segments small enough to roll: while the store has not flushed, its cursor holds
    every segment (GC takes the minimum over the archive, the trail and the store); once
    it flushes (a graceful stop), the rolled segments go, and the archive and the store
    each hold every record exactly once."""
    data = tmp_path / "data"
    s = Server(data, config_text="[logging]\nsegment_bytes = 8192\n").start()
    seg_dir = data / "journal" / "segments"
    try:
        c = s.bedrock()
        n = 150
        ids = set()
        for i in range(n):
            r = c.converse(modelId="m", messages=[{"role": "user", "content": [{"text": f"call {i} " + "x" * 200}]}])
            ids.add(r["ResponseMetadata"]["RequestId"])
        recs = [r for r in read_records(s.data_dir) if r["requestId"] in ids]
        deadline = time.time() + 30
        while len(recs) < n and time.time() < deadline:
            time.sleep(0.1)
            recs = [r for r in read_records(s.data_dir) if r["requestId"] in ids]
        assert len(recs) == n
        # The archive and the trail are done; the store (flushes after 60 s) is not: its
        # cursor pins every segment.
        held = sorted(p.name for p in seg_dir.glob("*.seg"))
        assert len(held) >= 10, f"segments should have rolled: {held}"
        assert held[0] == "00000000000000000001.seg", f"collected before the store had them: {held}"
        # /healthz names the holder: the store is a sink of the same loop, with its own
        # delivery counters, its cursor at the journal's start and a backlog.
        h = s.health()
        d = h["store"]["delivery"]
        assert d["kind"] == "log-groups" and d["cursor"] == 1, d
        assert d["backlog"]["entries"] >= n and d["failures"] == 0, d
        assert h["journal"]["cursors"]["store"] == 1, h["journal"]["cursors"]
    finally:
        s.stop()
    left = sorted(p.name for p in seg_dir.glob("*.seg"))
    assert len(left) <= 2, f"the store flushed at stop; GC should have collected: {left}"
    ids_in_archive = Counter(r["requestId"] for r in read_records(s.data_dir) if r["requestId"] in ids)
    assert set(ids_in_archive) == ids and max(ids_in_archive.values()) == 1
    out = subprocess.run([BIN, "query", "--log-group", "/aws/bedrock/modelinvocations", "--format", "json",
                          "stats count(*) as n, count_distinct(requestId) as d", "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got == {"n": str(n), "d": str(n)}, got

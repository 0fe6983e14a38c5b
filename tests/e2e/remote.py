"""Real object-store servers on loopback for the remote-destination tests: moto's server
(S3 and CloudWatch Logs), started and stopped by the test that needs it."""

import os
import signal
import socket
import subprocess
import sys
import time

import boto3
import requests

MOTO = os.path.join(os.path.dirname(sys.executable), "moto_server")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    def __init__(self, log_dir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(str(log_dir), f"moto-{self.port}.log"), "ab")
        self.proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                requests.get(self.url + "/moto-api/", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start")

    def s3(self):
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def logs(self):
        return boto3.client("logs", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def bucket_config(name, moto, remote=None, **extra):
    """A [[buckets]] entry for a moto bucket."""
    lines = ["[[buckets]]", f'name = "{name}"', f'url = "s3://{remote or name}"',
             f'endpoint = "{moto.url}"', "path_style = true", 'region = "us-east-1"',
             'access_key_id = "testing"', 'secret_access_key = "testing"']
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def log_group_config(name, moto, secret="testing", **extra):
    """A [[log_groups]] entry for a log group in moto's CloudWatch Logs."""
    lines = ["[[log_groups]]", f'name = "{name}"', f'endpoint = "{moto.url}"', 'region = "us-east-1"',
             'access_key_id = "testing"', f'secret_access_key = "{secret}"']
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def log_events(logs, group, stream="aws/bedrock/modelinvocations"):
    """Every event of a stream, oldest first, through boto3's own paging."""
    out, token = [], None
    while True:
        kw = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kw["nextToken"] = token
        r = logs.get_log_events(**kw)
        out += r["events"]
        if r.get("nextForwardToken") in (None, token) or not r["events"]:
            return out
        token = r["nextForwardToken"]

"""Fixtures: a real multi-process aisle cluster started with `aisle up`, and clients for it."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import boto3
import botocore.config
import pytest

REPO = Path(__file__).resolve().parents[2]


def aisle_bin():
    return os.environ.get("AISLE_BIN", str(REPO / "build" / "debug" / "aisle"))


class Cluster:
    """An `aisle up` on free loopback ports, in its own data directory."""

    def __init__(self, data, targets=3, extra=(), proc_env=None):
        self.data = Path(data)
        self.targets = targets
        self.extra = list(extra)
        self.proc = None
        self.env = {}
        self.proc_env = proc_env

    def start(self, timeout=120):
        self.data.mkdir(parents=True, exist_ok=True)
        log = open(self.data / "up.log", "ab")
        # The host's disk may be shared and nearly full (CI's has been): its fill must not
        # empty the remote-bucket caches tests look at, unless a test sets the mark itself.
        disk = [] if "--cache-disk-full" in self.extra else ["--cache-disk-full", "100"]
        self.proc = subprocess.Popen(
            [aisle_bin(), "up", "--port", "0", "--targets", str(self.targets), "--data", str(self.data),
             "--domain", "s3.aisle.test", *disk, *self.extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            env=None if self.proc_env is None else {**os.environ, **self.proc_env},
        )
        env_file = self.data / "aisle.env"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if env_file.exists():
                lines = env_file.read_text().splitlines()
                if len(lines) >= 4:
                    self.env = dict(l.replace("export ", "", 1).split("=", 1) for l in lines)
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"aisle up exited:\n{self.logs()}")
            time.sleep(0.05)
        raise RuntimeError(f"aisle up did not become ready in {timeout} s:\n{self.logs()}")

    def logs(self, lines=15):
        """up.log whole, and the end of every node's log: what a failed start leaves to read."""
        out = [f"== up.log\n{(self.data / 'up.log').read_text(errors='replace')}"]
        for f in sorted((self.data / "logs").glob("*.log")):
            tail = f.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"== {f.name} (last {lines} lines)\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def endpoint(self):
        return self.env["AWS_ENDPOINT_URL"]

    def shell_env(self, **extra):
        env = dict(os.environ)
        env.update(self.env)
        env.pop("AWS_PROFILE", None)
        env.update(extra)
        return env

    def client(self, secret=None, **config):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=secret or self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
            config=botocore.config.Config(s3={"addressing_style": "path"}, **config),
        )

    def aws(self, *args, check=True, **kw):
        """Run the aws CLI with only the cluster's keys."""
        return subprocess.run(
            ["aws", *args],
            env=self.shell_env(), capture_output=True, text=True, check=check, **kw,
        )

    def pid(self, node):
        return int((self.data / "run" / f"{node}.pid").read_text())


def aisle(c, *args, check=True):
    """Run the aisle CLI against cluster `c` (anything with shell_env())."""
    r = subprocess.run([aisle_bin(), *args], env=c.shell_env(), capture_output=True, text=True,
                       timeout=180)
    if check and r.returncode != 0:
        raise AssertionError(f"aisle {' '.join(args)} failed: {r.stdout}{r.stderr}")
    return r


def show(c):
    return json.loads(aisle(c, "cluster", "show", "--json").stdout)


def counts(c):
    """Objects per target id (targets that answer)."""
    out = {}
    for t in show(c)["targets"]:
        if t["status"]:
            out[t["id"]] = sum(t["status"]["objects_per_mountpath"])
    return out


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def settled(c):
    return show(c)["rebalance"]["settled"]


def wait_copies(c, n, timeout=60):
    """Wait until the rebalance settled with exactly `n` object copies stored in all."""
    wait_for(lambda: settled(c) and sum(counts(c).values()) == n, timeout,
             f"{n} stored copies (now {sum(counts(c).values())})")


def http_get(url):
    """GET a URL (e.g. a presigned one): (status, body), errors included."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="session")
def cluster():
    d = tempfile.mkdtemp(prefix="aisle-py-")
    c = Cluster(d).start()
    yield c
    c.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fresh_dir():
    d = tempfile.mkdtemp(prefix="aisle-py-")
    yield Path(d)
    if not os.environ.get("AISLE_KEEP"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def s3(cluster):
    return cluster.client()


_counter = [0]


@pytest.fixture
def bucket(s3):
    """A fresh bucket per test."""
    _counter[0] += 1
    name = f"b{os.getpid()}-{_counter[0]}"
    s3.create_bucket(Bucket=name)
    return name

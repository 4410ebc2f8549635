"""Gateway and targets as separate hosts (network namespaces on a private bridge, see
netns.py): the TCP path only, targets joining the gateway by address, and failures a single
host cannot show — a partition (link cut) and a killed host that comes back.
"""

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import boto3
import botocore.config
import pytest

import netns
from conftest import aisle_bin, counts, show, wait_for
from test_cluster import BODY, Loader, put_all

pytestmark = pytest.mark.skipif(not netns.available(), reason="needs root and ip netns")

TARGETS = ["t1", "t2", "t3", "t4"]
N = int(os.environ.get("AISLE_CLUSTER_OBJECTS", "400"))


class RigCluster:
    """A gateway and 4 targets, each on its own host; the test client is on the bridge."""

    def __init__(self, data):
        self.data = Path(data)
        self.rig = netns.Rig(["gw", *TARGETS, "t5"])  # t5 joins later
        self.procs = {}
        self.secret = "rig-cluster-secret-0123456789abcdef"
        self.env = {
            "AWS_ENDPOINT_URL": f"http://{self.rig.addr('gw')}:8080",
            "AWS_ACCESS_KEY_ID": "RIGACCESSKEY",
            "AWS_SECRET_ACCESS_KEY": "rig-secret-key",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        gw = {
            "listen": f"{self.rig.addr('gw')}:8080",
            "root": str(self.data / "gw"),
            "cluster_secret": self.secret,
            "access_key": self.env["AWS_ACCESS_KEY_ID"],
            "secret_key": self.env["AWS_SECRET_ACCESS_KEY"],
            "default_copies": 2,
            "health": {"heal_after_secs": 5},
        }
        self.start("gw", "gateway", gw)
        for t in TARGETS:
            self.start_target(t)
        wait_for(lambda: len(self.up()) == len(TARGETS), 60, "every target joined")

    def start_target(self, t):
        self.start(t, "target", {
            "id": t,
            "listen": f"{self.rig.addr(t)}:9000",
            "root": str(self.data / t),
            "mountpaths": [str(self.data / t / "mp0"), str(self.data / t / "mp1")],
            "gateway_url": self.env["AWS_ENDPOINT_URL"],
            "cluster_secret": self.secret,
        })

    def start(self, host, role, cfg=None):
        cfg_path = self.data / f"{host}.json"
        if cfg is not None:
            (self.data / host).mkdir(parents=True, exist_ok=True)
            cfg_path.write_text(json.dumps(cfg))
        log = open(self.data / f"{host}.log", "ab")
        self.procs[host] = self.rig.run(host, [aisle_bin(), role, "--config", str(cfg_path)], log)

    def shell_env(self):
        env = dict(os.environ)
        env.update(self.env)
        return env

    def show(self):
        return show(self)

    def up(self):
        """Targets the gateway sees up (none while the gateway itself is not answering yet)."""
        try:
            view = self.show()
        except AssertionError:
            return []
        return [t["id"] for t in view["targets"] if not t["health"].get("down_since_ms")]

    def client(self, **config):
        return boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"],
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
                            region_name="us-east-1",
                            config=botocore.config.Config(s3={"addressing_style": "path"}, **config))

    def close(self):
        self.rig.close()


def copies_held(c):
    return sum(counts(c).values())


def test_partition_and_host_loss_on_separate_hosts():
    data = Path(tempfile.mkdtemp(prefix="aisle-rig-"))
    c = RigCluster(data)
    try:
        # Every target reached the gateway by its own address (no same-host shortcut here).
        urls = {t["id"]: t["url"] for t in c.show()["targets"]}
        assert urls == {t: f"http://{c.rig.addr(t)}:9000" for t in TARGETS}
        s3 = c.client()
        s3.create_bucket(Bucket="data")
        put_all(c, "data", range(N))
        expect = {f"k{i:05}": BODY(i) for i in range(N)}
        wait_for(lambda: copies_held(c) == 2 * N, 30, "2 copies of every object")

        # A partition: t1 keeps running but its link is cut.
        with Loader(c, "data", expect) as load:
            time.sleep(1)
            c.rig.cut("t1")
            cut_at = time.time()
            wait_for(lambda: "t1" not in c.up(), 15, "t1 marked down")
            detected = time.time() - cut_at
            time.sleep(3)
        print(f"\npartition: {len(load.latencies)} GETs, {len(load.failures)} failed, "
              f"p99 {load.p99() * 1000:.0f} ms, t1 marked down after {detected:.1f} s")
        assert load.failures == [], load.failures[:5]
        # Writes go on (to the next live holder); the partition heals, t1 catches up.
        put_all(c, "data", range(0, 100), gen=1)
        for i in range(100):
            expect[f"k{i:05}"] = BODY(i, 1)
        c.rig.heal("t1")
        wait_for(lambda: "t1" in c.up() and c.show()["rebalance"].get("settled"), 60,
                 "t1 back and the rebalance settled")
        for k, v in expect.items():
            assert s3.get_object(Bucket="data", Key=k)["Body"].read() == v, k

        # A host lost: t2 killed (no supervisor here); its copies are re-made on the others.
        with Loader(c, "data", expect) as load:
            time.sleep(1)
            c.procs["t2"].send_signal(signal.SIGKILL)
            wait_for(lambda: copies_held(c) == 2 * N and c.show()["rebalance"].get("settled"),
                     120, "2 live copies of every object without t2")
        print(f"host loss: {len(load.latencies)} GETs, {len(load.failures)} failed, "
              f"p99 {load.p99() * 1000:.0f} ms")
        assert load.failures == [], load.failures[:5]
        # It comes back with its old data: exactly 2 copies again, every read correct.
        c.start("t2", "target")
        wait_for(lambda: "t2" in c.up() and c.show()["rebalance"].get("settled")
                 and copies_held(c) == 2 * N, 60, "t2 back, surplus copies removed")
        for k, v in expect.items():
            assert s3.get_object(Bucket="data", Key=k)["Body"].read() == v, k

        # A fifth host joins, then is drained and leaves, under GETs.
        before = sum(1 for _ in expect)
        with Loader(c, "data", expect) as load:
            c.start_target("t5")
            wait_for(lambda: "t5" in c.up() and c.show()["rebalance"].get("settled")
                     and copies_held(c) == 2 * before, 60, "t5 joined, copies in place")
            held = {t["id"]: sum(t["status"]["objects_per_mountpath"]) for t in c.show()["targets"]}
            r = subprocess.run([aisle_bin(), "cluster", "decommission", "t5", "--wait"],
                               env=c.shell_env(), capture_output=True, text=True, timeout=180)
            assert r.returncode == 0, r.stderr
        print(f"join + decommission of t5: {len(load.latencies)} GETs, {len(load.failures)} failed, "
              f"t5 held {held['t5']} copies of {2 * before}")
        assert load.failures == [], load.failures[:5]
        assert 0.25 * (2 * before / 5) < held["t5"] < 1.75 * (2 * before / 5)
        assert "t5" not in [t["id"] for t in c.show()["targets"]]
        assert copies_held(c) == 2 * before
    finally:
        c.close()
        subprocess.run(["rm", "-rf", str(data)])

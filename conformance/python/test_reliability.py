"""Crash and restart: acknowledged writes survive, nothing half-written is ever visible."""

import hashlib
import os
import random
import signal
import threading
import time

import pytest

import botocore.config
import botocore.exceptions

from conftest import Cluster, wait_copies


def wait_readable(s3, bucket, key, timeout=30):
    deadline = time.time() + timeout
    while True:
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("writers,max_size", [(4, 1 << 20), (1, 4096), (16, 8192)],
                         ids=["mixed-c4", "small-c1", "small-c16"])
def test_kill9_target_during_puts_then_restart(fresh_dir, writers, max_size):
    """Also with small objects, at concurrency 1 and 16: every PUT then fills a ready data file
    (a name made durable ahead) and is made durable by journaling its bytes in the index
    commit, which concurrent PUTs share (group commit); the kill lands in that path, and the
    restart rewrites the files whose background fsync it cut off."""
    c = Cluster(fresh_dir).start()
    try:
        s3 = c.client(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=10)
        s3.create_bucket(Bucket="crash")
        attempted, acked, lock = {}, {}, threading.Lock()
        stop = threading.Event()

        def writer(w):
            rnd = random.Random(w)
            i = 0
            while not stop.is_set():
                key = f"w{w}/{i:05d}"
                body = rnd.randbytes(rnd.randint(1, max_size))
                digest = hashlib.md5(body).hexdigest()
                with lock:
                    attempted[key] = digest
                try:
                    s3.put_object(Bucket="crash", Key=key, Body=body)
                    with lock:
                        acked[key] = digest
                except Exception:
                    pass
                i += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        os.kill(c.pid("t1"), signal.SIGKILL)  # the supervisor restarts it
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join()
        assert len(acked) > 20, "the writers made progress"
        # PUTs cut off by the kill may or may not exist; every acknowledged one must, whole.

        check = c.client()
        for key, digest in acked.items():
            assert hashlib.md5(wait_readable(check, "crash", key)).hexdigest() == digest, key
        listed = [o for p in check.get_paginator("list_objects_v2").paginate(Bucket="crash") for o in p.get("Contents", [])]
        for o in listed:
            # Anything listed is whole: it is one of the bodies a writer sent for that key.
            assert o["Key"] in attempted
            assert o["ETag"].strip('"') == attempted[o["Key"]], o["Key"]
            body = check.get_object(Bucket="crash", Key=o["Key"])["Body"].read()
            assert hashlib.md5(body).hexdigest() == attempted[o["Key"]]
        assert set(acked) <= {o["Key"] for o in listed}
        # Every listed object ends with its 2 copies (aisle up's default) once the rebalance
        # after t1's return settled.
        wait_copies(c, 2 * len(listed))

        # A whole restart on the same data dir serves every object again.
        c.stop()
        c.start()
        again = c.client()
        for key, digest in list(acked.items())[:200]:
            assert hashlib.md5(again.get_object(Bucket="crash", Key=key)["Body"].read()).hexdigest() == digest
        relisted = [o["Key"] for p in again.get_paginator("list_objects_v2").paginate(Bucket="crash") for o in p.get("Contents", [])]
        assert relisted == [o["Key"] for o in listed]
        # Recovery removed whatever the crash left staged.
        for mp in fresh_dir.glob("t*/mp*/tmp"):
            assert not any(mp.iterdir()), mp
    finally:
        c.stop()


def test_gateway_restart_keeps_endpoint_and_reads_survive_without_local_sockets(fresh_dir):
    """kill -9 of the gateway: the supervisor brings it back on the same endpoint (clients and
    targets hold it). Reads and puts of same-host targets normally go through their descriptor
    sockets; with those sockets gone, the same reads (whole, ranged, HEAD, conditional, missing)
    are served over HTTP with identical answers, and puts (good and with a wrong Content-MD5)
    behave the same."""
    c = Cluster(fresh_dir).start()
    try:
        s3 = c.client(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=10)
        s3.create_bucket(Bucket="gw-restart")
        bodies = {f"k{i}": os.urandom(random.Random(i).choice([0, 1, 4096, 70_000, 3 << 20])) for i in range(12)}
        for k, b in bodies.items():
            s3.put_object(Bucket="gw-restart", Key=k, Body=b)

        def answers():
            out = {}
            for k, b in bodies.items():
                got = s3.get_object(Bucket="gw-restart", Key=k)
                assert got["Body"].read() == b, k
                out[k] = got["ETag"]
                if len(b) > 10:
                    part = s3.get_object(Bucket="gw-restart", Key=k, Range="bytes=3-9")
                    assert part["Body"].read() == b[3:10]
                    assert part["ContentRange"] == f"bytes 3-9/{len(b)}"
                assert s3.head_object(Bucket="gw-restart", Key=k)["ContentLength"] == len(b)
                try:
                    s3.get_object(Bucket="gw-restart", Key=k, IfNoneMatch=got["ETag"])
                    raise AssertionError("expected 304")
                except botocore.exceptions.ClientError as e:
                    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 304
            try:
                s3.get_object(Bucket="gw-restart", Key="missing")
                raise AssertionError("expected 404")
            except botocore.exceptions.ClientError as e:
                assert e.response["Error"]["Code"] == "NoSuchKey"
            return out

        before = answers()
        endpoint = c.endpoint
        socks = sorted(p.name for p in (c.data / "t1").glob("*.sock"))
        assert socks == ["target-fd.sock", "target.sock"], socks

        old = c.pid("gateway")
        for t in ("t1", "t2", "t3"):
            for p in (c.data / t).glob("*.sock"):
                p.unlink()
        os.kill(old, signal.SIGKILL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if c.pid("gateway") != old:
                    s3.list_buckets()
                    break
            except Exception:
                pass
            time.sleep(0.2)
        assert c.endpoint == endpoint
        assert answers() == before
        # Puts over HTTP now: stored whole, and a wrong Content-MD5 stores nothing.
        for k, b in list(bodies.items())[:4]:
            s3.put_object(Bucket="gw-restart", Key=k, Body=b)
        assert answers() == before  # same bytes, same ETags
        try:
            s3.put_object(Bucket="gw-restart", Key="bad-md5", Body=b"abc",
                          ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
            raise AssertionError("expected BadDigest")
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "BadDigest"
        assert "Contents" not in s3.list_objects_v2(Bucket="gw-restart", Prefix="bad-md5")
    finally:
        c.stop()


def test_kill9_of_every_process_during_puts_with_two_copies(fresh_dir):
    """kill -9 of the supervisor, the gateway and every target at once while PUTs with SHA-256
    checksums run (copies=2): after a restart every acknowledged PUT is readable with its
    checksum, and every object ends with its 2 copies."""
    c = Cluster(fresh_dir, extra=["--copies", "2"]).start()
    try:
        s3 = c.client(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=10)
        s3.create_bucket(Bucket="crash2")
        acked, lock, stop = {}, threading.Lock(), threading.Event()

        def writer(w):
            rnd = random.Random(w)
            i = 0
            while not stop.is_set():
                key, body = f"w{w}/{i:05d}", rnd.randbytes(rnd.randint(1, 300_000))
                try:
                    r = s3.put_object(Bucket="crash2", Key=key, Body=body, ChecksumAlgorithm="SHA256")
                    with lock:
                        acked[key] = (hashlib.md5(body).hexdigest(), r["ChecksumSHA256"])
                except Exception:  # noqa: BLE001 - unacknowledged: may or may not exist
                    pass
                i += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(2)
        for node in ["gateway", "t1", "t2", "t3"]:
            os.kill(c.pid(node), signal.SIGKILL)
        c.proc.kill()
        c.proc.wait()
        stop.set()
        for t in threads:
            t.join()
        assert len(acked) > 20, "the writers made progress"

        # The crash left the old run's aisle.env (on another port); wait for the new one.
        (fresh_dir / "aisle.env").unlink()
        c.start()
        check = c.client()
        for key, (md5, sha) in acked.items():
            head = check.head_object(Bucket="crash2", Key=key, ChecksumMode="ENABLED")
            assert head["ChecksumSHA256"] == sha, key
            body = wait_readable(check, "crash2", key)
            assert hashlib.md5(body).hexdigest() == md5, key
        listed = [o["Key"] for p in check.get_paginator("list_objects_v2").paginate(Bucket="crash2")
                  for o in p.get("Contents", [])]
        assert set(acked) <= set(listed)

        wait_copies(c, 2 * len(listed))
    finally:
        c.stop()


def test_a_target_reads_a_body_it_will_not_take_to_the_end_before_answering(fresh_dir):
    """A copy pushed to a target that already holds that version (or a newer one: writers
    racing on a key, whose pushes both carry the latest version) is answered without being
    taken. The answer must come after the pushed body was read to its end: given mid-body, the
    target closed the connection with bytes unread, the kernel reset it, and the pusher saw a
    failed push instead of the answer (its retries failed alike), so the client's PUT got a
    503 although it was durable. Here the push is replayed by hand, 64 MiB, to a holder."""
    import http.client
    import json
    import urllib.parse

    from conftest import show

    c = Cluster(fresh_dir, extra=["--copies", "2"]).start()
    try:
        s3 = c.client()
        s3.create_bucket(Bucket="held")
        s3.put_object(Bucket="held", Key="k", Body=b"x" * 4096)
        secret = json.loads((fresh_dir / "credentials.json").read_text())["cluster_secret"]
        auth = {"x-aisle-cluster-auth": secret}
        query = urllib.parse.urlencode({"bucket": "held", "key": "k"})
        holders = []
        for t in show(c)["targets"]:
            u = urllib.parse.urlsplit(t["url"])
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            conn.request("HEAD", f"/_aisle/t/v1/object?{query}", headers=auth)
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                holders.append((u, r.getheader("x-aisle-meta")))
            conn.close()
        assert len(holders) == 2, holders
        u, meta = holders[0]
        assert meta

        chunk = b"y" * (1 << 20)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        push = urllib.parse.urlencode({"bucket": "held", "key": "k", "repair": "false", "noncurrent": "false"})
        conn.request("PUT", f"/_aisle/t/v1/replica?{push}", body=(chunk for _ in range(64)),
                     headers={**auth, "x-aisle-meta": meta}, encode_chunked=True)
        r = conn.getresponse()
        have = json.loads(r.read())
        assert r.status == 200, have
        assert have["deleted"] is False
        # The object is untouched: the pushed bytes were not taken.
        assert s3.get_object(Bucket="held", Key="k")["Body"].read() == b"x" * 4096

        # The same for a put over HTTP (a gateway on another host) whose condition fails
        # before its body is read: `If-None-Match: *` on a key that exists is a 412, not a
        # reset connection.
        import base64
        write = base64.urlsafe_b64encode(json.dumps({"if_absent": True}).encode()).rstrip(b"=").decode()
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        conn.request("PUT", f"/_aisle/t/v1/object?{query}", body=(chunk for _ in range(64)),
                     headers={**auth, "x-aisle-write": write}, encode_chunked=True)
        r = conn.getresponse()
        refused = r.read()
        assert r.status == 412, refused
        assert s3.get_object(Bucket="held", Key="k")["Body"].read() == b"x" * 4096
    finally:
        c.stop()


# CI-sized; AISLE_RACE_ROUNDS / AISLE_RACE_MIB make the race harder.
ROUNDS = int(os.environ.get("AISLE_RACE_ROUNDS", "4"))
SIZE_MIB = int(os.environ.get("AISLE_RACE_MIB", "4"))


def test_concurrent_overwrites_with_two_copies_all_succeed(fresh_dir):
    """Writers racing on the same two keys, copies=2 (the load under which `aisle bench` saw
    the reset above, at 64 MiB): every PUT succeeds, every key reads back one of the bodies
    sent, and each ends with its two copies."""
    c = Cluster(fresh_dir, extra=["--copies", "2"]).start()
    try:
        s3 = c.client(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=16)
        s3.create_bucket(Bucket="race")
        bodies = [bytes([i]) * (SIZE_MIB << 20) for i in range(8)]
        failures, lock = [], threading.Lock()

        def writer(w):
            for n in range(ROUNDS):
                try:
                    s3.put_object(Bucket="race", Key=f"k{(w + n) % 2}", Body=bodies[(w + n) % 8])
                except Exception as e:  # noqa: BLE001 - every failure counts
                    with lock:
                        failures.append(repr(e))

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == [], failures
        for key in ("k0", "k1"):
            body = s3.get_object(Bucket="race", Key=key)["Body"].read()
            assert body in bodies
        wait_copies(c, 4)
    finally:
        c.stop()

"""Remote buckets: aisle as a cache in front of real S3 servers (moto_server, and a second aisle
cluster), driven by boto3, the aws CLI and the aisle CLI. A counting proxy between aisle and
the remote tells how often the remote was asked, and cuts, drops or stalls transfers."""

import concurrent.futures
import errno
import hashlib
import io
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from conftest import Cluster, aisle, show, wait_for
from remote_rig import Moto, Proxy

KEYS = ("--remote-access-key", "moto", "--remote-secret-key", "moto")


def s3_client(url, access="moto", secret="moto"):
    return boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=access, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    m = Moto(tmp_path_factory.mktemp("moto"))
    yield m
    m.stop()


_n = [0]


def remote_bucket(cluster, moto, *flags):
    """A fresh moto bucket behind its own counting proxy, bound as a remote bucket of
    `cluster`: (aisle bucket, moto bucket, moto client, proxy)."""
    _n[0] += 1
    src, name = f"src-{os.getpid()}-{_n[0]}", f"rb-{os.getpid()}-{_n[0]}"
    mc = s3_client(moto.url)
    mc.create_bucket(Bucket=src)
    p = Proxy(moto.url)
    aisle(cluster, "bucket", "add", name, "--remote", f"s3://{src}", "--remote-endpoint", p.url,
          *KEYS, *flags)
    return name, src, mc, p


def body(s3, bucket, key, **kw):
    return s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()


def test_cold_then_warm_get_fetches_once_and_keeps_metadata(cluster, s3, moto):
    name, src, mc, p = remote_bucket(cluster, moto)
    data = os.urandom(3_000_000)
    mc.put_object(Bucket=src, Key="d/x.bin", Body=data, ContentType="application/x-test",
                  Metadata={"origin": "moto"})
    remote_head = mc.head_object(Bucket=src, Key="d/x.bin")
    assert body(s3, name, "d/x.bin") == data
    assert p.count("GET", "d/x.bin") == 1
    for _ in range(3):
        assert body(s3, name, "d/x.bin") == data
    assert p.count("GET", "d/x.bin") == 1, "warm reads are local"
    h = s3.head_object(Bucket=name, Key="d/x.bin")
    assert h["ContentType"] == "application/x-test"
    assert h["Metadata"] == {"origin": "moto"}
    assert h["ETag"] == remote_head["ETag"]
    assert h["LastModified"] == remote_head["LastModified"]
    # The aws CLI and a presigned URL read it like any object.
    out = tempfile.mktemp()
    cluster.aws("s3", "cp", f"s3://{name}/d/x.bin", out)
    assert open(out, "rb").read() == data
    os.unlink(out)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=name, Key="d/missing")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"


def test_twenty_concurrent_cold_gets_fetch_once(cluster, s3, moto):
    name, src, mc, p = remote_bucket(cluster, moto)
    data = os.urandom(50 * 1024 * 1024)
    mc.put_object(Bucket=src, Key="big", Body=data)
    want = hashlib.md5(data).hexdigest()
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        got = list(ex.map(lambda _: hashlib.md5(body(cluster.client(), name, "big")).hexdigest(),
                          range(20)))
    assert got == [want] * 20
    assert p.count("GET", "big") == 1


def test_the_first_reader_streams_while_the_fetch_runs(cluster, s3, moto):
    name, src, mc, p = remote_bucket(cluster, moto)
    data = os.urandom(4 * 1024 * 1024)
    mc.put_object(Bucket=src, Key="slow", Body=data)
    mc.put_object(Bucket=src, Key="slow-head", Body=b"12345", ContentType="x/y")
    p.mode, p.delay = "slow", 0.04  # 64 chunks: the remote needs 2.5 s for the whole object
    h = s3.head_object(Bucket=name, Key="slow-head")
    assert h["ContentLength"] == 5 and h["ContentType"] == "x/y"
    t0 = time.time()
    r = s3.get_object(Bucket=name, Key="slow")
    first = r["Body"].read(64 * 1024)
    t_first = time.time() - t0
    rest = r["Body"].read()
    total = time.time() - t0
    assert first + rest == data
    assert total > 2 and t_first < total / 3, (t_first, total)
    assert p.count("GET", "slow-head") == 1, "a HEAD of a cold object starts its fetch"
    p.mode = "pass"


def test_ttl_serves_the_cached_copy_until_it_expires(cluster, s3, moto):
    name, src, mc, p = remote_bucket(cluster, moto, "--coherence", "ttl=2s")
    mc.put_object(Bucket=src, Key="t", Body=b"one")
    assert body(s3, name, "t") == b"one"
    mc.put_object(Bucket=src, Key="t", Body=b"two")
    assert body(s3, name, "t") == b"one"
    assert p.count("HEAD", "t") == 0, "within the ttl nothing is asked"
    time.sleep(2.2)
    assert body(s3, name, "t") == b"two"
    assert body(s3, name, "t") == b"two"
    assert p.count("HEAD", "t") == 1 and p.count("GET", "t") == 2


def test_get_batch_and_alias_bucket_over_a_remote_bucket(cluster, s3, moto, tmp_path):
    import json

    name, src, mc, p = remote_bucket(cluster, moto)
    blobs = {f"b/{i}.bin": os.urandom(10_000 + i) for i in range(5)}
    for k, v in blobs.items():
        mc.put_object(Bucket=src, Key=k, Body=v)
    spec = tmp_path / "batch.json"
    spec.write_text(json.dumps({"entries": [{"bucket": name, "key": k} for k in blobs]}))
    out = tmp_path / "batch.tar"
    aisle(cluster, "batch", "--spec", str(spec), "-o", str(out))
    with tarfile.open(out) as t:
        got = {m.name: t.extractfile(m).read() for m in t.getmembers()}
    assert list(got.values()) == list(blobs.values())
    alias = f"{name}-md5"
    aisle(cluster, "etl", "bind", alias, "--source", name, "--pipeline", "md5")
    k = "b/3.bin"
    assert body(s3, alias, k) == hashlib.md5(blobs[k]).hexdigest().encode()
    assert p.count("GET", k) == 1
    aisle(cluster, "etl", "unbind", alias)


def test_range_on_a_cold_object(cluster, s3, moto):
    name, src, mc, p = remote_bucket(cluster, moto)
    data = os.urandom(5_000_000)
    mc.put_object(Bucket=src, Key="r", Body=data)
    r = s3.get_object(Bucket=name, Key="r", Range="bytes=4000000-4000999")
    assert r["ContentRange"] == f"bytes 4000000-4000999/{len(data)}"
    assert r["Body"].read() == data[4000000:4001000]
    assert body(s3, name, "r", Range="bytes=-10") == data[-10:]
    assert body(s3, name, "r") == data
    assert p.count("GET", "r") == 1


def test_etl_and_shard_member_on_cold_objects(cluster, s3, moto):
    name, src, mc, p = remote_bucket(cluster, moto)
    text = os.urandom(100_000)
    mc.put_object(Bucket=src, Key="t.bin", Body=text)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for i in range(5):
            payload = f"member {i}".encode() * 100
            info = tarfile.TarInfo(f"s/{i}.txt")
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
    mc.put_object(Bucket=src, Key="shard.tar", Body=buf.getvalue())

    etl = cluster.client()
    etl.meta.events.register("before-sign.s3.GetObject",
                             lambda request, **_: request.headers.__setitem__("x-ais-etl", "md5"))
    assert body(etl, name, "t.bin") == hashlib.md5(text).hexdigest().encode()

    arch = cluster.client()

    def add(request, **_):
        request.url += ("&" if "?" in request.url else "?") + "archpath=s%2F3.txt"

    arch.meta.events.register("before-sign.s3.GetObject", add)
    assert body(arch, name, "shard.tar") == b"member 3" * 100
    assert p.count("GET", "t.bin") == 1 and p.count("GET", "shard.tar") == 1


def test_listing_is_the_remotes_listing(cluster, s3, moto):
    name, src, mc, p = remote_bucket(cluster, moto)
    keys = ["a/1", "a/2", "b", "c/x/1", "c/x/2", "c/y", "ca", "d e+f", "z#~%"]
    for k in keys:
        mc.put_object(Bucket=src, Key=k, Body=b"x" * len(k))

    def listing(client, bucket, **kw):
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, **kw)
        objs, prefixes = [], []
        for page in pages:
            objs += [(o["Key"], o["Size"], o["ETag"]) for o in page.get("Contents", [])]
            prefixes += [c["Prefix"] for c in page.get("CommonPrefixes", [])]
        return objs, prefixes

    for kw in [{}, {"Delimiter": "/"}, {"Prefix": "c", "Delimiter": "/"}, {"Prefix": "c/"},
               {"Delimiter": "/", "PaginationConfig": {"PageSize": 2}},
               {"PaginationConfig": {"PageSize": 3}}, {"StartAfter": "b"}]:
        assert listing(s3, name, **kw) == listing(mc, src, **kw), kw
    assert p.count("GET", "a/1") == 0, "listing fetches nothing"
    out = cluster.aws("s3", "ls", f"s3://{name}/c/").stdout
    assert "PRE x/" in out and " y" in out


def test_validate_refetches_a_changed_object_and_reports_a_deleted_one(cluster, s3, moto):
    name, src, mc, p = remote_bucket(cluster, moto, "--coherence", "validate")
    lazy, lsrc, lmc, _ = remote_bucket(cluster, moto)  # coherence never
    for b, c in [(src, mc), (lsrc, lmc)]:
        c.put_object(Bucket=b, Key="k", Body=b"version 1")
    assert body(s3, name, "k") == b"version 1"
    assert body(s3, lazy, "k") == b"version 1"
    for b, c in [(src, mc), (lsrc, lmc)]:
        c.put_object(Bucket=b, Key="k", Body=b"version 2, longer")
    assert body(s3, name, "k") == b"version 2, longer"
    assert body(s3, lazy, "k") == b"version 1", "never: the cached copy is served"
    assert p.count("GET", "k") == 2 and p.count("HEAD", "k") >= 1
    mc.delete_object(Bucket=src, Key="k")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=name, Key="k")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"
    assert "k" not in aisle(cluster, "ls", name, "--cached").stdout.split()


def test_write_through_put_multipart_copy_and_delete(cluster, s3, moto, tmp_path):
    name, src, mc, p = remote_bucket(cluster, moto)
    s3.put_object(Bucket=name, Key="w/small", Body=b"written through", ContentType="text/x-w",
                  Metadata={"who": "aisle"})
    got = mc.get_object(Bucket=src, Key="w/small")
    assert got["Body"].read() == b"written through"
    assert got["ContentType"] == "text/x-w" and got["Metadata"] == {"who": "aisle"}
    assert body(s3, name, "w/small") == b"written through"
    assert p.count("GET", "w/small") == 0, "a written object is cached by the write"

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024 + 123))
    cluster.aws("s3", "cp", str(big), f"s3://{name}/w/big.bin")  # multipart (8 MiB parts)
    assert mc.get_object(Bucket=src, Key="w/big.bin")["Body"].read() == big.read_bytes()
    assert body(s3, name, "w/big.bin") == big.read_bytes()

    s3.copy_object(Bucket=name, Key="w/copy", CopySource={"Bucket": name, "Key": "w/small"})
    assert mc.get_object(Bucket=src, Key="w/copy")["Body"].read() == b"written through"

    s3.delete_object(Bucket=name, Key="w/small")
    with pytest.raises(ClientError):
        mc.head_object(Bucket=src, Key="w/small")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=name, Key="w/small")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"
    s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "w/copy"}]})
    with pytest.raises(ClientError):
        mc.head_object(Bucket=src, Key="w/copy")


def test_prefetch_and_evict_jobs(cluster, s3, moto):
    n = int(os.environ.get("AISLE_REMOTE_OBJECTS", "1000"))
    name, src, mc, p = remote_bucket(cluster, moto)
    keys = [f"p/{i:05d}" for i in range(n)]
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda k: mc.put_object(Bucket=src, Key=k, Body=k.encode() * 10), keys))
    mc.put_object(Bucket=src, Key="other", Body=b"not prefetched")
    out = aisle(cluster, "prefetch", "--source", name, "--prefix", "p/")
    assert "done" in out.stdout and f"{n}/{n}" in out.stdout, out.stdout
    p.reset()
    for k in random.sample(keys, 20):
        assert body(s3, name, k) == k.encode() * 10
    assert sum(1 for m, _ in p.requests if m == "GET") == 0, "prefetched objects are local"
    assert f"{n} objects cached" in aisle(cluster, "ls", name, "--cached", "--prefix", "p/").stdout
    state = aisle(cluster, "ls", name, "--key", keys[0]).stdout
    assert '"cached": true' in state
    # Each target fetched what it owns.
    per_target = {t["id"]: r["cached_objects"] for t in show(cluster)["targets"]
                  for r in t["status"].get("remotes", []) if r["bucket"] == name}
    assert sum(per_target.values()) == n and sum(1 for v in per_target.values() if v) > 1

    out = aisle(cluster, "evict", "--source", name, "--prefix", "p/")
    assert "done" in out.stdout, out.stdout
    assert "0 objects cached" in aisle(cluster, "ls", name, "--cached").stdout
    assert mc.list_objects_v2(Bucket=src, Prefix="p/")["KeyCount"] == min(n, 1000)
    assert body(s3, name, keys[1]) == keys[1].encode() * 10  # fetched again on demand


def test_a_fetch_cut_midway_fails_the_read_and_publishes_nothing(cluster, s3, moto):
    name, src, mc, p = remote_bucket(cluster, moto)
    data = os.urandom(8 * 1024 * 1024)
    mc.put_object(Bucket=src, Key="cut", Body=data)
    p.mode, p.cut_after = "cut", 1024 * 1024
    client = s3_client(cluster.endpoint, cluster.env["AWS_ACCESS_KEY_ID"],
                       cluster.env["AWS_SECRET_ACCESS_KEY"])
    try:
        got = body(client, name, "cut")
    except Exception:  # the response is aborted (botocore: IncompleteRead / connection error)
        got = None
    assert got is None, "a fetch cut for good must fail the read, never end it short"
    # object_store resumes a cut body with a range request: every attempt was cut.
    assert p.count("GET", "cut") >= 2
    assert "cut" not in aisle(cluster, "ls", name, "--cached").stdout.split()
    p.mode = "pass"
    assert body(s3, name, "cut") == data


def test_remote_down_or_stalled_is_503_while_cached_objects_are_served(cluster, s3, moto):
    name, src, mc, p = remote_bucket(cluster, moto, "--remote-timeout", "2s")
    mc.put_object(Bucket=src, Key="warm", Body=b"cached before the outage")
    mc.put_object(Bucket=src, Key="cold", Body=b"never read")
    assert body(s3, name, "warm") == b"cached before the outage"
    client = s3_client(cluster.endpoint, cluster.env["AWS_ACCESS_KEY_ID"],
                       cluster.env["AWS_SECRET_ACCESS_KEY"])
    for mode in ["down", "stall"]:
        p.mode = mode
        t0 = time.time()
        with pytest.raises(ClientError) as e:
            client.get_object(Bucket=name, Key="cold")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503, mode
        assert e.value.response["Error"]["Code"] == "SlowDown"
        assert "Retry-After" in e.value.response["ResponseMetadata"]["HTTPHeaders"] or \
            "retry-after" in e.value.response["ResponseMetadata"]["HTTPHeaders"]
        assert time.time() - t0 < 20, f"{mode}: bounded by the remote timeout"
        assert body(s3, name, "warm") == b"cached before the outage"
    reports = [r for t in show(cluster)["targets"] for r in t["status"].get("remotes", [])
               if r["bucket"] == name and r["unavailable"]]
    assert reports, "aisle cluster show reports the remote unavailable"
    assert p.url in reports[0]["last_error"]
    p.mode = "pass"
    assert body(s3, name, "cold") == b"never read"


@pytest.fixture(scope="module")
def other_cluster():
    d = tempfile.mkdtemp(prefix="aisle-remote-")
    c = Cluster(d, targets=1).start()
    yield c
    c.stop()
    shutil.rmtree(d, ignore_errors=True)


def test_aisle_behind_aisle_and_wrong_credentials(cluster, s3, other_cluster):
    o = other_cluster.client()
    o.create_bucket(Bucket="origin")
    o.put_object(Bucket="origin", Key="deep/obj", Body=b"from the other aisle")
    p = Proxy(other_cluster.endpoint)
    ak, sk = other_cluster.env["AWS_ACCESS_KEY_ID"], other_cluster.env["AWS_SECRET_ACCESS_KEY"]
    bad = aisle(cluster, "bucket", "add", "behind-bad", "--remote", "s3://origin",
                "--remote-endpoint", p.url, "--remote-access-key", ak,
                "--remote-secret-key", "wrong" + sk, check=False)
    assert bad.returncode != 0
    assert "403" in bad.stderr and p.url in bad.stderr, bad.stderr
    assert sk not in bad.stderr
    aisle(cluster, "bucket", "add", "behind", "--remote", "s3://origin/deep",
          "--remote-endpoint", p.url, "--remote-access-key", ak, "--remote-secret-key", sk)
    assert body(s3, "behind", "obj") == b"from the other aisle"
    # The cache publishes its copy once the body has been sent: wait for it, then read again.
    wait_for(lambda: "obj" in aisle(cluster, "ls", "behind", "--cached").stdout.split(), 20, "the cache fill")
    assert body(s3, "behind", "obj") == b"from the other aisle"
    assert p.count("GET", "deep/obj") == 1
    s3.put_object(Bucket="behind", Key="new", Body=b"written through to aisle")
    assert o.get_object(Bucket="origin", Key="deep/new")["Body"].read() == b"written through to aisle"
    view = show(cluster)
    assert view["remotes"]["behind"]["secret_key"] == "********"
    assert sk not in str(view)
    metas = list(cluster.data.rglob("cluster-meta.json"))
    assert metas
    for f in metas:
        assert oct(f.stat().st_mode & 0o777) == "0o600"
    aisle(cluster, "bucket", "rm", "behind")
    assert "behind" not in show(cluster)["buckets"]
    assert o.get_object(Bucket="origin", Key="deep/obj")["Body"].read() == b"from the other aisle"


def put_random(mc, src, keys, size):
    """Random objects of `size` bytes under `keys` in the moto bucket `src`; returns the keys."""
    for k in keys:
        mc.put_object(Bucket=src, Key=k, Body=os.urandom(size))
    return keys


@pytest.fixture
def small_disk():
    """A 64 MiB tmpfs of the test's own (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    d = Path(tempfile.mkdtemp(prefix="aisle-small-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(d)], check=True)
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)
    shutil.rmtree(d, ignore_errors=True)


def fill_up(path):
    """Write zeros to `path` until the disk refuses more."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (256 * 1024))
        except OSError as e:
            assert e.errno == errno.ENOSPC, e


def test_a_full_disk_evicts_cached_objects_and_the_mark_moves(moto, small_disk):
    """The disk rule, on a disk the test fills itself: above 80% used, fetching evicts the least
    recently read cached objects; local objects stay."""
    c = Cluster(small_disk / "data", targets=1,
                extra=["--mountpaths", "1", "--cache-disk-full", "80"]).start()
    try:
        s3 = c.client()
        name, src, mc, p = remote_bucket(c, moto)
        keys = put_random(mc, src, [f"k{i}" for i in range(8)], 2 * 1024 * 1024)
        s3.create_bucket(Bucket="local")
        s3.put_object(Bucket="local", Key="l", Body=b"kept")
        for k in keys[:4]:
            body(s3, name, k)
        cached = aisle(c, "ls", name, "--cached").stdout.split()
        assert all(k in cached for k in keys[:4]), "below the mark nothing is evicted"
        # Other data fills the disk past the mark: the next fetches make room.
        used = shutil.disk_usage(small_disk)
        filler = int(used.total * 0.80) - used.used
        with open(small_disk / "filler", "wb") as f:
            f.write(b"\0" * filler)
        for k in keys[4:]:
            assert body(s3, name, k) is not None
        cached = aisle(c, "ls", name, "--cached").stdout.split()
        assert keys[0] not in cached and keys[-1] in cached, cached
        assert body(s3, "local", "l") == b"kept", "local objects are never evicted"
        assert shutil.disk_usage(small_disk).used < used.total * 0.80
    finally:
        c.stop()


def test_a_disk_that_fills_up_fails_fetches_visibly_and_the_node_stays_up(moto, small_disk):
    """Nothing evicts (the rule is off) and the cache outgrows its 64 MiB disk, logs included:
    the prefetch ends with per-object errors instead of hanging, the target keeps running (a
    log line it cannot write is dropped, not fatal), and once space is freed it fetches again."""
    c = Cluster(small_disk / "data", targets=1, extra=["--mountpaths", "1"]).start()
    try:
        s3 = c.client()
        name, src, mc, p = remote_bucket(c, moto)
        keys = put_random(mc, src, [f"big/{i:02d}" for i in range(40)], 2 * 1024 * 1024)
        out = aisle(c, "prefetch", "--source", name, "--prefix", "big/", check=False)
        assert "done" in out.stdout and "40/40" in out.stdout, out.stdout + out.stderr
        assert "No space left on device" in out.stdout, out.stdout
        cached = aisle(c, "ls", name, "--cached").stdout.split()
        assert 0 < sum(k in cached for k in keys) < 40
        assert "exited" not in (small_disk / "data" / "up.log").read_text(), "the target stayed up"
        missing = [k for k in keys if k not in cached]
        # The failed fetches cleaned up after themselves, which may have left room for one more
        # object: take whatever is left, so this read meets a full disk for certain.
        fill_up(small_disk / "filler")
        with pytest.raises(Exception):
            s3.get_object(Bucket=name, Key=missing[0])["Body"].read()
        (small_disk / "filler").unlink()
        aisle(c, "evict", "--source", name, "--prefix", "big/")
        data = s3.get_object(Bucket=name, Key=missing[0])["Body"].read()
        assert data == mc.get_object(Bucket=src, Key=missing[0])["Body"].read()
    finally:
        c.stop()


def test_cache_capacity_evicts_least_recently_read(moto, fresh_dir):
    c = Cluster(fresh_dir, targets=1, extra=["--mountpaths", "1", "--cache-max", "4MiB"]).start()
    try:
        s3 = c.client()
        name, src, mc, p = remote_bucket(c, moto)
        keys = [f"k{i}" for i in range(10)]
        for k in keys:
            mc.put_object(Bucket=src, Key=k, Body=os.urandom(1024 * 1024))
        for k in keys:
            body(s3, name, k)
        cached = aisle(c, "ls", name, "--cached").stdout
        held = [k for k in keys if k in cached.split()]
        assert 2 <= len(held) <= 4, cached
        assert held == keys[-len(held):], "the least recently read went first"
        s3.create_bucket(Bucket="local")
        for i in range(6):
            s3.put_object(Bucket="local", Key=f"l{i}", Body=os.urandom(1024 * 1024))
        for k in keys[:3]:
            body(s3, name, k)
        assert all(body(s3, "local", f"l{i}") for i in range(6)), "local buckets are never evicted"
    finally:
        c.stop()

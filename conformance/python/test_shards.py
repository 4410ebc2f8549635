"""Shards through plain S3 requests: members of tar/tgz/tar.lz4/zip, selections, append,
server-side shard building, GetBatch, WebDataset transforms, hostile archives."""

import gzip
import io
import json
import os
import subprocess
import tarfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import botocore.exceptions
import pytest
from PIL import Image

from conftest import aisle_bin
from test_hostile import signed


def wds_shard(n=1000, seed=0):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for i in range(n):
            img = Image.new("RGB", (96, 64), ((i * 7 + seed) % 256, 30, 90))
            j = io.BytesIO()
            img.save(j, "JPEG")
            for ext, data in [("jpg", j.getvalue()), ("json", json.dumps({"i": i}).encode()), ("cls", str(i % 10).encode())]:
                ti = tarfile.TarInfo(f"sample{i:04d}.{ext}")
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def with_query(client, op, params):
    def add(request, **_):
        sep = "&" if "?" in request.url else "?"
        request.url += sep + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)

    client.meta.events.register(f"before-sign.s3.{op}", add)
    return client


def make_all(members):
    out = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    out["s.tar"] = buf.getvalue()
    out["s.tgz"] = gzip.compress(out["s.tar"])
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    out["s.zip"] = z.getvalue()
    return out


def test_members_of_every_format_by_boto3_and_presigned_curl(cluster, s3, bucket, tmp_path):
    members = [(f"d/m{i}.bin", os.urandom(1000 + i)) for i in range(30)] + [("d/x y+z.txt", b"spaces and plus")]
    shards = make_all(members)
    import lz4.frame

    shards["s.tar.lz4"] = lz4.frame.compress(shards["s.tar"])
    for key, data in shards.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    # Also one without an extension: detected by magic bytes.
    s3.put_object(Bucket=bucket, Key="noext", Body=shards["s.tgz"])
    for key in list(shards) + ["noext"]:
        for name, data in [members[0], members[17], members[-1]]:
            c = with_query(cluster.client(), "GetObject", {"archpath": name})
            r = c.get_object(Bucket=bucket, Key=key)
            assert r["Body"].read() == data, (key, name)
            assert r["ContentLength"] == len(data)
            url = with_query(cluster.client(signature_version="s3v4"), "GetObject", {"archpath": name}).generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}
            )
            assert subprocess.run(["curl", "-sf", url], capture_output=True, check=True).stdout == data
        # The header form.
        c = cluster.client()
        c.meta.events.register("before-sign.s3.GetObject", lambda request, **_: request.headers.__setitem__("x-ais-archpath", "d/m5.bin"))
        assert c.get_object(Bucket=bucket, Key=key)["Body"].read() == members[5][1]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        with_query(cluster.client(), "GetObject", {"archpath": "nope"}).get_object(Bucket=bucket, Key="s.tar")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_selection_listing_and_wds_map(cluster, s3, bucket, tmp_path):
    shard = wds_shard(1000)
    s3.put_object(Bucket=bucket, Key="train-0000.tar", Body=shard)
    ref = tarfile.open(fileobj=io.BytesIO(shard))
    # member 0 and member 2999 both served (the index makes them cost the same: see the bench).
    for name in ["sample0000.jpg", "sample0999.cls"]:
        got = with_query(cluster.client(), "GetObject", {"archpath": name}).get_object(Bucket=bucket, Key="train-0000.tar")
        assert got["Body"].read() == ref.extractfile(name).read()
    # wdskey: exactly one sample's members.
    out = with_query(cluster.client(), "GetObject", {"archregx": "sample0042", "archmode": "wdskey"}).get_object(Bucket=bucket, Key="train-0000.tar")
    t = tarfile.open(fileobj=io.BytesIO(out["Body"].read()))
    assert t.getnames() == ["sample0042.jpg", "sample0042.json", "sample0042.cls"]
    for m in t:
        assert t.extractfile(m).read() == ref.extractfile(m.name).read()
    out = with_query(cluster.client(), "GetObject", {"archregx": r"sample00[0-4]\d\.cls$", "archmode": "regexp"}).get_object(Bucket=bucket, Key="train-0000.tar")
    assert len(tarfile.open(fileobj=io.BytesIO(out["Body"].read())).getnames()) == 50
    # Listing members.
    ls = subprocess.run([aisle_bin(), "archive", "ls", f"s3://{bucket}/train-0000.tar", "--json"], env=cluster.shell_env(), capture_output=True, text=True, check=True)
    listed = json.loads(ls.stdout)
    assert [m["name"] for m in listed] == ref.getnames()
    assert all(shard[m["offset"]:m["offset"] + m["size"]] == ref.extractfile(m["name"]).read() for m in listed[:30])
    # wds-map with resize; the webdataset package iterates the result.
    import webdataset as wds

    c = cluster.client()

    def etl(request, **_):
        request.headers["x-ais-etl"] = "wds-map"
        request.headers["x-ais-etl-args"] = json.dumps({"ext": "jpg", "pipeline": "resize", "args": {"resize": {"w": 32, "h": 32}}})

    c.meta.events.register("before-sign.s3.GetObject", etl)
    mapped = c.get_object(Bucket=bucket, Key="train-0000.tar")["Body"].read()
    (tmp_path / "mapped.tar").write_bytes(mapped)
    keys = []
    for sample in wds.WebDataset(str(tmp_path / "mapped.tar"), shardshuffle=False).decode("pil"):
        keys.append(sample["__key__"])
        assert sample["jpg"].size == (32, 32)
        assert int(sample["cls"]) == int(sample["__key__"][-4:]) % 10
    assert keys == [f"sample{i:04d}" for i in range(1000)]


def test_append_while_reading(cluster, s3, bucket):
    stop, bad, reads = threading.Event(), [], [0]

    def reader():
        r = cluster.client()
        while not stop.is_set():
            try:
                body = r.get_object(Bucket=bucket, Key="grow.tar")["Body"].read()
            except botocore.exceptions.ClientError:
                continue
            try:
                names = tarfile.open(fileobj=io.BytesIO(body)).getnames()
                reads[0] += 1
                if names != [f"m{i:03d}.txt" for i in range(len(names))]:
                    bad.append(names)
            except Exception as e:  # noqa: BLE001
                bad.append(repr(e))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(100):
        with_query(cluster.client(), "PutObject", {"archpath": f"m{i:03d}.txt", "append": "true"}).put_object(
            Bucket=bucket, Key="grow.tar", Body=f"member {i}\n".encode() * (i + 1)
        )
    stop.set()
    t.join()
    assert not bad, bad[:3]
    assert reads[0] > 0
    final = tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key="grow.tar")["Body"].read()))
    assert len(final.getnames()) == 100
    assert final.extractfile("m057.txt").read() == b"member 57\n" * 58
    # Appending to a shard written by Python's tarfile (with its record padding) works too.
    s3.put_object(Bucket=bucket, Key="py.tar", Body=wds_shard(3))
    with_query(cluster.client(), "PutObject", {"archpath": "extra.txt", "append": "true"}).put_object(Bucket=bucket, Key="py.tar", Body=b"x")
    names = tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key="py.tar")["Body"].read())).getnames()
    assert names[-1] == "extra.txt" and len(names) == 10
    # Compressed shards and zip are rewritten with the new member.
    shards = make_all([("a.txt", b"a"), ("b.txt", b"b")])
    for key in ["s.tgz", "s.zip"]:
        s3.put_object(Bucket=bucket, Key=key, Body=shards[key])
        with_query(cluster.client(), "PutObject", {"archpath": "c.txt", "append": "true"}).put_object(Bucket=bucket, Key=key, Body=b"c")
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if key.endswith(".zip"):
            z = zipfile.ZipFile(io.BytesIO(body))
            assert [(n, z.read(n)) for n in z.namelist()] == [("a.txt", b"a"), ("b.txt", b"b"), ("c.txt", b"c")]
        else:
            t = tarfile.open(fileobj=io.BytesIO(body))
            assert [(m.name, t.extractfile(m).read()) for m in t] == [("a.txt", b"a"), ("b.txt", b"b"), ("c.txt", b"c")]
        with pytest.raises(botocore.exceptions.ClientError) as e:
            with_query(cluster.client(), "PutObject", {"archpath": "c.txt", "append": "true"}).put_object(Bucket=bucket, Key=key, Body=b"again")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409


def test_build_shards_from_10000_objects_and_get_batch(cluster, s3, bucket, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    c = cluster.client(max_pool_connections=32)
    keys = [f"img-{i:05d}.{ext}" for i in range(5000) for ext in ("jpg", "cls")]
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda k: c.put_object(Bucket=bucket, Key=k, Body=k.encode() * 20), keys))
    out = f"{bucket}-out"
    s3.create_bucket(Bucket=out)
    gw = cluster.pid("gateway")

    def gateway_io():
        io_ = dict(l.split(": ") for l in open(f"/proc/{gw}/io").read().splitlines())
        return int(io_["rchar"]) + int(io_["wchar"])

    before = gateway_io()
    run = subprocess.run(
        [aisle_bin(), "archive", "build", "--source", bucket, "--prefix", "img-", "--output-bucket", out,
         "--output-prefix", "train-", "--shard-size", "1MiB", "--wait"],
        env=cluster.shell_env(), capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # Each shard is built on its owner from the members' holders: no member crosses the
    # gateway (its process moves the key listing and the job's control traffic).
    moved = gateway_io() - before
    packed = sum(len(k) * 20 for k in keys)
    print(f"shards of {len(keys)} objects ({packed} bytes): the gateway process moved {moved} bytes")
    assert moved < packed / 2, moved
    members = []
    sample_shard = {}
    shards = [o["Key"] for o in s3.list_objects_v2(Bucket=out)["Contents"]]
    assert len(shards) > 1
    for key in shards:
        t = tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=out, Key=key)["Body"].read()))
        names = t.getnames()
        for n in names:
            # Samples are never split across shards.
            assert sample_shard.setdefault(n.split(".")[0], key) == key, n
        members += [(n, t.extractfile(n).read()) for n in names]
    assert [m[0] for m in members] == sorted(keys)
    assert all(data == name.encode() * 20 for name, data in members)

    # GetBatch: objects and shard members, in order, one tar.
    batch = {"entries": [{"bucket": bucket, "key": "img-00007.jpg"}, {"bucket": out, "key": shards[0], "archpath": "img-00000.cls"},
                         {"bucket": bucket, "key": "missing"}], "missing": "placeholder"}
    status, body = signed(cluster, "POST", "/_aisle/v1/batch", json.dumps(batch).encode(), {"Content-Type": "application/json"})
    assert status == 200
    t = tarfile.open(fileobj=io.BytesIO(body))
    assert t.getnames() == ["img-00007.jpg", f"{shards[0]}/img-00000.cls", "__missing__/missing"]
    assert t.extractfile("img-00007.jpg").read() == b"img-00007.jpg" * 20
    batch["missing"] = "fail"
    batch["entries"] = batch["entries"][2:]
    assert signed(cluster, "POST", "/_aisle/v1/batch", json.dumps(batch).encode(), {"Content-Type": "application/json"})[0] == 404


def test_hostile_archives(cluster, s3, bucket):
    def read(key, params):
        try:
            r = with_query(cluster.client(retries={"max_attempts": 1}), "GetObject", params).get_object(Bucket=bucket, Key=key)
            r["Body"].read()
            return 200, None
        except botocore.exceptions.ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]

    # A bomb: 300 MB of zeros in a few hundred KB of gzip.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        ti = tarfile.TarInfo("zeros.bin")
        ti.size = 300 * 1024 * 1024

        class Zeros(io.RawIOBase):
            def __init__(self):
                self.left = ti.size

            def readable(self):
                return True

            def readinto(self, b):
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n

        t.addfile(ti, io.BufferedReader(Zeros()))
        small = tarfile.TarInfo("after.txt")
        small.size = 2
        t.addfile(small, io.BytesIO(b"hi"))
    s3.put_object(Bucket=bucket, Key="bomb.tgz", Body=buf.getvalue())
    assert read("bomb.tgz", {"archpath": "after.txt"}) == (400, "ArchiveTooLarge")
    # Truncated and corrupt archives.
    shard = wds_shard(20)
    s3.put_object(Bucket=bucket, Key="cut.tar", Body=shard[: len(shard) // 2 + 100])  # not on a block boundary
    assert read("cut.tar", {"archpath": "sample0019.cls"})[0] == 400
    s3.put_object(Bucket=bucket, Key="junk.tar", Body=os.urandom(4096))
    assert read("junk.tar", {"archpath": "x"})[0] == 400
    s3.put_object(Bucket=bucket, Key="junk.zip", Body=b"PK\x03\x04" + os.urandom(100))
    assert read("junk.zip", {"archpath": "x"})[0] == 400
    s3.put_object(Bucket=bucket, Key="notanarchive", Body=b"hello")
    assert read("notanarchive", {"archpath": "x"}) == (400, "InvalidArchive")
    # Member paths that try to escape are never written into a tar the client would extract.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in ["../../etc/evil", "ok.txt"]:
            ti = tarfile.TarInfo(name)
            ti.size = 1
            t.addfile(ti, io.BytesIO(b"x"))
    s3.put_object(Bucket=bucket, Key="escape.tar", Body=buf.getvalue())
    assert read("escape.tar", {"archregx": ".", "archmode": "regexp"}) == (400, "CorruptArchive")
    # Absurd sizes: a header claiming a terabyte.
    h = tarfile.TarInfo("huge")
    h.size = 1 << 40
    s3.put_object(Bucket=bucket, Key="absurd.tar", Body=h.tobuf() + bytes(1024))
    assert read("absurd.tar", {"archpath": "huge"})[0] == 400
    # A bad selector.
    s3.put_object(Bucket=bucket, Key="ok.tar", Body=wds_shard(2))
    assert read("ok.tar", {"archregx": "(", "archmode": "regexp"})[0] == 400
    assert read("ok.tar", {"archregx": "x", "archmode": "glob"})[0] == 400

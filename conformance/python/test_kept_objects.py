"""Small objects the gateway keeps (docs/ARCHITECTURE.md, gateway::hot): a plain GET of a small
object is answered from the gateway's memory while every target's change table shows the key
unchanged. Each test first proves the object is being served from there (the gateway's hit
counter grows), then changes it in one way — through the gateway, through a job that writes
target to target, around a killed target — and reads it back at once: the change must show on
the very next GET, never an older answer."""

import json
import os
import shutil
import signal
import tempfile
import time
import urllib.request

import pytest

from conftest import Cluster, aisle, wait_for

SKIP = {"date", "x-amz-request-id", "x-amz-id-2"}


@pytest.fixture(scope="module")
def kc():
    d = tempfile.mkdtemp(prefix="aisle-kept-")
    c = Cluster(d).start()
    yield c
    c.stop()
    if not os.environ.get("AISLE_KEEP"):
        shutil.rmtree(d, ignore_errors=True)


def hits(c):
    token = (c.data / "metrics-token").read_text().strip()
    groups = json.loads((c.data / "prometheus-targets.json").read_text())
    addr = next(g["targets"][0] for g in groups if g["labels"]["node"] == "gateway")
    req = urllib.request.Request(f"http://{addr}/_aisle/metrics",
                                 headers={"Authorization": f"Bearer {token}"})
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    return int(float(next(l.split()[1] for l in text.splitlines()
                          if l.startswith("aisle_gateway_kept_object_hits_total"))))


def get(s3, b, k, **kw):
    r = s3.get_object(Bucket=b, Key=k, **kw)
    return r["Body"].read(), r


def kept(c, s3, b, k):
    """GET until one answer comes from what the gateway keeps; that answer."""
    def hit():
        before = hits(c)
        body, r = get(s3, b, k)
        return (body, r) if hits(c) > before else None
    return wait_for(hit, 30, f"{b}/{k} answered from the gateway's memory")


def headers(r):
    return {k: v for k, v in r["ResponseMetadata"]["HTTPHeaders"].items() if k not in SKIP}


@pytest.fixture
def kb(kc):
    s3 = kc.client()
    name = f"kept-{time.monotonic_ns()}"
    s3.create_bucket(Bucket=name)
    return s3, name


def test_a_kept_answer_is_the_answer_the_target_gave(kc, kb):
    s3, b = kb
    body = os.urandom(5000)
    s3.put_object(Bucket=b, Key="k", Body=body, ContentType="image/x-test",
                  Metadata={"origin": "camera-7"}, Tagging="a=1")
    first, r1 = get(s3, b, "k")
    again, r2 = kept(kc, s3, b, "k")
    assert first == again == body
    assert headers(r2) == headers(r1)
    assert r2["Metadata"] == {"origin": "camera-7"} and r2["TagCount"] == 1
    # Reads that are not plain go to the target as always.
    etag = r2["ETag"]
    before = hits(kc)
    with pytest.raises(s3.exceptions.ClientError) as e:
        s3.get_object(Bucket=b, Key="k", IfNoneMatch=etag)
    assert e.value.response["Error"]["Code"] == "304"
    assert get(s3, b, "k", Range="bytes=10-19")[0] == body[10:20]
    assert s3.head_object(Bucket=b, Key="k")["ContentLength"] == 5000
    assert hits(kc) == before
    # An object above the size a target checks whole is never kept.
    big = os.urandom(200_000)
    s3.put_object(Bucket=b, Key="big", Body=big)
    for _ in range(3):
        assert get(s3, b, "big")[0] == big
    assert hits(kc) == before


def test_every_change_through_the_gateway_shows_on_the_next_read(kc, kb):
    s3, b = kb
    s3.put_object(Bucket=b, Key="k", Body=b"v1")
    kept(kc, s3, b, "k")
    s3.put_object(Bucket=b, Key="k", Body=b"v2")
    assert get(s3, b, "k")[0] == b"v2"

    kept(kc, s3, b, "k")
    s3.put_object(Bucket=b, Key="src", Body=b"copied")
    s3.copy_object(Bucket=b, Key="k", CopySource={"Bucket": b, "Key": "src"})
    assert get(s3, b, "k")[0] == b"copied"

    kept(kc, s3, b, "k")
    s3.copy_object(Bucket=b, Key="k", CopySource={"Bucket": b, "Key": "k"},
                   Metadata={"n": "2"}, MetadataDirective="REPLACE")
    assert get(s3, b, "k")[1]["Metadata"] == {"n": "2"}

    kept(kc, s3, b, "k")
    s3.put_object_tagging(Bucket=b, Key="k", Tagging={"TagSet": [{"Key": "x", "Value": "y"},
                                                                 {"Key": "z", "Value": "w"}]})
    assert get(s3, b, "k")[1]["TagCount"] == 2

    kept(kc, s3, b, "k")
    up = s3.create_multipart_upload(Bucket=b, Key="k")["UploadId"]
    part = s3.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=1, Body=b"multi")
    s3.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert get(s3, b, "k")[0] == b"multi"

    kept(kc, s3, b, "k")
    s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "k"}]})
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=b, Key="k")

    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=b, Key="k", Body=b"ver1")["VersionId"]
    kept(kc, s3, b, "k")
    s3.put_object(Bucket=b, Key="k", Body=b"ver2")
    assert get(s3, b, "k")[0] == b"ver2"
    kept(kc, s3, b, "k")
    s3.delete_object(Bucket=b, Key="k")
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=b, Key="k")
    assert get(s3, b, "k", VersionId=v1)[0] == b"ver1"


def test_a_job_that_writes_target_to_target_is_seen_at_once(kc, kb):
    s3, b = kb
    out = b + "-out"
    s3.create_bucket(Bucket=out)
    s3.put_object(Bucket=b, Key="d/x", Body=b"first source")
    aisle(kc, "etl", "run", "identity", "--source", b, "--prefix", "d/", "--output-bucket", out, "--wait")
    assert kept(kc, s3, out, "d/x")[0] == b"first source"
    # The job's targets write the output to its owner themselves: nothing passes the gateway.
    s3.put_object(Bucket=b, Key="d/x", Body=b"second source")
    aisle(kc, "etl", "run", "identity", "--source", b, "--prefix", "d/", "--output-bucket", out, "--wait")
    assert get(s3, out, "d/x")[0] == b"second source"


def test_writes_around_a_killed_target_and_its_restart_are_seen(kc, kb):
    s3, b = kb
    s3.put_object(Bucket=b, Key="k", Body=b"before")
    _, r = kept(kc, s3, b, "k")
    # Kill every target in turn (the one that served the kept answer among them): a write
    # made while it is down lands on the others, and the next read shows it.
    for n in range(1, kc.targets + 1):
        kept(kc, s3, b, "k")
        os.kill(kc.pid(f"t{n}"), signal.SIGKILL)
        body = f"while t{n} was down".encode()
        wait_for(lambda: _put(s3, b, body), 60, f"a PUT with t{n} down")
        assert get(s3, b, "k")[0] == body
        # `aisle up` restarts it; reads stay right throughout.
        wait_for(lambda: _up(kc, f"t{n}"), 60, f"t{n} back")
        assert get(s3, b, "k")[0] == body


def _put(s3, b, body):
    try:
        s3.put_object(Bucket=b, Key="k", Body=body)
        return True
    except s3.exceptions.ClientError:
        return False


def _up(c, node):
    targets = json.loads(aisle(c, "cluster", "show", "--json").stdout)["targets"]
    return any(t["id"] == node and t["status"] for t in targets)


def test_nothing_is_kept_when_turned_off(fresh_dir):
    c = Cluster(fresh_dir, targets=1, extra=["--keep-small-mib", "0"]).start()
    try:
        s3 = c.client()
        s3.create_bucket(Bucket="off")
        s3.put_object(Bucket="off", Key="k", Body=b"x")
        for _ in range(5):
            assert get(s3, "off", "k")[0] == b"x"
            time.sleep(0.05)
        assert hits(c) == 0
    finally:
        c.stop()

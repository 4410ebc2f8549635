"""S3 object versioning against a real cluster, with boto3 and the aws CLI: version ids on every
write, reads and deletes of any version, delete markers, the suspended state and the null
version, ListObjectVersions paging, and versions that survive kill -9 of their targets."""

import json
import os
import signal
import time

import botocore.exceptions
import pytest

from conftest import Cluster, aisle, settled, show, wait_for


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


def status_of(excinfo):
    return excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def headers_of(excinfo):
    return excinfo.value.response["ResponseMetadata"]["HTTPHeaders"]


def enable(s3, bucket, status="Enabled"):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})


def all_versions(s3, bucket, **kw):
    """Every (key, version id, is latest, is marker) of a bucket, paged by boto3's paginator."""
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, **kw):
        # The XML holds versions and markers apart; S3's order is by key, newest first.
        items = [(v["Key"], v["VersionId"], v["IsLatest"], False, v["LastModified"])
                 for v in page.get("Versions", [])]
        items += [(m["Key"], m["VersionId"], m["IsLatest"], True, m["LastModified"])
                  for m in page.get("DeleteMarkers", [])]
        out += items
    return out


def test_versioning_status_round_trips_and_never_goes_back_to_off(s3, bucket):
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    enable(s3, bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    enable(s3, bucket, "Suspended")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Off"})
    assert status_of(e) == 400
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={
            "Status": "Enabled", "MFADelete": "Enabled"}, MFA="arn 123456")
    assert code_of(e) == "NotImplemented"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"


def test_every_write_is_a_version_and_each_reads_back(s3, bucket):
    enable(s3, bucket)
    ids = []
    for body in [b"one", b"two!", b"three"]:
        r = s3.put_object(Bucket=bucket, Key="k", Body=body)
        ids.append(r["VersionId"])
    assert len(set(ids)) == 3 and "null" not in ids
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"three" and got["VersionId"] == ids[2]
    for vid, body in zip(ids, [b"one", b"two!", b"three"]):
        r = s3.get_object(Bucket=bucket, Key="k", VersionId=vid)
        assert r["Body"].read() == body and r["VersionId"] == vid
        h = s3.head_object(Bucket=bucket, Key="k", VersionId=vid)
        assert h["ContentLength"] == len(body) and h["VersionId"] == vid
    # A range of an old version.
    r = s3.get_object(Bucket=bucket, Key="k", VersionId=ids[1], Range="bytes=1-2")
    assert r["Body"].read() == b"wo"
    # Listed newest first, the latest marked.
    vs = [(k, v, latest) for k, v, latest, marker, _ in all_versions(s3, bucket)]
    assert vs == [("k", ids[2], True), ("k", ids[1], False), ("k", ids[0], False)]
    # An id aisle never made is 400; one it could have made but did not is 404 NoSuchVersion.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="k", VersionId="not-a-version")
    assert status_of(e) == 400
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="k", VersionId="0" * 20)
    assert code_of(e) == "NoSuchVersion"
    # Copy and multipart give versions too; a copy can read an old version.
    c = s3.copy_object(Bucket=bucket, Key="copy", CopySource={
        "Bucket": bucket, "Key": "k", "VersionId": ids[0]})
    assert c["CopySourceVersionId"] == ids[0] and c["VersionId"] not in ids
    assert s3.get_object(Bucket=bucket, Key="copy")["Body"].read() == b"one"
    up = s3.create_multipart_upload(Bucket=bucket, Key="k")
    part = s3.upload_part(Bucket=bucket, Key="k", UploadId=up["UploadId"], PartNumber=1, Body=b"mpu")
    done = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert done["VersionId"] not in ids
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=ids[2])["Body"].read() == b"three"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"mpu"


def test_a_delete_adds_a_marker_and_removing_the_marker_restores_the_object(s3, bucket):
    enable(s3, bucket)
    v1 = s3.put_object(Bucket=bucket, Key="doc", Body=b"v1")["VersionId"]
    d = s3.delete_object(Bucket=bucket, Key="doc")
    assert d["DeleteMarker"] is True
    marker = d["VersionId"]
    assert marker != v1
    # The key reads as deleted, and the answer says it is because of a marker.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="doc")
    assert code_of(e) == "NoSuchKey"
    assert headers_of(e).get("x-amz-delete-marker") == "true"
    assert headers_of(e).get("x-amz-version-id") == marker
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    # The old version is still there; the marker itself is not an object (405).
    assert s3.get_object(Bucket=bucket, Key="doc", VersionId=v1)["Body"].read() == b"v1"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert status_of(e) == 405
    assert headers_of(e).get("x-amz-delete-marker") == "true"
    vs = all_versions(s3, bucket)
    assert [(k, v, latest, m) for k, v, latest, m, _ in vs] == [
        ("doc", v1, False, False), ("doc", marker, True, True)]
    # Deleting the marker by its id brings the object back.
    r = s3.delete_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert r["DeleteMarker"] is True and r["VersionId"] == marker
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"v1"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["doc"]


def test_deleting_a_version_for_good_makes_the_previous_one_current(s3, bucket):
    enable(s3, bucket)
    ids = [s3.put_object(Bucket=bucket, Key="x", Body=b"%d" % i)["VersionId"] for i in range(3)]
    # A noncurrent version goes; the current one stays.
    r = s3.delete_object(Bucket=bucket, Key="x", VersionId=ids[1])
    assert r["VersionId"] == ids[1] and "DeleteMarker" not in r
    assert [v for _, v, *_ in all_versions(s3, bucket)] == [ids[2], ids[0]]
    # The current one goes: the one before is current again.
    s3.delete_object(Bucket=bucket, Key="x", VersionId=ids[2])
    assert s3.get_object(Bucket=bucket, Key="x")["Body"].read() == b"0"
    assert [(v, latest) for _, v, latest, *_ in all_versions(s3, bucket)] == [(ids[0], True)]
    # The last one goes: nothing is left, and deleting it again is not an error.
    s3.delete_object(Bucket=bucket, Key="x", VersionId=ids[0])
    s3.delete_object(Bucket=bucket, Key="x", VersionId=ids[0])
    assert all_versions(s3, bucket) == []
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="x")
    assert code_of(e) == "NoSuchKey"


def test_the_null_version_before_and_while_suspended(s3, bucket):
    s3.put_object(Bucket=bucket, Key="n", Body=b"before")
    enable(s3, bucket)
    # The object written before versioning is the null version, now noncurrent.
    v = s3.put_object(Bucket=bucket, Key="n", Body=b"enabled")["VersionId"]
    assert s3.get_object(Bucket=bucket, Key="n", VersionId="null")["Body"].read() == b"before"
    assert [(vid, latest) for _, vid, latest, *_ in all_versions(s3, bucket)] == [(v, True), ("null", False)]
    enable(s3, bucket, "Suspended")
    # A write while suspended is the null version: it replaces the old null one.
    r = s3.put_object(Bucket=bucket, Key="n", Body=b"suspended")
    assert r.get("VersionId") == "null"
    assert [(vid, latest) for _, vid, latest, *_ in all_versions(s3, bucket)] == [("null", True), (v, False)]
    assert s3.get_object(Bucket=bucket, Key="n", VersionId="null")["Body"].read() == b"suspended"
    assert s3.get_object(Bucket=bucket, Key="n", VersionId=v)["Body"].read() == b"enabled"
    # A plain delete while suspended is a null delete marker that replaces the null version.
    d = s3.delete_object(Bucket=bucket, Key="n")
    assert d["DeleteMarker"] is True and d["VersionId"] == "null"
    vs = all_versions(s3, bucket)
    assert sorted((vid, latest, m) for _, vid, latest, m, _ in vs) == [(v, False, False), ("null", True, True)]
    # Enabled again: the versions kept are all there.
    enable(s3, bucket)
    assert s3.get_object(Bucket=bucket, Key="n", VersionId=v)["Body"].read() == b"enabled"


def test_list_object_versions_pages_by_key_and_version_marker(s3, bucket):
    enable(s3, bucket)
    want = []
    for k in ["a", "b/1", "b/2", "c"]:
        ids = [s3.put_object(Bucket=bucket, Key=k, Body=k.encode() * i)["VersionId"] for i in range(1, 4)]
        want += [(k, i) for i in reversed(ids)]
    marker = s3.delete_object(Bucket=bucket, Key="c")["VersionId"]
    # S3's order: by key, each key newest first; the marker of "c" is its newest.
    at = want.index(next(x for x in want if x[0] == "c"))
    want.insert(at, ("c", marker))
    # Pages of every size: versions and markers together, none twice, none missing.
    for page_size in (1, 2, 5, 1000):
        seen = []
        key_marker, id_marker = None, None
        while True:
            kw = {"MaxKeys": page_size}
            if key_marker:
                kw.update(KeyMarker=key_marker, VersionIdMarker=id_marker)
            r = s3.list_object_versions(Bucket=bucket, **kw)
            items = [(v["Key"], v["VersionId"], v["LastModified"]) for v in r.get("Versions", [])]
            items += [(m["Key"], m["VersionId"], m["LastModified"]) for m in r.get("DeleteMarkers", [])]
            assert len(items) <= page_size
            # Versions and markers come in separate lists: S3's order is by key, then newest.
            items.sort(key=lambda x: (x[0], -x[2].timestamp(), x[1] != marker))
            seen += [(k, v) for k, v, _ in items]
            if not r["IsTruncated"]:
                break
            key_marker, id_marker = r["NextKeyMarker"], r["NextVersionIdMarker"]
        assert seen == want, page_size
    # A delimiter rolls keys up into common prefixes; a key marker alone skips that key.
    r = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/"]
    assert {v["Key"] for v in r["Versions"]} == {"a", "c"}
    r = s3.list_object_versions(Bucket=bucket, KeyMarker="b/1")
    assert {v["Key"] for v in r["Versions"]} == {"b/2", "c"}
    r = s3.list_object_versions(Bucket=bucket, Prefix="b/", MaxKeys=4)
    assert [(v["Key"], v["IsLatest"]) for v in r["Versions"]] == [
        ("b/1", True), ("b/1", False), ("b/1", False), ("b/2", True)]
    assert r["IsTruncated"] and r["NextKeyMarker"] == "b/2"


def test_delete_objects_with_version_ids_and_markers(s3, bucket):
    enable(s3, bucket)
    v = {k: s3.put_object(Bucket=bucket, Key=k, Body=b"x")["VersionId"] for k in ["p", "q"]}
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "p", "VersionId": v["p"]}, {"Key": "q"}]})
    by_key = {d["Key"]: d for d in r["Deleted"]}
    assert by_key["p"]["VersionId"] == v["p"] and "DeleteMarker" not in by_key["p"]
    assert by_key["q"]["DeleteMarker"] is True and by_key["q"]["DeleteMarkerVersionId"]
    marker = by_key["q"]["DeleteMarkerVersionId"]
    assert s3.get_object(Bucket=bucket, Key="q", VersionId=v["q"])["Body"].read() == b"x"
    # Removing the marker through DeleteObjects says it was one.
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "q", "VersionId": marker}]})
    assert r["Deleted"][0]["DeleteMarker"] is True
    assert s3.get_object(Bucket=bucket, Key="q")["Body"].read() == b"x"


def test_tags_belong_to_each_version(s3, bucket):
    enable(s3, bucket)
    v1 = s3.put_object(Bucket=bucket, Key="t", Body=b"1", Tagging="gen=one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="t", Body=b"2", Tagging="gen=two")["VersionId"]
    tags = lambda **kw: {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key="t", **kw)["TagSet"]}
    assert tags() == {"gen": "two"} and tags(VersionId=v1) == {"gen": "one"}
    r = s3.put_object_tagging(Bucket=bucket, Key="t", VersionId=v1,
                              Tagging={"TagSet": [{"Key": "gen", "Value": "old"}]})
    assert r["VersionId"] == v1
    assert tags(VersionId=v1) == {"gen": "old"} and tags(VersionId=v2) == {"gen": "two"}


def test_the_aws_cli_sees_versions(cluster, s3, bucket):
    cluster.aws("s3api", "put-bucket-versioning", "--bucket", bucket,
                "--versioning-configuration", "Status=Enabled")
    out = json.loads(cluster.aws("s3api", "get-bucket-versioning", "--bucket", bucket).stdout)
    assert out["Status"] == "Enabled"
    for body in [b"a", b"bb"]:
        s3.put_object(Bucket=bucket, Key="f", Body=body)
    out = json.loads(cluster.aws("s3api", "list-object-versions", "--bucket", bucket).stdout)
    assert [v["Size"] for v in out["Versions"]] == [2, 1]
    old = out["Versions"][1]["VersionId"]
    dest = os.path.join(cluster.data, "old-f")
    cluster.aws("s3api", "get-object", "--bucket", bucket, "--key", "f", "--version-id", old, dest)
    assert open(dest, "rb").read() == b"a"
    # `aws s3 rm` on a versioned bucket adds a marker; the versions stay.
    cluster.aws("s3", "rm", f"s3://{bucket}/f")
    out = json.loads(cluster.aws("s3api", "list-object-versions", "--bucket", bucket).stdout)
    assert len(out["Versions"]) == 2 and len(out["DeleteMarkers"]) == 1


def test_versions_are_real_copies_that_survive_kill_9(fresh_dir):
    """copies=2: with one holder killed every version reads from its other copy; after kill -9
    of every target, all versions and the delete marker are back, each listed once."""
    c = Cluster(fresh_dir, extra=["--copies", "2"]).start()
    try:
        s3 = c.client(retries={"total_max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=10)
        s3.create_bucket(Bucket="vkill")
        enable(s3, "vkill")
        want = {}
        for k in [f"obj{i}" for i in range(6)]:
            for gen in range(3):
                body = f"{k}-{gen}".encode() * 1000
                want[(k, s3.put_object(Bucket="vkill", Key=k, Body=body)["VersionId"])] = body
        marker = s3.delete_object(Bucket="vkill", Key="obj0")["VersionId"]

        def readable():
            try:
                return all(s3.get_object(Bucket="vkill", Key=k, VersionId=v)["Body"].read() == body
                           for (k, v), body in want.items())
            except botocore.exceptions.ClientError:
                return False

        def listed():
            return sorted((k, v) for k, v, _, m, _ in all_versions(s3, "vkill") if not m)

        # One holder down: every version still reads, from the other copy.
        os.kill(c.pid("t1"), signal.SIGKILL)
        wait_for(readable, 60, "every version readable with t1 killed")
        # Every target killed at once: the supervisor restarts them.
        time.sleep(1)
        pids = {t: c.pid(t) for t in ("t1", "t2", "t3")}
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: all(c.pid(t) != p for t, p in pids.items()), 60, "targets restarted")
        wait_for(readable, 60, "every version readable after kill -9 of every target")
        wait_for(lambda: listed() == sorted(want), 60, "every version listed once")
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.get_object(Bucket="vkill", Key="obj0")
        assert headers_of(e).get("x-amz-version-id") == marker
    finally:
        c.stop()


def test_a_rebalance_moves_every_version_and_marker(fresh_dir):
    """copies=1: decommissioning a target moves each key's whole history — noncurrent
    versions, the null version and delete markers — to the key's new owner; the cluster then
    serves and lists all of it without the target that left."""
    c = Cluster(fresh_dir, extra=["--copies", "1"]).start()
    try:
        s3 = c.client()
        s3.create_bucket(Bucket="vmove")
        want, markers = {}, {}
        for i in range(40):
            k = f"key{i:03}"
            if i % 4 == 0:  # a null version from before versioning
                s3.put_object(Bucket="vmove", Key=k, Body=b"null-" + k.encode())
                want[(k, "null")] = b"null-" + k.encode()
        enable(s3, "vmove")
        for i in range(40):
            k = f"key{i:03}"
            for gen in range(2):
                body = f"{k}-{gen}".encode()
                want[(k, s3.put_object(Bucket="vmove", Key=k, Body=body)["VersionId"])] = body
            if i % 5 == 0:
                markers[k] = s3.delete_object(Bucket="vmove", Key=k)["VersionId"]
        wait_for(lambda: settled(c), 60, "the start-up rebalance settled")
        aisle(c, "cluster", "decommission", "t3", "--wait")
        assert "t3" not in {t["id"] for t in show(c)["targets"]}
        for (k, v), body in want.items():
            assert s3.get_object(Bucket="vmove", Key=k, VersionId=v)["Body"].read() == body, (k, v)
        vs = all_versions(s3, "vmove")
        assert sorted((k, v) for k, v, _, m, _ in vs if not m) == sorted(want)
        assert {k: v for k, v, _, m, _ in vs if m} == markers
        for k, marker in markers.items():
            with pytest.raises(botocore.exceptions.ClientError) as e:
                s3.get_object(Bucket="vmove", Key=k)
            assert headers_of(e).get("x-amz-version-id") == marker
    finally:
        c.stop()


def test_a_bucket_with_versions_left_is_not_empty(s3):
    s3.create_bucket(Bucket="vempty")
    enable(s3, "vempty")
    v = s3.put_object(Bucket="vempty", Key="k", Body=b"x")["VersionId"]
    marker = s3.delete_object(Bucket="vempty", Key="k")["VersionId"]
    # No current object, but a version and a marker: S3 refuses to delete the bucket.
    assert "Contents" not in s3.list_objects_v2(Bucket="vempty")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.delete_bucket(Bucket="vempty")
    assert code_of(e) == "BucketNotEmpty"
    s3.delete_objects(Bucket="vempty", Delete={"Objects": [
        {"Key": "k", "VersionId": v}, {"Key": "k", "VersionId": marker}]})
    s3.delete_bucket(Bucket="vempty")
    assert "vempty" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_a_corrupt_noncurrent_version_is_found_and_repaired_from_its_copy(fresh_dir):
    """copies=2: a byte flipped in the file of two noncurrent versions on one holder. A GET of
    the small one still returns the right bytes (a small corrupt copy is not served); a scrub
    finds both and replaces them from the other copy; a second scrub finds nothing."""
    c = Cluster(fresh_dir, extra=["--copies", "2"]).start()
    try:
        s3 = c.client()
        s3.create_bucket(Bucket="vrot")
        enable(s3, "vrot")
        old_body = os.urandom(200_000)  # past the check-on-read size: only a scrub sees it
        small_body = os.urandom(1000)  # checked on every read
        old = s3.put_object(Bucket="vrot", Key="big", Body=old_body)["VersionId"]
        s3.put_object(Bucket="vrot", Key="big", Body=b"new")
        small = s3.put_object(Bucket="vrot", Key="small", Body=small_body)["VersionId"]
        s3.put_object(Bucket="vrot", Key="small", Body=b"new")
        hits = []
        for f in sorted(c.data.glob("t*/mp*/obj/*/*")):
            data = f.read_bytes() if f.is_file() else b""
            if data in (old_body, small_body):
                hits.append((f, data))
        assert len(hits) == 4, "two copies of each noncurrent version"
        flipped = {}
        for f, data in hits:
            if data not in flipped.values():
                with open(f, "r+b") as fh:
                    fh.seek(100)
                    fh.write(bytes([data[100] ^ 0xFF]))
                flipped[f] = data
        for _ in range(4):  # whichever copy a read lands on
            assert s3.get_object(Bucket="vrot", Key="small", VersionId=small)["Body"].read() == small_body

        def scrub():
            reports = json.loads(aisle(c, "cluster", "scrub", "--json").stdout)
            return {k: sum(r[k] for r in reports) for k in ("corrupt", "repaired", "unrepairable")}

        first = scrub()
        # The small one may have been repaired by the reads already.
        assert first["unrepairable"] == 0 and first["corrupt"] == first["repaired"] >= 1, first
        wait_for(lambda: scrub() == {"corrupt": 0, "repaired": 0, "unrepairable": 0}, 30,
                 "a scrub that finds nothing corrupt")
        for f, data in hits:
            assert not f.exists() or f.read_bytes() == data
        for _ in range(4):
            assert s3.get_object(Bucket="vrot", Key="big", VersionId=old)["Body"].read() == old_body
    finally:
        c.stop()

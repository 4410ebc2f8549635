"""boto3 against a real cluster."""

import hashlib
import os

import boto3.s3.transfer
import botocore.exceptions
import pytest


def test_upload_download_file_multipart(s3, bucket, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(23 * 1024 * 1024 + 17))
    cfg = boto3.s3.transfer.TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    s3.upload_file(str(src), bucket, "data/src.bin", Config=cfg)
    head = s3.head_object(Bucket=bucket, Key="data/src.bin")
    assert head["ContentLength"] == src.stat().st_size
    assert head["ETag"].endswith('-5"')
    dst = tmp_path / "dst.bin"
    s3.download_file(bucket, "data/src.bin", str(dst), Config=cfg)  # ranged GETs in parallel
    assert hashlib.md5(dst.read_bytes()).digest() == hashlib.md5(src.read_bytes()).digest()


@pytest.mark.parametrize("mode", ["when_supported", "when_required"])
def test_checksum_modes(cluster, bucket, mode):
    s3 = cluster.client(request_checksum_calculation=mode, response_checksum_validation=mode)
    body = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key=f"c-{mode}", Body=body)
    got = s3.get_object(Bucket=bucket, Key=f"c-{mode}", ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    if mode == "when_supported":
        assert "ChecksumCRC32" in got


def test_put_with_metadata_head_copy(s3, bucket):
    s3.put_object(
        Bucket=bucket, Key="m.txt", Body=b"meta", ContentType="text/plain",
        Metadata={"owner": "alice", "Mixed-Case": "yes"}, CacheControl="max-age=60",
        ContentDisposition='attachment; filename="m.txt"',
    )
    h = s3.head_object(Bucket=bucket, Key="m.txt")
    assert h["ContentType"] == "text/plain"
    assert h["Metadata"] == {"owner": "alice", "mixed-case": "yes"}
    assert h["CacheControl"] == "max-age=60"
    assert h["ETag"] == '"%s"' % hashlib.md5(b"meta").hexdigest()
    s3.copy_object(Bucket=bucket, Key="copy.txt", CopySource={"Bucket": bucket, "Key": "m.txt"})
    c = s3.head_object(Bucket=bucket, Key="copy.txt")
    assert c["Metadata"] == h["Metadata"] and c["ETag"] == h["ETag"]
    s3.copy_object(
        Bucket=bucket, Key="copy2.txt", CopySource={"Bucket": bucket, "Key": "m.txt"},
        MetadataDirective="REPLACE", Metadata={"new": "1"}, ContentType="application/x-new",
    )
    c2 = s3.head_object(Bucket=bucket, Key="copy2.txt")
    assert c2["Metadata"] == {"new": "1"} and c2["ContentType"] == "application/x-new"
    assert s3.get_object(Bucket=bucket, Key="copy2.txt")["Body"].read() == b"meta"


def test_delete_objects_per_key_results(s3, bucket):
    for k in ["d1", "d2"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "d1"}, {"Key": "d2"}, {"Key": "missing"}]})
    assert sorted(d["Key"] for d in r["Deleted"]) == ["d1", "d2", "missing"]
    assert not r.get("Errors")
    q = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "d1"}], "Quiet": True})
    assert not q.get("Deleted")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    # Deleting a missing key: 204, as S3.
    assert s3.delete_object(Bucket=bucket, Key="nope")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_paginator_with_delimiter(s3, bucket):
    keys = [f"{d}/{i}" for d in ("a", "b", "c") for i in range(5)] + ["root1", "root2"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"")
    prefixes, contents = [], []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 2}):
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        contents += [o["Key"] for o in page.get("Contents", [])]
    assert prefixes == ["a/", "b/", "c/"]
    assert contents == ["root1", "root2"]
    # V1 with markers.
    v1 = []
    for page in s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 4}):
        v1 += [o["Key"] for o in page.get("Contents", [])]
    assert v1 == sorted(keys)


def test_wrong_secret_is_403(cluster, bucket):
    bad = cluster.client(secret="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.list_objects_v2(Bucket=bucket)
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


KEYS = [
    "a", "a/b", "..", "../x", "//", "x//y", "trailing/", "with space", "plus+sign", "per%cent",
    "eq=ual&amp", "ünïcødé/日本語", "emoji-😀", "tab\tkey", "k" * 1024,
]


def test_hostile_and_odd_keys_round_trip(s3, bucket):
    for k in KEYS:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    for k in KEYS:
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == k.encode(), k
    listed = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in p.get("Contents", [])]
    assert listed == sorted(KEYS, key=lambda k: k.encode())
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "ünïcødé/日本語"})
    import urllib.request
    assert urllib.request.urlopen(url).read() == "ünïcødé/日本語".encode()

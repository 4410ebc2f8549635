"""The finer edges of S3 (SPEC §3): part copies, headers that round-trip, listings under load,
s3transfer-style downloads, hostile requests."""

import base64
import datetime
import hashlib
import os
import threading
import time

import boto3.s3.transfer
import botocore.exceptions
import pytest

from test_hostile import code_of, signed


def test_upload_part_copy_with_ranges(s3, bucket):
    src = os.urandom(12 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="src", Body=src)
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    parts = []
    for n, (a, b) in enumerate([(0, 5 * 1024 * 1024 - 1), (5 * 1024 * 1024, len(src) - 1)], start=1):
        r = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up, PartNumber=n,
                                CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=f"bytes={a}-{b}")
        parts.append({"PartNumber": n, "ETag": r["CopyPartResult"]["ETag"]})
        assert r["CopyPartResult"]["ETag"] == '"%s"' % hashlib.md5(src[a:b + 1]).hexdigest()
    # A whole-object part copy, then the copy-source conditions.
    r = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up, PartNumber=3, CopySource={"Bucket": bucket, "Key": "src"})
    assert r["CopyPartResult"]["ETag"] == '"%s"' % hashlib.md5(src).hexdigest()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up, PartNumber=4, CopySource={"Bucket": bucket, "Key": "src"},
                            CopySourceIfMatch='"0000"')
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=up, PartNumber=4, CopySource={"Bucket": bucket, "Key": "src"},
                            CopySourceRange="bytes=5-")
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    s3.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=up, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == src


def test_headers_round_trip_and_response_overrides(s3, bucket):
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    s3.put_object(Bucket=bucket, Key="h", Body=b"hdr", ContentType="text/csv", ContentEncoding="identity",
                  ContentDisposition="inline", ContentLanguage="fr", CacheControl="no-cache", Expires=expires,
                  ACL="private")
    h = s3.head_object(Bucket=bucket, Key="h")
    assert (h["ContentType"], h["ContentEncoding"], h["ContentDisposition"], h["ContentLanguage"], h["CacheControl"]) == (
        "text/csv", "identity", "inline", "fr", "no-cache")
    assert h["Expires"] == expires
    g = s3.get_object(Bucket=bucket, Key="h", ResponseContentType="application/x-custom", ResponseCacheControl="max-age=5",
                      ResponseContentDisposition="attachment; filename=h.csv")
    assert g["ContentType"] == "application/x-custom" and g["CacheControl"] == "max-age=5"
    assert g["ContentDisposition"] == "attachment; filename=h.csv"


def test_metadata_limit(s3, bucket):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="m", Body=b"", Metadata={"big": "x" * 3000})
    assert e.value.response["Error"]["Code"] == "MetadataTooLarge"


def test_checksum_mode_full_object_and_composite(cluster, bucket):
    s3 = cluster.client(request_checksum_calculation="when_supported")
    s3.put_object(Bucket=bucket, Key="c", Body=b"checksummed", ChecksumAlgorithm="SHA256")
    h = s3.head_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")
    assert h["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(b"checksummed").digest()).decode()
    assert h["ChecksumType"] == "FULL_OBJECT"
    cfg = boto3.s3.transfer.TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    import io

    s3.upload_fileobj(io.BytesIO(os.urandom(11 << 20)), bucket, "mp", Config=cfg)
    h = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert h.get("ChecksumType") == "COMPOSITE" and h["ChecksumCRC32"].endswith("-3")


def test_s3transfer_download_of_100mib_multipart(cluster, bucket, tmp_path):
    s3 = cluster.client()
    src = tmp_path / "src"
    with open(src, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    cfg = boto3.s3.transfer.TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=8)
    s3.upload_file(str(src), bucket, "big", Config=cfg)
    s3.download_file(bucket, "big", str(tmp_path / "dst"), Config=cfg)  # HEAD, then ranged GETs with If-Match
    assert hashlib.md5((tmp_path / "dst").read_bytes()).digest() == hashlib.md5(src.read_bytes()).digest()


def test_paginated_walks_under_a_concurrent_writer(cluster, bucket):
    from concurrent.futures import ThreadPoolExecutor

    s3 = cluster.client(max_pool_connections=32)
    keys = [f"{d}-{i % 7}/{i:05d}" if i % 3 else f"flat-{i:05d}" for i, d in ((i, "dir" if i % 2 else "sub") for i in range(10_000))]
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b""), keys))
    stop = threading.Event()

    def writer():
        w = cluster.client()
        i = 0
        while not stop.is_set():
            w.put_object(Bucket=bucket, Key=f"zzz-new/{i:05d}", Body=b"")
            w.put_object(Bucket=bucket, Key=f"dir-3/{i:05d}x", Body=b"")
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for delimiter in ["/", "-", None]:
            for max_keys in [1000, 7] + ([1] if delimiter == "/" else []):
                seen, prefixes, token, pages = [], [], None, 0
                while True:
                    kw = {"MaxKeys": max_keys}
                    if delimiter:
                        kw["Delimiter"] = delimiter
                    if token:
                        kw["ContinuationToken"] = token
                    p = s3.list_objects_v2(Bucket=bucket, **kw)
                    pages += 1
                    assert p["KeyCount"] <= max_keys
                    seen += [o["Key"] for o in p.get("Contents", [])]
                    prefixes += [c["Prefix"] for c in p.get("CommonPrefixes", [])]
                    if not p["IsTruncated"]:
                        break
                    token = p["NextContinuationToken"]
                    assert pages < 20_000, "the walk loops"
                names = seen + prefixes
                assert len(names) == len(set(names)), (delimiter, max_keys, "an item came back twice")
                assert seen == sorted(seen) and prefixes == sorted(prefixes)
                original = {k for k in keys if not delimiter or delimiter not in k}
                assert original <= set(seen), (delimiter, max_keys)
                if delimiter == "/":
                    assert {"dir-0/", "sub-1/"} <= set(prefixes)
    finally:
        stop.set()
        t.join()


def test_concurrent_writers_last_writer_wins(cluster, bucket):
    bodies = [bytes([i]) * (256 * 1024 + i) for i in range(8)]

    def put(b):
        cluster.client().put_object(Bucket=bucket, Key="race", Body=b)

    threads = [threading.Thread(target=put, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = cluster.client().get_object(Bucket=bucket, Key="race")["Body"].read()
    assert got in bodies, "never a mixed object"


def test_hostile_requests(cluster, s3, bucket, tmp_path):
    # An oversized XML body, sent the way SDKs send large bodies (Expect: 100-continue): the
    # answer comes before the body.
    import subprocess

    from botocore.auth import S3SigV4Auth as _Auth
    from botocore.awsrequest import AWSRequest as _Req
    from botocore.credentials import Credentials as _Creds

    body = b"<Delete>" + b"<Object><Key>k</Key></Object>" * 800_000 + b"</Delete>"
    big = tmp_path / "big.xml"
    big.write_bytes(body)
    r = _Req(method="POST", url=f"{cluster.endpoint}/{bucket}?delete", data=body,
             headers={"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()})
    _Auth(_Creds(cluster.env["AWS_ACCESS_KEY_ID"], cluster.env["AWS_SECRET_ACCESS_KEY"]), "s3", "us-east-1").add_auth(r)
    args = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", "--data-binary", f"@{big}", "-H", "Expect: 100-continue"]
    for k, v in r.prepare().headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(args + [f"{cluster.endpoint}/{bucket}?delete"], capture_output=True, text=True).stdout
    assert out.endswith("400") and "MaxMessageLengthExceeded" in out, out[-300:]
    # Oversized headers.
    status, _ = signed(cluster, "GET", f"/{bucket}", b"", {"x-amz-meta-huge": "x" * 400_000})
    assert 400 <= status < 500, status
    # A clock 20 minutes off.
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    import urllib.error
    import urllib.request

    req = AWSRequest(method="GET", url=f"{cluster.endpoint}/{bucket}", data=b"")
    auth = S3SigV4Auth(Credentials(cluster.env["AWS_ACCESS_KEY_ID"], cluster.env["AWS_SECRET_ACCESS_KEY"]), "s3", "us-east-1")
    real = datetime.datetime.now(datetime.timezone.utc)
    import botocore.auth as ba

    orig = ba.datetime.datetime
    class Skewed(orig):
        @classmethod
        def utcnow(cls):
            return (real - datetime.timedelta(minutes=20)).replace(tzinfo=None)

        @classmethod
        def now(cls, tz=None):
            return real - datetime.timedelta(minutes=20)

    ba.datetime.datetime = Skewed
    try:
        auth.add_auth(req)
    finally:
        ba.datetime.datetime = orig
    p = req.prepare()
    try:
        urllib.request.urlopen(urllib.request.Request(p.url, headers=dict(p.headers)))
        raise AssertionError("a skewed clock must be refused")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code
    # Missing signature, unknown access key.
    try:
        urllib.request.urlopen(f"{cluster.endpoint}/{bucket}?list-type=2")
        raise AssertionError("anonymous")
    except urllib.error.HTTPError as e:
        assert e.code == 403
    bad = boto3.client("s3", endpoint_url=cluster.endpoint, aws_access_key_id="NOPE", aws_secret_access_key="x", region_name="us-east-1")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.list_objects_v2(Bucket=bucket)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # Keys that try to escape, and NUL.
    for k in ["../../../../etc/passwd", "/abs/key", "a/../../b"]:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == k.encode()
    status, resp = signed(cluster, "PUT", f"/{bucket}/nul%00key", b"x")
    assert status == 400
    # Data unchanged afterwards.
    assert s3.get_object(Bucket=bucket, Key="../../../../etc/passwd")["Body"].read() == b"../../../../etc/passwd"
    assert code_of(b"<Code>x</Code>") == "x"


def test_listing_options(s3, bucket):
    for k in ["a b/1", "a b/2", "c+d", "é"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"")
    r = s3.list_objects_v2(Bucket=bucket, FetchOwner=True, StartAfter="a b/1")
    assert [o["Key"] for o in r["Contents"]] == ["a b/2", "c+d", "é"]
    assert all("Owner" in o for o in r["Contents"])
    assert "Owner" not in s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    # encoding-type=url asked for explicitly: botocore leaves the names encoded, as S3 sends them.
    r = s3.list_objects_v2(Bucket=bucket, EncodingType="url", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a%20b/"]  # space is %20, never + (issue 13)
    assert [o["Key"] for o in r["Contents"]] == ["c%2Bd", "%C3%A9"]
    # Left to botocore (it adds encoding-type=url and decodes): the names as stored.
    r = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a b/"]
    v1 = s3.list_objects(Bucket=bucket, MaxKeys=2, Delimiter="/")
    assert v1["IsTruncated"] and v1["NextMarker"] == "c+d"
    v1b = s3.list_objects(Bucket=bucket, Marker=v1["NextMarker"], Delimiter="/")
    assert [o["Key"] for o in v1b["Contents"]] == ["é"]

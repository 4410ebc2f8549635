"""Everyday S3 edges that tools hit (issue 13 §8) and the `null` version of unversioned buckets
(ListObjectVersions, versionId=null), checked with boto3, raw HTTP and the aws CLI."""

import hashlib
import http.client
import json
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

import botocore.exceptions
import pytest

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


def raw(url, method="GET", body_chunks=None, headers=None):
    """One request to a (presigned) URL: (status, body). `body_chunks` are sent with
    Transfer-Encoding: chunked and no Content-Length."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    path = u.path + ("?" + u.query if u.query else "")
    if body_chunks is None:
        conn.request(method, path, headers=headers or {})
    else:
        conn.request(method, path, body=iter(body_chunks), headers=headers or {},
                     encode_chunked=True)
    r = conn.getresponse()
    out = (r.status, r.read())
    conn.close()
    return out


def test_complete_multipart_repeated_after_success_succeeds_again(s3, bucket):
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="big")
    uid = mpu["UploadId"]
    p1 = s3.upload_part(Bucket=bucket, Key="big", UploadId=uid, PartNumber=1, Body=b"a" * (5 << 20))
    p2 = s3.upload_part(Bucket=bucket, Key="big", UploadId=uid, PartNumber=2, Body=b"tail")
    parts = {"Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]}
    first = s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=uid, MultipartUpload=parts)
    again = s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=uid, MultipartUpload=parts)
    assert again["ETag"] == first["ETag"] and first["ETag"].endswith('-2"')
    assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] == (5 << 20) + 4
    # An upload id that never existed is still NoSuchUpload.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId="nope", MultipartUpload=parts)
    assert code_of(e) == "NoSuchUpload"
    # Once the key holds another object, the old upload is gone for good.
    s3.put_object(Bucket=bucket, Key="big", Body=b"replaced")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=uid, MultipartUpload=parts)
    assert code_of(e) == "NoSuchUpload"


def test_part_uploaded_twice_concurrently_the_last_to_finish_is_the_part(s3, bucket):
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    url = s3.generate_presigned_url("upload_part", Params={
        "Bucket": bucket, "Key": "k", "UploadId": uid, "PartNumber": 1})
    slow = b"S" * (1 << 20)
    fast = b"F" * (1 << 20)
    started = threading.Event()
    go_on = threading.Event()

    def slow_body():
        yield slow[: 1 << 19]
        started.set()
        go_on.wait(30)
        yield slow[1 << 19:]

    result = {}

    def upload_slow():
        result["slow"] = raw(url, "PUT", slow_body())

    t = threading.Thread(target=upload_slow)
    t.start()
    assert started.wait(30)
    # The second upload of part 1 starts after and finishes first...
    status, _ = raw(url, "PUT", [fast])
    assert status == 200
    # ...then the first one finishes: it is the part.
    go_on.set()
    t.join(30)
    assert result["slow"][0] == 200
    parts = s3.list_parts(Bucket=bucket, Key="k", UploadId=uid)["Parts"]
    assert len(parts) == 1
    assert parts[0]["ETag"].strip('"') == hashlib.md5(slow).hexdigest()
    s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": parts[0]["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == slow


def test_put_with_chunked_transfer_encoding_and_no_content_length(s3, bucket):
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "chunked"})
    chunks = [bytes([i]) * 70_000 for i in range(1, 40)]
    status, body = raw(url, "PUT", chunks)
    assert status == 200, body
    got = s3.get_object(Bucket=bucket, Key="chunked")
    data = b"".join(chunks)
    assert got["ContentLength"] == len(data)
    assert got["Body"].read() == data
    assert got["ETag"].strip('"') == hashlib.md5(data).hexdigest()


def test_encoding_type_url_percent_encodes_as_aws(s3, bucket):
    keys = ["dir one/a b+c.txt", "dir one/ctl\x01x", "dir one/é&=?"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    url = s3.generate_presigned_url("list_objects_v2", Params={
        "Bucket": bucket, "EncodingType": "url", "Prefix": "dir one/", "Delimiter": "+"})
    status, body = raw(url)
    assert status == 200, body
    doc = ET.fromstring(body)
    assert doc.find(f"{NS}Prefix").text == "dir%20one/"
    assert doc.find(f"{NS}Delimiter").text == "%2B"
    assert doc.find(f"{NS}EncodingType").text == "url"
    listed = [c.find(f"{NS}Key").text for c in doc.findall(f"{NS}Contents")]
    prefixes = [p.find(f"{NS}Prefix").text for p in doc.findall(f"{NS}CommonPrefixes")]
    assert prefixes == ["dir%20one/a%20b%2B"]
    assert listed == ["dir%20one/ctl%01x", "dir%20one/%C3%A9%26%3D%3F"]
    # boto3 decodes what it asked to be encoded: the keys come back whole.
    got = s3.list_objects_v2(Bucket=bucket, Prefix="dir one/")
    assert sorted(o["Key"] for o in got["Contents"]) == sorted(keys)
    # ListObjects (v1) and ListObjectVersions encode the same way (botocore asks for url
    # encoding itself and decodes; asked for explicitly, the keys stay encoded).
    v1 = s3.list_objects(Bucket=bucket, Prefix="dir one/")
    assert sorted(o["Key"] for o in v1["Contents"]) == sorted(keys)
    v1 = s3.list_objects(Bucket=bucket, Prefix="dir one/", EncodingType="url")
    assert "dir%20one/ctl%01x" in [o["Key"] for o in v1["Contents"]]
    versions = s3.list_object_versions(Bucket=bucket, Prefix="dir one/")
    assert sorted(v["Key"] for v in versions["Versions"]) == sorted(keys)


def test_empty_continuation_token_and_delimiter_are_absent(s3, bucket):
    for k in ["a/1", "a/2", "b"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    url = s3.generate_presigned_url("list_objects_v2", Params={"Bucket": bucket})
    status, body = raw(url + "&continuation-token=&delimiter=")
    assert status == 200, body
    doc = ET.fromstring(body)
    assert [c.find(f"{NS}Key").text for c in doc.findall(f"{NS}Contents")] == ["a/1", "a/2", "b"]
    assert doc.find(f"{NS}Delimiter") is None
    assert doc.find(f"{NS}ContinuationToken") is None
    v1 = s3.generate_presigned_url("list_objects", Params={"Bucket": bucket})
    status, body = raw(v1 + "&delimiter=&marker=")
    assert status == 200, body
    doc = ET.fromstring(body)
    assert doc.find(f"{NS}Delimiter") is None
    assert len(doc.findall(f"{NS}Contents")) == 3


def test_unversioned_bucket_lists_null_versions(cluster, s3, bucket):
    keys = [f"p/{i}" for i in range(5)] + ["q/x", "top"]
    etags = {k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode())["ETag"] for k in keys}
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    # Paginated: every object once, as its null version, the latest.
    seen = []
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, PaginationConfig={"PageSize": 2})
    for page in pages:
        assert "DeleteMarkers" not in page
        for v in page.get("Versions", []):
            assert v["VersionId"] == "null" and v["IsLatest"] is True
            assert v["ETag"] == etags[v["Key"]] and v["Size"] == len(v["Key"])
            seen.append(v["Key"])
    assert seen == sorted(keys)
    # Delimiter and prefix.
    r = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["p/", "q/"]
    assert [v["Key"] for v in r["Versions"]] == ["top"]
    # Resuming after (key, null) is resuming after the key.
    r = s3.list_object_versions(Bucket=bucket, KeyMarker="p/2", VersionIdMarker="null", MaxKeys=1)
    assert [v["Key"] for v in r["Versions"]] == ["p/3"]
    assert r["IsTruncated"] and r["NextKeyMarker"] == "p/3" and r["NextVersionIdMarker"] == "null"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.list_object_versions(Bucket=bucket, VersionIdMarker="null")
    assert code_of(e) == "InvalidArgument"
    # versionId=null names the object; any other id is refused, never ignored.
    assert s3.get_object(Bucket=bucket, Key="top", VersionId="null")["Body"].read() == b"top"
    assert s3.head_object(Bucket=bucket, Key="top", VersionId="null")["ContentLength"] == 3
    for call in (lambda: s3.get_object(Bucket=bucket, Key="top", VersionId="3HL4kqtJlcpXroDTDmJ"),
                 lambda: s3.head_object(Bucket=bucket, Key="top", VersionId="3HL4kqtJlcpXroDTDmJ"),
                 lambda: s3.delete_object(Bucket=bucket, Key="top", VersionId="3HL4kqtJlcpXroDTDmJ"),
                 lambda: s3.copy_object(Bucket=bucket, Key="c", CopySource={
                     "Bucket": bucket, "Key": "top", "VersionId": "3HL4kqtJlcpXroDTDmJ"})):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert s3.get_object(Bucket=bucket, Key="top")["Body"].read() == b"top"
    s3.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "top", "VersionId": "null"})
    assert s3.get_object(Bucket=bucket, Key="c")["Body"].read() == b"top"
    s3.delete_object(Bucket=bucket, Key="c", VersionId="null")
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "q/x", "VersionId": "null"}, {"Key": "p/0", "VersionId": "bogus"}]})
    assert [d["Key"] for d in r["Deleted"]] == ["q/x"]
    assert [(x["Key"], x["Code"]) for x in r["Errors"]] == [("p/0", "InvalidArgument")]
    # The aws CLI's view.
    out = json.loads(cluster.aws("s3api", "list-object-versions", "--bucket", bucket, "--prefix", "p/").stdout)
    assert [v["Key"] for v in out["Versions"]] == [f"p/{i}" for i in range(5)]
    assert {v["VersionId"] for v in out["Versions"]} == {"null"}


def test_signature_v2_bucket_operations(cluster, s3):
    """botocore signs a path-style bucket request's resource as `/bucket/` under Signature V2
    (header-signed, and its presigned URLs are V2 by default): S3 accepts it, so must aisle."""
    v2 = cluster.client(signature_version="s3")
    v2.create_bucket(Bucket="sigv2-bucket")
    v2.put_object(Bucket="sigv2-bucket", Key="k", Body=b"v2")
    assert [o["Key"] for o in v2.list_objects_v2(Bucket="sigv2-bucket")["Contents"]] == ["k"]
    assert [o["Key"] for o in v2.list_objects(Bucket="sigv2-bucket")["Contents"]] == ["k"]
    v2.head_bucket(Bucket="sigv2-bucket")
    url = s3.generate_presigned_url("list_objects_v2", Params={"Bucket": "sigv2-bucket"})
    assert "AWSAccessKeyId=" in url
    status, body = raw(url)
    assert status == 200 and b"<Key>k</Key>" in body
    v2.delete_object(Bucket="sigv2-bucket", Key="k")
    v2.delete_bucket(Bucket="sigv2-bucket")
    # A wrong secret is still refused.
    bad = cluster.client(secret="wrong", signature_version="s3")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.list_objects_v2(Bucket="anything")
    assert code_of(e) == "SignatureDoesNotMatch"


def raw_full(url, headers=None):
    """(status, headers, body) of one GET."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", u.path + ("?" + u.query if u.query else ""), headers=headers or {})
    r = conn.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    conn.close()
    return out


def v4_presigner(cluster):
    import boto3
    import botocore.config
    return boto3.client(
        "s3", endpoint_url=cluster.env["AWS_ENDPOINT_URL"],
        aws_access_key_id=cluster.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=cluster.env["AWS_SECRET_ACCESS_KEY"],
        region_name=cluster.env["AWS_DEFAULT_REGION"],
        config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def test_not_modified_carries_etag_and_last_modified(s3, bucket):
    s3.put_object(Bucket=bucket, Key="nm", Body=b"cached by the browser")
    h = s3.head_object(Bucket=bucket, Key="nm")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "nm"})
    status, headers, body = raw_full(url, {"If-None-Match": h["ETag"]})
    assert status == 304 and body == b""
    assert headers["etag"] == h["ETag"]
    assert headers["last-modified"] == h["ResponseMetadata"]["HTTPHeaders"]["last-modified"]


def test_every_error_body_names_the_request_id_of_its_header(cluster, s3, bucket):
    urls = [
        s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "missing"}),
        s3.generate_presigned_url("get_object", Params={"Bucket": "no-such-bucket-x", "Key": "k"}),
        cluster.env["AWS_ENDPOINT_URL"] + f"/{bucket}?list-type=2",  # anonymous: AccessDenied
    ]
    bad = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    urls.append(bad.replace("Signature=", "Signature=AAAA"))  # s3s's own error
    for url in urls:
        status, headers, body = raw_full(url)
        assert status >= 400
        rid = ET.fromstring(body).find("RequestId")
        assert rid is not None and rid.text == headers["x-amz-request-id"], (url, body)
        assert int(headers["content-length"]) == len(body)


def test_presigned_expiry_beyond_a_week_or_negative_is_refused(cluster, s3, bucket):
    s3.put_object(Bucket=bucket, Key="exp", Body=b"secret")
    p = v4_presigner(cluster)
    ok = p.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "exp"}, ExpiresIn=604800)
    assert raw_full(ok)[0] == 200
    long = p.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "exp"}, ExpiresIn=604801)
    neg = ok.replace("X-Amz-Expires=604800", "X-Amz-Expires=-5")
    for url in (long, neg):
        status, _, body = raw_full(url)
        assert status == 403 and b"secret" not in body, body
        assert ET.fromstring(body).find("Code").text == "AuthorizationQueryParametersError"


def test_content_encoding_comes_back_as_sent(s3, bucket):
    s3.put_object(Bucket=bucket, Key="enc", Body=b"x", ContentEncoding="gzip, br")
    assert s3.head_object(Bucket=bucket, Key="enc")["ContentEncoding"] == "gzip, br"


def test_get_object_attributes(s3, bucket):
    s3.put_object(Bucket=bucket, Key="one", Body=b"attrs", ChecksumAlgorithm="SHA256")
    a = s3.get_object_attributes(Bucket=bucket, Key="one",
                                 ObjectAttributes=["ETag", "ObjectSize", "StorageClass", "Checksum", "ObjectParts"])
    h = s3.head_object(Bucket=bucket, Key="one", ChecksumMode="ENABLED")
    assert a["ETag"].strip('"') == h["ETag"].strip('"')
    assert (a["ObjectSize"], a["StorageClass"]) == (5, "STANDARD")
    assert a["Checksum"]["ChecksumSHA256"] == h["ChecksumSHA256"]
    assert "ObjectParts" not in a, "a single-part object has no parts to list"
    assert a["LastModified"] == h["LastModified"]
    only = s3.get_object_attributes(Bucket=bucket, Key="one", ObjectAttributes=["ObjectSize"])
    assert "ETag" not in only and only["ObjectSize"] == 5
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    parts = []
    for n, size in [(1, 5 << 20), (2, 5 << 20), (3, 7)]:
        e = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=n, Body=b"p" * size)["ETag"]
        parts.append({"PartNumber": n, "ETag": e})
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={"Parts": parts})
    a = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=2)
    p = a["ObjectParts"]
    assert p["TotalPartsCount"] == 3 and p["IsTruncated"] and p["NextPartNumberMarker"] == 2
    assert [(x["PartNumber"], x["Size"]) for x in p["Parts"]] == [(1, 5 << 20), (2, 5 << 20)]
    a = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"],
                                 PartNumberMarker=2)
    assert [(x["PartNumber"], x["Size"]) for x in a["ObjectParts"]["Parts"]] == [(3, 7)]
    assert not a["ObjectParts"]["IsTruncated"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object_attributes(Bucket=bucket, Key="missing", ObjectAttributes=["ETag"])
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_put_object_acl_takes_what_the_bucket_gives_and_refuses_the_rest(s3, bucket):
    s3.put_object(Bucket=bucket, Key="acl", Body=b"x")
    assert s3.put_object_acl(Bucket=bucket, Key="acl", ACL="private")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.put_object_acl(Bucket=bucket, Key="acl", ACL="bucket-owner-full-control")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object_acl(Bucket=bucket, Key="acl", ACL="public-read")
    assert code_of(e) == "NotImplemented"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object_acl(Bucket=bucket, Key="acl", GrantRead='uri="http://acs.amazonaws.com/groups/global/AllUsers"')
    assert code_of(e) == "NotImplemented"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object_acl(Bucket=bucket, Key="missing", ACL="private")
    assert code_of(e) == "NoSuchKey"


def test_an_error_before_a_withheld_body_does_not_eat_the_next_request(s3, bucket):
    """`Expect: 100-continue` (botocore sends it on every PUT): refused on its headers, the body
    is never sent. The answer must close the connection — kept open, the server would take the
    next request's first bytes for the missing body (that request then fails, typically as
    SignatureDoesNotMatch: its method lost a letter)."""
    import socket

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    s3.put_object(Bucket=bucket, Key="k", Body=b"fine")
    get = urllib.parse.urlsplit(s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}))
    host = f"{get.hostname}:{get.port}"
    # A PUT signed with its (too long) tag header, as botocore signs one.
    req = AWSRequest(method="PUT", url=f"http://{host}/{bucket}/k2", data=b"body",
                     headers={"x-amz-tagging": "k=" + "v" * 257, "Expect": "100-continue"})
    creds = s3._request_signer._credentials
    S3SigV4Auth(creds, "s3", s3.meta.region_name).add_auth(req)
    put_head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    for _ in range(5):
        sock = socket.create_connection((get.hostname, get.port), timeout=10)
        sock.sendall(f"PUT /{bucket}/k2 HTTP/1.1\r\nHost: {host}\r\n{put_head}Content-Length: 4\r\n\r\n".encode())
        first = b""
        while b"</Error>" not in first:
            chunk = sock.recv(65536)
            assert chunk, first
            first += chunk
        assert b" 400 " in first.split(b"\r\n")[0] and b"InvalidTag" in first
        assert b"connection: close" in first.lower()
        # Whatever the client does next on this socket, it is never misread.
        try:
            sock.sendall(f"GET {get.path}?{get.query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            second = sock.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            second = b""
        assert second == b"" or second.startswith(b"HTTP/1.1 200"), second[:300]
        sock.close()

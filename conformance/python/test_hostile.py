"""Bad input gets a clear 4xx and changes nothing."""

import base64
import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request

import botocore.exceptions
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import Cluster


def signed(cluster, method, path, body=b"", headers=None, query=""):
    url = cluster.endpoint + path + (("?" + query) if query else "")
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    creds = Credentials(cluster.env["AWS_ACCESS_KEY_ID"], cluster.env["AWS_SECRET_ACCESS_KEY"])
    S3SigV4Auth(creds, "s3", cluster.env["AWS_DEFAULT_REGION"]).add_auth(req)
    p = req.prepare()
    r = urllib.request.Request(p.url, data=body if body else None, headers=dict(p.headers), method=method)
    try:
        with urllib.request.urlopen(r) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def code_of(body):
    import re
    m = re.search(rb"<Code>([^<]+)</Code>", body)
    return m.group(1).decode() if m else None


def test_malformed_xml_bodies(cluster, s3, bucket):
    s3.put_object(Bucket=bucket, Key="keep", Body=b"keep")
    for body in [b"<Delete><Object><Key>keep</Key>", b"not xml at all", b"<Delete></Oops>"]:
        status, resp = signed(cluster, "POST", f"/{bucket}", body, {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()}, "delete")
        assert status == 400, (status, resp)
        assert code_of(resp) == "MalformedXML"
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    status, resp = signed(cluster, "POST", f"/{bucket}/mp", b"<CompleteMultipartUpload><Part>", query=f"uploadId={up['UploadId']}")
    assert status == 400 and code_of(resp) == "MalformedXML"
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"keep"


def test_wrong_and_invalid_content_md5(cluster, s3, bucket):
    s3.put_object(Bucket=bucket, Key="obj", Body=b"original")
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    status, resp = signed(cluster, "PUT", f"/{bucket}/obj", b"replacement", {"Content-MD5": wrong})
    assert status == 400 and code_of(resp) == "BadDigest"
    status, resp = signed(cluster, "PUT", f"/{bucket}/obj", b"replacement", {"Content-MD5": "!!notbase64"})
    assert status == 400 and code_of(resp) == "InvalidDigest"
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"original"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="new", Body=b"abc", ChecksumCRC32="AAAAAA==")
    assert e.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key="new")


@pytest.mark.parametrize("name", ["UPPER", "ab", "-abc", "abc-", "a..b", "under_score", "192.168.5.4", "x" * 64])
def test_invalid_bucket_names(cluster, name):
    status, resp = signed(cluster, "PUT", f"/{urllib.parse.quote(name)}")
    assert status == 400 and code_of(resp) == "InvalidBucketName", (name, status, resp)


def test_recreating_your_bucket_outside_us_east_1_is_already_owned(fresh_dir):
    fresh_dir.mkdir(parents=True, exist_ok=True)
    (fresh_dir / "credentials.json").write_text(json.dumps({
        "access_key": "AISLEREGIONTEST", "secret_key": "s" * 40, "cluster_secret": "c" * 64,
        "region": "eu-west-1", "metrics_token": "m" * 40}))
    c = Cluster(fresh_dir, targets=1, extra=["--mountpaths", "1"]).start()
    try:
        s3 = c.client()
        s3.create_bucket(Bucket="mine", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.create_bucket(Bucket="mine", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        assert e.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    finally:
        c.stop()


def test_bucket_exists_and_not_empty(s3, bucket):
    # us-east-1 (the cluster's region): re-creating your own bucket is 200 and keeps it as it is.
    s3.put_object(Bucket=bucket, Key="kept", Body=b"k")
    assert s3.create_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"k"
    s3.delete_object(Bucket=bucket, Key="kept")
    s3.put_object(Bucket=bucket, Key="x", Body=b"")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.delete_bucket(Bucket=bucket)
    assert e.value.response["Error"]["Code"] == "BucketNotEmpty"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_bucket(Bucket="no-such-bucket-here")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_forged_continuation_token(s3, bucket):
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"")
    real = s3.list_objects_v2(Bucket=bucket, MaxKeys=2)["NextContinuationToken"]
    for forged in ["garbage", real[:-2] + "AA", base64.urlsafe_b64encode(b"k0").decode() + "." + real.split(".")[1]]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.list_objects_v2(Bucket=bucket, ContinuationToken=forged)
        assert e.value.response["Error"]["Code"] == "InvalidArgument"


def test_key_length_limit(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k" * 1024, Body=b"ok")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"no")
    assert e.value.response["Error"]["Code"] == "KeyTooLongError"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["k" * 1024]


def test_out_of_scope_is_501_and_anonymous_is_403(cluster, s3, bucket):
    # Object lock is out of scope (docs/s3.md): 501, never a silent wrong answer.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object_lock_configuration(Bucket=bucket)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    try:
        urllib.request.urlopen(f"{cluster.endpoint}/{bucket}")
        raise AssertionError("anonymous listing must fail")
    except urllib.error.HTTPError as err:
        assert err.code == 403


def test_part_rules(s3, bucket):
    up = s3.create_multipart_upload(Bucket=bucket, Key="rules")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="rules", UploadId=up, PartNumber=1, Body=b"small")["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="rules", UploadId=up, PartNumber=2, Body=b"small")["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="rules", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert e.value.response["Error"]["Code"] == "EntityTooSmall"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="rules", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 3, "ETag": e1}]})
    assert e.value.response["Error"]["Code"] == "InvalidPart"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="rules", UploadId=up, PartNumber=10001, Body=b"x")
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    s3.abort_multipart_upload(Bucket=bucket, Key="rules", UploadId=up)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="rules", UploadId=up)
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"

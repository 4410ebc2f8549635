"""Object tags (issue 13 §2): x-amz-tagging on PUT, copy and multipart, the tag count on GET,
Put/Get/DeleteObjectTagging in place (bytes, ETag and Last-Modified untouched) on every copy,
S3's limits and codes. Bucket tags are in test_cors.py."""

import subprocess
import time

import botocore.exceptions
import pytest

from conftest import Cluster, aisle


def code_of(e):
    return e.value.response["Error"]["Code"]


def tags(s3, bucket, key):
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def test_tags_on_writes_and_the_tag_count(s3, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"aaa", Tagging="team=vision&stage=raw%20data")
    assert tags(s3, bucket, "a") == {"team": "vision", "stage": "raw data"}
    assert s3.get_object(Bucket=bucket, Key="a")["TagCount"] == 2
    s3.put_object(Bucket=bucket, Key="plain", Body=b"p")
    assert "TagCount" not in s3.get_object(Bucket=bucket, Key="plain")
    assert s3.get_object_tagging(Bucket=bucket, Key="plain")["TagSet"] == []
    # Copy: tags come along by default, are replaced with REPLACE, whatever the metadata directive.
    s3.copy_object(Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": "a"})
    assert tags(s3, bucket, "copied") == {"team": "vision", "stage": "raw data"}
    s3.copy_object(Bucket=bucket, Key="retagged", CopySource={"Bucket": bucket, "Key": "a"},
                   TaggingDirective="REPLACE", Tagging="only=this", MetadataDirective="REPLACE")
    assert tags(s3, bucket, "retagged") == {"only": "this"}
    # Multipart: the tags given at creation.
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp", Tagging="kind=shard")["UploadId"]
    p = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=b"m" * 100)
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p["ETag"]}]})
    assert tags(s3, bucket, "mp") == {"kind": "shard"}
    # Limits: 10 tags, keys of 128, values of 256, no key twice.
    for bad in ("&".join(f"k{i}=v" for i in range(11)), "k" * 129 + "=v", "k=" + "v" * 257, "a=1&a=2"):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_object(Bucket=bucket, Key="bad", Body=b"x", Tagging=bad)
        assert code_of(e) == "InvalidTag"
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key="bad")


def test_object_tagging_in_place(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 1000, Tagging="a=1")
    before = s3.head_object(Bucket=bucket, Key="k")
    time.sleep(1.1)
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": [
        {"Key": "b", "Value": "2"}, {"Key": "c", "Value": ""}]})
    assert tags(s3, bucket, "k") == {"b": "2", "c": ""}
    after = s3.head_object(Bucket=bucket, Key="k")
    assert after["ETag"] == before["ETag"] and after["LastModified"] == before["LastModified"]
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x" * 1000
    s3.delete_object_tagging(Bucket=bucket, Key="k")
    assert tags(s3, bucket, "k") == {}
    # versionId=null is the object; other ids, missing keys and bad tag sets are refused.
    s3.put_object_tagging(Bucket=bucket, Key="k", VersionId="null", Tagging={"TagSet": [{"Key": "v", "Value": "n"}]})
    assert tags(s3, bucket, "k") == {"v": "n"}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object_tagging(Bucket=bucket, Key="k", VersionId="abc")
    assert code_of(e) == "InvalidArgument"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object_tagging(Bucket=bucket, Key="missing", Tagging={"TagSet": []})
    assert code_of(e) == "NoSuchKey"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": [
            {"Key": f"k{i}", "Value": "v"} for i in range(11)]})
    assert code_of(e) == "InvalidTag"
    assert tags(s3, bucket, "k") == {"v": "n"}, "a refused tag set changes nothing"
    # A new write replaces the tags with its own (none here), as S3.
    s3.put_object(Bucket=bucket, Key="k", Body=b"new")
    assert tags(s3, bucket, "k") == {}


def test_tags_are_on_every_copy_and_survive_restarts(fresh_dir):
    c = Cluster(fresh_dir, targets=3, extra=["--copies", "2"]).start()
    try:
        s3 = c.client()
        s3.create_bucket(Bucket="tagged")
        keys = [f"k{i}" for i in range(12)]
        for k in keys:
            s3.put_object(Bucket="tagged", Key=k, Body=k.encode())
            s3.put_object_tagging(Bucket="tagged", Key=k, Tagging={"TagSet": [{"Key": "k", "Value": k}]})
        # Kill one target: every object is still read, with its tags, from the other copy.
        victim = c.pid("t1")
        subprocess.run(["kill", "-9", str(victim)], check=True)
        for k in keys:
            assert tags(s3, "tagged", k) == {"k": k}
            assert s3.get_object(Bucket="tagged", Key=k)["TagCount"] == 1
        c.stop()
        c.start()
        s3 = c.client()
        for k in keys:
            assert tags(s3, "tagged", k) == {"k": k}
    finally:
        c.stop()

"""Lifecycle rules (issue 13 §3): the configuration in S3's XML both ways, and rules run on the
targets — expiration by days (a "day" of 2 s here) and date, filters by prefix, tags and size,
abort of incomplete multipart uploads — on demand (`aisle cluster lifecycle`) and periodically,
with the expired objects gone from every copy."""

import json
import time

import botocore.exceptions
import pytest

from conftest import Cluster, aisle, wait_for

DAY = 2  # seconds in a lifecycle day on the test cluster


def code_of(e):
    return e.value.response["Error"]["Code"]


@pytest.fixture(scope="module")
def lc(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("lifecycle"), targets=3,
                extra=["--copies", "2", "--lifecycle-day", str(DAY), "--lifecycle-every", "0"]).start()
    yield c
    c.stop()


def run_now(c):
    return json.loads(aisle(c, "cluster", "lifecycle", "--json").stdout)


def keys(s3, bucket):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_configuration_round_trip_and_validation(lc):
    s3 = lc.client()
    s3.create_bucket(Bucket="lc-config")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket="lc-config")
    assert code_of(e) == "NoSuchLifecycleConfiguration"
    rules = [
        {"ID": "tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 7},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
        {"ID": "big-scratch", "Status": "Disabled", "Filter": {"And": {
            "Prefix": "scratch/", "Tags": [{"Key": "temp", "Value": "yes"}],
            "ObjectSizeGreaterThan": 1000}}, "Expiration": {"Date": "2030-01-01T00:00:00Z"}},
        {"ID": "old-versions", "Status": "Enabled", "Filter": {"Prefix": ""},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 30}},
    ]
    s3.put_bucket_lifecycle_configuration(Bucket="lc-config", LifecycleConfiguration={"Rules": rules})
    got = s3.get_bucket_lifecycle_configuration(Bucket="lc-config")["Rules"]
    assert [r["ID"] for r in got] == ["tmp", "big-scratch", "old-versions"]
    assert got[0]["Expiration"] == {"Days": 7} and got[0]["Filter"] == {"Prefix": "tmp/"}
    assert got[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert got[1]["Status"] == "Disabled"
    assert got[1]["Filter"]["And"]["Tags"] == [{"Key": "temp", "Value": "yes"}]
    assert got[1]["Filter"]["And"]["ObjectSizeGreaterThan"] == 1000
    assert got[1]["Expiration"]["Date"].year == 2030
    assert got[2]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    bad = [
        ([rules[0], rules[0]], "InvalidArgument"),  # duplicate ids
        ([{"ID": "z", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 0}}], "InvalidArgument"),
        ([{"ID": "n", "Status": "Enabled", "Filter": {"Prefix": ""}}], "InvalidArgument"),  # no action
        ([{"ID": "d", "Status": "Enabled", "Filter": {"Prefix": ""},
           "Expiration": {"Date": "2030-01-01T10:00:00Z"}}], "InvalidArgument"),  # not midnight
        ([{"ID": "t", "Status": "Enabled", "Filter": {"Prefix": ""},
           "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]}], "NotImplemented"),
    ]
    for rs, code in bad:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_bucket_lifecycle_configuration(Bucket="lc-config", LifecycleConfiguration={"Rules": rs})
        assert code_of(e) == code, rs
    assert len(s3.get_bucket_lifecycle_configuration(Bucket="lc-config")["Rules"]) == 3
    s3.delete_bucket_lifecycle(Bucket="lc-config")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket="lc-config")
    assert code_of(e) == "NoSuchLifecycleConfiguration"


def test_rules_expire_objects_and_abort_uploads_on_every_copy(lc):
    s3 = lc.client()
    s3.create_bucket(Bucket="lc-run")
    s3.put_bucket_lifecycle_configuration(Bucket="lc-run", LifecycleConfiguration={"Rules": [
        {"ID": "tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 1},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
        {"ID": "tagged-big", "Status": "Enabled", "Filter": {"And": {
            "Prefix": "data/", "Tags": [{"Key": "temp", "Value": "yes"}], "ObjectSizeGreaterThan": 100}},
         "Expiration": {"Days": 1}},
        {"ID": "off", "Status": "Disabled", "Filter": {"Prefix": "keep/"}, "Expiration": {"Days": 1}},
    ]})
    for i in range(10):
        s3.put_object(Bucket="lc-run", Key=f"tmp/{i}", Body=b"t")
    s3.put_object(Bucket="lc-run", Key="keep/a", Body=b"k")
    s3.put_object(Bucket="lc-run", Key="data/big-temp", Body=b"x" * 200, Tagging="temp=yes")
    s3.put_object(Bucket="lc-run", Key="data/small-temp", Body=b"x" * 50, Tagging="temp=yes")
    s3.put_object(Bucket="lc-run", Key="data/big-kept", Body=b"x" * 200, Tagging="temp=no")
    upload = s3.create_multipart_upload(Bucket="lc-run", Key="tmp/upload")["UploadId"]
    other = s3.create_multipart_upload(Bucket="lc-run", Key="keep/upload")["UploadId"]
    written = time.time()
    # Not a day old yet: nothing happens.
    first = run_now(lc)
    assert first["expired"] == 0 and first["aborted_uploads"] == 0 and first["errors"] == []
    assert len(keys(s3, "lc-run")) == 14
    # A day (rounded up to the next day boundary) later.
    time.sleep(max(0.0, written + 2 * DAY + 0.2 - time.time()))
    done = run_now(lc)
    assert done["expired"] == 11 and done["aborted_uploads"] == 1 and done["errors"] == [], done
    assert done["examined"] >= 14
    assert keys(s3, "lc-run") == ["data/big-kept", "data/small-temp", "keep/a"]
    uploads = [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="lc-run").get("Uploads", [])]
    assert uploads == [other] and upload not in uploads
    # Gone from every copy: no target still answers for an expired key.
    for i in range(10):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.head_object(Bucket="lc-run", Key=f"tmp/{i}")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # A new object under the prefix is young again: the next run leaves it.
    s3.put_object(Bucket="lc-run", Key="tmp/new", Body=b"n")
    assert run_now(lc)["expired"] == 0
    assert "tmp/new" in keys(s3, "lc-run")


def test_noncurrent_versions_and_lone_delete_markers_expire(lc):
    s3 = lc.client()
    s3.create_bucket(Bucket="lc-versions")
    s3.put_bucket_versioning(Bucket="lc-versions", VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_lifecycle_configuration(Bucket="lc-versions", LifecycleConfiguration={"Rules": [
        {"ID": "old-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 1}},
        {"ID": "markers", "Status": "Enabled", "Filter": {"Prefix": ""},
         "Expiration": {"ExpiredObjectDeleteMarker": True}},
    ]})
    got = s3.get_bucket_lifecycle_configuration(Bucket="lc-versions")["Rules"][0]
    assert got["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1, "NewerNoncurrentVersions": 1}
    put = lambda k, b: s3.put_object(Bucket="lc-versions", Key=k, Body=b)["VersionId"]
    logs = [put("logs/a", b"%d" % i) for i in range(4)]
    kept = [put("keep/b", b"%d" % i) for i in range(3)]
    # "lone": its only version removed, the marker is all that is left; "still": the marker
    # hides a version, so it stays.
    lone_v = put("lone", b"x")
    s3.delete_object(Bucket="lc-versions", Key="lone")
    s3.delete_object(Bucket="lc-versions", Key="lone", VersionId=lone_v)
    still_v = put("still", b"y")
    still_marker = s3.delete_object(Bucket="lc-versions", Key="still")["VersionId"]
    written = time.time()

    def versions():
        r = s3.list_object_versions(Bucket="lc-versions")
        out = {}
        for v in r.get("Versions", []) + r.get("DeleteMarkers", []):
            out.setdefault(v["Key"], set()).add(v["VersionId"])
        return out

    before = versions()
    assert before["logs/a"] == set(logs) and len(before["lone"]) == 1
    # Not a day since they became noncurrent: nothing goes but the lone marker (a marker
    # that hides nothing has no age to wait for, as in S3).
    assert run_now(lc)["errors"] == []
    del before["lone"]
    assert versions() == before
    time.sleep(max(0.0, written + 2 * DAY + 0.2 - time.time()))
    report = run_now(lc)
    assert report["errors"] == [], report
    after = versions()
    # The current version and the newest noncurrent one stay; the older two go.
    assert after["logs/a"] == {logs[3], logs[2]}
    assert after["keep/b"] == set(kept)
    assert "lone" not in after
    assert after["still"] == {still_v, still_marker}
    for gone in logs[:2]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.get_object(Bucket="lc-versions", Key="logs/a", VersionId=gone)
        assert code_of(e) == "NoSuchVersion"
    assert s3.get_object(Bucket="lc-versions", Key="logs/a", VersionId=logs[2])["Body"].read() == b"2"


def test_rules_run_periodically(fresh_dir):
    c = Cluster(fresh_dir, targets=2, extra=["--lifecycle-day", "1", "--lifecycle-every", "1"]).start()
    try:
        s3 = c.client()
        s3.create_bucket(Bucket="lc-periodic")
        s3.put_bucket_lifecycle_configuration(Bucket="lc-periodic", LifecycleConfiguration={"Rules": [
            {"ID": "all", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}]})
        for i in range(5):
            s3.put_object(Bucket="lc-periodic", Key=f"k{i}", Body=b"x")
        wait_for(lambda: keys(s3, "lc-periodic") == [], 20, "periodic lifecycle run to expire all")
    finally:
        c.stop()

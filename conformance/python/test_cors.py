"""CORS (issue 13 §5): Put/Get/DeleteBucketCors, preflight OPTIONS per the rules, headers on
actual requests, and a real page on another origin in headless Chromium using presigned URLs.
Bucket tagging is here too: both are bucket properties kept in the cluster metadata."""

import functools
import http.server
import json
import subprocess
import threading
import urllib.request

import botocore.exceptions
import pytest

from conftest import REPO
from test_dashboard import browser_ready

RULES = {"CORSRules": [
    {"ID": "upload", "AllowedOrigins": ["http://127.0.0.1:*"], "AllowedMethods": ["PUT", "GET", "HEAD"],
     "AllowedHeaders": ["content-type", "x-amz-*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600},
    {"ID": "read", "AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
]}


def request(url, method="GET", headers=None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def code_of(e):
    return e.value.response["Error"]["Code"]


def test_cors_configuration_round_trip_and_validation(s3, bucket):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_cors(Bucket=bucket)
    assert code_of(e) == "NoSuchCORSConfiguration"
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    got = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert got == RULES["CORSRules"]
    for bad in ({"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]},
                {"AllowedOrigins": ["http://*.*.test"], "AllowedMethods": ["GET"]}):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [bad]})
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES["CORSRules"], "a refused put changes nothing"
    s3.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_cors(Bucket=bucket)
    assert code_of(e) == "NoSuchCORSConfiguration"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_bucket_cors(Bucket="no-such-bucket-here", CORSConfiguration=RULES)
    assert code_of(e) == "NoSuchBucket"


def test_preflight_and_actual_requests_follow_the_rules(cluster, s3, bucket):
    base = f"{cluster.endpoint}/{bucket}/k"
    pre = lambda origin, method, hdrs=None: request(base, "OPTIONS", {
        **({"Origin": origin} if origin else {}), "Access-Control-Request-Method": method,
        **({"Access-Control-Request-Headers": hdrs} if hdrs else {})})
    # No rules yet: refused.
    status, _, body = pre("http://127.0.0.1:1234", "GET")
    assert status == 403 and b"CORSResponse" in body
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    status, h, _ = pre("http://127.0.0.1:1234", "PUT", "Content-Type, X-Amz-Meta-Color")
    assert status == 200
    assert h["access-control-allow-origin"] == "http://127.0.0.1:1234"
    assert h["access-control-allow-methods"] == "PUT, GET, HEAD"
    assert h["access-control-allow-headers"] == "Content-Type, X-Amz-Meta-Color"
    assert h["access-control-max-age"] == "600" and h["access-control-expose-headers"] == "ETag"
    assert h["access-control-allow-credentials"] == "true"
    # A header no rule allows, a method no rule allows, an origin only the read rule takes.
    assert pre("http://127.0.0.1:1234", "PUT", "authorization-extra")[0] == 403
    assert pre("http://127.0.0.1:1234", "DELETE")[0] == 403
    assert pre("https://elsewhere.test", "PUT")[0] == 403
    status, h, _ = pre("https://elsewhere.test", "GET")
    assert status == 200 and h["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in h
    # Malformed preflights and unknown buckets.
    assert pre(None, "GET")[0] == 400
    assert request(f"{cluster.endpoint}/no-such-bucket-x/k", "OPTIONS", {
        "Origin": "http://a.test", "Access-Control-Request-Method": "GET"})[0] == 404
    # Actual requests: the matching rule's headers, on errors too; none without a match.
    s3.put_object(Bucket=bucket, Key="k", Body=b"hello")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    status, h, body = request(url, headers={"Origin": "http://127.0.0.1:999"})
    assert status == 200 and body == b"hello"
    assert h["access-control-allow-origin"] == "http://127.0.0.1:999" and h["vary"] == "Origin"
    missing = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "nope"})
    status, h, _ = request(missing, headers={"Origin": "http://127.0.0.1:999"})
    assert status == 404 and h["access-control-allow-origin"] == "http://127.0.0.1:999"
    status, h, _ = request(url, method="GET", headers={"Origin": "https://elsewhere.test"})
    assert h["access-control-allow-origin"] == "*"
    s3.delete_bucket_cors(Bucket=bucket)
    status, h, _ = request(url, headers={"Origin": "http://127.0.0.1:999"})
    assert status == 200 and "access-control-allow-origin" not in h


@pytest.mark.skipif(not browser_ready(), reason="needs chromium and `npm ci` in ui/ (scripts/test installs both)")
def test_a_page_on_another_origin_uses_presigned_urls(cluster, s3, bucket, tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>app</title><p>app</p>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    try:
        s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"from aisle")
        get = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "hello.txt"})
        put = s3.generate_presigned_url("put_object", Params={
            "Bucket": bucket, "Key": "up.txt", "ContentType": "text/plain", "Metadata": {"color": "blue"}})

        def run(fetches):
            out = subprocess.run(["node", str(REPO / "ui" / "tests" / "cors.mjs"), page, json.dumps(fetches)],
                                 capture_output=True, text=True, cwd=REPO / "ui", timeout=120)
            assert out.returncode == 0, out.stdout + out.stderr
            return {r["name"]: r for r in map(json.loads, out.stdout.splitlines())}

        fetches = [
            {"name": "get", "url": get},
            {"name": "put", "url": put, "method": "PUT", "body": "uploaded from a page",
             "headers": {"Content-Type": "text/plain", "x-amz-meta-color": "blue"}},
        ]
        # Without rules the browser refuses to give the page either answer.
        before = run(fetches)
        assert not before["get"]["ok"] and not before["put"]["ok"]
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
        after = run(fetches)
        assert after["get"] == {"name": "get", "ok": True, "status": 200, "body": "from aisle",
                                "etag": s3.head_object(Bucket=bucket, Key="hello.txt")["ETag"]}
        assert after["put"]["ok"] and after["put"]["status"] == 200
        assert after["put"]["etag"], "ETag is exposed by the rule"
        got = s3.get_object(Bucket=bucket, Key="up.txt")
        assert got["Body"].read() == b"uploaded from a page" and got["Metadata"] == {"color": "blue"}
    finally:
        server.shutdown()


def test_bucket_tagging(s3, bucket):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_tagging(Bucket=bucket)
    assert code_of(e) == "NoSuchTagSet"
    tags = [{"Key": "team", "Value": "vision"}, {"Key": "cost-center", "Value": ""}]
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags})
    assert sorted(s3.get_bucket_tagging(Bucket=bucket)["TagSet"], key=lambda t: t["Key"]) == \
        sorted(tags, key=lambda t: t["Key"])
    for bad in ([{"Key": "k" * 129, "Value": "v"}], [{"Key": "a", "Value": "v" * 257}],
                [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}],
                [{"Key": f"k{i}", "Value": "v"} for i in range(51)]):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": bad})
        assert code_of(e) == "InvalidTag"
    assert len(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]) == 2, "a refused put changes nothing"
    s3.delete_bucket_tagging(Bucket=bucket)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_tagging(Bucket=bucket)
    assert code_of(e) == "NoSuchTagSet"

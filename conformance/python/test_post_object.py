"""Browser form uploads (POST object, issue 13 §6) with boto3's generate_presigned_post, posted
as a browser would (multipart/form-data, the file last): Signature V2 and V4 policies, their
conditions and expiry, success_action_status and success_action_redirect."""

import base64
import datetime
import hashlib
import hmac
import json
import xml.etree.ElementTree as ET

import urllib3



def post(url, fields, name, data, content_type="text/plain"):
    body, ctype = urllib3.encode_multipart_formdata(
        list(fields.items()) + [("file", (name, data, content_type))])
    r = urllib3.request("POST", url, body=body, headers={"Content-Type": ctype}, redirect=False)
    return r.status, r.headers, r.data


def test_post_object_with_v2_and_v4_policies(cluster, s3, bucket):
    for signer in ("s3", "s3v4"):
        c = cluster.client(signature_version=signer)
        form = c.generate_presigned_post(bucket, f"{signer}/upload.txt", ExpiresIn=600,
                                         Fields={"Content-Type": "text/plain"},
                                         Conditions=[{"Content-Type": "text/plain"},
                                                     ["content-length-range", 1, 1000]])
        status, _, body = post(form["url"], form["fields"], "upload.txt", b"posted from a form")
        assert status == 204, body
        got = s3.get_object(Bucket=bucket, Key=f"{signer}/upload.txt")
        assert got["Body"].read() == b"posted from a form"
        assert got["ContentType"] == "text/plain"


def test_post_object_conditions_expiry_and_answers(cluster, s3, bucket):
    form = s3.generate_presigned_post(bucket, "uploads/a.bin", ExpiresIn=600, Conditions=[
        ["content-length-range", 10, 100], ["starts-with", "$key", "uploads/"]])
    # Too small, too large: refused, nothing stored.
    for data in (b"tiny", b"x" * 101):
        status, _, body = post(form["url"], form["fields"], "a.bin", data)
        assert status == 400, body
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    # A key outside the allowed prefix: a failed condition (s3s answers 400
    # InvalidPolicyDocument, S3 403 AccessDenied; docs/s3.md), nothing stored.
    status, _, body = post(form["url"], {**form["fields"], "key": "elsewhere/a.bin"}, "a.bin", b"x" * 20)
    assert status == 400 and b"InvalidPolicyDocument" in body and b"uploads/" in body, body
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    # A tampered policy or a wrong signature.
    bad = {**form["fields"], "signature": base64.b64encode(b"0" * 20).decode()}
    assert post(form["url"], bad, "a.bin", b"x" * 20)[0] == 403
    # success_action_status 201: S3's PostResponse XML.
    form201 = s3.generate_presigned_post(bucket, "uploads/b.bin", ExpiresIn=600,
                                         Fields={"success_action_status": "201"},
                                         Conditions=[{"success_action_status": "201"}])
    status, _, body = post(form201["url"], form201["fields"], "b.bin", b"y" * 20)
    assert status == 201, body
    doc = ET.fromstring(body)
    assert doc.tag == "PostResponse" and doc.find("Key").text == "uploads/b.bin"
    assert doc.find("Bucket").text == bucket
    # success_action_redirect: 303 to the page, with bucket, key and etag.
    page = "http://127.0.0.1:9/done"
    formr = s3.generate_presigned_post(bucket, "uploads/c.bin", ExpiresIn=600,
                                       Fields={"success_action_redirect": page},
                                       Conditions=[{"success_action_redirect": page}])
    status, headers, _ = post(formr["url"], formr["fields"], "c.bin", b"z" * 20)
    assert status == 303 and headers["Location"].startswith(page + "?")
    assert "key=uploads%2Fc.bin" in headers["Location"] or "key=uploads/c.bin" in headers["Location"]
    assert s3.get_object(Bucket=bucket, Key="uploads/c.bin")["Body"].read() == b"z" * 20
    # An expired policy (signed by hand with an expiration in the past).
    policy = base64.b64encode(json.dumps({
        "expiration": (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5))
        .strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "conditions": [{"bucket": bucket}, ["starts-with", "$key", ""]]}).encode()).decode()
    sig = base64.b64encode(hmac.new(cluster.env["AWS_SECRET_ACCESS_KEY"].encode(), policy.encode(),
                                    hashlib.sha1).digest()).decode()
    fields = {"key": "late.bin", "AWSAccessKeyId": cluster.env["AWS_ACCESS_KEY_ID"], "policy": policy,
              "signature": sig}
    status, _, body = post(f"{cluster.endpoint}/{bucket}", fields, "late.bin", b"late")
    assert status == 403, body
    assert b"xpired" in body or b"AccessDenied" in body

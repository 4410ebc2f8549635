"""Users and access (issue 13 §4): `aisle user add|ls|rm|keys`, buckets owned by their creator
and invisible to others, bucket policies (Principal, Action and Resource wildcards, conditions,
explicit Deny winning), canned bucket ACLs and anonymous access where a policy or ACL allows it,
the admin API for the admin key only — with boto3, the aws CLI, presigned URLs and plain
unsigned HTTP."""

import json
import subprocess
import urllib.error
import urllib.request

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import aisle, aisle_bin


def code_of(e):
    return e.value.response["Error"]["Code"]


def add_user(c, name):
    out = aisle(c, "user", "add", name).stdout
    kv = dict(l.split("=", 1) for l in out.splitlines() if "=" in l)
    return kv["AWS_ACCESS_KEY_ID"], kv["AWS_SECRET_ACCESS_KEY"]


def s3_for(c, key, **config):
    return boto3.client("s3", endpoint_url=c.endpoint, aws_access_key_id=key[0], aws_secret_access_key=key[1],
                        region_name="us-east-1",
                        config=botocore.config.Config(s3={"addressing_style": "path"}, **config))


def anonymous(url, method="GET", data=None):
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def denied(call):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    assert code_of(e) == "AccessDenied", e.value.response
    return True


@pytest.fixture(scope="module")
def users(cluster):
    alice = add_user(cluster, "alice")
    bob = add_user(cluster, "bob")
    yield {"alice": alice, "bob": bob}
    for u in ("alice", "bob"):
        aisle(cluster, "user", "rm", u, check=False)


def test_buckets_belong_to_their_creator(cluster, s3, users):
    alice, bob = s3_for(cluster, users["alice"]), s3_for(cluster, users["bob"])
    alice.create_bucket(Bucket="alice-data")
    alice.put_object(Bucket="alice-data", Key="a.txt", Body=b"alice's")
    assert alice.get_object(Bucket="alice-data", Key="a.txt")["Body"].read() == b"alice's"
    assert [b["Name"] for b in alice.list_buckets()["Buckets"]] == ["alice-data"]
    assert "alice-data" not in [b["Name"] for b in bob.list_buckets()["Buckets"]]
    assert "alice-data" in [b["Name"] for b in s3.list_buckets()["Buckets"]], "the admin sees all"
    assert denied(lambda: bob.get_object(Bucket="alice-data", Key="a.txt"))
    assert denied(lambda: bob.list_objects_v2(Bucket="alice-data"))
    assert denied(lambda: bob.put_object(Bucket="alice-data", Key="b.txt", Body=b"x"))
    assert denied(lambda: bob.delete_bucket(Bucket="alice-data"))
    assert denied(lambda: bob.copy_object(Bucket="alice-data", Key="c", CopySource={"Bucket": "alice-data", "Key": "a.txt"}))
    # Bob cannot copy Alice's object into his own bucket either: the source is checked.
    bob.create_bucket(Bucket="bob-data")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bob.create_bucket(Bucket="alice-data")
    assert code_of(e) == "BucketAlreadyExists"
    # Her own bucket again: 200 in us-east-1, as AWS (BucketAlreadyOwnedByYou elsewhere).
    assert alice.create_bucket(Bucket="alice-data")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert denied(lambda: bob.copy_object(Bucket="bob-data", Key="c", CopySource={"Bucket": "alice-data", "Key": "a.txt"}))
    # A presigned URL carries its signer's rights.
    url = alice.generate_presigned_url("get_object", Params={"Bucket": "alice-data", "Key": "a.txt"})
    assert anonymous(url) == (200, b"alice's")
    url = bob.generate_presigned_url("get_object", Params={"Bucket": "alice-data", "Key": "a.txt"})
    assert anonymous(url)[0] == 403
    # The admin API is for the admin key only.
    assert aisle(cluster, "cluster", "show").returncode == 0
    env = cluster.shell_env(AWS_ACCESS_KEY_ID=users["bob"][0], AWS_SECRET_ACCESS_KEY=users["bob"][1])
    out = subprocess.run([aisle_bin(), "cluster", "show"], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "403" in out.stdout + out.stderr
    # Unknown keys are refused as S3 does.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3_for(cluster, ("AKUNOBODY", "x" * 40)).list_buckets()
    assert code_of(e) == "InvalidAccessKeyId"


def test_bucket_policies(cluster, users):
    alice, bob = s3_for(cluster, users["alice"]), s3_for(cluster, users["bob"])
    alice.create_bucket(Bucket="alice-shared")
    for k in ["shared/x.txt", "shared/secret.txt", "private/y.txt", "public/p.txt"]:
        alice.put_object(Bucket="alice-shared", Key=k, Body=k.encode())
    policy = {"Version": "2012-10-17", "Statement": [
        {"Sid": "BobReadsShared", "Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::000000000000:user/bob"]},
         "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::alice-shared/shared/*"},
        {"Sid": "BobListsShared", "Effect": "Allow", "Principal": {"AWS": "bob"}, "Action": "s3:ListBucket",
         "Resource": "arn:aws:s3:::alice-shared", "Condition": {"StringLike": {"s3:prefix": "shared/*"}}},
        {"Sid": "NotTheSecret", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": "arn:aws:s3:::alice-shared/shared/secret*"},
        {"Sid": "PublicFromLoopback", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::alice-shared/public/*", "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}},
        {"Sid": "NeverFromTenNet", "Effect": "Allow", "Principal": "*", "Action": "s3:Get*",
         "Resource": "arn:aws:s3:::alice-shared/private/*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}},
    ]}
    # Only the owner sets it.
    assert denied(lambda: bob.put_bucket_policy(Bucket="alice-shared", Policy=json.dumps(policy)))
    alice.put_bucket_policy(Bucket="alice-shared", Policy=json.dumps(policy))
    assert json.loads(alice.get_bucket_policy(Bucket="alice-shared")["Policy"])["Statement"][0]["Sid"] == "BobReadsShared"
    assert alice.get_bucket_policy_status(Bucket="alice-shared")["PolicyStatus"]["IsPublic"] is False
    assert bob.get_object(Bucket="alice-shared", Key="shared/x.txt")["Body"].read() == b"shared/x.txt"
    assert denied(lambda: bob.get_object(Bucket="alice-shared", Key="private/y.txt"))
    assert denied(lambda: bob.get_object(Bucket="alice-shared", Key="shared/secret.txt")), "explicit Deny wins"
    assert denied(lambda: alice.get_object(Bucket="alice-shared", Key="shared/secret.txt")), "even over the owner"
    assert denied(lambda: bob.put_object(Bucket="alice-shared", Key="shared/new", Body=b"x"))
    assert [o["Key"] for o in bob.list_objects_v2(Bucket="alice-shared", Prefix="shared/")["Contents"]] == \
        ["shared/secret.txt", "shared/x.txt"]
    assert denied(lambda: bob.list_objects_v2(Bucket="alice-shared", Prefix="private/"))
    # Anonymous: public/ from loopback only; nothing else.
    base = f"{cluster.endpoint}/alice-shared"
    assert anonymous(f"{base}/public/p.txt") == (200, b"public/p.txt")
    assert anonymous(f"{base}/private/y.txt")[0] == 403
    assert anonymous(f"{base}/shared/x.txt")[0] == 403
    assert anonymous(f"{base}/public/p.txt", "PUT", b"x")[0] == 403
    # Malformed policies are refused and change nothing.
    for bad in ("not json", json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                        "Resource": "arn:aws:s3:::other-bucket/*"}]})):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            alice.put_bucket_policy(Bucket="alice-shared", Policy=bad)
        assert code_of(e) == "MalformedPolicy"
    alice.delete_bucket_policy(Bucket="alice-shared")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.get_bucket_policy(Bucket="alice-shared")
    assert code_of(e) == "NoSuchBucketPolicy"
    assert denied(lambda: bob.get_object(Bucket="alice-shared", Key="shared/x.txt"))
    assert anonymous(f"{base}/public/p.txt")[0] == 403


def test_canned_acls_and_anonymous_access(cluster, users):
    alice = s3_for(cluster, users["alice"])
    alice.create_bucket(Bucket="alice-public", ACL="public-read")
    alice.put_object(Bucket="alice-public", Key="open.txt", Body=b"open")
    base = f"{cluster.endpoint}/alice-public"
    assert anonymous(f"{base}/open.txt") == (200, b"open")
    status, body = anonymous(f"{base}?list-type=2")
    assert status == 200 and b"<Key>open.txt</Key>" in body
    assert anonymous(f"{base}/new.txt", "PUT", b"x")[0] == 403
    grants = alice.get_bucket_acl(Bucket="alice-public")["Grants"]
    assert {(g["Grantee"].get("URI"), g["Permission"]) for g in grants} >= {
        ("http://acs.amazonaws.com/groups/global/AllUsers", "READ")}
    assert alice.get_object_acl(Bucket="alice-public", Key="open.txt")["Grants"] == grants
    # The aws CLI sees the same.
    bob_env = {"AWS_ACCESS_KEY_ID": users["bob"][0], "AWS_SECRET_ACCESS_KEY": users["bob"][1]}
    out = subprocess.run(["aws", "s3", "cp", "s3://alice-public/open.txt", "-"], env=cluster.shell_env(**bob_env),
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "open"
    alice.put_bucket_acl(Bucket="alice-public", ACL="private")
    assert anonymous(f"{base}/open.txt")[0] == 403
    alice.put_bucket_acl(Bucket="alice-public", ACL="public-read-write")
    assert anonymous(f"{base}/new.txt", "PUT", b"anon")[0] == 200
    assert alice.get_object(Bucket="alice-public", Key="new.txt")["Body"].read() == b"anon"
    # Per-object ACLs are not kept: asking for a public object is refused, not ignored.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.put_object(Bucket="alice-public", Key="o", Body=b"x", ACL="public-read")
    assert code_of(e) == "NotImplemented"
    alice.put_object(Bucket="alice-public", Key="o", Body=b"x", ACL="private")


def test_user_keys_rotate_and_users_go(cluster, users):
    carol = add_user(cluster, "carol")
    c1 = s3_for(cluster, carol)
    c1.create_bucket(Bucket="carol-data")
    out = aisle(cluster, "user", "keys", "carol").stdout
    kv = dict(l.split("=", 1) for l in out.splitlines() if "=" in l)
    c2 = s3_for(cluster, (kv["AWS_ACCESS_KEY_ID"], kv["AWS_SECRET_ACCESS_KEY"]))
    assert [b["Name"] for b in c2.list_buckets()["Buckets"]] == ["carol-data"]
    listed = json.loads(aisle(cluster, "user", "ls", "--json").stdout)
    mine = next(u for u in listed if u["name"] == "carol")
    assert sorted(mine["keys"]) == sorted([carol[0], kv["AWS_ACCESS_KEY_ID"]]) and mine["buckets"] == ["carol-data"]
    assert all("secret" not in json.dumps(u).lower() for u in listed)
    aisle(cluster, "user", "keys", "carol", "--rm", carol[0])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c1.list_buckets()
    assert code_of(e) == "InvalidAccessKeyId"
    assert c2.list_buckets()["Buckets"]
    assert aisle(cluster, "user", "add", "carol", check=False).returncode != 0, "names are unique"
    assert aisle(cluster, "user", "add", "no spaces", check=False).returncode != 0
    aisle(cluster, "user", "rm", "carol")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c2.list_buckets()
    assert code_of(e) == "InvalidAccessKeyId"


def test_public_access_block(cluster, users):
    alice = s3_for(cluster, users["alice"])
    alice.create_bucket(Bucket="alice-guarded")
    alice.put_object(Bucket="alice-guarded", Key="k", Body=b"k")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        alice.get_public_access_block(Bucket="alice-guarded")
    assert code_of(e) == "NoSuchPublicAccessBlockConfiguration"
    public_policy = json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                               "Resource": "arn:aws:s3:::alice-guarded/*"}]})
    # Public already, then restricted: IgnorePublicAcls and RestrictPublicBuckets take effect at once.
    alice.put_bucket_acl(Bucket="alice-guarded", ACL="public-read")
    alice.put_bucket_policy(Bucket="alice-guarded", Policy=public_policy)
    assert alice.get_bucket_policy_status(Bucket="alice-guarded")["PolicyStatus"]["IsPublic"] is True
    url = f"{cluster.endpoint}/alice-guarded/k"
    assert anonymous(url) == (200, b"k")
    alice.put_public_access_block(Bucket="alice-guarded", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    got = alice.get_public_access_block(Bucket="alice-guarded")["PublicAccessBlockConfiguration"]
    assert got == {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                   "RestrictPublicBuckets": True}
    assert anonymous(url)[0] == 403
    assert alice.get_object(Bucket="alice-guarded", Key="k")["Body"].read() == b"k", "the owner keeps access"
    # Blocked: making it public again.
    assert denied(lambda: alice.put_bucket_acl(Bucket="alice-guarded", ACL="public-read"))
    assert denied(lambda: alice.put_bucket_policy(Bucket="alice-guarded", Policy=public_policy))
    alice.delete_public_access_block(Bucket="alice-guarded")
    assert anonymous(url) == (200, b"k")

"""HTTPS (issue 13 §7): `aisle up --tls` makes a CA and serves every port over TLS — S3, the
admin API and the intra-cluster API — and writes AWS_CA_BUNDLE into aisle.env. The aws CLI,
boto3, curl, the aisle CLI and the Python package verify it; plain HTTP is refused on every
port; a client that does not trust the CA is refused."""

import json
import subprocess
import urllib.parse

import boto3
import botocore.config
import botocore.exceptions
import pytest
import urllib3

from conftest import Cluster, aisle


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("tls"), targets=3, extra=["--tls"]).start()
    yield c
    c.stop()


def client(c, verify):
    return boto3.client("s3", endpoint_url=c.endpoint, aws_access_key_id=c.env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=c.env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
                        verify=verify, config=botocore.config.Config(s3={"addressing_style": "path"}))


def plain_http(url):
    """What a plain-HTTP request to a TLS port gets."""
    u = urllib.parse.urlsplit(url)
    r = urllib3.request("GET", f"http://{u.hostname}:{u.port}/", retries=False)
    return r.status, r.data


def test_every_client_over_https(tls_cluster, tmp_path):
    c = tls_cluster
    assert c.endpoint.startswith("https://")
    ca = c.env["AWS_CA_BUNDLE"]
    s3 = client(c, ca)
    s3.create_bucket(Bucket="secure")
    s3.put_object(Bucket="secure", Key="a.txt", Body=b"over tls")
    assert s3.get_object(Bucket="secure", Key="a.txt")["Body"].read() == b"over tls"
    # A multipart upload through boto3's transfer manager (several parts in parallel).
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (40 * 1024 * 4))  # 40 MiB
    s3.upload_file(str(big), "secure", "big.bin")
    assert s3.head_object(Bucket="secure", Key="big.bin")["ContentLength"] == big.stat().st_size
    # The aws CLI takes AWS_CA_BUNDLE from aisle.env.
    c.aws("s3", "cp", str(big), "s3://secure/cli.bin")
    assert "cli.bin" in c.aws("s3", "ls", "s3://secure/").stdout
    c.aws("s3", "cp", "s3://secure/cli.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    # curl, verifying against the CA.
    out = subprocess.run(["curl", "-sS", "--fail", "--cacert", ca, "--aws-sigv4", "aws:amz:us-east-1:s3",
                          "--user", f"{c.env['AWS_ACCESS_KEY_ID']}:{c.env['AWS_SECRET_ACCESS_KEY']}",
                          "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", f"{c.endpoint}/secure/a.txt"],
                         capture_output=True, check=True)
    assert out.stdout == b"over tls"
    # A presigned URL works over https too.
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "secure", "Key": "a.txt"})
    assert url.startswith("https://")
    r = urllib3.PoolManager(ca_certs=ca).request("GET", url)
    assert r.status == 200 and r.data == b"over tls"
    # The aisle CLI (admin API) and the Python package.
    view = json.loads(aisle(c, "cluster", "show", "--json").stdout)
    assert len(view["targets"]) == 3
    assert all(t["url"].startswith("https://") for t in view["targets"]), "intra-cluster calls are TLS"
    from aisle import Client
    pc = Client(c.endpoint, c.env["AWS_ACCESS_KEY_ID"], c.env["AWS_SECRET_ACCESS_KEY"], ca_bundle=ca)
    assert pc.get("secure", "a.txt") == b"over tls"


def test_plaintext_and_untrusted_clients_are_refused(tls_cluster):
    c = tls_cluster
    status, body = plain_http(c.endpoint)
    assert status == 400 and b"HTTPS only" in body
    # The targets' ports too: the cluster secret and object bytes never travel in clear.
    view = json.loads(aisle(c, "cluster", "show", "--json").stdout)
    for t in view["targets"]:
        status, body = plain_http(t["url"])
        assert status == 400 and b"HTTPS only" in body
    # A client that does not trust the CA does not talk to the cluster.
    with pytest.raises(botocore.exceptions.SSLError):
        client(c, True).list_buckets()

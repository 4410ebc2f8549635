"""The client-compatibility matrix: each mainstream S3 client does its everyday work against a
real cluster. `scripts/compat-matrix` turns these results into docs/compatibility.md."""

import hashlib
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SPECIAL_KEYS = ["with space.txt", "plus+sign.txt", "eq=ual.txt", "per%cent.txt", "ünï/cødé 日本.txt"]


def test_client_rclone(cluster, s3, bucket, tmp_path):
    if not shutil.which("rclone"):
        pytest.fail("rclone is not installed (scripts/test installs it with apt-get)")
    env = cluster.shell_env(
        RCLONE_CONFIG_AISLE_TYPE="s3",
        RCLONE_CONFIG_AISLE_PROVIDER="Other",
        RCLONE_CONFIG_AISLE_ENDPOINT=cluster.endpoint,
        RCLONE_CONFIG_AISLE_ACCESS_KEY_ID=cluster.env["AWS_ACCESS_KEY_ID"],
        RCLONE_CONFIG_AISLE_SECRET_ACCESS_KEY=cluster.env["AWS_SECRET_ACCESS_KEY"],
        RCLONE_CONFIG_AISLE_REGION="us-east-1",
        RCLONE_CONFIG_AISLE_FORCE_PATH_STYLE="true",
    )
    # rclone 1.60 fails on AWS_CA_BUNDLE with its own transport, even for plain http.
    env.pop("AWS_CA_BUNDLE", None)
    src = tmp_path / "src"
    for i, name in enumerate(["a.bin", "d/b.bin", "d/e/c.bin", "sp ace.bin"]):
        p = src / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(1000 * (i + 1)))
    (src / "big.bin").write_bytes(os.urandom(12 * 1024 * 1024))  # multipart with rclone's defaults? (cutoff 200M: single)
    run = lambda *a: subprocess.run(["rclone", *a], env=env, capture_output=True, text=True, check=True)
    run("copy", str(src), f"aisle:{bucket}/r", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M")
    run("check", str(src), f"aisle:{bucket}/r")  # sizes and MD5s (ETags) agree
    listing = run("lsf", "-R", f"aisle:{bucket}/r").stdout.split()
    assert "d/e/c.bin" in listing
    run("copy", f"aisle:{bucket}/r", str(tmp_path / "back"))
    for p in src.rglob("*"):
        if p.is_file():
            assert (tmp_path / "back" / p.relative_to(src)).read_bytes() == p.read_bytes()
    run("delete", f"aisle:{bucket}/r")
    assert run("lsf", "-R", f"aisle:{bucket}/r").stdout.strip() == ""


def test_client_s3cmd(cluster, bucket, tmp_path):
    host = cluster.endpoint.removeprefix("http://")
    cfg = tmp_path / "s3cfg"
    cfg.write_text(
        "[default]\n"
        f"access_key = {cluster.env['AWS_ACCESS_KEY_ID']}\nsecret_key = {cluster.env['AWS_SECRET_ACCESS_KEY']}\n"
        f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n"
    )
    run = lambda *a: subprocess.run(["s3cmd", "-c", str(cfg), *a], capture_output=True, text=True, check=True)
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(20 * 1024 * 1024))
    run("put", str(f), f"s3://{bucket}/s3cmd/f.bin", "--multipart-chunk-size-mb=5")
    run("put", str(f), f"s3://{bucket}/s3cmd/single.bin", "--disable-multipart")
    assert f"s3://{bucket}/s3cmd/f.bin" in run("ls", "-r", f"s3://{bucket}/").stdout
    run("get", f"s3://{bucket}/s3cmd/f.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == f.read_bytes()
    info = run("info", f"s3://{bucket}/s3cmd/single.bin").stdout
    assert hashlib.md5(f.read_bytes()).hexdigest() in info
    run("del", f"s3://{bucket}/s3cmd/f.bin")
    assert "f.bin" not in run("ls", f"s3://{bucket}/s3cmd/").stdout


def test_client_s3fs(cluster, bucket):
    import s3fs

    fs = s3fs.S3FileSystem(
        key=cluster.env["AWS_ACCESS_KEY_ID"], secret=cluster.env["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": cluster.endpoint, "region_name": "us-east-1"},
        use_listings_cache=False,
    )
    data = os.urandom(7 * 1024 * 1024)
    with fs.open(f"{bucket}/fs/data.bin", "wb", block_size=5 * 1024 * 1024) as f:
        f.write(data)
    fs.pipe(f"{bucket}/fs/dir/small.txt", b"small")
    assert fs.cat(f"{bucket}/fs/dir/small.txt") == b"small"
    with fs.open(f"{bucket}/fs/data.bin", "rb") as f:
        f.seek(1_000_000)
        assert f.read(1000) == data[1_000_000:1_001_000]
    assert sorted(fs.ls(f"{bucket}/fs")) == [f"{bucket}/fs/data.bin", f"{bucket}/fs/dir"]
    assert fs.info(f"{bucket}/fs/data.bin")["size"] == len(data)
    assert fs.find(f"{bucket}/fs") == [f"{bucket}/fs/data.bin", f"{bucket}/fs/dir/small.txt"]
    fs.rm(f"{bucket}/fs", recursive=True)
    assert not fs.exists(f"{bucket}/fs/data.bin")


def test_client_curl_presigned_special_keys(cluster, s3, bucket):
    for k in SPECIAL_KEYS:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    v4 = cluster.client(signature_version="s3v4")
    for k in SPECIAL_KEYS:
        for client in (s3, v4):
            url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": k}, ExpiresIn=60)
            out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", url], capture_output=True).stdout
            assert out.endswith(b"\n200") and out[:-4] == k.encode(), (k, out[-200:])
        put = v4.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "up " + k}, ExpiresIn=60)
        code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "--data-binary", "via curl", put],
                              capture_output=True, text=True).stdout
        assert code == "200", (k, code)
        assert s3.get_object(Bucket=bucket, Key="up " + k)["Body"].read() == b"via curl"


def test_virtual_hosted_style(cluster, s3, bucket):
    """`aisle up --domain s3.aisle.test`: bucket.s3.aisle.test/key addresses the bucket."""
    s3.put_object(Bucket=bucket, Key="vh/key.txt", Body=b"virtual")
    port = cluster.endpoint.rsplit(":", 1)[1]
    url = f"http://{bucket}.s3.aisle.test:{port}/vh/key.txt"
    req = AWSRequest(method="GET", url=url)
    S3SigV4Auth(Credentials(cluster.env["AWS_ACCESS_KEY_ID"], cluster.env["AWS_SECRET_ACCESS_KEY"]), "s3", "us-east-1").add_auth(req)
    p = req.prepare()
    headers = dict(p.headers)
    headers["Host"] = f"{bucket}.s3.aisle.test:{port}"
    direct = urllib.request.Request(f"{cluster.endpoint}/vh/key.txt", headers=headers)
    with urllib.request.urlopen(direct) as r:
        assert r.read() == b"virtual"
    # Path style keeps working on the same port.
    assert s3.get_object(Bucket=bucket, Key="vh/key.txt")["Body"].read() == b"virtual"

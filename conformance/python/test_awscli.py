"""The aws CLI against a real cluster, with only the keys `aisle up` printed."""

import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import http_get


def md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()




def test_mb_cp_ls_rm_rb(cluster, tmp_path):
    name = f"cli-{os.getpid()}"
    assert cluster.aws("s3", "mb", f"s3://{name}").returncode == 0
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(1024))
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    cluster.aws("s3", "cp", "--only-show-errors", str(small), f"s3://{name}/dir/small.bin")
    cluster.aws("s3", "cp", "--only-show-errors", str(big), f"s3://{name}/dir/big.bin")
    cluster.aws("s3", "cp", "--only-show-errors", f"s3://{name}/dir/small.bin", str(tmp_path / "small.out"))
    cluster.aws("s3", "cp", "--only-show-errors", f"s3://{name}/dir/big.bin", str(tmp_path / "big.out"))
    assert (tmp_path / "small.out").read_bytes() == small.read_bytes()
    assert md5(tmp_path / "big.out") == md5(big)
    head = json.loads(cluster.aws("s3api", "head-object", "--bucket", name, "--key", "dir/big.bin").stdout)
    assert head["ETag"].strip('"').endswith(tuple(f"-{n}" for n in range(2, 100))), "200 MiB went multipart"

    top = cluster.aws("s3", "ls", f"s3://{name}").stdout
    assert "PRE dir/" in top
    rec = cluster.aws("s3", "ls", "--recursive", f"s3://{name}").stdout
    assert "dir/small.bin" in rec and "dir/big.bin" in rec

    assert cluster.aws("s3", "rb", f"s3://{name}", check=False).returncode != 0, "rb refuses a non-empty bucket"
    cluster.aws("s3", "rm", "--recursive", "--only-show-errors", f"s3://{name}")
    assert cluster.aws("s3", "ls", "--recursive", f"s3://{name}").stdout.strip() == ""
    cluster.aws("s3", "rb", f"s3://{name}")
    assert name not in cluster.aws("s3", "ls").stdout


def test_sync_tree(cluster, bucket, tmp_path):
    src = tmp_path / "src"
    files = ["a.txt", "x/b.txt", "x/y/c.txt", "x/y/z/d.txt", "sp ace/e +f.txt", "ü/ñ.txt"]
    for f in files:
        p = src / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(100) + f.encode())
    cluster.aws("s3", "sync", "--only-show-errors", str(src), f"s3://{bucket}/tree")
    dst = tmp_path / "dst"
    cluster.aws("s3", "sync", "--only-show-errors", f"s3://{bucket}/tree", str(dst))
    for f in files:
        assert (dst / f).read_bytes() == (src / f).read_bytes(), f
    # A second sync transfers nothing.
    again = cluster.aws("s3", "sync", str(src), f"s3://{bucket}/tree")
    assert again.stdout.strip() == ""


def test_presign_and_curl(cluster, bucket, tmp_path):
    f = tmp_path / "p.bin"
    f.write_bytes(b"presigned payload")
    cluster.aws("s3", "cp", "--only-show-errors", str(f), f"s3://{bucket}/p q+r.bin")
    url = cluster.aws("s3", "presign", f"s3://{bucket}/p q+r.bin", "--expires-in", "300").stdout.strip()
    status, body = http_get(url)
    assert status == 200 and body == b"presigned payload"
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", url], capture_output=True, text=True).stdout
    assert out.endswith("200") and out.startswith("presigned payload")
    # Tampered signature.
    tampered = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    assert http_get(tampered)[0] == 403
    # Another key under the same signature.
    assert http_get(url.replace("p%20q%2Br.bin", "other.bin"))[0] == 403
    # Expired.
    short = cluster.aws("s3", "presign", f"s3://{bucket}/p q+r.bin", "--expires-in", "1").stdout.strip()
    time.sleep(2.5)
    status, body = http_get(short)
    assert status == 403 and b"AccessDenied" in body


def test_list_objects_v2_max_keys_7_over_1000_keys(cluster, s3, bucket):
    from concurrent.futures import ThreadPoolExecutor

    keys = [f"k/{i:04d}" for i in range(1000)]
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode()), keys))
    # The CLI's own pagination, 7 keys a request.
    out = cluster.aws("s3api", "list-objects-v2", "--bucket", bucket, "--page-size", "7", "--output", "json").stdout
    listed = [o["Key"] for o in json.loads(out)["Contents"]]
    assert listed == sorted(keys)
    # --max-keys 7 returns one page; its token leads to the next page, through the CLI too.
    first = json.loads(cluster.aws("s3api", "list-objects-v2", "--bucket", bucket, "--max-keys", "7").stdout)
    assert [o["Key"] for o in first["Contents"]] == sorted(keys)[:7] and first["IsTruncated"]
    second = json.loads(cluster.aws(
        "s3api", "list-objects-v2", "--bucket", bucket, "--max-keys", "7",
        "--continuation-token", first["NextContinuationToken"]).stdout)
    assert [o["Key"] for o in second["Contents"]] == sorted(keys)[7:14]
    # The same walk by hand, page by page, as the API returns it.
    seen, token, pages = [], None, 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, MaxKeys=7, **kw)
        pages += 1
        assert page["KeyCount"] <= 7
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == sorted(keys)
    assert pages == 143

    # Objects spread over every target and mountpath, as `aisle cluster show` reports.
    show = subprocess.run(
        [os.environ.get("AISLE_BIN", str(__import__("conftest").aisle_bin())), "cluster", "show", "--json"],
        env=cluster.shell_env(), capture_output=True, text=True, check=True,
    )
    view = json.loads(show.stdout)
    assert len(view["targets"]) == 3
    for t in view["targets"]:
        counts = t["status"]["objects_per_mountpath"]
        assert len(counts) == 2 and all(c > 100 for c in counts), (t["id"], counts)

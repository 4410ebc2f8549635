"""Transform on read through plain S3 clients: header, presigned query, alias buckets; built-in,
exec and hpush (AIStore SDK) transformers; HTTP semantics and failures."""

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import boto3.s3.transfer
import botocore.config
import botocore.exceptions
import pytest
from PIL import Image

from conftest import REPO, aisle_bin, http_get, show

RESIZE_ARGS = '{"resize":{"w":64,"h":64}}'
EXAMPLES = REPO / "examples" / "etl"


def etl_client(cluster, pipeline, args=None, **config):
    """A boto3 client that names a transform on every GET and HEAD (x-ais-etl headers)."""
    c = cluster.client(**config)

    def add(request, **_):
        request.headers["x-ais-etl"] = pipeline
        if args is not None:
            request.headers["x-ais-etl-args"] = args

    c.meta.events.register("before-sign.s3.GetObject", add)
    c.meta.events.register("before-sign.s3.HeadObject", add)
    return c


def aisle(cluster, *args, check=True):
    return subprocess.run([aisle_bin(), *args], env=cluster.shell_env(), capture_output=True, text=True, check=check)


def init_spec(cluster, tmp_path, spec):
    p = tmp_path / f"{spec['name']}.json"
    p.write_text(json.dumps(spec))
    aisle(cluster, "etl", "init", str(p))


def jpeg(w=640, h=480, seed=0):
    img = Image.new("RGB", (w, h), (seed % 256, 80, 160))
    for x in range(0, w, 7):
        img.putpixel((x, (x * 3 + seed) % h), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()




@pytest.fixture
def photos(s3, bucket):
    s3.put_object(Bucket=bucket, Key="cats/cat.jpg", Body=jpeg(), ContentType="image/jpeg")
    return bucket


def test_resize_by_header_presigned_url_and_alias_are_identical(cluster, photos, tmp_path):
    c = etl_client(cluster, "resize", RESIZE_ARGS)
    got = c.get_object(Bucket=photos, Key="cats/cat.jpg")
    by_header = got["Body"].read()
    img = Image.open(io.BytesIO(by_header))
    assert img.size == (64, 64) and img.format == "JPEG"
    assert got["ResponseMetadata"]["HTTPHeaders"]["x-ais-etl-applied"] == "resize"
    assert got["ContentType"] == "image/jpeg"
    head = c.head_object(Bucket=photos, Key="cats/cat.jpg")
    assert head["ContentLength"] == len(by_header)
    source = cluster.client().head_object(Bucket=photos, Key="cats/cat.jpg")
    assert head["ETag"] != source["ETag"]

    # Presigned (SigV4) with the transform in the query, fetched by curl.
    signer = cluster.client(signature_version="s3v4")

    def add_query(request, **_):
        sep = "&" if "?" in request.url else "?"
        request.url += sep + urllib.parse.urlencode({"x-ais-etl": "resize", "x-ais-etl-args": RESIZE_ARGS})

    signer.meta.events.register("before-sign.s3.GetObject", add_query)
    url = signer.generate_presigned_url("get_object", Params={"Bucket": photos, "Key": "cats/cat.jpg"}, ExpiresIn=300)
    out = subprocess.run(["curl", "-sf", url], capture_output=True, check=True).stdout
    assert out == by_header
    # The transform is signed: changing or dropping it breaks the signature.
    assert http_get(url.replace("resize", "grayscale", 1))[0] == 403
    assert http_get(url.replace("x-ais-etl=resize&", "", 1))[0] == 403

    # An alias bucket, read with the unmodified aws CLI.
    alias = f"{photos}-thumbs"
    aisle(cluster, "etl", "bind", alias, "--source", photos, "--pipeline", "resize", "--args", RESIZE_ARGS)
    cluster.aws("s3", "cp", "--only-show-errors", f"s3://{alias}/cats/cat.jpg", str(tmp_path / "cp.jpg"))
    cluster.aws("s3", "sync", "--only-show-errors", f"s3://{alias}", str(tmp_path / "sync"))
    assert (tmp_path / "cp.jpg").read_bytes() == by_header
    assert (tmp_path / "sync" / "cats" / "cat.jpg").read_bytes() == by_header
    listed = cluster.client().list_objects_v2(Bucket=alias)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("cats/cat.jpg", len(by_header))]
    # Aliases are read-only.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cluster.client().put_object(Bucket=alias, Key="x", Body=b"x")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 405
    aisle(cluster, "etl", "unbind", alias)


def test_large_deterministic_output_downloads_by_ranges(cluster, s3, bucket, tmp_path):
    raw = os.urandom(1 << 20) * 50  # 50 MiB, compressible
    s3.put_object(Bucket=bucket, Key="big.gz", Body=gzip.compress(raw, compresslevel=1))
    c = etl_client(cluster, "gunzip")
    whole = c.get_object(Bucket=bucket, Key="big.gz")["Body"].read()
    assert hashlib.md5(whole).digest() == hashlib.md5(raw).digest()
    cfg = boto3.s3.transfer.TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4)
    c.download_file(bucket, "big.gz", str(tmp_path / "out"), Config=cfg)  # HEAD, then ranged GETs
    assert hashlib.md5((tmp_path / "out").read_bytes()).digest() == hashlib.md5(raw).digest()
    r = c.get_object(Bucket=bucket, Key="big.gz", Range="bytes=1000-1999")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert r["ContentRange"] == f"bytes 1000-1999/{len(raw)}"
    assert r["Body"].read() == raw[1000:2000]
    # Through an alias, the aws CLI splits the download by the listed (transformed) size.
    alias = f"{bucket}-plain"
    aisle(cluster, "etl", "bind", alias, "--source", bucket, "--pipeline", "gunzip")
    cluster.aws("s3", "cp", "--only-show-errors", f"s3://{alias}/big.gz", str(tmp_path / "cli"))
    assert hashlib.md5((tmp_path / "cli").read_bytes()).digest() == hashlib.md5(raw).digest()
    aisle(cluster, "etl", "unbind", alias)
    # --materialize transforms every object up front, as a job.
    out = aisle(cluster, "etl", "bind", alias + "-m", "--source", bucket, "--pipeline", "gunzip", "--materialize", "--wait").stdout
    assert "materialize" in out and "done" in out and "1/1 objects" in out, out
    aisle(cluster, "etl", "unbind", alias + "-m")


def test_pipelines_and_selection_errors(cluster, photos, s3):
    s3.put_object(Bucket=photos, Key="cat.jpg.gz", Body=gzip.compress(jpeg(seed=3)))
    out = etl_client(cluster, "gunzip,resize,md5", RESIZE_ARGS).get_object(Bucket=photos, Key="cat.jpg.gz")["Body"].read()
    resized = etl_client(cluster, "resize", RESIZE_ARGS).get_object(Bucket=photos, Key="cats/cat.jpg")["Body"].read()
    gunzipped = etl_client(cluster, "gunzip,resize", RESIZE_ARGS).get_object(Bucket=photos, Key="cat.jpg.gz")["Body"].read()
    assert Image.open(io.BytesIO(gunzipped)).size == (64, 64) and gunzipped != resized
    assert out == hashlib.md5(gunzipped).hexdigest().encode()
    for pipeline, code, status in [
        ("no-such-stage", "InvalidEtl", 400),
        ("Bad_Name", "InvalidEtl", 400),
        ("a1,a2,a3,a4,a5,a6,a7,a8,a9", "InvalidEtl", 400),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            etl_client(cluster, pipeline, retries={"max_attempts": 1}).get_object(Bucket=photos, Key="cats/cat.jpg")
        assert e.value.response["Error"]["Code"] == code
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    with pytest.raises(botocore.exceptions.ClientError) as e:
        etl_client(cluster, "resize", '{"resize":{"w":0}}').get_object(Bucket=photos, Key="cats/cat.jpg")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    s3.put_object(Bucket=photos, Key="notes.txt", Body=b"not an image")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        etl_client(cluster, "resize", RESIZE_ARGS, retries={"max_attempts": 1}).get_object(Bucket=photos, Key="notes.txt")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 422
    with pytest.raises(botocore.exceptions.ClientError) as e:
        etl_client(cluster, "resize", RESIZE_ARGS).get_object(Bucket=photos, Key="missing.jpg")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"


def test_exec_and_aistore_sdk_transformers(cluster, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="t/hello.txt", Body=b"hello world\n")
    init_spec(cluster, tmp_path, {"name": "tr-upper", "communicator": "exec", "command": ["tr", "a-z", "A-Z"], "deterministic": True})
    init_spec(cluster, tmp_path, {"name": "py-upper", "communicator": "exec", "command": [sys.executable, str(EXAMPLES / "upper.py")]})
    init_spec(cluster, tmp_path, {
        "name": "ais-md5", "communicator": "hpush", "deterministic": True, "workdir": str(EXAMPLES),
        "command": [sys.executable, "-m", "uvicorn", "ais_md5_server:fastapi_app", "--host", "127.0.0.1", "--port", "{port}"],
        "init_timeout": "60s",
    })
    wait_ready(cluster, "ais-md5")
    assert etl_client(cluster, "tr-upper").get_object(Bucket=bucket, Key="t/hello.txt")["Body"].read() == b"HELLO WORLD\n"
    assert etl_client(cluster, "py-upper").get_object(Bucket=bucket, Key="t/hello.txt")["Body"].read() == b"HELLO WORLD\n"
    digest = hashlib.md5(b"hello world\n").hexdigest().encode()
    assert etl_client(cluster, "ais-md5").get_object(Bucket=bucket, Key="t/hello.txt")["Body"].read() == digest
    for name, expected in [("tr-upper", b"HELLO WORLD\n"), ("ais-md5", digest)]:
        alias = f"{bucket}-{name}"
        aisle(cluster, "etl", "bind", alias, "--source", bucket, "--pipeline", name)
        assert cluster.aws("s3", "cp", f"s3://{alias}/t/hello.txt", "-").stdout.encode() == expected
        aisle(cluster, "etl", "unbind", alias)

    # A transformer process killed with -9 is restarted; the next GET succeeds.
    show = json.loads(aisle(cluster, "etl", "show", "ais-md5", "--json").stdout)
    pids = [st["Ok"]["pid"] for _, st in show["targets"]]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    wait_ready(cluster, "ais-md5", restarts=1)
    s3.put_object(Bucket=bucket, Key="t/again.txt", Body=b"again")
    got = etl_client(cluster, "ais-md5").get_object(Bucket=bucket, Key="t/again.txt")["Body"].read()
    assert got == hashlib.md5(b"again").hexdigest().encode()
    for name in ["tr-upper", "py-upper", "ais-md5"]:
        aisle(cluster, "etl", "rm", name)


def wait_ready(cluster, name, restarts=0, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        show = json.loads(aisle(cluster, "etl", "show", name, "--json").stdout)
        states = [st.get("Ok") for _, st in show["targets"]]
        if all(s and s["ready"] and s["restarts"] >= restarts for s in states):
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} not ready: {show}")


def test_failures_are_visible(cluster, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="obj", Body=b"x" * 100_000)
    init_spec(cluster, tmp_path, {"name": "dies-det", "communicator": "exec", "deterministic": True,
                                  "command": ["sh", "-c", "head -c 1000; exit 3"]})
    init_spec(cluster, tmp_path, {"name": "dies-stream", "communicator": "exec",
                                  "command": ["sh", "-c", "head -c 300000 /dev/zero; exit 3"]})
    init_spec(cluster, tmp_path, {"name": "hangs", "communicator": "exec", "deterministic": True,
                                  "command": ["sleep", "60"], "obj_timeout": 1})
    no_retry = {"retries": {"max_attempts": 1}}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        etl_client(cluster, "dies-det", **no_retry).get_object(Bucket=bucket, Key="obj")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    # A streamed (non-deterministic) transform that dies after the headers: the body is cut,
    # the client sees an error, never a short object taken for whole.
    r = etl_client(cluster, "dies-stream", **no_retry).get_object(Bucket=bucket, Key="obj")
    assert "content-length" not in r["ResponseMetadata"]["HTTPHeaders"], "a streamed transform is chunked"
    with pytest.raises(Exception):
        r["Body"].read()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        etl_client(cluster, "hangs", **no_retry).get_object(Bucket=bucket, Key="obj")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 504
    # Range on a non-deterministic transform is refused loudly.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        etl_client(cluster, "dies-stream", **no_retry).get_object(Bucket=bucket, Key="obj", Range="bytes=0-9")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    errors = aisle(cluster, "etl", "errors", "dies-det").stdout
    assert "obj" in errors and "500" in errors
    for name in ["dies-det", "dies-stream", "hangs"]:
        aisle(cluster, "etl", "rm", name)


def test_server_side_resize_moves_fewer_bytes(cluster, s3, bucket):
    photos = [jpeg(1024, 768, seed=i) for i in range(30)]
    for i, p in enumerate(photos):
        s3.put_object(Bucket=bucket, Key=f"p/{i:03d}.jpg", Body=p)

    def bytes_out():
        view = json.loads(aisle(cluster, "cluster", "show", "--json").stdout)
        return view["gateway_bytes_out"]

    before = bytes_out()
    for i in range(len(photos)):
        s3.get_object(Bucket=bucket, Key=f"p/{i:03d}.jpg")["Body"].read()
    raw = bytes_out() - before
    c = etl_client(cluster, "resize", '{"resize":{"w":224,"h":224}}')
    before = bytes_out()
    for i in range(len(photos)):
        c.get_object(Bucket=bucket, Key=f"p/{i:03d}.jpg")["Body"].read()
    resized = bytes_out() - before
    assert raw == sum(len(p) for p in photos)
    assert resized * 4 < raw, (resized, raw)


def test_offline_etl_job(cluster, s3, bucket):
    for i in range(20):
        s3.put_object(Bucket=bucket, Key=f"in/{i:02d}.txt", Body=f"line {i}\n".encode() * 100)
    out = f"{bucket}-gz"
    s3.create_bucket(Bucket=out)
    dry = aisle(cluster, "etl", "run", "gzip", "--source", bucket, "--prefix", "in/", "--output-bucket", out, "--dry-run", "--wait").stdout
    assert "done" in dry and "20/20 objects" in dry
    assert s3.list_objects_v2(Bucket=out)["KeyCount"] == 0, "a dry run writes nothing"
    aisle(cluster, "etl", "run", "gzip", "--source", bucket, "--prefix", "in/", "--output-bucket", out, "--wait")
    for i in range(20):
        got = s3.get_object(Bucket=out, Key=f"in/{i:02d}.txt")
        assert gzip.decompress(got["Body"].read()) == f"line {i}\n".encode() * 100
        assert got["ContentType"] == "application/gzip"
    bad = aisle(cluster, "etl", "run", "no-such", "--source", bucket, "--output-bucket", out, "--wait", check=False)
    assert bad.returncode != 0 and "400" in bad.stderr


def test_offline_etl_outputs_go_target_to_target(cluster, s3, bucket):
    """Direct put: each source holder transforms and writes to the output's owner, so the
    gateway's process moves (almost) none of the bytes — measured on its socket I/O."""
    n, size = 60, 256 * 1024
    data = {f"d/{i:03d}": os.urandom(size // 2) * 2 for i in range(n)}
    for k, v in data.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
    out = f"{bucket}-direct"
    s3.create_bucket(Bucket=out)
    gw = cluster.pid("gateway")

    def gateway_io():
        io = dict(l.split(": ") for l in open(f"/proc/{gw}/io").read().splitlines())
        return int(io["rchar"]) + int(io["wchar"])

    def direct_puts():
        total = 0
        for t in show(cluster)["targets"]:
            body = urllib.request.urlopen(urllib.request.Request(
                t["url"] + "/_aisle/metrics",
                headers={"Authorization": f"Bearer {(cluster.data / 'metrics-token').read_text().strip()}"})).read()
            for line in body.decode().splitlines():
                if line.startswith("aisle_etl_direct_puts_total "):
                    total += int(float(line.split()[1]))
        return total

    before_io, before_puts = gateway_io(), direct_puts()
    aisle(cluster, "etl", "run", "identity", "--source", bucket, "--prefix", "d/", "--output-bucket", out, "--wait")
    moved = gateway_io() - before_io
    print(f"offline ETL of {n} objects ({n * size} bytes): the gateway process moved {moved} bytes")
    assert direct_puts() - before_puts == n
    for k, v in data.items():
        got = s3.get_object(Bucket=out, Key=k)
        assert got["Body"].read() == v and got["ETag"].strip('"') == hashlib.md5(v).hexdigest()
    # 15 MiB of outputs were written; through the gateway they would have crossed its process
    # twice (30 MiB). It moved only the job's control traffic.
    assert moved < n * size / 20, f"the gateway moved {moved} bytes"


def test_get_batch_transforms_each_entry_on_its_target(cluster, s3, bucket, tmp_path):
    import tarfile

    objs = {f"b/{i}.txt": f"hello {i}\n".encode() for i in range(4)}
    for k, v in objs.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
    # Not deterministic: its output size is known only once it ran (staged on the target).
    init_spec(cluster, tmp_path, {"name": "batch-upper", "communicator": "exec", "command": ["tr", "a-z", "A-Z"]})
    entries = [
        {"bucket": bucket, "key": "b/0.txt", "etl": "md5"},
        {"bucket": bucket, "key": "b/1.txt", "etl": "batch-upper"},
        {"bucket": bucket, "key": "b/2.txt"},
        {"bucket": bucket, "key": "b/3.txt", "etl": "batch-upper,md5"},
        {"bucket": bucket, "key": "b/0.txt", "etl": "gzip", "etl_args": '{"gzip":{"level":1}}'},
    ]
    spec = tmp_path / "batch.json"
    spec.write_text(json.dumps({"entries": entries}))
    out = tmp_path / "out.tar"
    aisle(cluster, "batch", "--spec", str(spec), "-o", str(out))
    with tarfile.open(out) as t:
        got = [(m.name, t.extractfile(m).read()) for m in t.getmembers()]
    import gzip

    assert [n for n, _ in got] == ["b/0.txt", "b/1.txt", "b/2.txt", "b/3.txt", "b/0.txt"]
    assert got[0][1] == hashlib.md5(b"hello 0\n").hexdigest().encode()
    assert got[1][1] == b"HELLO 1\n"
    assert got[2][1] == b"hello 2\n"
    assert got[3][1] == hashlib.md5(b"HELLO 3\n").hexdigest().encode()
    assert gzip.decompress(got[4][1]) == b"hello 0\n"
    # Bad entries are refused before anything is sent.
    for bad, code in [({"bucket": bucket, "key": "b/0.txt", "etl": "no-such-etl"}, "InvalidEtl")]:
        spec.write_text(json.dumps({"entries": [bad]}))
        r = aisle(cluster, "batch", "--spec", str(spec), "-o", str(out), check=False)
        assert r.returncode != 0 and code in r.stderr, r.stderr
    aisle(cluster, "etl", "rm", "batch-upper")


def test_a_transform_of_one_shard_member(cluster, s3, bucket, tmp_path):
    import io
    import tarfile

    buf = io.BytesIO()
    members = {f"s/{i}.txt": f"member {i}\n".encode() for i in range(5)}
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket=bucket, Key="m.tar", Body=buf.getvalue())
    c = etl_client(cluster, "md5")

    def add(request, **_):
        request.url += ("&" if "?" in request.url else "?") + "archpath=s%2F3.txt"

    c.meta.events.register("before-sign.s3.GetObject", add)
    c.meta.events.register("before-sign.s3.HeadObject", add)
    want = hashlib.md5(members["s/3.txt"]).hexdigest().encode()
    assert c.get_object(Bucket=bucket, Key="m.tar")["Body"].read() == want
    assert c.head_object(Bucket=bucket, Key="m.tar")["ContentLength"] == len(want)
    # The same inside GetBatch, next to a non-deterministic transform of another member.
    init_spec(cluster, tmp_path, {"name": "member-upper", "communicator": "exec", "command": ["tr", "a-z", "A-Z"]})
    spec = tmp_path / "b.json"
    spec.write_text(json.dumps({"entries": [
        {"bucket": bucket, "key": "m.tar", "archpath": "s/3.txt", "etl": "md5"},
        {"bucket": bucket, "key": "m.tar", "archpath": "s/1.txt", "etl": "member-upper"},
    ]}))
    out = tmp_path / "b.tar"
    aisle(cluster, "batch", "--spec", str(spec), "-o", str(out))
    with tarfile.open(out) as t:
        got = [t.extractfile(m).read() for m in t.getmembers()]
    assert got == [want, b"MEMBER 1\n"]
    aisle(cluster, "etl", "rm", "member-upper")

"""The server communicators -- hpush, hpull, ws -- with AIStore's own SDK servers, unchanged,
with and without the file-path hand-off (`argument: fqn`); containment of crashes, hangs and
floods; offline jobs through them."""

import concurrent.futures
import hashlib
import io
import json
import os
import signal
import sys
import time
import urllib.request

import botocore.exceptions
import pytest
from PIL import Image

from conftest import show
from test_etl import EXAMPLES, aisle, etl_client, init_spec, jpeg, wait_ready

SERVERS = EXAMPLES / "ais_sdk_servers.py"


def spec(name, transform, comm, variant="fastapi", argument="", **extra):
    s = {
        "name": name, "communicator": comm, "deterministic": True, "init_timeout": "60s",
        "command": [sys.executable, str(SERVERS), transform, variant, "{port}"],
    }
    if argument:
        s["argument"] = argument
    s.update(extra)
    return s


def register(cluster, tmp_path, *specs):
    for s in specs:
        init_spec(cluster, tmp_path, s)
    for s in specs:
        wait_ready(cluster, s["name"])


def remove(cluster, *names):
    for n in names:
        aisle(cluster, "etl", "rm", n)


def get(cluster, bucket, key, pipeline, args=None, **config):
    return etl_client(cluster, pipeline, args, **config).get_object(Bucket=bucket, Key=key)["Body"].read()


COMBOS = [
    ("hpush", "fastapi", ""), ("hpush", "fastapi", "fqn"), ("hpush", "flask", ""), ("hpush", "http", "fqn"),
    ("hpull", "fastapi", ""), ("hpull", "fastapi", "fqn"), ("hpull", "flask", ""), ("hpull", "http", ""),
    ("ws", "fastapi", ""), ("ws", "fastapi", "fqn"),
]


def test_every_communicator_runs_aistore_sdk_servers(cluster, s3, bucket, tmp_path):
    small = b"hello world\n"
    big = os.urandom(3 << 20)  # several chunks: streamed in fragments over ws
    s3.put_object(Bucket=bucket, Key="t/hello.txt", Body=small)
    s3.put_object(Bucket=bucket, Key="t/big köy #1.bin", Body=big)
    names = []
    specs = []
    for comm, variant, argument in COMBOS:
        tag = f"{comm}-{variant}-{argument or 'b'}"
        specs.append(spec(f"md5-{tag}", "md5", comm, variant, argument))
        specs.append(spec(f"echo-{tag}", "echo", comm, variant, argument, deterministic=False))
        names += [f"md5-{tag}", f"echo-{tag}"]
    register(cluster, tmp_path, *specs)
    for comm, variant, argument in COMBOS:
        tag = f"{comm}-{variant}-{argument or 'b'}"
        assert get(cluster, bucket, "t/hello.txt", f"md5-{tag}") == hashlib.md5(small).hexdigest().encode(), tag
        assert get(cluster, bucket, "t/big köy #1.bin", f"md5-{tag}") == hashlib.md5(big).hexdigest().encode(), tag
        assert get(cluster, bucket, "t/big köy #1.bin", f"echo-{tag}") == big, tag
    # Deterministic outputs keep exact HEAD and Range through the cache on every communicator.
    for comm in ["hpush", "hpull", "ws"]:
        c = etl_client(cluster, f"md5-{comm}-fastapi-b")
        head = c.head_object(Bucket=bucket, Key="t/big köy #1.bin")
        assert head["ContentLength"] == 32
        part = c.get_object(Bucket=bucket, Key="t/big köy #1.bin", Range="bytes=4-11")["Body"].read()
        assert part == hashlib.md5(big).hexdigest().encode()[4:12]
    remove(cluster, *names)


def test_file_path_hand_off(cluster, s3, bucket, tmp_path):
    """With `argument: fqn` the transformer gets the object's local path (an AIStore server with
    ETL_DIRECT_FQN=true passes it to transform() as a str); without it, or where the input is
    not one stored file (a pipeline's later stage), it gets the bytes."""
    s3.put_object(Bucket=bucket, Key="x", Body=b"payload")
    env = {"ETL_DIRECT_FQN": "true"}
    specs = [spec(f"how-{c}-{a or 'b'}", "how", c, "fastapi", a, env=env)
             for c in ["hpush", "ws", "hpull"] for a in ["fqn", ""]]
    register(cluster, tmp_path, *specs)
    for c in ["hpush", "ws", "hpull"]:
        assert get(cluster, bucket, "x", f"how-{c}-fqn") == b"path", c
        if c != "hpull":
            assert get(cluster, bucket, "x", f"how-{c}-b") == b"bytes", c
            # A later stage gets the previous stage's bytes, never a path.
            assert get(cluster, bucket, "x", f"identity,how-{c}-fqn") == b"bytes", c
    # hpull reads the stored object, so it cannot follow another stage.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        get(cluster, bucket, "x", "identity,how-hpull-b")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # The read an hpull transformer makes needs the node's secret: a guessed URL is refused.
    t = show(cluster)["targets"][0]["url"]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{t}/_aisle/etl/source/{'0' * 32}/{bucket}/x")
    assert e.value.code == 403
    remove(cluster, *[s["name"] for s in specs])


def test_ws_crash_hang_and_flood_are_contained(cluster, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="o", Body=b"abc")
    register(cluster, tmp_path,
             spec("ws-md5", "md5", "ws", concurrency=2),
             spec("ws-sleep", "sleep", "ws", deterministic=False, obj_timeout=1))
    no_retry = {"retries": {"max_attempts": 1}}
    # Hang: the per-object timeout answers 504; the next object still works.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        get(cluster, bucket, "o", "ws-sleep", "5", **no_retry)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 504
    assert get(cluster, bucket, "o", "ws-sleep", "0") == b"abc"
    # Flood: 48 distinct objects at once through 2 connections per target, all correct.
    objs = {f"f/{i}": os.urandom(1000 + i) for i in range(48)}
    for k, v in objs.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
    c = etl_client(cluster, "ws-md5")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = dict(pool.map(lambda k: (k, c.get_object(Bucket=bucket, Key=k)["Body"].read()), objs))
    assert got == {k: hashlib.md5(v).hexdigest().encode() for k, v in objs.items()}
    # Crash: kill -9 every ws transformer process; it is restarted and the next GET succeeds
    # on a new connection (none opened to the dead process is reused).
    st = json.loads(aisle(cluster, "etl", "show", "ws-md5", "--json").stdout)
    for _, s in st["targets"]:
        os.kill(s["Ok"]["pid"], signal.SIGKILL)
    time.sleep(0.5)
    wait_ready(cluster, "ws-md5", restarts=1)
    s3.put_object(Bucket=bucket, Key="after", Body=b"after")
    assert get(cluster, bucket, "after", "ws-md5") == hashlib.md5(b"after").hexdigest().encode()
    remove(cluster, "ws-md5", "ws-sleep")


def test_offline_resize_job_over_ws_with_fqn(cluster, s3, bucket, tmp_path):
    n = 40
    for i in range(n):
        s3.put_object(Bucket=bucket, Key=f"img/{i:03d}.jpg", Body=jpeg(640, 480, seed=i), ContentType="image/jpeg")
    register(cluster, tmp_path, spec("ws-resize", "resize", "ws", argument="fqn", content_type="image/jpeg"))
    out = f"{bucket}-small"
    s3.create_bucket(Bucket=out)
    aisle(cluster, "etl", "run", "ws-resize", "--source", bucket, "--prefix", "img/", "--output-bucket", out,
          "--args", '{"w": 64, "h": 64}', "--wait")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=out)["Contents"]]
    assert len(keys) == n
    for k in keys[:5]:
        img = Image.open(io.BytesIO(s3.get_object(Bucket=out, Key=k)["Body"].read()))
        assert max(img.size) == 64 and img.format == "JPEG"
    remove(cluster, "ws-resize")

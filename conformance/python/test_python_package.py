"""The `aisle` Python package (python/, installed into .venv by scripts/test) against a real
cluster, without torch: the client, map-style and iterable datasets, rank/worker splits,
seeded shuffles, mid-epoch resume in a new process, server transforms, GetBatch with transforms
and the per-sample error policy."""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from aisle import AisleError, Client, ObjectDataset, ShardMemberDataset, ShardSampleDataset, Split

N_SHARDS, PER_SHARD = 6, 10


@pytest.fixture(scope="module")
def client(cluster):
    return Client(cluster.endpoint, cluster.env["AWS_ACCESS_KEY_ID"], cluster.env["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture(scope="module")
def data(client):
    """A bucket with 25 small objects and 6 WebDataset shards of 10 samples (jpg + cls)."""
    b = f"py-{os.getpid()}"
    client.create_bucket(b)
    for i in range(25):
        client.put(b, f"obj/{i:03d}.bin", f"object {i}".encode())
    shards = []
    for s in range(N_SHARDS):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for i in range(PER_SHARD):
                for ext, payload in [("jpg", f"img {s}-{i}".encode() * 20), ("cls", str(i % 3).encode())]:
                    info = tarfile.TarInfo(f"s{s}/{i:04d}.{ext}")
                    info.size = len(payload)
                    t.addfile(info, io.BytesIO(payload))
        key = f"shards/shard-{s:02d}.tar"
        client.put(b, key, buf.getvalue())
        shards.append(key)
    return b, shards


def test_client_objects_transforms_members_and_errors(client, data):
    b, shards = data
    assert b in client.list_buckets()
    listed = list(client.list_objects(b, "obj/", page_size=7))
    assert [k for k, _ in listed] == [f"obj/{i:03d}.bin" for i in range(25)]
    assert client.get(b, "obj/003.bin") == b"object 3"
    assert client.get(b, "obj/003.bin", byte_range=(0, 6)) == b"object"
    assert client.get(b, "obj/003.bin", etl="md5") == hashlib.md5(b"object 3").hexdigest().encode()
    assert client.head(b, "obj/003.bin")["content-length"] == "8"
    members = client.archive_members(b, shards[0])
    assert len(members) == 2 * PER_SHARD and members[0]["name"] == "s0/0000.jpg"
    assert client.get(b, shards[0], archpath="s0/0001.cls") == b"1"
    with pytest.raises(AisleError) as e:
        client.get(b, "obj/nope")
    assert e.value.status == 404 and e.value.code == "NoSuchKey"
    with pytest.raises(AisleError) as e:
        client.get(b, "obj/003.bin", etl="no-such-transform")
    assert e.value.code == "InvalidEtl"


def test_offline_job_followed_to_its_end(client, data):
    """`Client.wait` holds each job query at the gateway (`?wait_ms=`) until the job ends:
    the outputs are there when it returns, and a bad `wait_ms` is a clear 400."""
    b, _ = data
    out = f"{b}-md5"
    client.create_bucket(out)
    job = client.start_etl_job(b, out, "md5", prefix="obj/")
    # A job of 25 tiny objects takes well under a second: held at the gateway, the first
    # answer is already the end (asked without waiting, it would say "running").
    end = client.job(job.id, wait=20.0)
    assert end.status == "done" and end.done == end.total == 25, end
    seen = []
    assert client.wait(job.id, progress=seen.append) == end and seen == [end]
    assert client.get(out, "obj/007.bin") == hashlib.md5(b"object 7").hexdigest().encode()
    assert client.job(job.id, wait=1.0) == end  # an ended job answers at once
    with pytest.raises(AisleError) as e:
        client.request("GET", f"/_aisle/v1/jobs/{job.id}", {"wait_ms": "soon"})
    assert e.value.status == 400 and "wait_ms" in str(e.value), e.value
    with pytest.raises(AisleError) as e:
        client.job("etl-nosuchjob", wait=0.2)
    assert e.value.status == 404, e.value


def test_get_batch_with_transforms_and_the_error_policy(client, data):
    b, shards = data
    got = list(client.get_batch([
        {"bucket": b, "key": "obj/001.bin"},
        {"bucket": b, "key": "obj/002.bin", "etl": "md5"},
        {"bucket": b, "key": shards[1], "archpath": "s1/0002.jpg"},
    ]))
    assert got[0] == ("obj/001.bin", b"object 1")
    assert got[1] == ("obj/002.bin", hashlib.md5(b"object 2").hexdigest().encode())
    assert got[2][1] == b"img 1-2" * 20
    keys = ["obj/000.bin", "obj/missing.bin", "obj/002.bin"]
    skip = ObjectDataset(client, b, keys=keys, etl="md5", on_error="skip")
    batches = list(skip.batches(batch_size=2, prefetch=1))
    assert [len(x) for x in batches] == [1, 1] and skip.skipped == 1
    assert batches[1][0] == hashlib.md5(b"object 2").hexdigest().encode()
    strict = ObjectDataset(client, b, keys=keys, on_error="raise")
    with pytest.raises(AisleError):
        list(strict.batches(batch_size=3))


def test_map_style_datasets(client, data):
    b, shards = data
    objs = ObjectDataset(client, b, prefix="obj/", transform=lambda x: x.decode())
    assert len(objs) == 25 and objs[7] == "object 7"
    every = [x for batch in objs.batches(batch_size=8, prefetch=2) for x in batch]
    assert every == [f"object {i}" for i in range(25)]
    members = ShardMemberDataset(client, b, shards[:2])
    assert len(members) == 2 * 2 * PER_SHARD
    assert members[3] == b"1"  # s0/0001.cls
    assert [len(x) for x in members.batches(batch_size=16)] == [16, 16, 8]
    # Server transforms per member: on the shard's target, one by one and inside GetBatch.
    md5 = ShardMemberDataset(client, b, shards[:1], etl="md5")
    want = hashlib.md5(b"img 0-1" * 20).hexdigest().encode()
    assert md5[2] == want  # s0/0001.jpg
    assert next(iter(md5.batches(batch_size=4)))[2] == want


def all_keys():
    return {(s, f"s{s}/{i:04d}") for s in range(N_SHARDS) for i in range(PER_SHARD)}


def test_every_sample_exactly_once_across_2_ranks_and_3_workers(client, data):
    b, shards = data
    seen = []
    for rank in range(2):
        ds = ShardSampleDataset(client, b, shards, shuffle=True, seed=7, rank=rank, world_size=2)
        counts = []
        for worker in range(3):
            idx = ds._my_samples(Split(rank, 2, worker, 3))
            counts.append(len(idx))
            seen += [ds.samples[i] for i in idx]
        assert sum(counts) == len(ds) == N_SHARDS * PER_SHARD // 2
    assert sorted(seen) == sorted(all_keys()) and len(seen) == len(set(seen))
    # Reading for real (one worker): the rank's samples, grouped jpg+cls.
    ds = ShardSampleDataset(client, b, shards, shuffle=True, seed=7, rank=1, world_size=2)
    samples = list(ds)
    assert len(samples) == 30 and all(set(s) >= {"__key__", "jpg", "cls"} for s in samples)
    # Uneven: 60 samples over 7 ranks, every rank the same count.
    assert {len(ShardSampleDataset(client, b, shards, rank=r, world_size=7)) for r in range(7)} == {9}


def test_shuffle_depends_on_seed_and_epoch_only(client, data):
    b, shards = data

    def order(seed, epoch, workers):
        ds = ShardSampleDataset(client, b, shards, shuffle=True, seed=seed, rank=0, world_size=1)
        ds.set_epoch(epoch)
        per_worker = [ds._my_samples(Split(0, 1, w, workers)) for w in range(workers)]
        return sorted(i for p in per_worker for i in p), [ds.shards[ds.samples[p[0]][0]] for p in per_worker if p]

    a1, _ = order(1, 0, 1)
    a3, _ = order(1, 0, 3)
    assert a1 == a3, "the same samples for any worker count"
    ds = ShardSampleDataset(client, b, shards, shuffle=True, seed=1)
    first = [ds.samples[i][0] for i in ds._my_samples(Split())]
    ds.set_epoch(1)
    second = [ds.samples[i][0] for i in ds._my_samples(Split())]
    assert first != second, "another epoch, another shard order"
    again = ShardSampleDataset(client, b, shards, shuffle=True, seed=1)
    assert [again.samples[i][0] for i in again._my_samples(Split())] == first


def test_resume_mid_epoch_in_a_new_process(client, data, cluster, tmp_path):
    b, shards = data
    ds = ShardSampleDataset(client, b, shards, shuffle=True, seed=3, rank=0, world_size=2)
    it = iter(ds)
    head = [next(it)["__key__"] for _ in range(13)]
    state = tmp_path / "state.json"
    state.write_text(json.dumps(ds.state_dict()))
    script = f"""
import json, sys
from aisle import Client, ShardSampleDataset
c = Client({cluster.endpoint!r}, {cluster.env['AWS_ACCESS_KEY_ID']!r}, {cluster.env['AWS_SECRET_ACCESS_KEY']!r})
ds = ShardSampleDataset(c, {b!r}, {shards!r}, shuffle=True, seed=3, rank=0, world_size=2)
ds.load_state_dict(json.load(open({str(state)!r})))
print(json.dumps([s["__key__"] for s in ds]))
"""
    rest = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                     check=True).stdout)
    full = [s["__key__"] for s in ShardSampleDataset(client, b, shards, shuffle=True, seed=3, rank=0, world_size=2)]
    assert head + rest == full and len(set(full)) == 30
    other = ShardSampleDataset(client, b, shards[:5], shuffle=True, seed=3)
    with pytest.raises(ValueError, match="another data set"):
        other.load_state_dict(json.loads(state.read_text()))


def test_server_transform_on_every_shard(client, data):
    b, shards = data
    ds = ShardSampleDataset(client, b, shards[:2], etl="wds-select", etl_args='{"keep":["cls"]}')
    samples = list(ds)
    assert len(samples) == 20 and all(set(s) == {"__key__", "__shard__", "cls"} for s in samples)


def test_webdataset_reads_aisle_urls_and_alias_buckets(client, data, cluster):
    import webdataset as wds

    b, shards = data
    s3 = cluster.client()
    urls = [s3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": k}, ExpiresIn=600)
            for k in shards[:2]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == 2 * PER_SHARD and samples[0]["cls"] == b"0"
    # Through an alias bucket: the shards transformed on the targets (only the labels kept).
    alias = f"{b}-labels"
    client.bind_alias(alias, b, "wds-select", '{"keep":["cls"]}')
    try:
        urls = [s3.generate_presigned_url("get_object", Params={"Bucket": alias, "Key": k}, ExpiresIn=600)
                for k in shards[:2]]
        samples = list(wds.WebDataset(urls, shardshuffle=False))
        assert len(samples) == 2 * PER_SHARD
        assert all("jpg" not in s and "cls" in s for s in samples)
    finally:
        client.unbind_alias(alias)


def test_bad_inputs_are_clear_errors(client, data):
    """Unknown bucket, a corrupt shard, a cluster that is gone: each a clear AisleError, fast."""
    import socket
    import time

    b, _ = data
    with pytest.raises(AisleError) as e:
        client.get("no-such-bucket-here", "k")
    assert e.value.status == 404 and e.value.code == "NoSuchBucket"
    client.put(b, "corrupt.tar", b"this is not a tar archive" * 40)
    with pytest.raises(AisleError) as e:
        client.get(b, "corrupt.tar", archpath="a.jpg")
    assert 400 <= e.value.status < 500, e.value
    # A port nobody listens on: retried with backoff, then Unreachable (status 0), no hang.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    gone = Client(f"http://127.0.0.1:{port}", "AK", "SK", retries=2, timeout=2)
    t = time.time()
    with pytest.raises(AisleError) as e:
        gone.get(b, "obj/003.bin")
    assert e.value.status == 0 and e.value.code == "Unreachable"
    assert time.time() - t < 30

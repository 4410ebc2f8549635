"""The datasets through a real torch DataLoader (run by scripts/test-torch; skipped without
torch): 2 simulated ranks × 2 fork workers read every sample exactly once, map-style datasets
work with DistributedSampler, and the classes are torch Dataset/IterableDataset subclasses."""

import io
import os
import tarfile

import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset  # noqa: E402

from aisle import Client, ObjectDataset, ShardSampleDataset  # noqa: E402


@pytest.fixture(scope="module")
def setup(cluster):
    c = Client(cluster.endpoint, cluster.env["AWS_ACCESS_KEY_ID"], cluster.env["AWS_SECRET_ACCESS_KEY"])
    b = f"torch-{os.getpid()}"
    c.create_bucket(b)
    shards = []
    for s in range(8):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for i in range(8):
                for ext, payload in [("jpg", os.urandom(100)), ("cls", str(i).encode())]:
                    info = tarfile.TarInfo(f"s{s}/{i:04d}.{ext}")
                    info.size = len(payload)
                    t.addfile(info, io.BytesIO(payload))
        key = f"shards/{s:02d}.tar"
        c.put(b, key, buf.getvalue())
        shards.append(key)
    for i in range(20):
        c.put(b, f"obj/{i:02d}", str(i).encode())
    return c, b, shards


def test_they_are_torch_datasets(setup):
    c, b, shards = setup
    assert isinstance(ShardSampleDataset(c, b, shards), IterableDataset)
    assert isinstance(ObjectDataset(c, b, prefix="obj/"), Dataset)


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_workers_and_ranks_read_every_sample_once(setup, workers):
    c, b, shards = setup
    seen = []
    for rank in range(2):
        ds = ShardSampleDataset(c, b, shards, shuffle=True, seed=11, rank=rank, world_size=2)
        ds.set_epoch(1)
        dl = DataLoader(ds, batch_size=None, num_workers=workers,
                        multiprocessing_context="fork" if workers else None)
        keys = [s["__key__"] for s in dl]
        assert len(keys) == 32
        seen += keys
    assert len(seen) == 64 and len(set(seen)) == 64


def test_map_style_with_distributed_sampler(setup):
    c, b, _ = setup
    ds = ObjectDataset(c, b, prefix="obj/", transform=lambda x: int(x))
    got = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=5)
        dl = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2, multiprocessing_context="fork")
        got += [int(x) for batch in dl for x in batch]
    assert sorted(got) == list(range(20))


def test_stateful_dataloader_resumes_exactly(setup):
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    c, b, shards = setup

    def loader():
        ds = ShardSampleDataset(c, b, shards, shuffle=True, seed=3, rank=0, world_size=1)
        return sdl.StatefulDataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork")

    dl = loader()
    it = iter(dl)
    head = [next(it)["__key__"] for _ in range(13)]
    state = dl.state_dict()
    del it, dl
    dl2 = loader()
    dl2.load_state_dict(state)
    rest = [s["__key__"] for s in dl2]
    assert len(head) + len(rest) == 64 and len(set(head + rest)) == 64


def test_s3torchconnector_reads_an_alias_bucket(setup, cluster, monkeypatch):
    s3tc = pytest.importorskip("s3torchconnector")
    import hashlib

    c, b, _ = setup
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, cluster.env[k])
    alias = f"{b}-md5"
    c.bind_alias(alias, b, "md5")
    try:
        cfg = s3tc.S3ClientConfig(force_path_style=True)
        ds = s3tc.S3MapDataset.from_prefix(f"s3://{alias}/obj/", region="us-east-1",
                                           endpoint=cluster.endpoint, s3client_config=cfg)
        assert len(ds) == 20
        item = ds[3]
        assert item.read() == hashlib.md5(c.get(b, item.key)).hexdigest().encode()
        it = s3tc.S3IterableDataset.from_prefix(f"s3://{alias}/obj/", region="us-east-1",
                                                endpoint=cluster.endpoint, s3client_config=cfg)
        assert sum(1 for _ in it) == 20
    finally:
        c.unbind_alias(alias)

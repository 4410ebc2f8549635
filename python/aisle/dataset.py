"""Datasets over an aisle cluster: objects, shard members, and WebDataset-style samples of many
shards — split by rank and DataLoader worker, shuffled from (seed, epoch), resumable mid-epoch,
with server-side transforms and batched reads through GetBatch.

With torch installed the map-style datasets are ``torch.utils.data.Dataset`` subclasses and
the iterable one an ``IterableDataset``; without it they are plain Python objects that behave
the same.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import os
import random
import tarfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .client import AisleError, Client, _Reader

try:  # torch is optional
    import torch.utils.data as _tud

    _MapBase: Any = _tud.Dataset
    _IterBase: Any = _tud.IterableDataset
except ImportError:  # pragma: no cover - exercised where torch is absent
    _tud = None
    _MapBase = object
    _IterBase = object


@dataclass(frozen=True)
class Split:
    """Which share of the data this reader takes: rank of ``world_size`` ranks, and worker of
    ``num_workers`` DataLoader workers within the rank."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    @staticmethod
    def detect(rank: Optional[int] = None, world_size: Optional[int] = None) -> "Split":
        """Explicit rank/world_size, else torch.distributed when initialized, else the
        ``RANK``/``WORLD_SIZE`` environment; the worker from the DataLoader, when inside one."""
        if rank is None or world_size is None:
            r, w = 0, 1
            try:
                import torch.distributed as dist

                if dist.is_available() and dist.is_initialized():
                    r, w = dist.get_rank(), dist.get_world_size()
                else:
                    raise ImportError
            except ImportError:
                r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
            rank = r if rank is None else rank
            world_size = w if world_size is None else world_size
        worker, workers = 0, 1
        if _tud is not None:
            info = _tud.get_worker_info()
            if info is not None:
                worker, workers = info.id, info.num_workers
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        return Split(rank, world_size, worker, workers)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> List[int]:
    """0..n-1, shuffled by (seed, epoch) when ``shuffle``: the same on every rank and for any
    worker count."""
    order = list(range(n))
    if shuffle:
        random.Random(f"aisle:{seed}:{epoch}").shuffle(order)
    return order


def rank_share(order: Sequence[int], rank: int, world_size: int, even: str = "pad") -> List[int]:
    """This rank's share of ``order``: every rank gets the same count (so no rank runs out early
    and hangs a collective). ``even="pad"`` repeats the first items to fill the last round,
    ``"drop"`` leaves the remainder out."""
    n = len(order)
    if even == "drop":
        total = n - n % world_size
        items = list(order[:total])
    elif even == "pad":
        total = -(-n // world_size) * world_size
        items = list(order) + [order[i % n] for i in range(total - n)] if n else []
    else:
        raise ValueError('even is "pad" or "drop"')
    per = len(items) // world_size if world_size else 0
    return items[rank * per:(rank + 1) * per]


def _fingerprint(parts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


class _Reads:
    """What every dataset kind shares: the client, server transform, client transform, and
    batched reads through GetBatch with prefetch and an error policy."""

    def __init__(self, client: Client, bucket: str, etl: Optional[str], etl_args: Optional[str],
                 transform: Optional[Callable[[bytes], Any]], on_error: str):
        if on_error not in ("raise", "skip"):
            raise ValueError('on_error is "raise" or "skip"')
        self.client, self.bucket = client, bucket
        self.etl, self.etl_args, self.transform, self.on_error = etl, etl_args, transform, on_error
        self.skipped = 0

    def _entry(self, key: str, archpath: Optional[str] = None) -> Dict[str, str]:
        e = {"bucket": self.bucket, "key": key}
        if archpath:
            e["archpath"] = archpath
        if self.etl:
            e["etl"] = self.etl
            if self.etl_args is not None:
                e["etl_args"] = self.etl_args
        return e

    def _out(self, data: bytes) -> Any:
        return self.transform(data) if self.transform else data

    def _batches(self, entries: List[Dict[str, str]], batch_size: int, prefetch: int) -> Iterator[List[Any]]:
        groups = [entries[i:i + batch_size] for i in range(0, len(entries), batch_size)]
        missing = "placeholder" if self.on_error == "skip" else "fail"

        def fetch(group):
            return list(self.client.get_batch(group, missing=missing))

        # The next `prefetch` batches are requested while the current one is used.
        with concurrent.futures.ThreadPoolExecutor(max_workers=prefetch + 1) as ex:
            pending = collections.deque(ex.submit(fetch, g) for g in groups[: prefetch + 1])
            queued = len(pending)
            while pending:
                got = pending.popleft().result()
                if queued < len(groups):
                    pending.append(ex.submit(fetch, groups[queued]))
                    queued += 1
                batch = []
                for name, data in got:
                    if name.startswith("__missing__/"):
                        self.skipped += 1
                        continue
                    batch.append(self._out(data))
                yield batch


class ObjectDataset(_Reads, _MapBase):
    """Map-style: the objects of ``bucket`` under ``prefix`` (or exactly ``keys``), listed once
    at construction, in key order. ``ds[i]`` reads object i (transformed on its target when
    ``etl`` names a pipeline, then by ``transform`` here)."""

    def __init__(self, client: Client, bucket: str, prefix: str = "", keys: Optional[Sequence[str]] = None,
                 etl: Optional[str] = None, etl_args: Optional[str] = None,
                 transform: Optional[Callable[[bytes], Any]] = None, on_error: str = "raise"):
        _Reads.__init__(self, client, bucket, etl, etl_args, transform, on_error)
        self.keys = list(keys) if keys is not None else [k for k, _ in client.list_objects(bucket, prefix)]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Any:
        return self._out(self.client.get(self.bucket, self.keys[i], etl=self.etl, etl_args=self.etl_args))

    def batches(self, batch_size: int, indices: Optional[Sequence[int]] = None, prefetch: int = 1) -> Iterator[List[Any]]:
        """Batches of samples, each one GetBatch request, the next one fetched while the
        current is used. With ``on_error="skip"`` unreadable objects are left out and counted
        in ``skipped``."""
        idx = range(len(self.keys)) if indices is None else indices
        return self._batches([self._entry(self.keys[i]) for i in idx], batch_size, prefetch)


class ShardMemberDataset(_Reads, _MapBase):
    """Map-style over the members of shards, from the server's member listing (no shard is
    downloaded to index it). ``ds[i]`` reads one member (``archpath``) — transformed on the
    shard's target when ``etl`` names a pipeline — then applies ``transform`` here."""

    def __init__(self, client: Client, bucket: str, shards: Sequence[str], etl: Optional[str] = None,
                 etl_args: Optional[str] = None, transform: Optional[Callable[[bytes], Any]] = None,
                 on_error: str = "raise"):
        _Reads.__init__(self, client, bucket, etl, etl_args, transform, on_error)
        self.members: List[Tuple[str, str]] = []
        for s in shards:
            self.members += [(s, m["name"]) for m in client.archive_members(bucket, s)]

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> Any:
        shard, name = self.members[i]
        return self._out(self.client.get(self.bucket, shard, archpath=name, etl=self.etl,
                                         etl_args=self.etl_args))

    def batches(self, batch_size: int, indices: Optional[Sequence[int]] = None, prefetch: int = 1) -> Iterator[List[Any]]:
        idx = range(len(self.members)) if indices is None else indices
        return self._batches([self._entry(self.members[i][0], self.members[i][1]) for i in idx],
                             batch_size, prefetch)


class ShardSampleDataset(_Reads, _IterBase):
    """Iterable over WebDataset-style samples (members grouped by the name up to the first dot
    of their base name: ``0001.jpg`` + ``0001.cls`` → ``{"__key__": "0001", "jpg": …, "cls": …}``)
    of many tar shards, each read as a stream (``etl`` transforms the whole shard on its
    target first, e.g. ``wds-map`` to resize every image).

    Sample counts come from the server's member listing, so every rank gets exactly the same
    number of samples (``even``); shard order is shuffled by (seed, epoch), samples keep their
    order inside a shard. Within a rank, DataLoader workers split the rank's share by shard
    segments. ``state_dict()`` / ``load_state_dict()`` resume mid-epoch exactly: what a reader
    already yielded is not yielded again.
    """

    def __init__(self, client: Client, bucket: str, shards: Sequence[str], etl: Optional[str] = None,
                 etl_args: Optional[str] = None, transform: Optional[Callable[[Dict[str, Any]], Any]] = None,
                 shuffle: bool = False, seed: int = 0, rank: Optional[int] = None,
                 world_size: Optional[int] = None, even: str = "pad", on_error: str = "raise"):
        _Reads.__init__(self, client, bucket, etl, etl_args, None, on_error)
        self.sample_transform = transform
        self.shards = list(shards)
        self.shuffle, self.seed, self.epoch, self.even = shuffle, seed, 0, even
        self._rank, self._world = rank, world_size
        # (shard index, sample key) of every sample, in shard order.
        self.samples: List[Tuple[int, str]] = []
        for i, s in enumerate(self.shards):
            seen: List[str] = []
            for m in client.archive_members(bucket, s):
                k = _sample_key(m["name"])
                if not seen or seen[-1] != k:
                    seen.append(k)
            self.samples += [(i, k) for k in seen]
        self.fingerprint = _fingerprint([bucket, str(etl), *self.shards, str(len(self.samples))])
        self._position: Dict[int, int] = {}  # worker → samples yielded this epoch

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (a new shard order when shuffling), from its beginning."""
        self.epoch = epoch
        self._position = {}

    def __len__(self) -> int:
        split = Split.detect(self._rank, self._world)
        return len(rank_share(range(len(self.samples)), split.rank, split.world_size, self.even))

    def _my_samples(self, split: Split) -> List[int]:
        """Indices (into ``samples``) of this rank and worker, in the order they are read."""
        shard_order = epoch_order(len(self.shards), self.seed, self.epoch, self.shuffle)
        by_shard: Dict[int, List[int]] = {}
        for i, (s, _) in enumerate(self.samples):
            by_shard.setdefault(s, []).append(i)
        ordered = [i for s in shard_order for i in by_shard.get(s, [])]
        mine = rank_share(ordered, split.rank, split.world_size, self.even)
        # Worker split by runs of one shard (a worker streams whole segments).
        segments: List[List[int]] = []
        for i in mine:
            if segments and self.samples[segments[-1][-1]][0] == self.samples[i][0]:
                segments[-1].append(i)
            else:
                segments.append([i])
        return [i for n, seg in enumerate(segments) if n % split.num_workers == split.worker for i in seg]

    def __iter__(self) -> Iterator[Any]:
        split = Split.detect(self._rank, self._world)
        todo = self._my_samples(split)
        skip = self._position.get(split.worker, 0)
        todo = todo[skip:]
        pos = skip
        # Group the remaining samples by shard, keeping order; read each shard once.
        runs: List[Tuple[int, List[str]]] = []
        for i in todo:
            s, k = self.samples[i]
            if runs and runs[-1][0] == s:
                runs[-1][1].append(k)
            else:
                runs.append((s, [k]))
        for s, keys in runs:
            wanted: Dict[str, int] = {}
            for k in keys:
                wanted[k] = wanted.get(k, 0) + 1
            for sample in self._read_shard(self.shards[s], wanted):
                pos += 1
                self._position[split.worker] = pos
                yield self.sample_transform(sample) if self.sample_transform else sample

    def _read_shard(self, shard: str, wanted: Dict[str, int]) -> Iterator[Dict[str, Any]]:
        try:
            r = self.client.get_stream(self.bucket, shard, etl=self.etl, etl_args=self.etl_args)
        except AisleError:
            if self.on_error == "skip":
                self.skipped += sum(wanted.values())
                return
            raise
        try:
            current: Optional[Dict[str, Any]] = None
            with tarfile.open(fileobj=_Reader(r), mode="r|") as t:
                for m in t:
                    if not m.isfile():
                        continue
                    k = _sample_key(m.name)
                    if current is not None and current["__key__"] != k:
                        yield from _emit(current, wanted)
                        current = None
                    if k not in wanted:
                        continue
                    if current is None:
                        current = {"__key__": k, "__shard__": shard}
                    f = t.extractfile(m)
                    current[_ext(m.name)] = f.read() if f else b""
                if current is not None:
                    yield from _emit(current, wanted)
        finally:
            r.release_conn()

    def state_dict(self) -> Dict[str, Any]:
        """Where this reader is: enough for :meth:`load_state_dict` in a new process."""
        return {"fingerprint": self.fingerprint, "epoch": self.epoch, "seed": self.seed,
                "shuffle": self.shuffle, "positions": dict(self._position)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue where ``state`` was taken; refuses a state of another data set."""
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError("this state is of another data set (shards, bucket or transform differ)")
        if (state.get("seed"), state.get("shuffle")) != (self.seed, self.shuffle):
            raise ValueError("this state was taken with another seed or shuffle setting")
        self.epoch = state["epoch"]
        self._position = {int(k): v for k, v in state["positions"].items()}


def _emit(sample: Dict[str, Any], wanted: Dict[str, int]) -> Iterator[Dict[str, Any]]:
    # A padded rank may read one sample twice: emit it as often as it is wanted.
    for _ in range(wanted.get(sample["__key__"], 0)):
        yield sample


def _sample_key(name: str) -> str:
    """WebDataset's key: the path up to the first dot of the base name."""
    d, _, base = name.rpartition("/")
    stem = base.split(".", 1)[0]
    return f"{d}/{stem}" if d else stem


def _ext(name: str) -> str:
    base = name.rpartition("/")[2]
    return base.split(".", 1)[1] if "." in base else ""


__all__ = ["ObjectDataset", "ShardMemberDataset", "ShardSampleDataset", "Split", "epoch_order", "rank_share"]

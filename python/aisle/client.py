"""The aisle client: S3 objects with transforms and shard members, GetBatch, alias buckets and
jobs, over one pooled HTTP connection manager (urllib3) with SigV4 from botocore's signer."""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import tarfile
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

_S3NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_RETRY_STATUSES = {500, 502, 503, 504}


class AisleError(Exception):
    """A request the cluster refused or could not answer.

    ``status`` is the HTTP status (0 when the cluster could not be reached), ``code`` the
    S3 error code (``NoSuchKey``, ``InvalidEtl``, ``SlowDown``…).
    """

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass
class Job:
    """A cluster job as ``aisle job show`` reports it."""

    id: str
    kind: str
    status: str
    total: int
    done: int
    bytes: int
    errors: List[str]

    @staticmethod
    def _of(v: Dict[str, Any]) -> "Job":
        return Job(v["id"], v["kind"], v["status"], v.get("total", 0), v.get("done", 0),
                   v.get("bytes", 0), v.get("errors", []))


class Client:
    """One cluster.

    >>> c = Client("http://127.0.0.1:8080", "AK", "SK")   # or Client() from the environment
    >>> c.endpoint
    'http://127.0.0.1:8080'

    Every call is retried on connection errors and 5xx answers (``retries`` times, with
    exponential backoff and jitter), each attempt bounded by ``timeout`` seconds.
    """

    def __init__(self, endpoint: Optional[str] = None, access_key: Optional[str] = None,
                 secret_key: Optional[str] = None, region: Optional[str] = None,
                 timeout: float = 60.0, retries: int = 4, pool_size: int = 16,
                 ca_bundle: Optional[str] = None):
        self.endpoint = (endpoint or os.environ.get("AWS_ENDPOINT_URL") or "").rstrip("/")
        if not self.endpoint:
            raise ValueError("no endpoint: pass one or set AWS_ENDPOINT_URL")
        ak = access_key or os.environ.get("AWS_ACCESS_KEY_ID")
        sk = secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not ak or not sk:
            raise ValueError("no keys: pass them or set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self._signer = S3SigV4Auth(Credentials(ak, sk), "s3", self.region)
        self._pool_args = dict(maxsize=pool_size, retries=False,
                               timeout=urllib3.Timeout(connect=10.0, read=timeout))
        # HTTPS against a cluster with its own CA (`aisle up --tls`): AWS_CA_BUNDLE, as boto3.
        ca = ca_bundle or os.environ.get("AWS_CA_BUNDLE")
        if ca:
            self._pool_args["ca_certs"] = ca
        self._http = urllib3.PoolManager(**self._pool_args)
        self._pid = os.getpid()
        self.retries = retries

    def __getstate__(self) -> Dict[str, Any]:
        # DataLoader workers started with "spawn" get a copy without the connection pool.
        state = dict(self.__dict__)
        state["_http"] = None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _pool(self) -> urllib3.PoolManager:
        # A forked worker must not share its parent's sockets: a pool per process.
        if self._http is None or self._pid != os.getpid():
            self._http = urllib3.PoolManager(**self._pool_args)
            self._pid = os.getpid()
        return self._http

    # ---- transport ---------------------------------------------------------------------------

    def _url(self, path: str, query: Optional[Dict[str, str]] = None) -> str:
        url = self.endpoint + urllib.parse.quote(path, safe="/~")
        if query:
            url += "?" + urllib.parse.urlencode(sorted(query.items()), quote_via=urllib.parse.quote)
        return url

    def request(self, method: str, path: str, query: Optional[Dict[str, str]] = None,
                body: bytes = b"", headers: Optional[Dict[str, str]] = None,
                stream: bool = False) -> urllib3.BaseHTTPResponse:
        """A signed request; raises :class:`AisleError` on any non-2xx answer."""
        url = self._url(path, query)
        attempt = 0
        while True:
            req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
            req.context["payload_signing_enabled"] = True
            self._signer.add_auth(req)
            try:
                r = self._pool().request(method, url, body=body or None, headers=dict(req.headers),
                                       preload_content=not stream, decode_content=False)
            except urllib3.exceptions.HTTPError as e:
                if attempt >= self.retries:
                    raise AisleError(0, "Unreachable", f"{method} {url}: {e}") from e
            else:
                if r.status < 300:
                    return r
                if r.status not in _RETRY_STATUSES or attempt >= self.retries:
                    raise _error(r)
                r.drain_conn()
            attempt += 1
            time.sleep(min(5.0, 0.1 * 2 ** attempt) * (0.5 + random.random()))

    def _json(self, method: str, path: str, query=None, doc: Any = None) -> Any:
        body = json.dumps(doc).encode() if doc is not None else b""
        r = self.request(method, path, query, body, {"content-type": "application/json"} if body else None)
        return json.loads(r.data or b"null")

    # ---- buckets and objects -------------------------------------------------------------------

    def create_bucket(self, bucket: str) -> None:
        self.request("PUT", f"/{bucket}")

    def list_buckets(self) -> List[str]:
        root = ET.fromstring(self.request("GET", "/").data)
        return [b.findtext(f"{_S3NS}Name") for b in root.iter(f"{_S3NS}Bucket")]

    def put(self, bucket: str, key: str, data: bytes, content_type: Optional[str] = None) -> str:
        """Store ``data``; returns the ETag."""
        h = {"content-type": content_type} if content_type else None
        return self.request("PUT", f"/{bucket}/{key}", body=data, headers=h).headers.get("etag", "").strip('"')

    def head(self, bucket: str, key: str, etl: Optional[str] = None, etl_args: Optional[str] = None) -> Dict[str, str]:
        r = self.request("HEAD", f"/{bucket}/{key}", headers=_etl_headers(etl, etl_args))
        return dict(r.headers)

    def get(self, bucket: str, key: str, etl: Optional[str] = None, etl_args: Optional[str] = None,
            archpath: Optional[str] = None, byte_range: Optional[Tuple[int, int]] = None) -> bytes:
        """The object's bytes (or a shard member's, with ``archpath``), transformed on its
        target when ``etl`` names a pipeline (``"resize"``, ``"resize,jpeg"``)."""
        r = self.get_stream(bucket, key, etl, etl_args, archpath, byte_range)
        try:
            return _read_all(r)
        finally:
            r.release_conn()

    def get_stream(self, bucket: str, key: str, etl: Optional[str] = None, etl_args: Optional[str] = None,
                   archpath: Optional[str] = None,
                   byte_range: Optional[Tuple[int, int]] = None) -> urllib3.BaseHTTPResponse:
        """Like :meth:`get`, as a response to read from (``.read(n)``, ``.stream()``)."""
        h = _etl_headers(etl, etl_args)
        if byte_range:
            h["range"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
        q = {"archpath": archpath} if archpath else None
        return self.request("GET", f"/{bucket}/{key}", q, headers=h, stream=True)

    def list_objects(self, bucket: str, prefix: str = "", page_size: int = 1000) -> Iterator[Tuple[str, int]]:
        """Every ``(key, size)`` under ``prefix``, in key order, page by page."""
        token = None
        while True:
            q = {"list-type": "2", "prefix": prefix, "max-keys": str(page_size)}
            if token:
                q["continuation-token"] = token
            root = ET.fromstring(self.request("GET", f"/{bucket}", q).data)
            for c in root.iter(f"{_S3NS}Contents"):
                yield c.findtext(f"{_S3NS}Key"), int(c.findtext(f"{_S3NS}Size") or 0)
            if root.findtext(f"{_S3NS}IsTruncated") != "true":
                return
            token = root.findtext(f"{_S3NS}NextContinuationToken")

    def delete(self, bucket: str, key: str) -> None:
        self.request("DELETE", f"/{bucket}/{key}")

    # ---- shards and GetBatch ---------------------------------------------------------------------

    def archive_members(self, bucket: str, key: str) -> List[Dict[str, Any]]:
        """The members of a shard, from the server's listing: ``[{name, size, offset}]``."""
        return self._json("GET", "/_aisle/v1/archive", {"bucket": bucket, "key": key})

    def get_batch(self, entries: Sequence[Dict[str, str]], missing: str = "fail") -> Iterator[Tuple[str, bytes]]:
        """Many objects or shard members in one request, in order: ``(name, bytes)`` pairs
        read from the streamed tar. An entry is ``{"bucket", "key"}`` plus optionally
        ``"archpath"`` or ``"etl"``/``"etl_args"`` (transformed on its owning target). With
        ``missing="placeholder"`` an unreadable entry comes as ``("__missing__/<name>", error)``."""
        body = json.dumps({"entries": list(entries), "missing": missing}).encode()
        r = self.request("POST", "/_aisle/v1/batch", body=body,
                         headers={"content-type": "application/json"}, stream=True)
        try:
            with tarfile.open(fileobj=_Reader(r), mode="r|") as t:
                for m in t:
                    f = t.extractfile(m)
                    yield m.name, (f.read() if f else b"")
        except (tarfile.TarError, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as e:
            # The cluster cuts the stream when an entry fails midway (missing="fail").
            raise AisleError(502, "BrokenBatch", f"the batch stream was cut: {e}") from e
        finally:
            r.release_conn()

    # ---- transforms and jobs ---------------------------------------------------------------------

    def bind_alias(self, alias: str, source: str, pipeline: str, args: Optional[str] = None) -> None:
        """Make ``alias`` a read-only bucket showing ``source`` through ``pipeline``."""
        self._json("PUT", f"/_aisle/v1/etl/alias/{alias}", doc={"source": source, "pipeline": pipeline, "args": args})

    def unbind_alias(self, alias: str) -> None:
        self.request("DELETE", f"/_aisle/v1/etl/alias/{alias}")

    def start_etl_job(self, source: str, output_bucket: str, pipeline: str, args: Optional[str] = None,
                      prefix: Optional[str] = None, keys: Optional[List[str]] = None) -> Job:
        doc: Dict[str, Any] = {"source": source, "output_bucket": output_bucket,
                               "etl": {"pipeline": pipeline.split(","), "args": args}}
        if prefix is not None:
            doc["prefix"] = prefix
        if keys is not None:
            doc["list"] = keys
        return Job._of(self._json("POST", "/_aisle/v1/jobs/etl", doc=doc))

    def start_shard_job(self, source: str, output_bucket: str, output_prefix: str, shard_size: int,
                        prefix: Optional[str] = None) -> Job:
        doc: Dict[str, Any] = {"source": source, "output_bucket": output_bucket,
                               "output_prefix": output_prefix, "shard_size": shard_size}
        if prefix is not None:
            doc["prefix"] = prefix
        return Job._of(self._json("POST", "/_aisle/v1/jobs/shard", doc=doc))

    def job(self, job_id: str, wait: float = 0.0) -> Job:
        """A job's state; with ``wait`` (seconds, at most 30), once it has ended or after that
        long, whichever comes first (the gateway holds the request)."""
        q = {"wait_ms": str(int(min(wait, 30.0) * 1000))} if wait > 0 else None
        return Job._of(self._json("GET", f"/_aisle/v1/jobs/{job_id}", q))

    def abort(self, job_id: str) -> None:
        self.request("POST", f"/_aisle/v1/jobs/{job_id}/abort")

    def wait(self, job_id: str, progress: Optional[Callable[[Job], None]] = None,
             poll: float = 0.5, timeout: float = 3600.0) -> Job:
        """Follow a job until it ends (``progress`` sees an update at least every ``poll``
        seconds); the final state, as soon as the job has ended."""
        deadline = time.time() + timeout
        while True:
            j = self.job(job_id, wait=min(poll, max(deadline - time.time(), 0.001)))
            if progress:
                progress(j)
            if j.status != "running":
                return j
            if time.time() > deadline:
                raise AisleError(0, "Timeout", f"job {job_id} still running after {timeout}s")


def _etl_headers(etl: Optional[str], args: Optional[str]) -> Dict[str, str]:
    h: Dict[str, str] = {}
    if etl:
        h["x-ais-etl"] = etl
        if args is not None:
            h["x-ais-etl-args"] = args
    return h


def _read_all(r: urllib3.BaseHTTPResponse) -> bytes:
    buf = io.BytesIO()
    for chunk in r.stream(256 * 1024, decode_content=False):
        buf.write(chunk)
    want = r.headers.get("content-length")
    if want is not None and buf.tell() != int(want):
        raise AisleError(502, "IncompleteBody", f"got {buf.tell()} of {want} bytes")
    return buf.getvalue()


def _error(r: urllib3.BaseHTTPResponse) -> AisleError:
    data = r.data or b""
    code, msg = f"HTTP{r.status}", data.decode(errors="replace")[:500]
    try:
        root = ET.fromstring(data)
        code = root.findtext("Code") or code
        msg = root.findtext("Message") or msg
    except ET.ParseError:
        pass
    return AisleError(r.status, code, msg)


class _Reader(io.RawIOBase):
    """A streamed response as a file object for tarfile's stream mode."""

    def __init__(self, r: urllib3.BaseHTTPResponse):
        self._r = r

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._r.read(len(b), decode_content=False)
        b[: len(data)] = data
        return len(data)

"""Observability: Prometheus metrics on every node (counted exactly, parsed by the Prometheus
client's own parser), one request id through the gateway's and the targets' logs, JSON logs,
and the scrape files `aisle up` writes for Prometheus."""

import json
import shutil
import tempfile
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Cluster, aisle

SIZE = 1000


@pytest.fixture(scope="module")
def obs():
    """A 2-target cluster logging requests at debug level, in JSON."""
    d = tempfile.mkdtemp(prefix="aisle-obs-")
    c = Cluster(d, targets=2, extra=["--log-format", "json", "--slow-ms", "1"],
                proc_env={"AISLE_LOG": "info,aisle_gateway=debug,aisle_target=debug"}).start()
    yield c
    c.stop()
    shutil.rmtree(d, ignore_errors=True)


def nodes(c):
    """(node name, host:port) of every node, from the file Prometheus reads."""
    groups = json.loads((c.data / "prometheus-targets.json").read_text())
    return [(g["labels"]["node"], g["targets"][0]) for g in groups]


def scrape(addr, token):
    req = urllib.request.Request(f"http://{addr}/_aisle/metrics",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def samples(text):
    """{(name, frozenset(labels)): value}, parsed by prometheus_client's parser."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(all_samples, name, **labels):
    """Sum of `name` over every node's samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for smp in all_samples for (n, ls), v in smp.items()
               if n == name and want <= set(ls))


def scrape_all(c):
    token = (c.data / "metrics-token").read_text().strip()
    return [samples(scrape(addr, token)) for _, addr in nodes(c)]


def test_every_node_answers_the_scrape_config_and_refuses_without_the_token(obs):
    ns = nodes(obs)
    assert [n for n, _ in ns] == ["gateway", "t1", "t2"]
    for _, addr in ns:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://{addr}/_aisle/metrics", timeout=10)
        assert e.value.code == 401
        with pytest.raises(urllib.error.HTTPError):
            scrape(addr, "wrong-token")
    for smp in scrape_all(obs):
        assert total([smp], "aisle_build_info") == 1
        assert total([smp], "aisle_process_resident_memory_bytes") > 1e6
        assert total([smp], "aisle_process_open_fds") > 3
        assert any(n == "aisle_process_cpu_seconds_total" for n, _ in smp)
    # The example Prometheus config reads exactly these files.
    from conftest import REPO

    example = (REPO / "docs" / "examples" / "prometheus.yml").read_text()
    assert "prometheus-targets.json" in example and "metrics-token" in example


def test_counters_move_by_exactly_the_workload(obs):
    s3 = obs.client()
    s3.create_bucket(Bucket="metered")
    before = scrape_all(obs)
    for i in range(10):
        s3.put_object(Bucket="metered", Key=f"k{i}", Body=b"x" * SIZE)
    for i in range(5):
        assert len(s3.get_object(Bucket="metered", Key=f"k{i}")["Body"].read()) == SIZE
    etl = obs.client(retries={"max_attempts": 1})
    etl.meta.events.register("before-sign.s3.GetObject",
                             lambda request, **_: request.headers.__setitem__("x-ais-etl", "resize"))
    with pytest.raises(Exception):
        etl.get_object(Bucket="metered", Key="k0")  # not an image: the transform fails
    time.sleep(0.2)
    after = scrape_all(obs)

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("aisle_s3_requests_total", op="PutObject", status="2xx") == 10
    assert delta("aisle_s3_requests_total", op="GetObject", status="2xx") == 5
    assert delta("aisle_s3_requests_total", op="GetObject", status="4xx") + \
        delta("aisle_s3_requests_total", op="GetObject", status="5xx") == 1
    assert delta("aisle_s3_request_duration_seconds_count", op="PutObject") == 10
    assert delta("aisle_s3_received_bytes_total") == 10 * SIZE
    assert delta("aisle_s3_sent_bytes_total") == 5 * SIZE
    assert delta("aisle_etl_requests_total", transform="resize", outcome="error") == 1
    # Every PUT reached a target (copies=2: the owner, then the copy); every GET one target.
    assert delta("aisle_target_requests_total", op="put", status="2xx") == 10
    assert delta("aisle_target_requests_total", op="replica", status="2xx") == 10
    assert delta("aisle_target_requests_total", op="get", status="2xx") >= 5
    assert delta("aisle_gateway_target_call_duration_seconds_count") >= 15


def test_one_request_id_in_the_gateway_and_target_logs_as_json(obs):
    s3 = obs.client()
    s3.create_bucket(Bucket="traced")
    s3.put_object(Bucket="traced", Key="t", Body=b"follow me")
    r = s3.get_object(Bucket="traced", Key="t")
    assert r["Body"].read() == b"follow me"
    rid = r["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    time.sleep(0.5)
    logs = obs.data / "logs"
    hits = {}
    for f in sorted(logs.glob("*.log")):
        for line in f.read_text().splitlines():
            if rid in line:
                rec = json.loads(line)  # every line is a JSON object
                hits.setdefault(f.stem, []).append(rec)
    assert "gateway" in hits, f"request {rid} not in the gateway's log"
    assert any(n.startswith("t") for n in hits), f"request {rid} in no target's log: {list(hits)}"
    for recs in hits.values():
        assert all(rec["request_id"] == rid for rec in recs)
    # Slow requests (threshold 1 ms here) are logged at warn with the same id.
    slow = [rec for rec in hits["gateway"] if rec.get("message") == "slow request"]
    assert slow and slow[0]["level"] == "WARN"


ECHO_ID = '''
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out = (self.headers.get("x-aisle-request-id") or "none").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(out))); self.end_headers(); self.wfile.write(out)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''


def test_the_request_id_reaches_the_transformer(obs, tmp_path):
    import sys

    script = tmp_path / "echo_id.py"
    script.write_text(ECHO_ID)
    spec = tmp_path / "echo-id.json"
    spec.write_text(json.dumps({"name": "echo-id", "communicator": "hpush",
                                "command": [sys.executable, str(script)], "init_timeout": "30s"}))
    aisle(obs, "etl", "init", str(spec))
    deadline = time.time() + 30
    while time.time() < deadline:
        show = json.loads(aisle(obs, "etl", "show", "echo-id", "--json").stdout)
        if all(st.get("Ok") and st["Ok"]["ready"] for _, st in show["targets"]):
            break
        time.sleep(0.2)
    s3 = obs.client()
    s3.create_bucket(Bucket="echoed")
    s3.put_object(Bucket="echoed", Key="o", Body=b"anything")
    c = obs.client()
    c.meta.events.register("before-sign.s3.GetObject",
                           lambda request, **_: request.headers.__setitem__("x-ais-etl", "echo-id"))
    r = c.get_object(Bucket="echoed", Key="o")
    assert r["Body"].read().decode() == r["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    aisle(obs, "etl", "rm", "echo-id")

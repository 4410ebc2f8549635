"""Remotes for remote-bucket tests: a real S3 server (moto_server) and a counting proxy in front
of any S3 endpoint, which can also cut a transfer midway, refuse connections or stall."""

import http.client
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """`moto_server` on a free loopback port."""

    def __init__(self, log_dir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        bin_dir = Path(__import__("sys").executable).parent
        log = open(Path(log_dir) / "moto.log", "ab")
        self.proc = subprocess.Popen(
            [str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1)
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class Proxy:
    """Forwards every request to `upstream` (host:port) unchanged (the Host header too, so
    signatures stay valid) and counts them. `mode`: "pass", "down" (drop connections),
    "stall" (answer nothing for `stall_secs`), "cut" (send `cut_after` bytes of a GET body,
    then drop the connection) or "slow" (pause `delay` seconds before each 64 KiB of a GET
    body)."""

    def __init__(self, upstream_url):
        self.upstream = upstream_url.replace("http://", "").rstrip("/")
        self.requests = []
        self.lock = threading.Lock()
        self.mode = "pass"
        self.cut_after = 0
        self.stall_secs = 30
        self.delay = 0.0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _forward(self):
                with proxy.lock:
                    proxy.requests.append((self.command, self.path))
                mode = proxy.mode
                if mode == "down":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode == "stall":
                    time.sleep(proxy.stall_secs)
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items()}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(k, v)
                chunked = resp.getheader("Content-Length") is None and self.command != "HEAD"
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sent = 0
                cut = mode == "cut" and self.command == "GET" and resp.status in (200, 206)
                while self.command != "HEAD":
                    data = resp.read(64 * 1024)
                    if not data:
                        break
                    if cut and sent + len(data) > proxy.cut_after:
                        self.wfile.write(data[: max(0, proxy.cut_after - sent)])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        conn.close()
                        return
                    if mode == "slow" and self.command == "GET":
                        time.sleep(proxy.delay)
                    if chunked:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    else:
                        self.wfile.write(data)
                    sent += len(data)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, method, key_suffix):
        """Requests with `method` whose path (without query) ends with `/key_suffix`."""
        with self.lock:
            return sum(1 for m, p in self.requests
                       if m == method and p.split("?")[0].endswith("/" + key_suffix))

    def reset(self):
        with self.lock:
            self.requests.clear()

    def stop(self):
        self.server.shutdown()

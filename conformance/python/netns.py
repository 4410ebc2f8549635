"""A multi-host rig on one machine: each node in its own Linux network namespace with its own
address on a private bridge, so nodes talk over a real (virtual) network that a test can cut.

Needs root (CI runs as root) and `ip` (iproute2). Every address is in a /24 the rig made
itself; nothing leaves the machine. `close()` removes every namespace, link and process.
"""

import os
import random
import signal
import subprocess


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


class Rig:
    def __init__(self, hosts):
        self.tag = f"ai{random.randrange(16**4):04x}"  # short: interface names are <= 15 chars
        self.net = random.randrange(100, 250)
        self.bridge = f"{self.tag}br"
        self.hosts = {}
        self.procs = []
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"10.213.{self.net}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i, name in enumerate(hosts):
            ns, outer = f"{self.tag}-{name}", f"{self.tag}v{i}"
            addr = f"10.213.{self.net}.{10 + i}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", outer, "master", self.bridge)
            sh("ip", "link", "set", outer, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            self.hosts[name] = {"ns": ns, "link": outer, "addr": addr}

    def addr(self, host):
        return self.hosts[host]["addr"]

    def run(self, host, args, log):
        """Start `args` on `host`; the process is stopped by close()."""
        p = subprocess.Popen(["ip", "netns", "exec", self.hosts[host]["ns"], *args],
                             stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def cut(self, host):
        """A partition: the host keeps running but nothing reaches it, nor leaves it."""
        sh("ip", "link", "set", self.hosts[host]["link"], "down")

    def heal(self, host):
        sh("ip", "link", "set", self.hosts[host]["link"], "up")

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
        for h in self.hosts.values():
            subprocess.run(["ip", "netns", "del", h["ns"]], capture_output=True)
            subprocess.run(["ip", "link", "del", h["link"]], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def available():
    return os.geteuid() == 0 and subprocess.run(["ip", "netns", "list"], capture_output=True).returncode == 0

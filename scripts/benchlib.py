"""What the benchmark scripts share: running one under the project's venv, an `aisle up` to
measure against, and photo-like test images. Not a benchmark itself; imported by
scripts/bench-ab, bench-etl, bench-loader and bench-requests.
"""

import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AISLE = ROOT / "build" / "release" / "aisle"


def in_venv(script, packages, venv=ROOT / ".venv"):
    """Re-run `script` under `venv`'s Python with `packages` installed and a release build of
    aisle (once: the re-run finds AISLE_BENCH_IN_VENV set)."""
    if os.environ.get("AISLE_BENCH_IN_VENV") == "1":
        return
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    subprocess.run(["cargo", "build", "--release", "--bin", "aisle"], cwd=ROOT, check=True)
    os.environ["AISLE_BENCH_IN_VENV"] = "1"
    os.execv(str(python), [str(python), script, *sys.argv[1:]])


class Up:
    """`aisle up` on a free port with its data in `data`, for the length of a `with`:
    `env` holds what it wrote to aisle.env (endpoint and keys), `pid(node)` a node's process
    id (`gateway`, `t1`, ...)."""

    def __init__(self, data, *args, binary=AISLE, wrapper=(), stderr=subprocess.DEVNULL, wait_secs=60):
        """`wrapper`: a command that runs `aisle up` (e.g. valgrind)."""
        self.data = Path(data)
        self.proc = subprocess.Popen([*wrapper, str(binary), "up", "--data", str(self.data), "--port", "0", *args],
                                     stdout=subprocess.DEVNULL, stderr=stderr)
        env_file = self.data / "aisle.env"
        for _ in range(wait_secs * 10):
            if env_file.exists() and len(env_file.read_text().splitlines()) >= 4:
                break
            if self.proc.poll() is not None:
                raise SystemExit(f"aisle up ended with {self.proc.returncode}")
            time.sleep(0.1)
        self.env = dict(l.replace("export ", "", 1).split("=", 1) for l in env_file.read_text().splitlines())

    def pid(self, node):
        return int((self.data / "run" / f"{node}.pid").read_text())

    def targets(self):
        return [int(p.read_text()) for p in sorted((self.data / "run").glob("t*.pid"))]

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.stop()


def photo(i, w=1600, h=1200):
    """A photo-like JPEG: smooth gradients, shapes and noise (compresses like a photo)."""
    from PIL import Image, ImageDraw, ImageFilter

    rnd = random.Random(i)
    img = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    d = ImageDraw.Draw(img)
    for _ in range(40):
        x, y = rnd.randrange(w), rnd.randrange(h)
        r = rnd.randrange(20, 300)
        d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(rnd.randrange(256) for _ in range(3)))
    img = img.filter(ImageFilter.GaussianBlur(3))
    noise = Image.effect_noise((w, h), 24).convert("RGB")
    img = Image.blend(img, noise, 0.12)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88)
    return buf.getvalue()

"""The dashboard at /_aisle/ui/, in headless Chromium (Debian's chromium, driven by
playwright-core from ui/node_modules): nothing without the keys, login, three targets, a bucket
created by boto3 appearing, a job's progress, logout. With AISLE_SAVE_SCREENSHOTS=1 its screenshots replace docs/ui-*.png (README)."""

import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import REPO, aisle

UI = REPO / "ui"


def browser_ready():
    return (shutil.which("chromium") or os.environ.get("CHROMIUM")) and \
        (UI / "node_modules" / "playwright-core").exists() and shutil.which("node")


@pytest.mark.skipif(not browser_ready(), reason="needs chromium and `npm ci` in ui/ (scripts/test installs both)")
def test_dashboard_in_a_browser(cluster, s3, tmp_path):
    bucket = f"ui-{os.getpid()}"
    out = tmp_path / "shots"
    out.mkdir()
    p = subprocess.Popen(
        ["node", str(UI / "tests" / "browser.mjs"), cluster.endpoint, cluster.env["AWS_ACCESS_KEY_ID"],
         cluster.env["AWS_SECRET_ACCESS_KEY"], bucket, str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=UI,
    )
    seen = []
    try:
        for line in p.stdout:
            seen.append(line.strip())
            if line.strip() == "READY":
                # Signed in and sees the cluster: now make something for it to notice.
                s3.create_bucket(Bucket=bucket)
                for i in range(30):
                    s3.put_object(Bucket=bucket, Key=f"img-{i:04d}.jpg", Body=b"x" * (1000 + i))
                aisle(cluster, "archive", "build", "--source", bucket, "--prefix", "img-",
                      "--output-bucket", bucket, "--output-prefix", "shards/s-", "--shard-size", "10KiB")
        assert p.wait(60) == 0, "\n".join(seen)
    finally:
        if p.poll() is None:
            p.kill()
    assert seen[-4:] == ["READY", "BUCKET_SEEN", "JOB_SEEN", "LOGGED_OUT"], seen
    for name in ("ui-login.png", "ui-dashboard.png"):
        assert (out / name).stat().st_size > 10_000
        # The README's screenshots: refreshed on demand, so a test run leaves the tree clean.
        if os.environ.get("AISLE_SAVE_SCREENSHOTS") == "1":
            shutil.copy(out / name, REPO / "docs" / name)

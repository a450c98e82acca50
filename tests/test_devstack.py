"""`make run`'s stack: comes up with demo data on PORT, and Ctrl-C stops all it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from backend.devstack import free_port
from backend.seed import DEMO_FILES

pytestmark = pytest.mark.slow


def children_of(pid: int) -> set[int]:
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.add(int(status.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


def test_dev_stack_serves_demo_catalogue_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "THROTTLE_BYTES_PER_SECOND": "0"}
    dev = subprocess.Popen(
        [sys.executable, "-m", "backend", "dev", "--state-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert dev.poll() is None, dev.stdout.read() if dev.stdout else ""
            time.sleep(0.3)
        assert health is not None and health.json()["status"] == "healthy"
        files = httpx.get(f"http://127.0.0.1:{port}/v1/files", timeout=5).json()
        assert {f["file_id"] for f in files} == {d.file_id for d in DEMO_FILES}
        started = children_of(dev.pid)
        assert len(started) >= 4  # redis, S3 server, worker, API

        dev.send_signal(signal.SIGINT)
        dev.wait(30)
        for _ in range(100):
            if not any(alive(pid) for pid in started):
                break
            time.sleep(0.1)
        assert not any(alive(pid) for pid in started)
    finally:
        if dev.poll() is None:
            dev.kill()

"""`make run`'s stack: comes up with demo data on PORT, and Ctrl-C stops all it started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
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
        files = httpx.get(f"http://127.0.0.1:{port}/v1/files", timeout=5).json()["items"]
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


MARK = "LONGHAUL_DEVSTACK_TEST"


def marked_processes(mark: str) -> set[int]:
    """Live processes whose environment carries `MARK=mark`: everything `make run` started."""
    needle = f"{MARK}={mark}".encode()
    found = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes().split(b"\0") and alive(int(environ.parent.name)):
                found.add(int(environ.parent.name))
        except OSError:
            continue
    return found


def descendants_of(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        children = children_of(pending.pop())
        pending.extend(children - found)
        found |= children
    return found


def start_make_run(tmp_path: Path, port: int, mark: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}}
    env |= {"PORT": str(port), "THROTTLE_BYTES_PER_SECOND": "0", MARK: mark}
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(
        ["make", "-s", "run", f"STATE_DIR={tmp_path / 'state'}"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal would give it
    )


def wait_for_running(make: subprocess.Popen[str]) -> str:
    assert make.stdout is not None
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = make.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "Longhaul is running" in line:
            return "".join(seen)
    pytest.fail("make run never said it was running:\n" + "".join(seen))


def supervisor_of(mark: str) -> int:
    for pid in marked_processes(mark):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"backend" in cmdline and b"dev" in cmdline:
            return pid
    raise AssertionError("no dev supervisor found")


@pytest.mark.parametrize(
    ("target", "sig"),
    [
        ("make", signal.SIGTERM),
        ("make", signal.SIGHUP),
        ("make", signal.SIGINT),
        ("supervisor", signal.SIGTERM),
        ("supervisor", signal.SIGHUP),
        ("group", signal.SIGHUP),
        ("group", signal.SIGINT),
    ],
)
def test_make_run_stops_everything_it_started_on_a_signal_to_any_of_its_processes(
    tmp_path: Path, target: str, sig: signal.Signals
) -> None:
    mark = f"{target}-{sig.name}-{time.monotonic_ns()}"
    port = free_port()
    make = start_make_run(tmp_path, port, mark)
    try:
        wait_for_running(make)
        started = marked_processes(mark)
        started |= descendants_of(make.pid)  # redis-server writes over its own environment
        # make, the supervisor, redis, S3 server, worker, API
        assert len(started) >= 6, [Path(f"/proc/{p}/cmdline").read_bytes() for p in started]
        signalled_at = time.monotonic()
        if target == "make":
            os.kill(make.pid, sig)
        elif target == "supervisor":
            os.kill(supervisor_of(mark), sig)
        else:
            os.killpg(make.pid, sig)
        while any(alive(pid) for pid in started) and time.monotonic() - signalled_at < 30:
            time.sleep(0.1)
        took = time.monotonic() - signalled_at
        print(f"\n{sig.name} to {target}: every process gone in {took:.1f} s")
        assert not [pid for pid in started if alive(pid)]
        assert took < 15  # target 10 s
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        for pid in marked_processes(mark) | descendants_of(make.pid):
            os.kill(pid, signal.SIGKILL)


def test_make_run_names_a_taken_port_and_never_says_running(tmp_path: Path) -> None:
    port = free_port()
    mark = f"taken-{time.monotonic_ns()}"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        make = start_make_run(tmp_path, port, mark)
        output, _ = make.communicate(timeout=120)
    assert make.returncode != 0
    assert f"port {port}" in output
    assert "already in use" in output
    assert "running" not in output
    assert not marked_processes(mark)


def test_make_run_stopped_while_it_starts_stops_what_it_started_and_never_says_running(
    tmp_path: Path,
) -> None:
    mark = f"startup-{time.monotonic_ns()}"
    make = start_make_run(tmp_path, free_port(), mark)
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(started) < 3 and time.monotonic() < deadline:  # make, supervisor, Redis
            started |= descendants_of(make.pid)
            time.sleep(0.05)
        assert len(started) >= 2, "make run did not start"
        signalled_at = time.monotonic()
        os.kill(make.pid, signal.SIGHUP)
        while time.monotonic() - signalled_at < 30:
            started |= descendants_of(make.pid)
            if not any(alive(pid) for pid in started | {make.pid}):
                break
            time.sleep(0.1)
        took = time.monotonic() - signalled_at
        print(f"\nSIGHUP to make while starting: every process gone in {took:.1f} s")
        assert not [pid for pid in started if alive(pid)]
        assert took < 15  # target 10 s
        output = make.stdout.read() if make.stdout else ""
        assert "Longhaul is running" not in output
    finally:
        for pid in started | marked_processes(mark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

"""`python -m backend api --workers N`: N processes serve one port and stop with their manager."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend import devstack
from backend.services import Services


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (multiprocessing's resource tracker included)."""
    tasks = Path(f"/proc/{pid}/task")
    found: list[int] = []
    for task in tasks.iterdir():
        children = task / "children"
        if children.exists():
            found += [int(child) for child in children.read_text().split()]
    return found


def _serving(pids: list[int]) -> list[int]:
    return [pid for pid in pids if "multiprocessing.spawn" in _cmdline(pid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _sockets(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += fd.readlink().name.startswith("socket:")
        except FileNotFoundError:
            continue
    return count


def _gone(pids: list[int], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(_cmdline(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def two_process_api(
    isolated_env: dict[str, str], services: Services, tmp_path: Path
) -> Iterator[devstack.Process]:
    api = devstack.start_api({**isolated_env, "API_PROCESSES": "2"}, tmp_path)
    yield api
    api.stop()


async def test_two_processes_share_the_port_and_both_take_connections(
    two_process_api: devstack.Process,
) -> None:
    serving = _serving(_children(two_process_api.popen.pid))
    assert len(serving) == 2
    idle = {pid: _sockets(pid) for pid in serving}
    # Forty connections held open at once: the kernel hands accepts to both processes.
    clients = [httpx.AsyncClient(base_url=two_process_api.url, timeout=10) for _ in range(40)]
    try:
        answers = await asyncio.gather(
            *(client.post("/v1/download/async", json={"file_ids": [1]}) for client in clients)
        )
        assert {answer.status_code for answer in answers} == {202}
        busy = {pid: _sockets(pid) for pid in serving}
    finally:
        for client in clients:
            await client.aclose()
    assert all(busy[pid] > idle[pid] for pid in serving), (idle, busy)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_processes_stop_with_their_manager(
    sig: signal.Signals, two_process_api: devstack.Process
) -> None:
    serving = _serving(_children(two_process_api.popen.pid))
    assert len(serving) == 2
    started = time.monotonic()
    two_process_api.popen.send_signal(sig)
    # SIGKILL leaves no chance to clean up: Linux's parent-death signal stops them instead.
    assert _gone(serving, within=10), [_cmdline(pid) for pid in serving]
    print(
        f"\n{sig.name} to the manager: both API processes gone in "
        f"{time.monotonic() - started:.1f} s"
    )
    two_process_api.popen.wait(5)


def test_workers_flag_must_be_positive() -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "backend", "api", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "--workers: must be at least 1" in run.stderr


async def test_any_process_answers_a_scrape_with_every_processs_figures(
    two_process_api: devstack.Process,
) -> None:
    def files_requests(text: str) -> float:
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "longhaul_http_requests"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels.get("route") == "/v1/files"
        )

    clients = [httpx.AsyncClient(base_url=two_process_api.url, timeout=10) for _ in range(10)]
    try:
        # Ten connections at once, three requests each: both processes serve some.
        for _ in range(3):
            answers = await asyncio.gather(*(client.get("/v1/files") for client in clients))
            assert {answer.status_code for answer in answers} == {200}
        scrapes = await asyncio.gather(
            *(client.get("/metrics") for client in clients for _ in range(2))
        )
    finally:
        for client in clients:
            await client.aclose()
    # Whichever process answered, the count is the whole API's.
    assert {files_requests(scrape.text) for scrape in scrapes} == {30.0}

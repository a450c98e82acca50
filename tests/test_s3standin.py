"""The dev and test S3 server (backend/s3standin.py): keys kept exactly as sent, one access
line per request, and connections kept alive, against a server of the test's own."""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from backend import devstack
from backend.settings import load_settings
from backend.storage import Storage

NAMES = ["a%41b.txt", "x%2Fy.txt", "100%25.txt", "100%.txt", "q?x=1#f.txt", "spa ce ü+.txt"]


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[devstack.Process]:
    process = devstack.start_s3(tmp_path)
    yield process
    process.stop()


async def test_keys_are_stored_as_sent_and_every_request_has_its_own_log_line(
    standin: devstack.Process,
) -> None:
    storage = Storage(load_settings(devstack.stack_env("redis://127.0.0.1:1/0", standin.url, "s")))
    await storage.open()
    try:
        await storage.ensure_buckets()
        assert standin.log_path is not None
        before = standin.log_path.read_text().count(' HTTP/1.1" ')
        await asyncio.gather(
            *(storage.put_source(n + 1, name, name.encode()) for n, name in enumerate(NAMES))
        )
        listed = {f.key: f for f in await storage.catalogue()}
        assert set(listed) == {f"{n + 1}/{name}" for n, name in enumerate(NAMES)}
        for key in listed:
            data = b"".join([c async for c in storage.read(key)])
            assert data == key.partition("/")[2].encode()
        # Puts, one listing, reads: each a line of its own, even when written at once.
        log = standin.log_path.read_text()
        assert log.count(' HTTP/1.1" ') - before == 2 * len(NAMES) + 1
        assert all(line.count(' HTTP/1.1" ') <= 1 for line in log.splitlines())
    finally:
        await storage.close()


def test_a_connection_serves_request_after_request(standin: devstack.Process) -> None:
    connection = http.client.HTTPConnection(urlsplit(standin.url).netloc, timeout=5)
    try:
        for _ in range(3):
            connection.request("GET", "/")
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
            assert answer.getheader("Connection", "").lower() != "close"
        assert connection.sock is not None  # the same socket all along
    finally:
        connection.close()

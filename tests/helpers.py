"""Small helpers the tests share: following a job, reading its archive."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from httpx_sse import aconnect_sse

from backend.jobevents import TERMINAL_EVENTS
from backend.settings import Settings
from backend.worker import create_worker


@dataclass
class ReceivedEvent:
    id: str
    event: str
    data: dict[str, Any]


async def start(http: httpx.AsyncClient, file_ids: list[int], **kwargs: Any) -> dict[str, Any]:
    response = await http.post("/v1/download/async", json={"file_ids": file_ids}, **kwargs)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def collect_events(
    http: httpx.AsyncClient,
    job_id: str,
    last_event_id: str | None = None,
    limit: int | None = None,
    timeout: float = 60,
) -> list[ReceivedEvent]:
    """Events from the SSE stream until the terminal one (or `limit` events)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    received: list[ReceivedEvent] = []

    async def read() -> None:
        async with aconnect_sse(
            http, "GET", f"/v1/download/subscribe/{job_id}", headers=headers
        ) as source:
            assert source.response.status_code == 200, await source.response.aread()
            async for sse in source.aiter_sse():
                if not sse.data:  # a keep-alive or `retry:` frame, not an event
                    continue
                received.append(ReceivedEvent(sse.id, sse.event, json.loads(sse.data)))
                if sse.event in TERMINAL_EVENTS or (limit is not None and len(received) >= limit):
                    return

    await asyncio.wait_for(read(), timeout)
    return received


async def wait_for_status(
    http: httpx.AsyncClient, job_id: str, statuses: set[str], timeout: float = 60
) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while True:
            body: dict[str, Any] = (await http.get(f"/v1/download/status/{job_id}")).json()
            if body["status"] in statuses:
                return body
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), timeout)


async def wait_until_running(
    http: httpx.AsyncClient, job_id: str, attempt: int = 1, timeout: float = 30
) -> dict[str, Any]:
    """The job's status once attempt `attempt` (or a later one) has written archive bytes."""

    async def poll() -> dict[str, Any]:
        while True:
            body: dict[str, Any] = (await http.get(f"/v1/download/status/{job_id}")).json()
            if (
                body["status"] == "processing"
                and body["attempt"] >= attempt
                and body["bytes_processed"] > 0
            ):
                return body
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout)


async def follow_with_reconnects(
    base_url: str, job_id: str, reconnects: list[str]
) -> AsyncIterator[tuple[str, str]]:
    """An EventSource: (id, event) pairs until the terminal one. A dropped or refused stream
    is retried with Last-Event-ID (the id it reconnected from goes into `reconnects`); a 204
    ends it, as it ends a browser's EventSource."""
    last_id: str | None = None
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            async with (
                httpx.AsyncClient(base_url=base_url, timeout=30) as client,
                aconnect_sse(
                    client, "GET", f"/v1/download/subscribe/{job_id}", headers=headers
                ) as source,
            ):
                if source.response.status_code == 204:
                    return
                if source.response.status_code == 200:
                    async for sse in source.aiter_sse():
                        if not sse.data:
                            continue
                        last_id = sse.id
                        yield sse.id, sse.event
                        if sse.event in TERMINAL_EVENTS:
                            return
        except httpx.TransportError:
            pass
        reconnects.append(last_id or "")
        await asyncio.sleep(0.2)


T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float = 20
) -> T:
    """Probe until `ok` holds (the state lives in Redis, written by another task or process)."""

    async def loop() -> T:
        while True:
            value = await probe()
            if ok(value):
                return value
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(loop(), timeout)


async def run_worker_until_idle(settings: Settings, **overrides: Any) -> None:
    """A real arq worker in burst mode: runs until the queue is empty, deferred jobs too."""
    worker = create_worker(settings, burst=True, poll_delay=0.05, handle_signals=False, **overrides)
    try:
        await asyncio.wait_for(worker.async_run(), 90)
    finally:
        await worker.close()


def zip_digests(data: bytes) -> dict[str, str]:
    """Entry name -> sha256 of its contents, after checking every CRC."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {
            info.filename: hashlib.sha256(archive.read(info)).hexdigest()
            for info in archive.infolist()
        }


async def fetch(url: str) -> bytes:
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(url)
        assert response.status_code == 200, response.text[:500]
        return response.content

"""Event streams end definitely: `204` once nothing follows, and a slot only while a stream runs.

A browser's EventSource reconnects by itself whenever a stream closes, sending the last id it
saw; only a `204` makes it stop. These tests run a stack of their own with a small stream cap
and no worker, so jobs stay queued until the test cancels them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from httpx_sse import aconnect_sse
from litestar.response import ServerSentEventMessage

from backend import devstack
from backend.api import sse
from backend.downloads import resume_point
from backend.jobevents import completed_event, terminal_event, terminal_event_for
from backend.models import JobRecord, JobState
from backend.ratelimit import open_stream
from backend.services import Services
from tests.helpers import ReceivedEvent, collect_events, start
from tests.test_security import token

CAP = 3


@pytest.fixture
def capped_api(
    isolated_env: dict[str, str], services: Services, tmp_path: Path
) -> Iterator[devstack.Process]:
    env = {**isolated_env, "MAX_STREAMS_PER_CLIENT": str(CAP), "SSE_PING_SECONDS": "0.5"}
    api = devstack.start_api(env, tmp_path)
    yield api
    api.stop()


@pytest.fixture
async def client(capped_api: devstack.Process) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=capped_api.url, timeout=10) as http:
        yield http


def subscribe_path(job_id: str) -> str:
    return f"/v1/download/subscribe/{job_id}"


async def cancelled_job(client: httpx.AsyncClient) -> tuple[str, list[ReceivedEvent]]:
    """A job that has ended (cancelled), and every event of it, read from its stream."""
    job_id = (await start(client, [1]))["job_id"]
    assert (await client.delete(f"/v1/download/{job_id}")).status_code == 200
    events = await collect_events(client, job_id, timeout=10)
    assert [e.event for e in events] == ["progress", "cancelled"]
    return job_id, events


async def every_slot_opens(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> bool:
    """Whether CAP streams can be open at once on `path`: no slot is held anywhere else."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(CAP):
            response = await stack.enter_async_context(client.stream("GET", path, headers=headers))
            if response.status_code != 200:
                assert response.status_code == 429, response.status_code
                return False
    return True


async def test_reconnect_with_the_last_id_of_an_ended_job_is_204_and_holds_no_slot(
    client: httpx.AsyncClient,
) -> None:
    job_id, events = await cancelled_job(client)
    # Streams that the server ends after the terminal event give their slots back too.
    for _ in range(CAP + 2):
        assert await collect_events(client, job_id, timeout=10) == events
    for _ in range(CAP + 5):
        async with client.stream(
            "GET", subscribe_path(job_id), headers={"Last-Event-ID": events[-1].id}
        ) as response:
            assert response.status_code == 204
            assert await response.aread() == b""
    resumed = await client.get(subscribe_path(job_id), params={"last_event_id": events[-1].id})
    assert resumed.status_code == 204
    running = await start(client, [1])
    assert await every_slot_opens(client, subscribe_path(running["job_id"]))


async def test_an_id_the_job_never_issued_gets_a_definite_answer(
    client: httpx.AsyncClient,
) -> None:
    job_id, events = await cancelled_job(client)
    last_ms, _, last_seq = events[-1].id.partition("-")
    async with client.stream(
        "GET", subscribe_path(job_id), headers={"Last-Event-ID": f"{last_ms}-{int(last_seq) + 1}"}
    ) as later:
        assert later.status_code == 400
        detail = json.loads(await later.aread())["detail"]
    assert detail.startswith("Last-Event-ID: ")
    assert "later than this job's last event" in detail
    # Older than anything the job issued: the whole history, which ends the stream.
    assert await collect_events(client, job_id, last_event_id="1-0", timeout=10) == events
    # Between two of its events: resumes after that point.
    first_ms, _, first_seq = events[0].id.partition("-")
    between = f"{first_ms}-{int(first_seq) + 1}"
    if between != events[-1].id:
        resumed = await collect_events(client, job_id, last_event_id=between, timeout=10)
        assert resumed == events[1:]


def send_then_reset(url: str, path: str, headers: dict[str, str]) -> None:
    """Send a request and reset the connection at once (SO_LINGER 0), as a dropped client does."""
    address = urlsplit(url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())


async def test_subscribes_reset_before_the_stream_starts_give_their_slots_back(
    client: httpx.AsyncClient, capped_api: devstack.Process
) -> None:
    running = (await start(client, [1]))["job_id"]
    # A token names the client however early the reset comes: a connection reset before the
    # server accepts it has no peer address, so its slot would count against "ip:unknown".
    dora = token("dora")
    for _ in range(CAP + 5):
        send_then_reset(capped_api.url, subscribe_path(running), dora)

    # Each reset reaches the server on its own time; all slots must be free within seconds,
    # not after the 120 s lease.
    async def until_free() -> None:
        while True:
            if await every_slot_opens(client, subscribe_path(running), dora):
                return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(until_free(), 10)


async def test_page_stream_of_ended_jobs_is_204_once_the_page_saw_the_end(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/")).status_code == 200  # the owner cookie, as a browser gets it
    job_id, _ = await cancelled_job(client)
    path = f"/events?jobs={job_id}"
    seen: list[tuple[str, str]] = []

    async def read() -> None:
        async with aconnect_sse(client, "GET", path) as source:
            async for sse in source.aiter_sse():
                if sse.event != "message":
                    seen.append((sse.event, sse.id))

    await asyncio.wait_for(read(), 10)
    (card, _), (done, done_id) = seen
    assert (card, done) == (f"job-{job_id}", "done")
    assert done_id
    for _ in range(CAP + 5):
        again = await client.get(path, headers={"Last-Event-ID": done_id})
        assert again.status_code == 204
        assert again.content == b""
    # A page following none of its own running jobs has nothing to stream either.
    assert (await client.get(f"/events?jobs={'0' * 32}")).status_code == 204
    running = await start(client, [1])
    assert await every_slot_opens(client, f"/events?jobs={running['job_id']}")


@pytest.mark.parametrize(
    "state", [JobState.READY, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED]
)
async def test_every_terminal_event_ends_a_stream_resumed_after_it(
    services: Services, state: JobState
) -> None:
    record = JobRecord(job_id=f"{state.value[:4].encode().hex()}" * 4, owner="o", file_ids=[1])
    await services.store.create(record)
    if state is JobState.EXPIRED:
        record.status = JobState.READY
        await services.store.save(record, completed_event(record))
        record.status = JobState.EXPIRED
        await services.store.expire(record)
    else:
        record.status = state
        await services.store.save(record, terminal_event(record))
    events = await services.store.events_after(record.job_id)
    assert events[-1].event == terminal_event_for(state)
    assert await resume_point(services, record.job_id, events[-1].id) == (events[-1].id, True)
    assert await resume_point(services, record.job_id, events[0].id) == (events[0].id, False)
    assert await resume_point(services, record.job_id, None) == (None, False)


async def test_a_busy_stream_keeps_its_slot_and_the_clients_set_alive(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stream that is never idle sends no pings; its slot must be renewed all the same, or
    # the client could open streams past its cap once the first lease ran out.
    monkeypatch.setattr(sse, "STREAM_LEASE_SECONDS", 0.4)
    redis = services.redis
    lease = await open_stream(redis, services.settings.key_prefix, "busy-client", 5)
    key = f"{services.settings.key_prefix}:streams:busy-client"
    await redis.expire(key, 2)
    (member, score), *_ = await redis.zrange(key, 0, 0, withscores=True)
    await redis.zadd(key, {member: score - 110})  # as if the lease were nearly over

    async def busy() -> AsyncGenerator[sse.Frame, None]:
        for n in range(4):
            await asyncio.sleep(0.15)
            yield ServerSentEventMessage(event="progress", data=str(n), id=f"{n + 1}-0")

    sent = [frame async for frame in sse._framed(busy(), lease)]
    assert len(sent) == 5
    (_, renewed), *_ = await redis.zrange(key, 0, 0, withscores=True)
    assert renewed > time.time() + 60
    assert await redis.ttl(key) > 60
    await lease.release()

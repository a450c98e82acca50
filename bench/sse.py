"""SSE scale: thousands of subscribers on one API process.

Each subscriber follows a job of its own over GET /v1/download/subscribe/{id}, from its own
client address. The bench then publishes `progress` events through the job store (the same
Lua script a worker uses: record + stream + PUBLISH) with the send time in the event's data,
and each subscriber notes when the event reached it. Subscribers are raw asyncio protocols in
this process: 10k httpx streams would cost more CPU than the server they measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import msgspec

from backend import devstack
from backend.jobevents import ProgressEvent, progress_event
from backend.models import JobRecord
from backend.owners import PUBLIC_OWNER
from backend.services import Services
from bench.loadgen import build_request, client_address
from bench.report import Result, Table, mib, ms, percentile
from bench.stack import Stack, rss

FULL_LEVELS = (1000, 5000, 10000)
QUICK_LEVELS = (200,)
OPEN_CONCURRENCY = 100


@dataclass
class Delays:
    """Delays of the timed events received so far; `all_in` is set once `expected` arrived."""

    received: list[float] = field(default_factory=list)
    expected: int = 0
    all_in: asyncio.Event = field(default_factory=asyncio.Event)

    def expect(self, count: int) -> None:
        self.received.clear()
        self.expected = count
        self.all_in.clear()

    def add(self, delay: float) -> None:
        self.received.append(delay)
        if len(self.received) >= self.expected:
            self.all_in.set()


class Subscriber(asyncio.Protocol):
    """One SSE stream: ready once its first event (the job's history) arrives."""

    def __init__(self, request: bytes, delays: Delays) -> None:
        self.request = request
        self.delays = delays
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.open = False
        self.transport: asyncio.Transport | None = None
        self._partial = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.open = True
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            if not self.ready.done():
                self.ready.set_result(None)
            payload = json.loads(line[5:])
            if "sent" in payload:
                self.delays.add(now - payload["sent"])

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("stream closed before its first event"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _create_jobs(services: Services, count: int) -> list[JobRecord]:
    records = [
        JobRecord(job_id=f"{n:032x}", owner=PUBLIC_OWNER, file_ids=[1], total_files=1)
        for n in range(1, count + 1)
    ]
    for start in range(0, count, 200):
        await asyncio.gather(*(services.store.create(r) for r in records[start : start + 200]))
    return records


async def _open(
    host: str, port: int, netloc: str, records: list[JobRecord], first: int, delays: Delays
) -> list[Subscriber]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(n: int) -> Subscriber:
        request = build_request(
            "GET",
            f"/v1/download/subscribe/{records[n].job_id}",
            netloc,
            headers={"Accept": "text/event-stream", "X-Forwarded-For": client_address(n, 50)},
        )
        async with gate:
            _, protocol = await loop.create_connection(
                lambda: Subscriber(request, delays), host, port
            )
            await asyncio.wait_for(protocol.ready, 30)
        return protocol

    return list(await asyncio.gather(*(one(n) for n in range(first, len(records)))))


class TimedProgressEvent(ProgressEvent, kw_only=True):
    """A real `progress` event that also carries when the bench sent it (clients ignore it)."""

    sent: float


async def _publish(services: Services, records: list[JobRecord], count: int, rate: float) -> None:
    """`count` progress events at `rate`/s, each to a random subscribed job."""
    chooser = random.Random(7)
    start = time.perf_counter()
    for k in range(count):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        record = chooser.choice(records)
        record.progress = k % 100
        figures = msgspec.structs.asdict(progress_event(record))
        await services.store.save(record, TimedProgressEvent(**figures, sent=time.perf_counter()))


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def redis_connections_of(process: devstack.Process, redis_port: int) -> int:
    """How many TCP connections the process holds to Redis (from /proc, by socket inode)."""
    inodes = _socket_inodes(process.popen.pid)
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        remote_port = int(parts[2].split(":")[1], 16)
        if remote_port == redis_port and parts[9] in inodes:
            count += 1
    return count


async def _pubsub_clients(services: Services) -> int:
    clients = await services.redis.client_list()
    return sum(1 for c in clients if int(c.get("sub", 0)) + int(c.get("psub", 0)) > 0)


async def run(stack: Stack, quick: bool) -> Result:
    levels = QUICK_LEVELS if quick else FULL_LEVELS
    events = 100 if quick else 1000
    rate = 100.0 if quick else 200.0
    env = stack.env("bench-sse")
    api = stack.api(env)
    url = urlsplit(api.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    redis_port = urlsplit(stack.redis.url).port or 6379
    services = await stack.services(env)
    delays = Delays()
    subscribers: list[Subscriber] = []
    table = Table(
        [
            "subscribers",
            "held",
            "API RSS MiB",
            "KiB/subscriber",
            "events",
            "p50 ms",
            "p99 ms",
            "max ms",
            "lost",
            "pub/sub conns",
            "API→Redis conns",
        ]
    )
    p99_at: dict[int, float] = {}
    held_at: dict[int, int] = {}
    try:
        records = await _create_jobs(services, max(levels) + 20)
        warm, records = records[-20:], records[:-20]
        # Warm up (imports, pools), then let the first streams go before the baseline.
        for sub in await _open(host, port, url.netloc, warm, 0, delays):
            sub.close()
        await asyncio.sleep(1)
        baseline = rss(api)
        for level in levels:
            opened_before = len(subscribers)
            subscribers += await _open(
                host, port, url.netloc, records[:level], opened_before, delays
            )
            gc.collect()
            await asyncio.sleep(1)
            memory = rss(api)
            delays.expect(events)
            await _publish(services, records[:level], events, rate)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(delays.all_in.wait(), 10)
            got = list(delays.received)
            held = sum(1 for s in subscribers if s.open)
            p99_at[level], held_at[level] = percentile(got, 99), held
            table.add(
                level,
                held,
                mib(memory),
                f"{(memory - baseline) / level / 1024:.1f}",
                len(got),
                ms(percentile(got, 50)),
                ms(percentile(got, 99)),
                ms(max(got, default=float("nan"))),
                events - len(got),
                await _pubsub_clients(services),
                redis_connections_of(api, redis_port),
            )
    finally:
        for sub in subscribers:
            sub.close()
        await services.close()
        stack.stop(api)

    result = Result("sse", "2. SSE scale (one API process)")
    result.tables.append(
        (
            f"API RSS with 0 subscribers: {mib(baseline)} MiB. At each level, {events} progress "
            f"events at {rate:.0f}/s to random subscribed jobs; delay = the job store's write "
            "(record + stream + PUBLISH) to the subscriber's receipt:",
            table,
        )
    )
    top = max(levels)
    result.target(f"{top} subscribers held", f"{held_at[top]}", f"{top}", held_at[top] >= top)
    if 1000 in p99_at:
        result.target(
            "p99 event delay at 1k subscribers",
            f"{ms(p99_at[1000])} ms",
            "< 100 ms",
            p99_at[1000] < 0.1,
        )
    result.notes.append(
        "'pub/sub conns' counts every Redis client subscribed to a channel (CLIENT LIST), "
        "whatever the number of streams: the API's one event reader. 'API→Redis conns' is "
        "every TCP connection the API process holds to Redis (its command pool plus that "
        "reader), read from /proc. The subscribers and the publisher run in the bench "
        "process on the same 2 cores; events are published from the bench (through "
        "`JobStore.save`, the worker's own call) so the send time can travel in the data."
    )
    return result

"""An open-loop HTTP/1.1 load generator on raw asyncio streams.

Requests are sent at fixed times (rate × duration) whether or not earlier ones have answered,
and each latency is measured from the time the request was due, so a stalled server shows up
as latency instead of quietly lowering the offered rate (no coordinated omission). Raw
keep-alive sockets cost a fraction of a full HTTP client, which matters on a 2-core machine
where the generator competes with the server it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.report import percentile

KEEP_ALIVE_REUSE_SECONDS = 2.0


class HttpError(Exception):
    pass


@dataclass
class Outcome:
    """Latencies (seconds) of the requests that got a 2xx, and what happened to the rest."""

    offered_rate: float
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    def p(self, pct: float) -> float:
        return percentile(self.latencies, pct)

    @property
    def achieved_rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_used = time.perf_counter()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.last_used = time.perf_counter()
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = head.lower()
        marker = headers.find(b"\r\ncontent-length:")
        if marker >= 0:
            end = headers.index(b"\r\n", marker + 2)
            body = await self.reader.readexactly(int(headers[marker + 17 : end]))
        elif b"transfer-encoding: chunked" in headers:
            body = await self._chunked()
        else:
            raise HttpError("response without a length")
        return status, body

    async def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += await self.reader.readexactly(size + 2)
            if size == 0:
                return bytes(body)

    def close(self) -> None:
        self.writer.close()


def build_request(
    method: str, path: str, host: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in {"POST", "PUT"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def client_address(n: int, run: int = 0) -> str:
    """A distinct client address per request, as many clients behind one proxy would be."""
    return f"10.{run % 256}.{(n >> 8) & 255}.{n & 255}"


async def open_loop(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    rate: float,
    duration: float,
    *,
    max_connections: int = 256,
    timeout: float = 5.0,
) -> Outcome:
    """Send `rate × duration` requests at fixed times and measure each one's latency."""
    # perf_counter, not loop.time(): uvloop's clock has millisecond steps.
    clock = time.perf_counter
    outcome = Outcome(offered_rate=rate)
    idle: list[Connection] = []
    slots = asyncio.Semaphore(max_connections)
    tasks: set[asyncio.Task[None]] = set()

    def reuse() -> Connection | None:
        # The server closes keep-alive connections idle for 5 s (uvicorn's default); a
        # request written into one that is closing would fail through no fault of the server.
        while idle:
            conn = idle.pop()
            if clock() - conn.last_used < KEEP_ALIVE_REUSE_SECONDS:
                return conn
            conn.close()
        return None

    async def one(n: int, due: float) -> None:
        conn = None
        try:
            # The timeout counts from the due time, waiting for a free connection included.
            async with asyncio.timeout(timeout), slots:
                conn = reuse() or await Connection.open(host, port)
                status, _ = await conn.request(make_request(n))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, HttpError) as exc:
            outcome.errors[type(exc).__name__] += 1
            if conn is not None:
                conn.close()
            return
        idle.append(conn)
        if 200 <= status < 300:
            outcome.latencies.append(clock() - due)
        else:
            outcome.errors[f"HTTP {status}"] += 1

    total = int(rate * duration)
    start = clock() + 0.05
    for n in range(total):
        due = start + n / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(n, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        outcome.sent += 1
    if tasks:
        await asyncio.wait(set(tasks))
    outcome.elapsed = clock() - start
    for conn in idle:
        with contextlib.suppress(Exception):
            conn.close()
    return outcome


async def closed_burst(
    host: str, port: int, make_request: Callable[[int], bytes], count: int, concurrency: int
) -> list[tuple[int, bytes]]:
    """Send `count` requests as fast as `concurrency` connections allow; return the answers."""
    answers: list[tuple[int, bytes]] = [(0, b"")] * count
    counter = iter(range(count))

    async def worker() -> None:
        conn = await Connection.open(host, port)
        try:
            for n in counter:
                answers[n] = await conn.request(make_request(n))
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers

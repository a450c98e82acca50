"""Fixtures of the CLI tests: a throttled stack of their own behind real TCP proxies that cut
or corrupt chosen responses, and a runner of the installed `longhaul` command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from backend import devstack
from tests.stack import env_for, seed_stack

LONGHAUL = Path(sys.executable).with_name("longhaul")
MIB = 1024 * 1024
_HEAD_END = b"\r\n\r\n"


@dataclass
class Fault:
    """What the proxy does to the responses of requests whose target contains `path`."""

    path: str
    # Offsets count bytes of the response body (as sent, so chunk framing included).
    cut_after: int | None = None  # pass the head and this many body bytes, then hang up
    status: int | None = None  # answer this status itself instead of forwarding
    corrupt_at: int | None = None  # flip the body byte at this offset
    times: int | None = 1  # how many matching requests it hits (None: all of them)


@dataclass
class Exchange:
    """One request that went through the proxy, and the response bytes passed back."""

    method: str
    target: str
    headers: dict[str, str]
    fault: Fault | None = None
    response: bytearray = field(default_factory=bytearray)
    body_start: int | None = None

    @property
    def status_code(self) -> int:
        return int(self.response.split(b" ", 2)[1]) if self.response else 0


class FaultyProxy:
    """A TCP proxy on a free loopback port that reads the HTTP/1.1 requests passing through
    (so faults hit the right request on a kept-alive connection) and forwards everything else."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.faults: list[Fault] = []
        self.exchanges: list[Exchange] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def arm(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def requests_to(self, path: str) -> list[Exchange]:
        return [exchange for exchange in self.exchanges if path in exchange.target]

    def _match(self, target: str) -> Fault | None:
        for fault in self.faults:
            if fault.path in target and (fault.times is None or fault.times > 0):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    async def _connection(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            self._tasks.discard(task)
            return
        current: list[Exchange] = []
        up = asyncio.create_task(self._requests(client_r, upstream_w, client_w, current))
        down = asyncio.create_task(self._responses(upstream_r, client_w, current))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (up, down):
                pending.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            for writer in (client_w, upstream_w):
                with contextlib.suppress(Exception):
                    writer.close()
            self._tasks.discard(task)

    async def _requests(
        self,
        client_r: asyncio.StreamReader,
        upstream_w: asyncio.StreamWriter,
        client_w: asyncio.StreamWriter,
        current: list[Exchange],
    ) -> None:
        buffer = b""
        while chunk := await client_r.read(65536):
            buffer += chunk
            while (end := buffer.find(_HEAD_END)) >= 0:
                head = buffer[:end].decode("latin-1").split("\r\n")
                headers = dict(
                    (name.strip().lower(), value.strip())
                    for name, _, value in (line.partition(":") for line in head[1:])
                )
                body = int(headers.get("content-length", "0"))
                if len(buffer) < end + 4 + body:
                    break  # the body is still on its way
                buffer = buffer[end + 4 + body :]
                method, target, _ = head[0].split(" ", 2)
                exchange = Exchange(method, target, headers, self._match(target))
                self.exchanges.append(exchange)
                current.append(exchange)
                if exchange.fault is not None and exchange.fault.status is not None:
                    # What a proxy that refuses event streams answers: its own error page.
                    canned = (
                        f"HTTP/1.1 {exchange.fault.status} Bad Gateway\r\n"
                        "content-type: text/html\r\ncontent-length: 8\r\n"
                        "connection: close\r\n\r\nblocked\n"
                    ).encode()
                    exchange.response += canned
                    client_w.write(canned)
                    await client_w.drain()
                    return
            upstream_w.write(chunk)
            await upstream_w.drain()

    async def _responses(
        self,
        upstream_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        current: list[Exchange],
    ) -> None:
        while chunk := await upstream_r.read(65536):
            exchange = current[-1]
            fault = exchange.fault
            sent = len(exchange.response)
            if exchange.body_start is None:
                head_end = (exchange.response + chunk).find(_HEAD_END)
                if head_end >= 0:
                    exchange.body_start = head_end + len(_HEAD_END)
            cut_at: int | None = None
            if fault is not None and exchange.body_start is not None:
                if fault.corrupt_at is not None:
                    at = exchange.body_start + fault.corrupt_at - sent
                    if 0 <= at < len(chunk):
                        chunk = chunk[:at] + bytes([chunk[at] ^ 0xFF]) + chunk[at + 1 :]
                if fault.cut_after is not None:
                    cut_at = exchange.body_start + fault.cut_after
                    chunk = chunk[: max(0, cut_at - sent)]
            exchange.response += chunk
            client_w.write(chunk)
            await client_w.drain()
            if cut_at is not None and len(exchange.response) >= cut_at:
                return  # the connection is closed on the way out: a dropped transfer


@dataclass
class CliStack:
    """An API and a throttled worker of their own; the CLI reaches both servers through
    proxies (`api_url`, and the S3 endpoint the download links are signed for)."""

    api_url: str
    direct_url: str
    api_proxy: FaultyProxy
    s3_proxy: FaultyProxy
    env: dict[str, str]


@pytest.fixture(scope="session", name="cli_stack")
async def cli_stack_fixture(
    redis_server: devstack.Process, s3_server: devstack.Process, state_dir: Path
) -> AsyncIterator[CliStack]:
    s3_proxy = FaultyProxy(int(urlsplit(s3_server.url).port or 0))
    await s3_proxy.start()
    api_port = devstack.free_port()
    api_proxy = FaultyProxy(api_port)
    await api_proxy.start()
    env = env_for(
        redis_server.url,
        s3_server.url,
        f"lh-cli{os.getpid()}",
        # Slow enough that a job is still running when its stream is cut, and while two
        # `longhaul` processes start one after the other on a busy machine (status, cancel).
        THROTTLE_BYTES_PER_SECOND=str(3 * MIB),
        S3_PUBLIC_ENDPOINT=s3_proxy.url,
    )
    await seed_stack(env)
    logs = state_dir / "logs"
    api = await asyncio.to_thread(devstack.start_api, env, logs, api_port, "cli-api")
    worker = await asyncio.to_thread(devstack.start_worker, env, logs, "cli-worker")
    yield CliStack(api_proxy.url, api.url, api_proxy, s3_proxy, env)
    await asyncio.to_thread(worker.stop)
    await asyncio.to_thread(api.stop)
    await api_proxy.stop()
    await s3_proxy.stop()


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def run_cli(api_url: str, *args: str, cwd: Path | None = None, timeout: float = 90) -> Run:
    """Run the installed `longhaul` command as a real process and wait for it."""
    process = await start_cli(api_url, *args, cwd=cwd)
    return await finish(process, timeout)


async def start_cli(
    api_url: str, *args: str, cwd: Path | None = None
) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGHAUL_")}
    env["LONGHAUL_API_URL"] = api_url
    return await asyncio.create_subprocess_exec(
        str(LONGHAUL),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )


async def finish(process: asyncio.subprocess.Process, timeout: float = 90) -> Run:
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(f"longhaul did not finish in {timeout}s:\n{err.decode()}") from None
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


_COMPLETE_EVENT = re.compile(rb"id: (\d+-\d+)\r?\nevent: \w+\r?\ndata: [^\r\n]*\r?\n\r?\n")


def complete_event_ids(response: bytes) -> list[str]:
    """Ids of the SSE events that arrived whole in a (possibly cut) response."""
    return [match.decode() for match in _COMPLETE_EVENT.findall(response)]

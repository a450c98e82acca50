"""Enqueue: what a POST /v1/download/async costs, against serving a static file.

Two measures, side by side in one run:
- Capacity: the highest offered rate at which p99 stays under 25 ms (bench/capacity.py), for
  the static file (the framework's floor: no Redis, no S3) and for POST, with one API process
  and with two (`--workers 2`). Ratios of capacities reproduce; a fixed-rate p99 does not.
- Cost at a light, fixed rate: latency, API CPU per request, and Redis commands and round trips
  per request (Redis's own counters: `total_commands_processed`, `total_reads_processed`).
No worker runs, so jobs stay queued; the API's work is the same either way.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Callable
from urllib.parse import urlsplit

from redis.asyncio import Redis

from backend import devstack
from bench.capacity import Capacity, find_capacity
from bench.loadgen import build_request, client_address, open_loop
from bench.report import Result, Table, ms
from bench.stack import Stack, cpu_seconds

P99_LIMIT = 0.025
LIGHT_RATE = 100
POST = "POST /v1/download/async"
STATIC = "GET /static/favicon.svg"


def _requests(host: str, run: int) -> dict[str, Callable[[int], bytes]]:
    body = json.dumps({"file_ids": [1, 2, 3]}).encode()

    def post(n: int) -> bytes:
        headers = {
            "Content-Type": "application/json",
            # A distinct client per request, as many clients behind one proxy would be: the
            # default per-client limits apply without answering 429.
            "X-Forwarded-For": client_address(n, run),
        }
        return build_request("POST", "/v1/download/async", host, body, headers)

    static = build_request("GET", "/static/favicon.svg", host)
    return {STATIC: lambda n: static, POST: post}


async def redis_counters(redis: Redis) -> tuple[int, int]:
    stats = await redis.info("stats")
    return int(stats["total_commands_processed"]), int(stats["total_reads_processed"])


def _address(api: devstack.Process) -> tuple[str, int]:
    url = urlsplit(api.url)
    return url.hostname or "127.0.0.1", url.port or 80


async def _warm_up(api: devstack.Process, run: int) -> None:
    host, port = _address(api)
    for make in _requests(f"{host}:{port}", run).values():
        await open_loop(host, port, make, rate=100, duration=0.5)


async def _capacities(stack: Stack, processes: int, quick: bool, run: int) -> dict[str, Capacity]:
    api = stack.api(stack.env(f"bench-enqueue-{processes}", API_PROCESSES=str(processes)))
    host, port = _address(api)
    await _warm_up(api, 200 + run)
    found: dict[str, Capacity] = {}
    for offset, (route, make) in enumerate(_requests(f"{host}:{port}", run).items()):
        label = f"capacity-{processes}-{route.split()[0].lower()}"
        with stack.profiler.record(api, label):
            found[route] = await find_capacity(
                host,
                port,
                make if route == STATIC else _requests(f"{host}:{port}", run + offset)[route],
                p99_limit=P99_LIMIT,
                start=200 if quick else 300,
                duration=1.0 if quick else 3.0,
                bisections=0 if quick else 3,
                ceiling=300 if quick else 20_000,
            )
    stack.stop(api)
    return found


async def _light_costs(stack: Stack, table: Table, duration: float) -> None:
    api = stack.api(stack.env("bench-enqueue-light"))
    host, port = _address(api)
    redis = Redis.from_url(stack.redis.url)
    await _warm_up(api, 250)
    for route, make in _requests(f"{host}:{port}", 251).items():
        await asyncio.sleep(1)
        cpu_before = cpu_seconds(api)
        commands_before, reads_before = await redis_counters(redis)
        outcome = await open_loop(host, port, make, rate=LIGHT_RATE, duration=duration)
        cpu = cpu_seconds(api) - cpu_before
        commands_after, reads_after = await redis_counters(redis)
        # Our own INFO call is one command and one read; requests that timed out still ran.
        commands = (commands_after - commands_before - 1) / outcome.sent
        reads = (reads_after - reads_before - 1) / outcome.sent
        errors = ", ".join(f"{k} ×{v}" for k, v in outcome.errors.items()) or "0"
        table.add(
            route,
            LIGHT_RATE,
            ms(outcome.p(50)),
            ms(outcome.p(99)),
            errors,
            f"{cpu / outcome.sent * 1000:.2f}",
            f"{commands:.1f}",
            f"{reads:.1f}",
        )
    stack.stop(api)
    await redis.aclose()


def redis_floor(stack: Stack, requests: int) -> float:
    """Round trips per second one connection gets from this Redis (redis-benchmark, PING)."""
    url = urlsplit(stack.redis.url)
    done = subprocess.run(
        [
            "redis-benchmark",
            *("-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379)),
            *("-c", "1", "-n", str(requests), "-t", "ping", "-q"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    rates = [float(r) for r in re.findall(r"([0-9.]+) requests per second", done.stdout)]
    return min(rates) if rates else float("nan")


async def run(stack: Stack, quick: bool) -> Result:
    result = Result("enqueue", "1. Enqueue: capacity and cost of a POST")
    floor = await asyncio.to_thread(redis_floor, stack, 2000 if quick else 50_000)
    light = Table(
        [
            "route",
            "offered/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "API CPU ms/req",
            "Redis cmds/req",
            "Redis round trips/req",
        ]
    )
    await _light_costs(stack, light, 2.0 if quick else 10.0)

    capacity = Table(["route", "API processes", "capacity req/s", "p99 ms at it", "rates tried"])
    found = {n: await _capacities(stack, n, quick, run=n) for n in (1, 2)}
    for processes, routes in found.items():
        for route, cap in routes.items():
            best = [p for p in cap.probes if p.passed and p.rate == cap.rate]
            capacity.add(
                route,
                processes,
                f"{cap.rate:.0f}",
                ms(best[0].outcome.p(99)) if best else "–",
                cap.tried,
            )
    result.tables.append(
        (f"Capacity: highest offered rate with p99 < {P99_LIMIT * 1000:.0f} ms:", capacity)
    )
    result.tables.append((f"Cost at a light {LIGHT_RATE} req/s, one API process:", light))

    one, two = found[1], found[2]
    if one[STATIC].rate:
        ratio = one[POST].rate / one[STATIC].rate
        result.target(
            "POST capacity / static-file capacity, one process",
            f"{ratio:.2f}",
            "≥ 0.9",
            ratio >= 0.9,
        )
    if one[POST].rate:
        scale = two[POST].rate / one[POST].rate
        result.target(
            "POST capacity, 2 processes / 1 process", f"{scale:.2f}", "≥ 1.7", scale >= 1.7
        )
    result.notes.append(
        f"Floor from the same run: one connection gets {floor:,.0f} round trips/s from this "
        "Redis (redis-benchmark, PING), so a POST's 2 round trips alone would allow about "
        f"{floor / 2:,.0f} POST/s on one connection; the static file is the HTTP floor."
    )
    result.notes.append(
        "The load generator (one Python process, raw keep-alive sockets, bench/loadgen.py) runs "
        "on the same 2 cores as the API, Redis and the S3 server, so capacities are the "
        "machine's as much as the API's; the ratios compare routes under the same handicap. "
        "A probe passes when every request got a 2xx and p99, timed from each request's due "
        "time, is under the limit; ✗ marks a probe that failed. 'API CPU ms/req' sums the API "
        "process and its children. Each POST comes from its own client address "
        "(X-Forwarded-For, trusted from loopback)."
    )
    return result

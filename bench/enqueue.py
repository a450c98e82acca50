"""Enqueue latency: POST /v1/download/async at fixed offered rates against one API process.

Beside it, on the same process and at the same rates: GET /health (which itself pings Redis
and the S3 server) and GET /static/favicon.svg (a static file: the framework's own floor,
no Redis, no S3). No worker runs, so jobs stay queued; the API's work is the same either way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from urllib.parse import urlsplit

from redis.asyncio import Redis

from bench.loadgen import build_request, client_address, open_loop
from bench.report import Result, Table, ms
from bench.stack import Stack, cpu_seconds

FULL_RATES = (100, 300, 1000)
QUICK_RATES = (100,)


def _requests(host: str, run: int) -> dict[str, Callable[[int], bytes]]:
    body = json.dumps({"file_ids": [1, 2, 3]}).encode()

    def post(n: int) -> bytes:
        headers = {
            "Content-Type": "application/json",
            "X-Forwarded-For": client_address(n, run),
        }
        return build_request("POST", "/v1/download/async", host, body, headers)

    health = build_request("GET", "/health", host)
    static = build_request("GET", "/static/favicon.svg", host)
    # POST first: /health waits on the S3 server, and a backlog there must not spill into
    # the figure under test.
    return {
        "POST /v1/download/async": post,
        "GET /static/favicon.svg": lambda n: static,
        "GET /health": lambda n: health,
    }


async def _redis_commands(redis: Redis) -> int:
    return int((await redis.info("stats"))["total_commands_processed"])


async def run(stack: Stack, quick: bool) -> Result:
    rates = QUICK_RATES if quick else FULL_RATES
    duration = 2.0 if quick else 10.0
    api = stack.api(stack.env("bench-enqueue"))
    redis = Redis.from_url(stack.redis.url)
    url = urlsplit(api.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80

    # Warm up every route (imports, pools, JIT-less caches) before anything is measured.
    for make in _requests(url.netloc, 255).values():
        await open_loop(host, port, make, rate=100, duration=0.5)

    table = Table(
        [
            "route",
            "offered/s",
            "done/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "errors",
            "API CPU",
            "Redis cmds/req",
        ]
    )
    post_p99: dict[int, float] = {}
    post_max: dict[int, float] = {}
    for run_number, rate in enumerate(rates):
        for route, make in _requests(url.netloc, run_number).items():
            await asyncio.sleep(1)  # let the previous row's stragglers drain
            cpu_before = cpu_seconds(api)
            commands_before = await _redis_commands(redis)
            label = f"enqueue-{route.split()[0].lower()}-{route.split('/')[-1]}-{rate}"
            with stack.profiler.record(api, label):
                outcome = await open_loop(host, port, make, rate=rate, duration=duration)
            cpu = (cpu_seconds(api) - cpu_before) / outcome.elapsed
            # The count includes our own INFO call, and requests that timed out still ran.
            commands = (await _redis_commands(redis) - commands_before - 1) / outcome.sent
            errors = ", ".join(f"{k} ×{v}" for k, v in outcome.errors.items()) or "0"
            table.add(
                route,
                rate,
                f"{outcome.achieved_rate:.0f}",
                ms(outcome.p(50)),
                ms(outcome.p(95)),
                ms(outcome.p(99)),
                ms(max(outcome.latencies, default=float("nan"))),
                errors,
                f"{cpu:.0%}",
                f"{commands:.1f}",
            )
            if route.startswith("POST"):
                post_p99[rate] = outcome.p(99)
                post_max[rate] = max(outcome.latencies, default=float("inf"))
                if outcome.error_count:
                    post_max[rate] = float("inf")
    stack.stop(api)
    await redis.aclose()

    result = Result("enqueue", "1. Enqueue latency (one API process)")
    result.tables.append(
        (f"Open loop, {duration:.0f} s per row, latency from each request's due time:", table)
    )
    if 300 in post_p99:
        result.target(
            "POST p99 at 300 req/s", f"{ms(post_p99[300])} ms", "< 25 ms", post_p99[300] < 0.025
        )
    worst = max(post_max.values())
    result.target(
        "POST slowest request at any offered rate",
        f"{ms(worst)} ms" if worst != float("inf") else "errors",
        "never over 100 ms",
        worst <= 0.1,
    )
    result.notes.append(
        "The load generator (one Python process, raw keep-alive sockets) runs on the same "
        "2 cores as the API, Redis and the S3 server, so the highest rate measures the "
        "machine as much as the API. 'API CPU' is the API process's CPU time over the row's "
        "wall time (100 % = one core: the API is one process, one event loop). Each POST "
        "comes from its own client address (X-Forwarded-For, trusted from loopback) so the "
        "default per-client limits apply without answering 429. GET /health pings Redis and "
        "the S3 server on every call; the static file is the framework floor."
    )
    return result

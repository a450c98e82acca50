"""How long jobs take to run, for the queue's estimates: the run times of recent jobs; and
how to say a duration to people.

Each ready job adds its run time (its first start to ready, in seconds) to a short list in
Redis that every worker shares; the estimate is the median of the last RECENT_RUNS, so one
huge archive does not skew it. The list lives as long as the job records do.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Awaitable
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

RECENT_RUNS = 50
# Readers (every page stream with a queued job, each second) keep the median this long.
CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, float | None]] = {}


def runs_key(prefix: str) -> str:
    return f"{prefix}:recent_run_seconds"


async def record_run(redis: Redis, prefix: str, seconds: float, keep_seconds: int) -> None:
    """Add one ready job's run time; a Redis failure only costs the estimate a sample."""
    key = runs_key(prefix)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, f"{max(0.0, seconds):.3f}")
            pipe.ltrim(key, 0, RECENT_RUNS - 1)
            pipe.expire(key, keep_seconds)
            await pipe.execute()
    except RedisError as exc:
        logger.warning("run time not recorded: %s", exc)


async def typical_run_seconds(redis: Redis, prefix: str) -> float | None:
    """The median run time of the last RECENT_RUNS ready jobs; None before the first."""
    key = runs_key(prefix)
    cached = _cache.get(key)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    raw = await cast(Awaitable[list[bytes]], redis.lrange(key, 0, RECENT_RUNS - 1))
    median = statistics.median(float(value) for value in raw) if raw else None
    _cache[key] = (time.monotonic() + CACHE_SECONDS, median)
    return median


def human_duration(seconds: float) -> str:
    """`about 5 s`, `about 2 min` style times, for people."""
    if seconds < 60:
        return f"about {max(1, round(seconds))} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def wait_to_start(position: int, capacity: int, typical_run: float) -> float:
    """Seconds until the job at `position` (1 = next) starts, when `capacity` jobs run at a
    time and each runs `typical_run` seconds: the jobs ahead drain `capacity` at a time."""
    return position / capacity * typical_run

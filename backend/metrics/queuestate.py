"""The queue as the worker's scrape shows it: read from Redis when Prometheus asks.

Every worker reports the same queue (it is one sorted set in Redis), so dashboards and alerts
take the `max` over workers, never the sum. Read at scrape time rather than on a clock of our
own, so a figure is never older than the scrape; a scrape that cannot reach Redis within
READ_TIMEOUT_SECONDS leaves these series out (and says why in the log) rather than report a
stale number.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend import queue, redisconn
from backend.settings import Settings

logger = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 2.0

# Name and help of each gauge, in the order read_queue_state returns their values.
_GAUGES = (
    (
        "longhaul_queue_depth",
        "Jobs due now that no worker runs yet (running jobs and retries in backoff excluded).",
    ),
    (
        "longhaul_queue_oldest_job_age_seconds",
        "Seconds the oldest of those jobs has waited since it became due (0 when none waits).",
    ),
    ("longhaul_workers_live", "Workers with a fresh heartbeat in Redis (this one included)."),
)


class QueueState(Collector):
    """longhaul_queue_depth, longhaul_queue_oldest_job_age_seconds, longhaul_workers_live."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Declared without reading Redis: registering the collector must not call it.
        yield from self._families(None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            # The exporter answers each scrape in a thread of its own, with no event loop:
            # one short-lived loop and connection per scrape (every 15 s or so).
            figures = asyncio.run(read_queue_state(self._settings))
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("metrics: could not read the queue from Redis: %s", exc)
            return
        yield from self._families(figures)

    @staticmethod
    def _families(figures: tuple[int, float, int] | None) -> Iterator[GaugeMetricFamily]:
        for index, (name, documentation) in enumerate(_GAUGES):
            family = GaugeMetricFamily(name, documentation)
            if figures is not None:
                family.add_metric([], figures[index])
            yield family


async def read_queue_state(settings: Settings) -> tuple[int, float, int]:
    """(jobs waiting, seconds the oldest has waited, live workers), read now from Redis."""
    # Through redisconn, so a scrape follows a Sentinel failover like every other client.
    redis = redisconn.connect(
        settings,
        Redis,
        socket_connect_timeout=READ_TIMEOUT_SECONDS,
        socket_timeout=READ_TIMEOUT_SECONDS,
    )
    try:
        async with asyncio.timeout(READ_TIMEOUT_SECONDS):
            (count, oldest), (workers, _) = await asyncio.gather(
                queue.waiting(redis, settings), queue.live_workers(redis, settings)
            )
    finally:
        await redis.aclose()
    age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
    return count, age, workers

"""Why a queued job has not started: its place in the queue, or that no worker is running,
and about when it will start.

Read from the queue (backend/queue.py) when asked, so a card and the JSON status
(`queue_position`) say the same. The estimate assumes the jobs ahead run as long as recent
jobs did (the median of the last ones, jobtimes.py), draining as many at a time as the live
workers run; before any job has finished there is no estimate, only the place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.exceptions import RedisError

from backend import jobtimes, queue
from backend.models import JobRecord, JobState
from backend.services import Services

logger = logging.getLogger(__name__)

NO_WORKER_TEXT = "Waiting for a free worker: none is running right now"


@dataclass(frozen=True, slots=True)
class QueuePlace:
    """`position` is 1 for the next job to start; `capacity` is jobs run at a time (live
    workers × WORKER_CONCURRENCY), 0 when no worker is running."""

    position: int
    capacity: int
    # Seconds until it starts (jobtimes.wait_to_start); None while nothing has finished yet.
    starts_in: float | None = None

    @property
    def text(self) -> str:
        if self.capacity == 0:
            return NO_WORKER_TEXT
        text = f"{ordinal(self.position)} in queue · {self.capacity} run at a time"
        if self.starts_in is not None:
            when = (
                "starts in a moment"
                if self.starts_in < 1
                else (f"starts in {jobtimes.human_duration(self.starts_in)}")
            )
            text += f" · {when}"
        return text


# Live workers per queue, kept CAPACITY_TTL_SECONDS: counting them SCANs the keyspace, and
# every browser stream with a queued job asks each second. Heartbeats are rewritten only every
# HEARTBEAT_SECONDS anyway, so a second's staleness hides nothing.
CAPACITY_TTL_SECONDS = 1.0
capacity_cache: dict[str, tuple[float, tuple[int, int]]] = {}


async def _live_workers(services: Services) -> tuple[int, int]:
    """(live workers, jobs they run now), from their heartbeats."""
    key = services.settings.queue_name
    cached = capacity_cache.get(key)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    found = await queue.live_workers(services.redis, services.settings)
    capacity_cache[key] = (time.monotonic() + CAPACITY_TTL_SECONDS, found)
    return found


def ordinal(number: int) -> str:
    """`1st`, `2nd`, `3rd`, `4th`, `11th`, `22nd` (English ordinals)."""
    if 10 <= number % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def is_waiting_in_queue(record: JobRecord) -> bool:
    """Queued and not yet started (a retry waiting out its backoff says so itself)."""
    return record.status is JobState.QUEUED


async def queue_places(services: Services, records: Sequence[JobRecord]) -> dict[str, QueuePlace]:
    """The place of each job of `records` that waits in the queue; {} when Redis fails (the
    cards then go without the note rather than the page failing)."""
    waiting = [r.job_id for r in records if is_waiting_in_queue(r)]
    if not waiting:
        return {}
    try:
        workers, running = await _live_workers(services)
        aheads = await asyncio.gather(
            *(queue.waiting_ahead(services.redis, services.settings, j) for j in waiting)
        )
        typical = await jobtimes.typical_run_seconds(services.redis, services.settings.key_prefix)
    except RedisError as exc:
        logger.warning("queue places unavailable: %s", exc)
        return {}
    capacity = workers * services.settings.worker_concurrency
    free = max(0, capacity - running)
    places = {}
    for job_id, ahead in zip(waiting, aheads, strict=True):
        # Not in the queue any more (a worker took it a moment ago): no note until it says so.
        if ahead is not None:
            position = ahead + 1
            starts_in = None
            if typical is not None and capacity:
                behind_busy = max(0, position - free)
                starts_in = jobtimes.wait_to_start(behind_busy, capacity, typical)
            places[job_id] = QueuePlace(position, capacity, starts_in)
        elif capacity == 0:
            places[job_id] = QueuePlace(position=1, capacity=0)
    return places


async def queue_position(services: Services, record: JobRecord) -> int | None:
    """The place of a queued job (1 = next to start) for the JSON status; None when it is not
    waiting in the queue, or Redis cannot say."""
    if not is_waiting_in_queue(record):
        return None
    try:
        ahead = await queue.waiting_ahead(services.redis, services.settings, record.job_id)
    except RedisError as exc:
        logger.warning("queue position of %s unavailable: %s", record.job_id, exc)
        return None
    return None if ahead is None else ahead + 1


def queue_texts(places: dict[str, QueuePlace]) -> dict[str, str]:
    return {job_id: place.text for job_id, place in places.items()}

"""What an operator wants at a glance: dependencies, queue, workers, jobs by state, failures,
and how long jobs take. Read-only and framework-free; /ops shows it (pages/ops.py).

Figures about jobs come from the most recent RECENT_JOBS records (the job store's index of all
jobs, newest first), so the page costs the same however long the service has run.

`python -m backend.ops worker-alive` exits 0 while a worker in this container (host) keeps its
heartbeat in Redis: the worker's container health check.
"""

from __future__ import annotations

import asyncio
import math
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
from redis.exceptions import RedisError

from backend import queue, redisconn, tracing
from backend.models import JobRecord, JobState
from backend.reuse import registry_for
from backend.services import Services
from backend.settings import Settings, load_settings

RECENT_JOBS = 500
RECENT_FAILURES = 10
# Enough of a job id to find it in the logs, too little to act on it: full ids are capabilities.
JOB_REF_LENGTH = 8

_decoder = msgspec.json.Decoder(JobRecord)


@dataclass(frozen=True, slots=True)
class Failure:
    job_ref: str
    error: str
    attempts: int
    failed_at: float
    trace_id: str | None


@dataclass(frozen=True, slots=True)
class Durations:
    """Seconds, over the finished (ready) jobs among the recent ones."""

    count: int = 0
    run_p50: float | None = None
    run_p95: float | None = None
    total_p50: float | None = None
    total_p95: float | None = None


@dataclass(frozen=True, slots=True)
class OpsStats:
    checks: dict[str, str]
    workers: int
    running: int
    queue_ready: int
    queue_deferred: int
    # Jobs whose worker was lost (lease lapsed) and that wait for another (leases.py).
    waiting_for_worker: int
    sampled: int
    by_state: dict[str, int]
    failures: list[Failure] = field(default_factory=list)
    durations: Durations = field(default_factory=Durations)
    tracing: bool = False
    generated_at: float = 0.0
    # Shared archives (reuse.py): `built`, `reused`, `source_bytes_read`, since the start.
    archives: dict[str, int] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return all(value == "ok" for value in self.checks.values())


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(records: Sequence[JobRecord]) -> tuple[dict[str, int], list[Failure], Durations]:
    """Jobs by state, the latest failures and duration percentiles of `records` (newest first)."""
    by_state = {state.value: 0 for state in JobState}
    by_state.update(Counter(record.status.value for record in records))
    failures = [
        Failure(
            job_ref=record.job_id[:JOB_REF_LENGTH],
            # Operators get the raw failure (the storage server's answer) where there is one.
            error=record.error_detail or record.error or record.last_error or "unknown error",
            attempts=record.attempt,
            failed_at=record.finished_at or record.created_at,
            trace_id=tracing.trace_id_of(record.trace_context),
        )
        for record in records
        if record.status is JobState.FAILED
    ]
    failures.sort(key=lambda failure: failure.failed_at, reverse=True)
    finished = [r for r in records if r.status is JobState.READY and r.started_at and r.finished_at]
    run = [r.finished_at - r.started_at for r in finished]  # type: ignore[operator]
    total = [r.finished_at - r.created_at for r in finished]  # type: ignore[operator]
    durations = Durations(
        count=len(finished),
        run_p50=percentile(run, 50),
        run_p95=percentile(run, 95),
        total_p50=percentile(total, 50),
        total_p95=percentile(total, 95),
    )
    return by_state, failures[:RECENT_FAILURES], durations


async def _recent_records(services: Services) -> list[JobRecord]:
    store = services.store
    job_ids = await services.redis.zrevrange(store.index_key, 0, RECENT_JOBS - 1)
    if not job_ids:
        return []
    keys = [store.record_key(j.decode() if isinstance(j, bytes) else j) for j in job_ids]
    return [_decoder.decode(raw) for raw in await services.redis.mget(keys) if raw is not None]


async def gather_stats(services: Services) -> OpsStats:
    """Everything /ops shows. Never raises for an unreachable Redis or S3: it says so."""
    storage_ok = await services.storage.ping()
    try:
        records, (workers, running), (ready, deferred), archives = await asyncio.gather(
            _recent_records(services),
            queue.live_workers(services.redis, services.settings),
            queue.depth(services.redis, services.settings),
            registry_for(services.redis, services.settings).stats(),
        )
        redis_ok = True
    except (RedisError, OSError):
        records, workers, running, ready, deferred, redis_ok = [], 0, 0, 0, 0, False
        archives = {}
    by_state, failures, durations = summarize(records)
    checks = {
        "redis": "ok" if redis_ok else "error",
        "storage": "ok" if storage_ok else "error",
        "workers": "ok" if workers else "error",
    }
    return OpsStats(
        checks=checks,
        workers=workers,
        running=running,
        queue_ready=ready,
        queue_deferred=deferred,
        waiting_for_worker=sum(r.waiting_for_worker for r in records),
        sampled=len(records),
        by_state=by_state,
        failures=failures,
        durations=durations,
        tracing=tracing.enabled(),
        generated_at=time.time(),
        archives=archives,
    )


def worker_alive_here(settings: Settings, host: str | None = None) -> bool:
    """Whether a worker on this host has a fresh heartbeat (health checks are not async)."""
    client = redisconn.connect_sync(settings, socket_connect_timeout=2, socket_timeout=2)
    try:
        pattern = queue.heartbeat_pattern(settings, host or socket.gethostname())
        return any(True for _ in client.scan_iter(pattern, count=1000))
    except RedisError:
        return False
    finally:
        client.close()


def main(argv: Sequence[str]) -> int:
    if list(argv) != ["worker-alive"]:
        print("usage: python -m backend.ops worker-alive", file=sys.stderr)
        return 2
    return 0 if worker_alive_here(load_settings()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The worker process's metrics: attempts, retries, how jobs end, how long they take, bytes.

One registry for the process (`REGISTRY`), served on METRICS_PORT by exporter.py; the queue's
gauges are read from Redis at scrape time (queuestate.py). The runner wraps every attempt in
`observed_attempt`, and the archive kind reports what it wrote with `archived`. Labels are the
job's kind and outcome, never its id.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.process_collector import ProcessCollector

from backend.models import JobRecord, JobState
from backend.queue import Retry

REGISTRY = CollectorRegistry()
# Memory, CPU and open files of this process (process_* series): the worker's memory should
# stay flat whatever the archive size.
ProcessCollector(registry=REGISTRY)

# Seconds; one attempt is bounded by JOB_TIMEOUT_SECONDS (600 by default).
_BUILD_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Seconds; a request waits for the queue, retries and backoff as well.
_READY_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

JOB_ATTEMPTS = Counter(
    "longhaul_job_attempts",
    "Attempts started (a run after a worker crash is an attempt too).",
    ["kind"],
    registry=REGISTRY,
)
JOB_RETRIES = Counter(
    "longhaul_job_retries",
    "Attempts that failed with a transient error and scheduled another after a backoff.",
    ["kind"],
    registry=REGISTRY,
)
JOBS_ENDED = Counter(
    "longhaul_jobs_ended",
    "Jobs an attempt ended: `completed` (ready), `failed`, `cancelled` (seen by the attempt).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
JOB_BUILD_DURATION = Histogram(
    "longhaul_job_build_duration_seconds",
    "Seconds one attempt ran, from its start to its end (ready, failed, cancelled or retrying).",
    ["kind"],
    buckets=_BUILD_BUCKETS,
    registry=REGISTRY,
)
JOB_REQUEST_TO_READY = Histogram(
    "longhaul_job_request_to_ready_seconds",
    "Seconds from the request that created a job to the job being ready (created_at to "
    "finished_at).",
    ["kind"],
    buckets=_READY_BUCKETS,
    registry=REGISTRY,
)
ARCHIVE_BYTES = Counter(
    "longhaul_archive_bytes",
    "Bytes written to archives (each finished archive's size, ZIP framing included).",
    registry=REGISTRY,
)

# What an attempt's final state says about the job.
_OUTCOMES = {
    JobState.READY.value: "completed",
    JobState.FAILED.value: "failed",
    JobState.CANCELLED.value: "cancelled",
}


def declare_kinds(kinds: Iterable[str]) -> None:
    """Create every series of these kinds at 0, so rates and alerts have them from the start."""
    for kind in kinds:
        JOB_ATTEMPTS.labels(kind)
        JOB_RETRIES.labels(kind)
        JOB_BUILD_DURATION.labels(kind)
        JOB_REQUEST_TO_READY.labels(kind)
        for outcome in _OUTCOMES.values():
            JOBS_ENDED.labels(kind, outcome)


async def observed_attempt(kind: str, record: JobRecord, attempt: Awaitable[str]) -> str:
    """Run one attempt (the runner's), counting it, its retry or its end, and timing it.

    `attempt` returns the state it left the job in and raises Retry when it scheduled another
    attempt; `record` is the job's record, which the attempt updates. An attempt cut short (its
    lease lost, the worker stopping) is counted as started and nothing more.
    """
    JOB_ATTEMPTS.labels(kind).inc()
    started = time.monotonic()
    try:
        state = await attempt
    except Retry:
        JOB_RETRIES.labels(kind).inc()
        JOB_BUILD_DURATION.labels(kind).observe(time.monotonic() - started)
        raise
    JOB_BUILD_DURATION.labels(kind).observe(time.monotonic() - started)
    outcome = _OUTCOMES.get(state)
    if outcome is not None:
        JOBS_ENDED.labels(kind, outcome).inc()
    if state == JobState.READY.value and record.finished_at:
        JOB_REQUEST_TO_READY.labels(kind).observe(max(0.0, record.finished_at - record.created_at))
    return state


WEBHOOK_DELIVERIES = Counter(
    "longhaul_webhook_deliveries",
    "Webhook delivery attempts by what came of them: `delivered`, `retrying` (another attempt "
    "is due) or `abandoned` (410 Gone, a refused address, or WEBHOOK_RETRY_FOR_SECONDS spent).",
    ["outcome"],
    registry=REGISTRY,
)
for _outcome in ("delivered", "retrying", "abandoned"):
    WEBHOOK_DELIVERIES.labels(_outcome)


def webhook_attempted(outcome: str) -> None:
    """Count one webhook delivery attempt: `delivered`, `retrying` or `abandoned`."""
    WEBHOOK_DELIVERIES.labels(outcome).inc()


def archived(size: int) -> None:
    """Count a finished archive's bytes."""
    ARCHIVE_BYTES.inc(size)

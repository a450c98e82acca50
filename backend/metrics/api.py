"""The API process's metrics: requests by route, live event streams, jobs submitted.

One registry for the process (`REGISTRY`), served by `GET /metrics` (http.py). Request counts
and latency are recorded by the outer request layer (http.py); the rest by the code that does
the thing, through the two functions below.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.process_collector import ProcessCollector

from backend.routes import RouteGroup, group_of

# `--workers N` (API_PROCESSES): N processes answer on one port, so a scrape reaches any one of
# them. `python -m backend api` then points PROMETHEUS_MULTIPROC_DIR at a fresh directory before
# it starts them; every process writes its figures there (prometheus_client's multiprocess
# mode, chosen at import) and each scrape reads them all, summed.
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ
REGISTRY = CollectorRegistry()
if not MULTIPROCESS:
    # Memory, CPU and open files of this process (process_* series), beside our own; summed
    # over processes they would mean nothing.
    ProcessCollector(registry=REGISTRY)

# A request whose path matches no route (or no method of it): one label for every such path.
UNMATCHED = "unmatched"

HTTP_REQUESTS = Counter(
    "longhaul_http_requests",
    "HTTP requests answered, by route template (`unmatched` for unknown paths), method, status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "longhaul_http_request_duration_seconds",
    "Seconds from a request's arrival to its answer's status line (an event stream's lifetime "
    "is not its latency).",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)

StreamKind = Literal["job", "page"]
SSE_STREAMS = Gauge(
    "longhaul_sse_streams",
    "Event streams open in this process: `job` (the API's, one job) or `page` (a browser page's).",
    ["stream"],
    registry=REGISTRY,
    # Summed over the live processes; a process that ends takes its streams out (process_ended).
    multiprocess_mode="livesum",
)

SubmissionOutcome = Literal["accepted", "replayed", "refused"]
JOBS_SUBMITTED = Counter(
    "longhaul_jobs_submitted",
    "Requests to start a job (API and pages): `accepted` made a job, `replayed` returned the job "
    "of an earlier request with the same Idempotency-Key, `refused` met the active-job cap.",
    ["outcome"],
    registry=REGISTRY,
)

# Every series of a fixed label set exists from the start, at 0: rates and alerts need it.
for _stream in ("job", "page"):
    SSE_STREAMS.labels(_stream)
for _outcome in ("accepted", "replayed", "refused"):
    JOBS_SUBMITTED.labels(_outcome)


def exposition_registry() -> CollectorRegistry:
    """What `GET /metrics` serves: this process's registry, or with `--workers N` every
    process's figures read from PROMETHEUS_MULTIPROC_DIR."""
    if not MULTIPROCESS:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def process_ended(pid: int) -> None:
    """Drop the live gauges of process `pid` (one of `--workers N`) from the sums."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(pid)


def job_submitted(outcome: SubmissionOutcome) -> None:
    """Count one request to start a job (backend/downloads.py `start_job`)."""
    JOBS_SUBMITTED.labels(outcome).inc()


@contextlib.contextmanager
def live_stream(path: str) -> Iterator[None]:
    """Count an event stream as open while the block runs; its kind follows from its path
    (the JSON API's `/v1/…` streams are `job`, everything else is a page's)."""
    kind: StreamKind = "job" if group_of(path) is RouteGroup.API else "page"
    gauge = SSE_STREAMS.labels(kind)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()

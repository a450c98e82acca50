"""Queue overhead: many one-file jobs through one worker.

A burst of jobs (all enqueued at once through the API) gives the worker's throughput in jobs/s
and the queue wait under a backlog; a paced run at half that throughput gives the pickup
latency of a worker that is keeping up. Times come from the job records: created_at (the
POST), started_at (the worker's first touch) and finished_at (ready).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from backend.models import JobRecord
from backend.services import Services
from bench.enqueue import redis_counters
from bench.loadgen import build_request, client_address, closed_burst, open_loop
from bench.report import Result, Table, ms, percentile
from bench.stack import Stack, cpu_seconds

SMALL_FILES = 20
SMALL_SIZE = 10 * 1024
_record = msgspec.json.Decoder(JobRecord)


def _post(netloc: str, run: int, file_id: Callable[[int], int]) -> Callable[[int], bytes]:
    def make(n: int) -> bytes:
        body = json.dumps({"file_ids": [file_id(n)]}).encode()
        headers = {"Content-Type": "application/json", "X-Forwarded-For": client_address(n, run)}
        return build_request("POST", "/v1/download/async", netloc, body, headers)

    return make


async def _job_ids_since(services: Services, since: float) -> list[str]:
    """Ids of the public owner's jobs created after `since` (the owner index is a zset)."""
    key = services.store.owner_key("public")
    ids = await services.redis.zrangebyscore(key, since, "+inf")
    return [i.decode() if isinstance(i, bytes) else i for i in ids]


async def _wait_all(services: Services, job_ids: list[str], timeout: float) -> list[JobRecord]:
    deadline = time.monotonic() + timeout
    while True:
        raws = await services.redis.mget([services.store.record_key(j) for j in job_ids])
        records = [_record.decode(raw) for raw in raws if raw is not None]
        if len(records) == len(job_ids) and all(r.status.is_terminal for r in records):
            return records
        if time.monotonic() > deadline:
            done = sum(r.status.is_terminal for r in records)
            raise TimeoutError(f"{done} of {len(job_ids)} jobs ended within {timeout:.0f} s")
        await asyncio.sleep(0.2)


def _latencies(records: list[JobRecord]) -> tuple[list[float], list[float]]:
    """(queued → processing, queued → ready) of every job that became ready, in seconds."""
    ready = [r for r in records if r.status.value == "ready" and r.started_at and r.finished_at]
    pickup = [(r.started_at or 0) - r.created_at for r in ready]
    total = [(r.finished_at or 0) - r.created_at for r in ready]
    return pickup, total


_REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/')


def s3_requests(log_path: Path | None, start: int) -> tuple[Counter[str], int]:
    """S3 requests the server logged after byte `start` of its log, by kind; and the new end.

    The S3 stand-in (backend/s3standin.py) writes one werkzeug-style access line per request,
    which is the only request count a stand-in S3 gives.
    """
    if log_path is None:
        return Counter(), 0
    with log_path.open("rb") as log:
        log.seek(start)
        text = log.read().decode(errors="replace")
        end = log.tell()
    kinds: Counter[str] = Counter()
    for method, target in _REQUEST.findall(text):
        path, _, query = target.partition("?")
        if method == "GET" and path.count("/") <= 1:
            kinds["LIST"] += 1
        elif method == "GET" and "uploads" in query.split("&"):
            kinds["LIST uploads"] += 1
        elif method == "POST" and "uploads" in query.split("&"):
            kinds["create upload"] += 1
        elif method == "PUT" and "partNumber=" in query:
            kinds["upload part"] += 1
        elif method == "POST" and "uploadId=" in query:
            kinds["complete upload"] += 1
        else:
            kinds[f"{method}{' (presign/other)' if query else ''}"] += 1
    return kinds, end


def _redis_per_job(
    before: tuple[int, int], after: tuple[int, int], records: list[JobRecord]
) -> tuple[float, float]:
    """Redis commands and round trips (Redis's reads) per job between two readings of its
    counters: the POST's share and the worker's, plus the bench's own polling (a few a second)."""
    jobs = max(len(records), 1)
    return (after[0] - before[0]) / jobs, (after[1] - before[1]) / jobs


def _log_end(log_path: Path | None) -> int:
    return log_path.stat().st_size if log_path else 0


def _add_run(
    table: Table,
    label: str,
    records: list[JobRecord],
    refused: int,
    rate: float,
    cpu: float,
    s3_cpu: float,
    s3_kinds: Counter[str],
    redis_used: tuple[float, float],
) -> None:
    """One row: jobs that did not become ready count as failed, beside refused POSTs."""
    pickup, total = _latencies(records)
    table.add(
        label,
        len(records),
        len(records) - len(pickup) + refused,
        f"{rate:.0f}",
        ms(percentile(pickup, 50)),
        ms(percentile(pickup, 99)),
        ms(percentile(total, 50)),
        ms(percentile(total, 99)),
        f"{cpu:.0%}",
        f"{s3_cpu:.0%}",
        f"{sum(s3_kinds.values()) / max(len(records), 1):.1f}",
        ", ".join(f"{k} {v / max(len(records), 1):.1f}" for k, v in sorted(s3_kinds.items())),
        f"{redis_used[0]:.0f}",
        f"{redis_used[1]:.0f}",
    )


async def run(stack: Stack, quick: bool) -> Result:
    burst = 50 if quick else 1000
    paced = 20 if quick else 200
    env = stack.env("bench-queue")
    services = await stack.services(env)
    # A file per job, so every job of the first burst and of the paced run builds its own
    # archive; indexed before the workers start, as a catalogue is in steady state.
    for file_id in range(1, burst + paced + 1):
        data = file_id.to_bytes(4, "big") * (SMALL_SIZE // 4)
        await services.storage.put_source(file_id, f"small-{file_id}.txt", data)
    await services.catalogue.refresh()
    api = stack.api(env)
    worker = stack.worker(env)
    url = urlsplit(api.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    table = Table(
        [
            "run",
            "jobs",
            "failed",
            "jobs/s",
            "pickup p50 ms",
            "pickup p99 ms",
            "queued→ready p50 ms",
            "queued→ready p99 ms",
            "worker CPU",
            "S3 server CPU",
            "S3 requests/job",
            "of which",
            "Redis cmds/job",
            "Redis round trips/job",
        ]
    )
    concurrency = services.settings.worker_concurrency

    async def burst_of(label: str, file_id: Callable[[int], int], run: int) -> float:
        since = time.time()
        cpu_before, s3_before = cpu_seconds(worker), cpu_seconds(stack.s3)
        log_start = _log_end(stack.s3.log_path)
        redis_before = await redis_counters(services.redis)
        with stack.profiler.record(worker, f"queue-worker-{run}"):
            answers = await closed_burst(host, port, _post(url.netloc, run, file_id), burst, 16)
            refused = sum(1 for status, _ in answers if status != 202)
            job_ids = await _job_ids_since(services, since)
            records = await _wait_all(services, job_ids, timeout=burst * 2 + 60)
        redis_used = _redis_per_job(redis_before, await redis_counters(services.redis), records)
        first = min(r.created_at for r in records)
        last = max(r.finished_at or 0 for r in records)
        started = min(r.started_at or last for r in records)
        rate = len(records) / (last - started)
        cpu = (cpu_seconds(worker) - cpu_before) / (last - first)
        s3_cpu = (cpu_seconds(stack.s3) - s3_before) / (last - first)
        kinds, _ = s3_requests(stack.s3.log_path, log_start)
        _add_run(table, label, records, refused, rate, cpu, s3_cpu, kinds, redis_used)
        return rate

    try:
        rate = await burst_of("burst, a file each (every job builds)", lambda n: n + 1, 60)
        await burst_of(
            f"burst, {SMALL_FILES} files asked again (archives reused)",
            lambda n: n % SMALL_FILES + 1,
            62,
        )
        offered = max(1.0, rate / 2)
        since = time.time()
        cpu_before, s3_before = cpu_seconds(worker), cpu_seconds(stack.s3)
        log_start = _log_end(stack.s3.log_path)
        redis_before = await redis_counters(services.redis)
        fresh = _post(url.netloc, 61, lambda n: burst + n + 1)
        outcome = await open_loop(host, port, fresh, offered, paced / offered)
        job_ids = await _job_ids_since(services, since)
        records = await _wait_all(services, job_ids, timeout=paced * 2 + 60)
        redis_used = _redis_per_job(redis_before, await redis_counters(services.redis), records)
        cpu = (cpu_seconds(worker) - cpu_before) / outcome.elapsed
        s3_cpu = (cpu_seconds(stack.s3) - s3_before) / outcome.elapsed
        label = f"paced at {offered:.0f}/s, a file each"
        kinds, _ = s3_requests(stack.s3.log_path, log_start)
        _add_run(
            table, label, records, outcome.error_count, offered, cpu, s3_cpu, kinds, redis_used
        )
    finally:
        await services.close()
        stack.stop(worker)
        stack.stop(api)

    result = Result("queue", "4. Queue overhead (one worker)")
    result.tables.append(
        (
            f"One-file jobs ({SMALL_SIZE // 1024} KiB each) through one worker "
            f"(WORKER_CONCURRENCY={concurrency}). Pickup = queued → processing "
            "(created_at → started_at of the record); jobs/s of the burst = jobs / (last "
            "finished − first started):",
            table,
        )
    )
    result.notes.append(
        "Every job makes the full round: record, arq queue, catalogue lookup (the index in "
        "Redis, with the file's ETag), a GET with If-Match on it, a one-member ZIP stored with "
        "one PUT (smaller than a part), completion, events; a reused archive is confirmed by a "
        "HEAD of the file and of the archive, with no GET and no PUT. S3 requests are "
        "counted from the S3 server's access log over the run (LIST = a bucket listing). The "
        "S3 server (moto) is in the path of every job, and the worker shares the 2 cores with "
        "the API, Redis, moto and the bench."
    )
    return result

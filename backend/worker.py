"""The arq worker: one function that turns a queued job into a ZIP archive, with its retries.

Attempts: every run of the job is an attempt (`ctx["job_try"]`, so a run after a worker crash
counts too). A transient error (S3, Redis, network) on attempt n < max_attempts schedules
attempt n+1 after the backoff (1 s, 2 s, 4 s); on the last attempt the job fails with the real
error. We never raise `Retry` on the last attempt: arq would then report "max retries exceeded"
and hide the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from backend import leases, tracing
from backend.archive import ArchiveProgress, build_archive, entry_names
from backend.expiry import sweep_cron
from backend.jobevents import completed_event, failed_event, retrying_event
from backend.logs import bind_job
from backend.models import JobRecord, JobState
from backend.queue import (
    BUILD_ARCHIVE,
    HEARTBEAT_SECONDS,
    Function,
    RedisSettings,
    Retry,
    Worker,
    cron,
    func,
    heartbeat_key,
    leased_worker,
    queue_key,
)
from backend.services import Services
from backend.settings import Settings, load_settings
from backend.storage import StorageError

logger = logging.getLogger(__name__)

# Worker crashes also consume attempts; past this many extra runs the job is given up.
CRASH_ALLOWANCE = 5
PROGRESS_INTERVAL = 0.5
# Storage (every S3 failure arrives as StorageError), Redis and network errors are worth another
# attempt; anything else is a bug and fails at once.
TRANSIENT_ERRORS = (StorageError, RedisError, OSError, TimeoutError)


class JobCancelled(Exception):
    """The job left `processing` under us (cancelled through the API)."""


def archive_key_for(job_id: str) -> str:
    # One deterministic key per job: a re-run after a crash overwrites, it never adds a copy.
    return f"archives/{job_id}.zip"


async def build_archive_job(ctx: dict[str, Any], job_id: str) -> str:
    """arq entry point: build the archive for `job_id` and record the outcome."""
    services: Services = ctx["services"]
    try:
        record = await services.store.get(job_id)
    except RedisError as exc:
        # Any other exception would make arq drop the job; Redis being away is not its fault.
        raise Retry(defer=1) from exc
    if record is None:
        logger.warning("job %s has no record (expired?); dropping it", job_id)
        return "missing"
    if record.status.is_terminal:
        return record.status.value
    attempt = int(ctx.get("job_try", 1))
    settings = services.settings
    lease = leases.Lease(
        services.redis,
        settings.key_prefix,
        job_id,
        settings.job_lease_seconds,
        ctx.get("lease_tokens"),
    )
    # Every write of this attempt first checks that it still holds the job.
    fenced = dataclasses.replace(services, store=leases.FencedJobStore(services.store, lease))
    # Every attempt continues the trace of the request that started the job.
    with bind_job(job_id), tracing.job_attempt_span(job_id, attempt, record.trace_context):
        try:
            async with lease.held():
                return await _attempt(fenced, record, attempt)
        except leases.LeaseLost:
            # Handed back unwritten; LeasedWorker leaves the job alone if another attempt
            # holds it now, else it runs again at once.
            logger.warning("job %s attempt %d lost its lease; stopping", job_id, attempt)
            raise Retry(defer=0) from None


async def _attempt(services: Services, record: JobRecord, attempt: int) -> str:
    deadline = asyncio.timeout(services.settings.job_timeout_seconds)
    try:
        async with deadline:
            await _run_attempt(services, record, attempt)
    except JobCancelled:
        return JobState.CANCELLED.value
    except leases.LeaseLost:
        raise
    except TimeoutError as exc:
        if deadline.expired():
            await _fail(
                services,
                record,
                f"the job took longer than {services.settings.job_timeout_seconds} s",
            )
            return JobState.FAILED.value
        return await _after_transient(services, record, attempt, exc)
    except TRANSIENT_ERRORS as exc:
        return await _after_transient(services, record, attempt, exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.exception("job %s failed with an unexpected error", record.job_id)
        await _fail(services, record, f"internal error: {type(exc).__name__}: {exc}")
        return JobState.FAILED.value
    return record.status.value


async def _run_attempt(services: Services, record: JobRecord, attempt: int) -> None:
    settings = services.settings
    store = services.store
    record.status = JobState.PROCESSING
    record.attempt = attempt
    record.max_attempts = settings.max_attempts
    record.retry_at = None
    record.stalled_at = None
    record.started_at = record.started_at or time.time()
    if await store.save_progress(record) is None:
        raise JobCancelled
    if attempt > settings.max_attempts + CRASH_ALLOWANCE:
        await _fail(services, record, f"gave up after {attempt - 1} interrupted attempts")
        return

    with tracing.tracer().start_as_current_span("s3.resolve_sources"):
        sources, missing = await services.storage.resolve(record.file_ids)
    # A catalogue key that cannot be a file name ("<id>/..", only dots and spaces) is
    # skipped and reported like a missing file, never an internal error.
    names = entry_names(sources)
    unusable = [s.file_id for s, name in zip(sources, names, strict=True) if name is None]
    sources = [s for s, name in zip(sources, names, strict=True) if name is not None]
    record.skipped_file_ids = missing + unusable
    if not sources:
        await _fail(
            services,
            record,
            f"none of the requested files exist or has a usable name (file_ids {record.file_ids})",
        )
        return
    record.total_files = len(sources)
    record.bytes_total = sum(source.size for source in sources)
    record.processed_files = 0
    record.bytes_processed = 0
    record.progress = 0
    if await store.save_progress(record) is None:
        raise JobCancelled

    last_emit = time.monotonic()
    last_files = 0

    async def on_progress(state: ArchiveProgress) -> None:
        nonlocal last_emit, last_files
        now = time.monotonic()
        if state.files_done == last_files and now - last_emit < PROGRESS_INTERVAL:
            return
        last_emit, last_files = now, state.files_done
        record.processed_files = state.files_done
        record.bytes_processed = state.bytes_done
        record.progress = _percent(
            state.bytes_done, record.bytes_total, state.files_done, record.total_files
        )
        if await store.save_progress(record) is None:
            raise JobCancelled

    key = archive_key_for(record.job_id)
    # A worker killed mid-upload cannot abort its parts; the next attempt does.
    await services.storage.abort_pending_uploads(key)
    size = await build_archive(
        services.storage,
        sources,
        key,
        on_progress=on_progress,
        part_size=settings.archive_part_size,
        throttle_bytes_per_second=settings.throttle_bytes_per_second,
    )
    record.status = JobState.READY
    record.progress = 100
    record.processed_files = record.total_files
    record.bytes_processed = record.bytes_total
    record.archive_key = key
    record.archive_size = size
    record.error = None
    record.finished_at = time.time()
    record.archive_expires_at = record.finished_at + settings.archive_ttl_seconds
    if await store.save(record, completed_event(record)) is None:
        # Cancelled at the last moment: the archive must not outlive the job.
        await services.storage.delete(key)
        raise JobCancelled


def _percent(bytes_done: int, bytes_total: int, files_done: int, files_total: int) -> int:
    # 100 is kept for `ready`: the upload is not complete until the last part is in.
    if bytes_total > 0:
        return min(99, bytes_done * 100 // bytes_total)
    return min(99, files_done * 100 // max(files_total, 1))


async def _after_transient(
    services: Services, record: JobRecord, attempt: int, exc: BaseException
) -> str:
    message = _describe(exc)
    tracing.failed(message, exc)
    settings = services.settings
    if attempt >= settings.max_attempts:
        await _fail(services, record, message)
        return JobState.FAILED.value
    delay = settings.backoff_for(attempt)
    record.last_error = message
    record.retry_at = time.time() + delay
    logger.warning(
        "job %s attempt %d failed (%s); retrying in %.1fs", record.job_id, attempt, message, delay
    )
    try:
        saved = await services.store.save(record, retrying_event(record, retry_in=delay))
    except RedisError:
        saved = ""  # Redis itself is the fault; the retry still goes ahead.
    if saved is None:
        return JobState.CANCELLED.value
    raise Retry(defer=delay)


async def _fail(services: Services, record: JobRecord, message: str) -> None:
    tracing.failed(message)
    record.status = JobState.FAILED
    record.error = message
    record.last_error = message
    record.retry_at = None
    record.finished_at = time.time()
    await services.store.save(record, failed_event(record))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, StorageError) else f"{type(exc).__name__}: {text}"


async def _startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    services = await Services.open(settings)
    ctx["services"] = services
    ctx["lease_watch"] = asyncio.create_task(
        leases.watch_lapsed(services.store, settings.job_lease_seconds / 3)
    )
    try:
        await services.storage.ensure_buckets()
    except Exception as exc:
        # Buckets are retried by the API's startup and by every job; a worker still starts.
        logger.warning("could not ensure buckets at startup: %s", exc)


async def _shutdown(ctx: dict[str, Any]) -> None:
    watch: asyncio.Task[None] | None = ctx.get("lease_watch")
    if watch is not None:
        watch.cancel()
    services: Services | None = ctx.get("services")
    if services is not None:
        await services.close()


def job_function(settings: Settings) -> Function:
    # arq's own timeout is a backstop a little above ours: ours records a clear failure,
    # arq's would only cancel the task.
    return func(
        build_archive_job,
        name=BUILD_ARCHIVE,
        timeout=settings.job_timeout_seconds + 5,
        max_tries=settings.max_attempts + CRASH_ALLOWANCE + 1,
    )


def create_worker(settings: Settings | None = None, **overrides: Any) -> Worker:
    """An arq Worker for `settings`; tests pass `burst=True, poll_delay=0`."""
    settings = settings or load_settings()
    options: dict[str, Any] = {
        "functions": [job_function(settings)],
        # Every worker runs the sweep; arq's unique cron job ids keep it to one run a minute.
        "cron_jobs": [cron(sweep_cron, name="sweep_expired", second=0, timeout=60)],
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "queue_name": queue_key(settings),
        "max_jobs": settings.worker_concurrency,
        "on_startup": _startup,
        "on_shutdown": _shutdown,
        "ctx": {"settings": settings},
        "allow_abort_jobs": True,
        # A heartbeat per worker (arq's health check under a key of its own): /ops counts them.
        "health_check_key": heartbeat_key(settings),
        "health_check_interval": HEARTBEAT_SECONDS,
        "keep_result": 60,
        "poll_delay": 0.1,
        "handle_signals": True,
    }
    options.update(overrides)
    # arq gives its in-progress key the job timeout + 10 s; a lease renewed by the attempt
    # (leases.py) lets another worker take a dead worker's job within seconds instead. The
    # sweeper cron holds no lease: if a sweep outlives one, a second may run; sweeps are
    # idempotent.
    return leased_worker(settings.job_lease_seconds, **options)


def serve(settings: Settings) -> None:
    """Run a worker until it is stopped by a signal, outliving Redis outages.

    arq's worker exits when Redis goes away mid-job; rather than needing a restart by hand,
    we build a fresh worker and carry on. Jobs that were running re-run from the queue.
    """
    while True:
        worker = create_worker(settings)
        try:
            worker.run()
            return
        except (RedisError, OSError) as exc:
            logger.warning("worker lost Redis (%s); starting again in 1 s", exc)
            # arq skips on_shutdown when its close fails; without this every outage would
            # leave a lease watcher and a set of clients behind.
            with contextlib.suppress(Exception):
                worker.loop.run_until_complete(_shutdown(worker.ctx))
            time.sleep(1)

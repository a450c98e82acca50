"""The job runner: attempts, backoff, timeouts, leases, cancellation and progress cadence, the
same for every kind of job. A kind (backend/kinds/) does one attempt's work and nothing else.

Attempts: every run of a job is an attempt (`ctx["job_try"]`, so a run after a worker crash
counts too). A transient error (storage, Redis, network) on attempt n < max_attempts schedules
attempt n+1 after the backoff (1 s, 2 s, 4 s); on the last attempt the job fails with the real
error. We never raise `Retry` on the last attempt: arq would then report "max retries exceeded"
and hide the cause. Each attempt holds the job under a lease (leases.py) and writes its record
only while it holds it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any, Protocol

from redis.exceptions import RedisError

from backend import errorreporting, jobtimes, leases, tracing
from backend.failures import describe
from backend.jobevents import completed_event, failed_event, retrying_event
from backend.logs import bind_job
from backend.metrics.worker import observed_attempt
from backend.models import JobRecord, JobState
from backend.queue import Function, Retry, func
from backend.services import Services
from backend.settings import Settings
from backend.storage import StorageError

logger = logging.getLogger(__name__)

# Worker crashes also consume attempts; past this many extra runs the job is given up.
CRASH_ALLOWANCE = 5
# At most one progress write per this many seconds (and one per finished file).
PROGRESS_INTERVAL = 0.5
# Storage (every S3 failure arrives as StorageError), Redis and network errors are worth another
# attempt; anything else is a bug and fails at once.
TRANSIENT_ERRORS = (StorageError, RedisError, OSError, TimeoutError)


class JobCancelled(Exception):
    """The job left `processing` under us (cancelled through the API)."""


class JobFailed(Exception):
    """A kind's verdict that the job cannot succeed (no retry): the message says why, in
    words; `detail` (optional) is the raw cause, for operators."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class GaveUp(JobFailed):
    """The job's attempts were interrupted (worker crashes) more often than allowed."""


class JobKind(Protocol):
    """One kind of job. `name` is its queue function; `run` does one attempt's work.

    `run` reports progress with `attempt.report(...)` and ends with `attempt.complete()`;
    it raises JobFailed for a job that cannot succeed, and lets transient errors (see
    TRANSIENT_ERRORS) propagate for the runner to retry.
    """

    name: str

    async def run(self, attempt: Attempt) -> None: ...


@dataclasses.dataclass(slots=True)
class Attempt:
    """One attempt of one job, as its kind sees it: the record, the services, and reporting."""

    services: Services
    record: JobRecord
    number: int
    _reported_at: float = dataclasses.field(default_factory=time.monotonic)
    _reported_files: int = 0

    @property
    def settings(self) -> Settings:
        return self.services.settings

    async def save_progress(self) -> None:
        """Write the record with a `progress` event; JobCancelled if the job was cancelled."""
        if await self.services.store.save_progress(self.record) is None:
            raise JobCancelled

    async def report(self, files_done: int, bytes_done: int) -> None:
        """Progress so far, written at most every PROGRESS_INTERVAL s (and per file done).

        What people see never moves backwards: an attempt that starts over (a retry, or a
        rebuild without a file that vanished) shows the furthest point reached until it
        passes it (issue 13: "a retry is shown as a note, not a reset").
        """
        now = time.monotonic()
        if files_done == self._reported_files and now - self._reported_at < PROGRESS_INTERVAL:
            return
        self._reported_at, self._reported_files = now, files_done
        record = self.record
        record.processed_files = max(record.processed_files, files_done)
        record.bytes_processed = max(record.bytes_processed, bytes_done)
        record.progress = max(
            record.progress,
            percent(bytes_done, record.bytes_total, files_done, record.total_files),
        )
        await self.save_progress()

    def set_totals(self, files_total: int, bytes_total: int) -> None:
        """What the job will hold; the figures done so far stay (clamped to the new totals)."""
        record = self.record
        record.total_files, record.bytes_total = files_total, bytes_total
        record.processed_files = min(record.processed_files, files_total)
        record.bytes_processed = min(record.bytes_processed, bytes_total)
        record.progress = min(record.progress, 99)

    async def complete(self) -> bool:
        """Mark the job ready (the kind has set its result fields) with a `completed` event.

        False when the job was cancelled at the last moment: the kind then removes its result
        and raises JobCancelled.
        """
        record = self.record
        record.status = JobState.READY
        record.progress = 100
        record.processed_files = record.total_files
        record.bytes_processed = record.bytes_total
        record.error = None
        record.finished_at = record.finished_at or time.time()
        if await self.services.store.save(record, completed_event(record)) is None:
            return False
        # The queue's estimates for the jobs still waiting (queueplaces.py).
        await jobtimes.record_run(
            self.services.redis,
            self.settings.key_prefix,
            record.finished_at - (record.started_at or record.finished_at),
            self.settings.job_record_ttl_seconds,
        )
        return True


def percent(bytes_done: int, bytes_total: int, files_done: int, files_total: int) -> int:
    """Progress 0..99 by bytes (by files when sizes are unknown); 100 is kept for `ready`."""
    if bytes_total > 0:
        return min(99, bytes_done * 100 // bytes_total)
    return min(99, files_done * 100 // max(files_total, 1))


def job_function(kind: JobKind, settings: Settings) -> Function:
    """The arq function that runs `kind`'s jobs under this runner's policy."""

    async def run(ctx: dict[str, Any], job_id: str) -> str:
        return await run_job(kind, ctx, job_id)

    # arq's own timeout is a backstop a little above ours: ours records a clear failure,
    # arq's would only cancel the task.
    return func(
        run,
        name=kind.name,
        timeout=settings.job_timeout_seconds + 5,
        max_tries=settings.max_attempts + CRASH_ALLOWANCE + 1,
    )


async def run_job(kind: JobKind, ctx: dict[str, Any], job_id: str) -> str:
    """One attempt at `job_id`; returns the state it left the job in."""
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
    number = int(ctx.get("job_try", 1))
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
    with (
        bind_job(job_id),
        tracing.job_attempt_span(job_id, number, record.trace_context),
        errorreporting.job_attempt(job_id, number, kind.name, record.trace_context),
    ):
        try:
            async with lease.held():
                attempt = _attempt(kind, Attempt(fenced, record, number))
                return await observed_attempt(kind.name, record, attempt)
        except leases.LeaseLost:
            # Handed back unwritten; LeasedWorker leaves the job alone if another attempt
            # holds it now, else it runs again at once.
            logger.warning("job %s attempt %d lost its lease; stopping", job_id, number)
            raise Retry(defer=0) from None


async def _attempt(kind: JobKind, attempt: Attempt) -> str:
    services, record = attempt.services, attempt.record
    deadline = asyncio.timeout(services.settings.job_timeout_seconds)
    try:
        async with deadline:
            await _start(attempt)
            await kind.run(attempt)
    except JobCancelled:
        return JobState.CANCELLED.value
    except JobFailed as exc:
        # A kind's verdict on its input is the job's answer, not a fault of the service.
        if isinstance(exc, GaveUp):
            errorreporting.report_attempt(exc, final=True)
        await _fail(services, record, str(exc), exc.detail)
        return JobState.FAILED.value
    except leases.LeaseLost:
        raise
    except TimeoutError as exc:
        if deadline.expired():
            errorreporting.report_attempt(exc, final=True)
            limit = services.settings.job_timeout_seconds
            await _fail(services, record, f"the job took longer than {limit} s")
            return JobState.FAILED.value
        return await _after_transient(attempt, exc)
    except TRANSIENT_ERRORS as exc:
        return await _after_transient(attempt, exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # Reported before it is logged: the log line's copy of it is then dropped as a duplicate.
        errorreporting.report_attempt(exc, final=True)
        logger.exception("job %s failed with an unexpected error", record.job_id)
        failure = describe(exc)
        await _fail(services, record, f"internal error: {failure.message}", failure.detail)
        return JobState.FAILED.value
    return record.status.value


async def _start(attempt: Attempt) -> None:
    settings, record = attempt.settings, attempt.record
    record.status = JobState.PROCESSING
    record.attempt = attempt.number
    record.max_attempts = settings.max_attempts
    record.retry_at = None
    record.stalled_at = None
    record.started_at = record.started_at or time.time()
    await attempt.save_progress()
    if attempt.number > settings.max_attempts + CRASH_ALLOWANCE:
        raise GaveUp(f"gave up after {attempt.number - 1} interrupted attempts")


async def _after_transient(attempt: Attempt, exc: BaseException) -> str:
    services, record = attempt.services, attempt.record
    message, detail = describe(exc)
    tracing.failed(detail, exc)
    settings = services.settings
    errorreporting.report_attempt(exc, final=attempt.number >= settings.max_attempts)
    if attempt.number >= settings.max_attempts:
        await _fail(services, record, message, detail)
        return JobState.FAILED.value
    delay = settings.backoff_for(attempt.number)
    record.last_error = message
    record.error_detail = detail
    record.retry_at = time.time() + delay
    logger.warning(
        "job %s attempt %d failed (%s); retrying in %.1fs",
        record.job_id,
        attempt.number,
        detail,
        delay,
    )
    try:
        saved = await services.store.save(record, retrying_event(record, retry_in=delay))
    except RedisError:
        saved = ""  # Redis itself is the fault; the retry still goes ahead.
    if saved is None:
        return JobState.CANCELLED.value
    raise Retry(defer=delay)


async def _fail(
    services: Services, record: JobRecord, message: str, detail: str | None = None
) -> None:
    tracing.failed(detail or message)
    if detail:
        logger.warning("job %s failed: %s", record.job_id, detail)
    record.status = JobState.FAILED
    record.error = message
    record.last_error = message
    record.error_detail = detail
    record.retry_at = None
    record.finished_at = time.time()
    await services.store.save(record, failed_event(record))

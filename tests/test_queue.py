"""The queue's contract (backend/queue.py) against real Redis, a real S3 server and real workers."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from arq.jobs import Job as ArqJob

from backend import queue
from backend.downloads import start_job
from backend.jobs import ActiveJobsLimit
from backend.models import JobRecord, JobState
from backend.queue import Worker
from backend.services import Services
from backend.settings import Settings
from backend.worker import create_worker
from tests.helpers import eventually, run_worker_until_idle


async def recorded_job(services: Services, file_ids: list[int]) -> str:
    """A job record in the store, not yet queued: what start_job writes before it enqueues."""
    record = JobRecord(
        job_id=uuid.uuid4().hex,
        owner="public",
        file_ids=file_ids,
        total_files=len(file_ids),
        max_attempts=services.settings.max_attempts,
        created_at=time.time(),
    )
    await services.store.create(record, active_limit=None)
    return record.job_id


def serving_worker(settings: Settings, **overrides: Any) -> Worker:
    # A heartbeat at every poll, so a test sees a running job in it without waiting 5 s.
    options: dict[str, Any] = {
        "poll_delay": 0.05,
        "handle_signals": False,
        "cron_jobs": [],
        "health_check_interval": 0.1,
    }
    return create_worker(settings, **(options | overrides))


async def test_an_enqueued_job_is_queued_once_and_run_by_a_worker(
    services: Services, settings: Settings
) -> None:
    job_id = await recorded_job(services, [5])
    assert await queue.enqueue(services.redis, settings, job_id)
    # The same id again queues nothing: a job is in the queue at most once.
    assert not await queue.enqueue(services.redis, settings, job_id)
    assert await services.redis.zscore(queue.queue_key(settings), job_id) is not None
    assert await services.redis.exists(queue.job_key(job_id))

    await run_worker_until_idle(settings, cron_jobs=[])

    done = await services.store.get(job_id)
    assert done is not None
    assert done.status is JobState.READY, done.error
    assert await queue.depth(services.redis, settings) == (0, 0)
    assert not await services.redis.exists(queue.in_progress_key(job_id))


async def test_a_job_queued_by_the_create_script_is_what_arq_would_queue_and_a_worker_runs_it(
    services: Services, settings: Settings
) -> None:
    record = await start_job(services, [5], "public", client="10.0.0.9")
    # arq reads it back as its own enqueue_job would have written it.
    info = await ArqJob(record.job_id, services.redis, _queue_name=queue.queue_key(settings)).info()
    assert info is not None
    assert (info.function, info.args, info.kwargs) == (queue.BUILD_ARCHIVE, (record.job_id,), {})
    assert abs(info.enqueue_time.timestamp() - record.created_at) < 5
    assert 0 < await services.redis.pttl(queue.job_key(record.job_id)) <= 86_400_000
    # The same id cannot be queued twice, by the script or by arq.
    assert not await queue.enqueue(services.redis, settings, record.job_id)

    await run_worker_until_idle(settings, cron_jobs=[])

    done = await services.store.get(record.job_id)
    assert done is not None
    assert done.status is JobState.READY, done.error


async def test_a_refused_create_writes_nothing_not_even_the_queue_entry(
    services: Services, settings: Settings
) -> None:
    client = f"10.1.{uuid.uuid4().int % 250}.1"
    first = await start_job(services, [5], "public", client=client)
    capped = settings.replace(max_active_jobs_per_client=1)
    services.settings = capped
    try:
        with pytest.raises(ActiveJobsLimit):
            await start_job(services, [6], "public", idempotency_key="k-1", client=client)
    finally:
        services.settings = settings
    # Only the first job is queued, and the refused request's key is not bound: its retry,
    # once there is room, makes the job.
    assert await services.redis.zrange(queue.queue_key(settings), 0, -1) == [first.job_id.encode()]
    retried = await start_job(services, [6], "public", idempotency_key="k-1", client=client)
    assert retried.job_id != first.job_id
    again = await start_job(services, [6], "public", idempotency_key="k-1", client=client)
    assert again.job_id == retried.job_id


async def test_depth_counts_due_and_deferred_jobs(services: Services, settings: Settings) -> None:
    assert await queue.depth(services.redis, settings) == (0, 0)
    for _ in range(2):
        assert await queue.enqueue(services.redis, settings, await recorded_job(services, [5]))
    # A retry waiting out its backoff is a deferred entry of the same queue.
    await services.redis.enqueue_job(
        queue.BUILD_ARCHIVE,
        await recorded_job(services, [5]),
        _queue_name=queue.queue_key(settings),
        _defer_by=60,
    )
    assert await queue.depth(services.redis, settings) == (2, 1)


async def test_waiting_counts_due_jobs_no_worker_runs_and_when_the_oldest_became_due(
    services: Services, settings: Settings
) -> None:
    assert await queue.waiting(services.redis, settings) == (0, None)
    first = await recorded_job(services, [8])
    assert await queue.enqueue(services.redis, settings, first)
    await asyncio.sleep(0.01)  # due strictly first: workers take the earliest score
    for _ in range(2):
        assert await queue.enqueue(services.redis, settings, await recorded_job(services, [5]))
    # A retry waiting out its backoff is not due yet.
    await services.redis.enqueue_job(
        queue.BUILD_ARCHIVE,
        await recorded_job(services, [5]),
        _queue_name=queue.queue_key(settings),
        _defer_by=60,
    )
    scores = await services.redis.zrange(queue.queue_key(settings), 0, 2, withscores=True)
    count, oldest = await queue.waiting(services.redis, settings)
    assert (count, oldest) == (3, scores[0][1] / 1000)

    # A worker with one slot runs the first job (slow): it stays in arq's queue while it runs,
    # but no longer waits.
    slow = settings.replace(throttle_bytes_per_second=512 * 1024, worker_concurrency=1)
    worker = serving_worker(slow)
    running = asyncio.create_task(worker.async_run())
    try:
        await eventually(
            lambda: services.redis.exists(queue.in_progress_key(first)), lambda found: found == 1
        )
        count, oldest = await queue.waiting(services.redis, settings)
        assert (count, oldest) == (2, scores[1][1] / 1000)
    finally:
        running.cancel()
        await worker.close()


async def test_live_workers_reads_a_real_workers_heartbeat_and_running_jobs(
    services: Services, settings: Settings
) -> None:
    assert await queue.live_workers(services.redis, settings) == (0, 0)
    # About 2 s of work: long enough to be seen running in the heartbeat.
    slow = settings.replace(throttle_bytes_per_second=512 * 1024)
    job_id = await recorded_job(services, [4])
    worker = serving_worker(slow)
    running = asyncio.create_task(worker.async_run())
    try:
        assert await eventually(
            lambda: queue.live_workers(services.redis, settings), lambda live: live[0] == 1
        ) == (1, 0)
        assert await services.redis.exists(queue.heartbeat_key(settings))
        assert await queue.enqueue(services.redis, settings, job_id)
        await eventually(
            lambda: queue.live_workers(services.redis, settings), lambda live: live == (1, 1)
        )
        await eventually(
            lambda: services.store.get(job_id), lambda r: r is not None and r.status.is_terminal
        )
        await eventually(
            lambda: queue.live_workers(services.redis, settings), lambda live: live == (1, 0)
        )
    finally:
        running.cancel()
        await worker.close()
    # A worker that stops takes its heartbeat with it.
    assert await queue.live_workers(services.redis, settings) == (0, 0)


def test_jobs_ongoing_reads_arqs_heartbeat_format() -> None:
    beat = b"Nov-29 14:03:07 j_complete=12 j_failed=1 j_retried=3 j_ongoing=2 queued=7"
    assert queue.jobs_ongoing(beat) == 2
    assert queue.jobs_ongoing(beat.decode()) == 2
    assert queue.jobs_ongoing(None) == 0
    assert queue.jobs_ongoing(b"something else") == 0


async def test_request_abort_cancels_a_running_job_and_leaves_no_archive(
    services: Services, settings: Settings
) -> None:
    # About 12 s of work at this rate: the abort must end it long before that.
    slow = settings.replace(throttle_bytes_per_second=512 * 1024)
    job_id = await recorded_job(services, [8])
    assert await queue.enqueue(services.redis, settings, job_id)
    worker = asyncio.create_task(run_worker_until_idle(slow, cron_jobs=[]))
    await eventually(
        lambda: services.store.get(job_id),
        lambda r: r is not None and r.status is JobState.PROCESSING and r.bytes_processed > 0,
    )

    started = time.monotonic()
    await queue.request_abort(services.redis, job_id)
    assert await services.redis.zscore(queue.ABORT_SET, job_id) is not None
    await asyncio.wait_for(worker, 30)
    assert time.monotonic() - started < 5

    # The worker took the request, ended the job as aborted and did not queue it again.
    assert await services.redis.zscore(queue.ABORT_SET, job_id) is None
    assert await queue.depth(services.redis, settings) == (0, 0)
    results = [r for r in await services.redis.all_job_results() if r.job_id == job_id]
    assert len(results) == 1
    assert not results[0].success
    assert isinstance(results[0].result, asyncio.CancelledError)
    current = await services.store.get(job_id)
    assert current is not None and current.status is not JobState.READY
    # The archive code aborted its multipart upload on the way out.
    assert current.archive_key is None
    assert await services.storage.results.pending_uploads_under("archives/") == []


async def test_a_slot_that_frees_takes_the_next_job_without_waiting_for_the_next_poll(
    services: Services, settings: Settings
) -> None:
    # Twice as many small jobs as slots, and a poll every 20 s: the second half can only be
    # done well within that if each freed slot takes a job at once (LeasedWorker's poll).
    # Ten different archives (the same files again would share one build).
    file_sets = [[1], [3], [4], [5], [6], [7], [1, 5], [3, 5], [4, 5], [6, 7]]
    assert len(file_sets) == 2 * settings.worker_concurrency
    records = [await start_job(services, files, "public") for files in file_sets]
    worker = serving_worker(settings, poll_delay=20, burst=True)
    try:
        # A burst worker sleeps out one more poll before it sees the queue empty: not timed.
        await asyncio.wait_for(worker.async_run(), 60)
    finally:
        await worker.close()
    done = [d for d in [await services.store.get(r.job_id) for r in records] if d is not None]
    assert [d.status for d in done] == [JobState.READY] * len(records)
    took = max(d.finished_at or 0 for d in done) - min(d.started_at or 0 for d in done)
    print(f"\n{len(records)} jobs through {settings.worker_concurrency} slots in {took:.1f} s")
    assert took < 15, took


async def test_close_finishes_its_shutdown_when_a_job_task_ended_cancelled(
    services: Services, settings: Settings
) -> None:
    worker = serving_worker(settings, burst=True)
    await worker.async_run()  # an empty queue: connected, then back at once
    shutdowns: list[bool] = []
    on_shutdown = worker.on_shutdown
    assert on_shutdown is not None

    async def recording(ctx: dict[str, Any]) -> None:
        shutdowns.append(True)
        await on_shutdown(ctx)

    worker.on_shutdown = recording
    # A job task cancelled outside its job's body, as a SIGTERM can leave one.
    stray = asyncio.create_task(asyncio.sleep(60))
    worker.tasks["stray"] = stray
    await services.redis.set(worker.health_check_key, "alive")
    stray.cancel()
    await worker.close()
    assert shutdowns == [True]
    assert not await services.redis.exists(worker.health_check_key)


async def test_a_worker_claims_a_job_in_one_round_trip_and_only_a_free_due_one(
    services: Services, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = serving_worker(settings, burst=True)
    await worker.async_run()  # an empty queue: connected, then back at once
    free, elsewhere, later, gone = [
        (await start_job(services, [n], "public")).job_id for n in (1, 3, 4, 5)
    ]
    # Running on another worker; re-queued for later; no longer in the queue.
    await services.redis.set(queue.in_progress_key(elsewhere), "other-worker", px=60_000)
    later_ms = round((time.time() + 60) * 1000)
    await services.redis.zadd(settings.queue_name, {later: later_ms})
    await services.redis.zrem(settings.queue_name, gone)
    await worker.start_jobs([b"no-such-job"])  # loads the script
    sent: list[object] = []
    execute = worker.pool.execute_command

    async def counted(*args: object, **options: object) -> object:
        sent.append(args[0])
        return await execute(*args, **options)

    started: list[str] = []

    async def run_job(job_id: str, score: int) -> None:
        started.append(job_id)

    monkeypatch.setattr(worker.pool, "execute_command", counted)
    monkeypatch.setattr(worker, "run_job", run_job)
    try:
        await worker.start_jobs([j.encode() for j in (free, elsewhere, later, gone)])
        await asyncio.gather(*worker.tasks.values())
    finally:
        monkeypatch.undo()
        await worker.close()

    assert started == [free]
    # One round trip per job, where arq sends four.
    assert sent == ["EVALSHA"] * 4
    assert await services.redis.pttl(queue.in_progress_key(free)) > 0
    assert await services.redis.get(queue.in_progress_key(elsewhere)) == b"other-worker"
    assert not await services.redis.exists(queue.in_progress_key(later))
    assert not await services.redis.exists(queue.in_progress_key(gone))
    # Every slot it took for a job it did not start was given back.
    assert worker.job_counter == 0


async def test_a_run_finishes_its_job_only_while_the_job_holds_its_lease(
    services: Services, settings: Settings
) -> None:
    worker = serving_worker(settings, burst=True)
    await worker.async_run()  # an empty queue: connected, then back at once
    try:
        job_id = (await start_job(services, [1], "public")).job_id
        marker, job = queue.in_progress_key(job_id), queue.job_key(job_id)
        # Another attempt took the job over: this run leaves everything to it.
        await services.redis.set(marker, "their-token", px=60_000)
        worker.lease_tokens[job_id] = "my-token"
        await worker.finish_job(job_id, True, b"result", 60, False, None, None)
        assert await services.redis.get(marker) == b"their-token"
        assert await services.redis.exists(job)
        assert await services.redis.zscore(settings.queue_name, job_id) is not None

        # Its own lease: the job is finished as arq would (result kept 60 s, the rest gone).
        await services.redis.set(marker, "my-token", px=60_000)
        worker.lease_tokens[job_id] = "my-token"
        await worker.finish_job(job_id, True, b"result", 60, False, None, None)
        assert not await services.redis.exists(marker, job)
        assert await services.redis.zscore(settings.queue_name, job_id) is None
        result = f"arq:result:{job_id}"
        assert await services.redis.get(result) == b"result"
        assert 0 < await services.redis.pttl(result) <= 60_000

        # A retry (not finished): the score moves on and the marker is kept as asked.
        await services.redis.zadd(settings.queue_name, {job_id: 1000})
        await services.redis.set(marker, "x")
        await worker.finish_job(job_id, False, None, None, False, 500, 5)
        assert await services.redis.zscore(settings.queue_name, job_id) == 1500
        assert 0 < await services.redis.pttl(marker) <= 5000
    finally:
        await worker.close()

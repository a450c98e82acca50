"""The arq worker against real Redis and a real S3 server: attempts, skips, limits, cancel."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from backend import devstack
from backend.devstack import free_port
from backend.downloads import cancel_job, public_status, start_job
from backend.expiry import sweep_expired_archives, sweep_unused_archives
from backend.jobs import parse_event_id
from backend.models import JobEvent, JobState
from backend.services import Services
from backend.settings import Settings
from backend.storage import PER_FILE_LOOKUP_LIMIT
from tests.helpers import run_worker_until_idle, zip_digests
from tests.stack import CATALOGUE_BY_ID, env_for


def seconds_of(event: JobEvent) -> float:
    position = parse_event_id(event.id)
    assert position is not None
    return position[0] / 1000


async def archive_key_of(services: Services, job_id: str) -> str:
    record = await services.store.get(job_id)
    assert record is not None and record.archive_key is not None
    return record.archive_key


async def read_archive(services: Services, job_id: str) -> bytes:
    key = await archive_key_of(services, job_id)
    bucket = services.storage.results_bucket
    return b"".join([c async for c in services.storage.read(key, bucket=bucket)])


async def test_missing_file_ids_are_skipped_and_listed(
    services: Services, settings: Settings
) -> None:
    record = await start_job(services, [3, 999_999, 5], "public")
    await run_worker_until_idle(settings)
    done = await services.store.get(record.job_id)
    assert done is not None
    assert done.status is JobState.READY
    assert done.skipped_file_ids == [999_999]
    assert done.total_files == 2
    digests = zip_digests(await read_archive(services, record.job_id))
    assert digests == {
        CATALOGUE_BY_ID[3].name: CATALOGUE_BY_ID[3].sha256,
        CATALOGUE_BY_ID[5].name: CATALOGUE_BY_ID[5].sha256,
    }


async def test_a_key_that_cannot_be_a_file_name_is_skipped_like_a_missing_file(
    services: Services, settings: Settings
) -> None:
    await services.storage.put_source(9101, "...", b"a name of dots only")
    record = await start_job(services, [9101, 5], "public")
    await run_worker_until_idle(settings)
    done = await services.store.get(record.job_id)
    assert done is not None
    assert done.status is JobState.READY, done.error
    assert done.skipped_file_ids == [9101]
    assert done.total_files == 1
    digests = zip_digests(await read_archive(services, record.job_id))
    assert digests == {CATALOGUE_BY_ID[5].name: CATALOGUE_BY_ID[5].sha256}


async def test_zero_byte_files_are_stored_with_no_data(
    services: Services, settings: Settings
) -> None:
    record = await start_job(services, [6], "public")
    await run_worker_until_idle(settings)
    archive = await read_archive(services, record.job_id)
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        (info,) = opened.infolist()
    assert (info.file_size, info.compress_size) == (0, 0)
    assert info.compress_type == zipfile.ZIP_STORED


async def test_job_fails_clearly_when_no_requested_file_exists(
    services: Services, settings: Settings
) -> None:
    record = await start_job(services, [424_242, 434_343], "public")
    await run_worker_until_idle(settings)
    done = await services.store.get(record.job_id)
    assert done is not None
    assert done.status is JobState.FAILED
    assert done.error is not None
    assert "none of the requested files exist" in done.error
    assert "424242" in done.error
    events = await services.store.events_after(record.job_id)
    assert events[-1].event == "failed"


async def test_colliding_names_get_distinct_entries(services: Services, settings: Settings) -> None:
    record = await start_job(services, [1, 7], "public")
    await run_worker_until_idle(settings)
    digests = zip_digests(await read_archive(services, record.job_id))
    assert digests == {
        "alpha.txt": CATALOGUE_BY_ID[1].sha256,
        "alpha (2).txt": CATALOGUE_BY_ID[7].sha256,
    }


async def test_progress_events_are_ordered_and_reach_100_only_when_ready(
    services: Services, settings: Settings
) -> None:
    record = await start_job(services, [8, 2, 3], "public")
    await run_worker_until_idle(settings.replace(archive_part_size=5 * 1024 * 1024))
    events = await services.store.events_after(record.job_id)
    progress = [json.loads(e.data) for e in events if e.event == "progress"]
    values = [p["progress"] for p in progress]
    files = [p["processed_files"] for p in progress]
    assert values == sorted(values)
    assert files == sorted(files)
    assert max(values) <= 99
    assert len({v for v in values if 0 < v < 100}) >= 2
    assert {p["processed_files"] for p in progress} >= {0, 1, 2, 3}
    assert events[-1].event == "completed"
    ids = [parse_event_id(e.id) for e in events]
    assert ids == sorted(ids)
    done = await services.store.get(record.job_id)
    assert done is not None
    assert done.progress == 100


async def test_transient_errors_retry_after_1_2_4_seconds_then_fail_with_the_real_error(
    services: Services, settings: Settings
) -> None:
    record = await start_job(services, [1], "public")
    dead_port = free_port()  # nothing listens here: S3 is "down" for the worker
    await run_worker_until_idle(settings.replace(s3_endpoint=f"http://127.0.0.1:{dead_port}"))

    done = await services.store.get(record.job_id)
    assert done is not None
    assert done.status is JobState.FAILED
    assert done.attempt == 4
    assert done.error is not None
    assert f"127.0.0.1:{dead_port}" in done.error
    assert "max" not in done.error.lower()  # not arq's "max retries exceeded"

    events = await services.store.events_after(record.job_id)
    retrying = [e for e in events if e.event == "retrying"]
    assert len(retrying) == 3
    starts = [
        e
        for e in events
        if e.event == "progress" and '"attempt":' in e.data and '"status":"processing"' in e.data
    ]
    first_of_attempt = {}
    for event in starts:
        first_of_attempt.setdefault(json.loads(event.data)["attempt"], event)
    gaps = [seconds_of(first_of_attempt[n + 1]) - seconds_of(retrying[n - 1]) for n in (1, 2, 3)]
    for gap, expected in zip(gaps, (1.0, 2.0, 4.0), strict=True):
        assert expected - 0.05 <= gap <= expected + 0.8, gaps
    assert events[-1].event == "failed"
    assert json.loads(events[-1].data)["error"] == done.error


async def test_a_worker_runs_at_most_five_jobs_at_once(
    services: Services, settings: Settings
) -> None:
    # Each job streams ~1 MiB at 1 MiB/s, so eight of them overlap as much as they may.
    records = [await start_job(services, [4], "public") for _ in range(8)]
    await run_worker_until_idle(settings.replace(throttle_bytes_per_second=1024 * 1024))
    spans = []
    for record in records:
        events = await services.store.events_after(record.job_id)
        started = next(e for e in events if '"status":"processing"' in e.data)
        spans.append((seconds_of(started), seconds_of(events[-1])))
        assert events[-1].event == "completed"
    moments = sorted({start for start, _ in spans})
    peak = max(sum(1 for start, end in spans if start <= t < end) for t in moments)
    assert peak == 5


async def test_cancel_stops_a_running_job_and_leaves_no_archive(
    services: Services, settings: Settings
) -> None:
    record = await start_job(services, [8], "public")
    slow = settings.replace(throttle_bytes_per_second=1024 * 1024)
    worker = asyncio.create_task(run_worker_until_idle(slow))

    async def wait_processing() -> None:
        while True:
            current = await services.store.get(record.job_id)
            if current and current.status is JobState.PROCESSING and current.bytes_processed:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait_processing(), 30)
    current = await services.store.get(record.job_id)
    assert current is not None
    await cancel_job(services, current)
    await asyncio.wait_for(worker, 30)

    done = await services.store.get(record.job_id)
    assert done is not None
    assert done.status is JobState.CANCELLED
    assert await services.storage.store.list_objects(services.storage.results_bucket) == []
    assert await services.storage.results.pending_uploads_under("archives/") == []
    events = await services.store.events_after(record.job_id)
    assert events[-1].event == "cancelled"


async def test_a_finished_job_run_again_keeps_its_single_archive(
    services: Services, settings: Settings
) -> None:
    record = await start_job(services, [3], "public")
    await run_worker_until_idle(settings)
    first = await read_archive(services, record.job_id)
    # The same job id queued again (as after a crash): the result stays the same one object.
    await services.redis.enqueue_job(
        "build_archive", record.job_id, _queue_name=settings.queue_name
    )
    await run_worker_until_idle(settings)
    listed = [
        o.object_name
        async for o in services.storage.client.list_objects(
            services.storage.results_bucket, prefix="archives/", recursive=True
        )
    ]
    assert listed == [await archive_key_of(services, record.job_id)]
    assert await read_archive(services, record.job_id) == first
    done = await services.store.get(record.job_id)
    assert done is not None
    assert done.status is JobState.READY


async def test_jobs_past_their_ttl_say_expired_and_unused_archives_are_deleted(
    services: Services, settings: Settings
) -> None:
    short = settings.replace(archive_ttl_seconds=1)
    services.settings = short  # the sweeper reads the TTL from the services' settings
    record = await start_job(services, [5], "public")
    keep = await start_job(services, [3], "public")
    await run_worker_until_idle(short)
    ready = await services.store.get(record.job_id)
    assert ready is not None and ready.archive_expires_at is not None
    assert ready.archive_key is not None
    assert await sweep_expired_archives(services) == 0  # not due yet
    await asyncio.sleep(max(0.0, ready.archive_expires_at - time.time()) + 0.1)
    # The second job's archive is due too; take it out of the index to show only due ones go.
    await services.store.forget_expiry(keep.job_id)
    assert await sweep_expired_archives(services) == 1

    expired = await services.store.get(record.job_id)
    assert expired is not None and expired.status is JobState.EXPIRED
    status = await public_status(services, expired)
    assert status.status == "expired"
    assert status.download_url is None
    events = await services.store.events_after(record.job_id)
    assert [e.event for e in events[-2:]] == ["completed", "expired"]
    assert await sweep_expired_archives(services) == 0
    # Both archives are unused past the TTL: the sweeper deletes the objects.
    assert await sweep_unused_archives(services) == 2
    assert await services.storage.size_of(ready.archive_key) is None
    assert await services.storage.size_of(await archive_key_of(services, keep.job_id)) is None


async def test_many_ids_resolve_through_one_listing_with_the_same_result(
    services: Services,
) -> None:
    few = [3, 999, 1]
    many = [*few, *range(10_000, 10_000 + PER_FILE_LOOKUP_LIMIT)]
    found_few, missing_few = await services.storage.resolve(few)
    found_many, missing_many = await services.storage.resolve(many)
    assert [f.file_id for f in found_few] == [3, 1]
    assert found_many == found_few
    assert missing_few == [999]
    assert missing_many == [999, *range(10_000, 10_000 + PER_FILE_LOOKUP_LIMIT)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_that_cannot_reach_redis_still_stops_on_a_signal(sig: signal.Signals) -> None:
    dead_redis = f"redis://127.0.0.1:{devstack.free_port()}/0"  # nothing listens there
    env = {**os.environ, **env_for(dead_redis, "http://127.0.0.1:9", "lh-worker-no-redis")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(4)  # in its "lost Redis; starting again in 1 s" loop by now
        assert worker.poll() is None
        worker.send_signal(sig)
        assert worker.wait(10) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(5)

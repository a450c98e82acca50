"""The browser's one live stream (pages/livefeed.py) and the place of a queued job
(queue.waiting_ahead, backend/queueplaces.py), against real Redis and the real API and worker."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import httpx
import pytest
from httpx_sse import aconnect_sse

from backend import devstack, jobtimes, queue
from backend.downloads import public_status, start_job
from backend.models import JobRecord
from backend.queueplaces import NO_WORKER_TEXT, QueuePlace, capacity_cache, ordinal, queue_places
from backend.services import Services
from backend.settings import Settings
from tests.helpers import run_worker_until_idle
from tests.test_pages import open_page, start_from_form

CARD_ID = re.compile(r'data-testid="job-card" data-job-id="([0-9a-f]{32})"')


async def test_browser_stream_pings_then_announces_a_job_started_elsewhere_and_follows_it(
    api_server: devstack.Process, worker_process: devstack.Process
) -> None:
    async with (
        httpx.AsyncClient(base_url=api_server.url, timeout=30) as tab,
        httpx.AsyncClient(base_url=api_server.url, timeout=30) as stranger,
    ):
        await open_page(tab)
        await open_page(stranger)
        events: list[tuple[str, str]] = []
        opened = asyncio.Event()

        async def read() -> None:
            async with aconnect_sse(tab, "GET", "/events?scope=browser") as source:
                assert source.response.headers["x-accel-buffering"] == "no"
                async for sse in source.aiter_sse():
                    if sse.event == "message":  # the opening comment and retry field
                        continue
                    events.append((sse.event, sse.data))
                    opened.set()
                    if sse.event.startswith("job-") and 'data-state="ready"' in sse.data:
                        return

        reader = asyncio.create_task(read())
        await asyncio.wait_for(opened.wait(), 10)
        # Another browser's job must not reach this stream; this browser's (another tab) must.
        other = await start_from_form(stranger, [2])
        job_id = await start_from_form(tab, [1, 3])
        await asyncio.wait_for(reader, 60)

    assert events[0][0] == "ping" and events[0][1].isdigit(), events[0]
    new = [data for name, data in events if name == "job-new"]
    assert [CARD_ID.search(card).group(1) for card in new] == [job_id]  # type: ignore[union-attr]
    assert all(other not in data for _, data in events)
    assert "alpha.txt and charlie.csv" in new[0]
    # Rendered for the stream, unless it ended before the stream saw it.
    if 'data-state="ready"' not in new[0]:
        assert f'data-live-event="job-{job_id}"' in new[0]
        assert events[-1][0] == f"job-{job_id}"
        assert 'role="progressbar"' in events[-1][1]


async def test_browser_stream_refuses_an_unknown_scope(api_server: devstack.Process) -> None:
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30) as client:
        response = await client.get("/events?scope=everyone")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("scope: 'everyone' is not a scope")


async def _queued(services: Services) -> str:
    record = JobRecord(
        job_id=uuid.uuid4().hex,
        owner="public",
        file_ids=[5],
        total_files=1,
        max_attempts=services.settings.max_attempts,
        created_at=time.time(),
    )
    await services.store.create(record, active_limit=None)
    assert await queue.enqueue(services.redis, services.settings, record.job_id)
    # Distinct due times, so the queue's order is the order of creation.
    await asyncio.sleep(0.005)
    return record.job_id


async def test_waiting_ahead_counts_queued_jobs_before_and_leaves_running_ones_out(
    services: Services, settings: Settings
) -> None:
    first, second, third = [await _queued(services) for _ in range(3)]
    ahead = [await queue.waiting_ahead(services.redis, settings, j) for j in (first, second, third)]
    assert ahead == [0, 1, 2]
    # A worker took the first: it is no longer ahead of anyone, and has no place itself.
    await services.redis.set(queue.in_progress_key(first), "token", ex=60)
    assert await queue.waiting_ahead(services.redis, settings, first) is None
    assert await queue.waiting_ahead(services.redis, settings, third) == 1
    assert await queue.waiting_ahead(services.redis, settings, uuid.uuid4().hex) is None


async def test_queue_places_say_the_place_or_that_no_worker_runs(
    services: Services, settings: Settings
) -> None:
    ids = [await _queued(services) for _ in range(2)]
    records = [r for r in [await services.store.get(j) for j in ids] if r is not None]
    places = await queue_places(services, records)
    assert {p.text for p in places.values()} == {NO_WORKER_TEXT}

    # A live worker is its heartbeat key (arq's format, backend/queue.py).
    beat = queue.heartbeat_key(settings, host="test-host", pid=1)
    await services.redis.set(beat, "Nov-29 14:03:07 j_complete=0 j_ongoing=0 queued=2", ex=60)
    capacity_cache.clear()  # else the count of a moment ago (no worker) stands for a second
    try:
        places = await queue_places(services, records)
    finally:
        await services.redis.delete(beat)
    capacity = settings.worker_concurrency
    assert places == {
        ids[0]: QueuePlace(position=1, capacity=capacity),
        ids[1]: QueuePlace(position=2, capacity=capacity),
    }
    assert places[ids[1]].text == f"2nd in queue · {capacity} run at a time"


@pytest.mark.parametrize(
    ("number", "text"),
    [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (22, "22nd")],
)
def test_ordinal(number: int, text: str) -> None:
    assert ordinal(number) == text


async def test_status_of_a_queued_job_carries_its_queue_position(services: Services) -> None:
    first, second = [await _queued(services) for _ in range(2)]
    statuses = []
    for job_id in (first, second):
        record = await services.store.get(job_id)
        assert record is not None
        statuses.append(await public_status(services, record))
    assert [s.queue_position for s in statuses] == [1, 2]
    # Once a worker runs it, a job has no place in the queue.
    await services.redis.set(queue.in_progress_key(first), "token", ex=60)
    record = await services.store.get(first)
    assert record is not None
    assert (await public_status(services, record)).queue_position is None


async def test_queue_places_estimate_the_start_from_recent_run_times(
    services: Services, settings: Settings
) -> None:
    ids = [await _queued(services) for _ in range(7)]
    records = [r for r in [await services.store.get(j) for j in ids] if r is not None]
    for seconds in (8.0, 10.0, 30.0):  # the median, 10 s, is the typical run
        await jobtimes.record_run(services.redis, settings.key_prefix, seconds, 60)
    jobtimes._cache.clear()
    beat = queue.heartbeat_key(settings, host="test-host", pid=2)
    capacity = settings.worker_concurrency
    try:
        # Every slot busy: the jobs ahead drain `capacity` at a time, 10 s each.
        await services.redis.set(beat, f"Nov-29 14:03:07 j_ongoing={capacity} queued=7", ex=60)
        capacity_cache.clear()
        busy = await queue_places(services, records)
        # Two slots free: the first two start at the next poll.
        await services.redis.set(beat, f"Nov-29 14:03:07 j_ongoing={capacity - 2} queued=7", ex=60)
        capacity_cache.clear()
        freer = await queue_places(services, records)
    finally:
        await services.redis.delete(beat)
    assert busy[ids[0]].starts_in == pytest.approx(1 / capacity * 10)
    assert busy[ids[6]].starts_in == pytest.approx(7 / capacity * 10)
    assert busy[ids[6]].text == (
        f"7th in queue · {capacity} run at a time · starts in about {round(70 / capacity)} s"
    )
    assert [freer[j].starts_in for j in ids[:2]] == [0, 0]
    assert freer[ids[0]].text.endswith("· starts in a moment")
    assert freer[ids[6]].starts_in == pytest.approx(5 / capacity * 10)


async def test_a_ready_job_adds_its_run_time_to_the_estimates(
    services: Services, settings: Settings
) -> None:
    record = await start_job(services, [5], "public")
    await run_worker_until_idle(settings, cron_jobs=[])
    done = await services.store.get(record.job_id)
    assert done is not None and done.started_at and done.finished_at
    [recorded] = await services.redis.lrange(jobtimes.runs_key(settings.key_prefix), 0, -1)
    assert float(recorded) == pytest.approx(done.finished_at - done.started_at, abs=0.01)

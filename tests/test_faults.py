"""Faults survived with real processes: API restarts, idempotent retries, cancel.

Worker crashes, deploys, Redis restarts and S3 stalls are in test_recovery.py.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from backend import devstack
from backend.devstack import free_port
from backend.services import Services
from tests.helpers import (
    collect_events,
    follow_with_reconnects,
    start,
    wait_until_running,
)
from tests.stack import CATALOGUE_BY_ID

pytestmark = pytest.mark.slow

# ~7 MiB at 1 MiB/s: long enough to interrupt, short enough for CI.
SLOW = {"THROTTLE_BYTES_PER_SECOND": str(1024 * 1024), "JOB_TIMEOUT_SECONDS": "15"}
FILES = [8, 3, 5]


async def archives_in(services: Services) -> list[str]:
    return [
        o.object_name or ""
        async for o in services.storage.client.list_objects(
            services.storage.results_bucket, prefix="archives/", recursive=True
        )
    ]


def expected_digests(file_ids: list[int]) -> dict[str, str]:
    return {CATALOGUE_BY_ID[i].name: CATALOGUE_BY_ID[i].sha256 for i in file_ids}


@pytest.fixture
async def slow_env(isolated_env: dict[str, str], services: Services) -> dict[str, str]:
    return {**isolated_env, **SLOW}


async def test_api_restarted_while_streaming_the_client_resumes_and_misses_nothing(
    slow_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    port = free_port()
    api = devstack.start_api(slow_env, tmp_path, port=port)
    worker = devstack.start_worker(slow_env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            created = await start(client, FILES)
        reconnects: list[str] = []
        received: list[tuple[str, str]] = []

        three_events = asyncio.Event()

        async def follow() -> None:
            async for item in follow_with_reconnects(api.url, created["job_id"], reconnects):
                received.append(item)
                if len(received) == 3:
                    three_events.set()

        follower = asyncio.create_task(follow())
        await asyncio.wait_for(three_events.wait(), 30)
        api.stop(signal.SIGKILL)
        api = devstack.start_api(slow_env, tmp_path, port=port)
        await asyncio.wait_for(follower, 90)

        assert reconnects, "the stream was never cut"
        everything = [(e.id, e.event) for e in await services.store.events_after(created["job_id"])]
        assert received == everything
        assert received[-1][1] == "completed"
    finally:
        worker.stop()
        api.stop()


async def test_same_idempotency_key_returns_the_same_job(http: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "order-4711-attempt"}
    first, second = await asyncio.gather(
        http.post("/v1/download/async", json={"file_ids": [1, 3]}, headers=key),
        http.post("/v1/download/async", json={"file_ids": [1, 3]}, headers=key),
    )
    assert first.status_code == second.status_code == 202
    assert first.json()["job_id"] == second.json()["job_id"]
    other = await http.post("/v1/download/async", json={"file_ids": [3, 1]}, headers=key)
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["detail"]
    fresh = await http.post("/v1/download/async", json={"file_ids": [1, 3]})
    assert fresh.json()["job_id"] != first.json()["job_id"]
    bad = await http.post(
        "/v1/download/async", json={"file_ids": [1]}, headers={"Idempotency-Key": "a b"}
    )
    assert bad.status_code == 400


async def test_cancel_through_the_api_aborts_the_upload_and_says_cancelled(
    slow_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    api = devstack.start_api(slow_env, tmp_path)
    worker = devstack.start_worker(slow_env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            created = await start(client, [8, 2])
            subscriber = asyncio.create_task(collect_events(client, created["job_id"]))
            await wait_until_running(client, created["job_id"])
            cancelled = await client.delete(f"/v1/download/{created['job_id']}")
            assert cancelled.status_code == 200
            assert cancelled.json()["status"] == "cancelled"
            events = await subscriber
            assert events[-1].event == "cancelled"
            again = await client.delete(f"/v1/download/{created['job_id']}")
            assert again.status_code == 409
            await asyncio.sleep(1.0)  # let the worker notice and clean up
            status = (await client.get(f"/v1/download/status/{created['job_id']}")).json()
            assert status["status"] == "cancelled"
        assert status.get("download_url") is None
        assert await services.storage.results.pending_uploads_under("archives/") == []
    finally:
        worker.stop()
        api.stop()

"""Faults survived with real processes: worker kills, Redis restarts, API restarts, retries."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse

from backend import devstack
from backend.devstack import free_port
from backend.services import Services
from backend.worker import archive_key_for
from tests.helpers import collect_events, fetch, start, wait_for_status, zip_digests
from tests.stack import CATALOGUE_BY_ID

pytestmark = pytest.mark.slow

# ~7 MiB at 1 MiB/s: long enough to interrupt, short enough for CI.
SLOW = {"THROTTLE_BYTES_PER_SECOND": str(1024 * 1024), "JOB_TIMEOUT_SECONDS": "15"}
FILES = [8, 3, 5]


async def wait_until_running(client: httpx.AsyncClient, job_id: str) -> None:
    async def poll() -> None:
        while True:
            body = (await client.get(f"/v1/download/status/{job_id}")).json()
            if body["status"] == "processing" and body["bytes_processed"] > 0:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), 30)


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


async def test_worker_killed_with_sigkill_mid_job_still_delivers_one_archive(
    slow_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    api = devstack.start_api(slow_env, tmp_path)
    first = devstack.start_worker(slow_env, tmp_path, name="doomed")
    second = None
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            created = await start(client, FILES)
            subscriber = asyncio.create_task(collect_events(client, created["job_id"], timeout=90))
            await wait_until_running(client, created["job_id"])
            first.kill()
            second = devstack.start_worker(slow_env, tmp_path, name="rescuer")
            events = await subscriber
            assert events[-1].event == "completed"
            status = await wait_for_status(client, created["job_id"], {"ready"})
            assert status["attempt"] == 2
            assert zip_digests(await fetch(status["download_url"])) == expected_digests(FILES)
        assert await archives_in(services) == [archive_key_for(created["job_id"])]
        assert await services.storage.pending_uploads(archive_key_for(created["job_id"])) == []
    finally:
        for process in (second, first, api):
            if process is not None:
                process.stop()


async def test_worker_stopped_with_sigterm_hands_the_job_back(
    slow_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    api = devstack.start_api(slow_env, tmp_path)
    first = devstack.start_worker(slow_env, tmp_path, name="leaving")
    second = devstack.start_worker(slow_env, tmp_path, name="staying")
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            # Two jobs so that at least one is running on the worker we stop.
            jobs = [await start(client, FILES) for _ in range(2)]
            for job in jobs:
                await wait_until_running(client, job["job_id"])
            first.stop(signal.SIGTERM)
            assert first.popen.returncode is not None
            for job in jobs:
                status = await wait_for_status(client, job["job_id"], {"ready", "failed"}, 90)
                assert status["status"] == "ready", status
                assert zip_digests(await fetch(status["download_url"])) == expected_digests(FILES)
        assert sorted(await archives_in(services)) == sorted(
            archive_key_for(job["job_id"]) for job in jobs
        )
    finally:
        for process in (second, first, api):
            process.stop()


async def test_redis_restarted_mid_job_the_api_says_503_then_the_job_completes(
    slow_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    port = free_port()
    redis = devstack.start_redis(tmp_path / "own-redis", port)
    env = {**slow_env, "REDIS_URL": redis.url}
    api = devstack.start_api(env, tmp_path)
    worker = devstack.start_worker(env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            created = await start(client, FILES)
            await wait_until_running(client, created["job_id"])
            redis.stop()  # SIGTERM: Redis flushes its append-only file and exits
            outage = await client.get(f"/v1/download/status/{created['job_id']}")
            assert outage.status_code == 503
            assert "Redis" in outage.json()["detail"]
            await asyncio.sleep(1.5)
            redis = devstack.start_redis(tmp_path / "own-redis", port)
            status = await wait_for_status(client, created["job_id"], {"ready", "failed"}, 90)
            assert status["status"] == "ready", status
            assert zip_digests(await fetch(status["download_url"])) == expected_digests(FILES)
        assert worker.alive()
    finally:
        for process in (worker, api, redis):
            process.stop()


async def follow_with_reconnects(
    base_url: str, job_id: str, reconnects: list[str]
) -> AsyncIterator[tuple[str, str]]:
    """An EventSource-like client: on a dropped stream, reconnect with Last-Event-ID."""
    last_id: str | None = None
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            async with (
                httpx.AsyncClient(base_url=base_url, timeout=30) as client,
                aconnect_sse(
                    client, "GET", f"/v1/download/subscribe/{job_id}", headers=headers
                ) as source,
            ):
                async for sse in source.aiter_sse():
                    if not sse.data:
                        continue
                    last_id = sse.id
                    yield sse.id, sse.event
                    if sse.event in {"completed", "failed", "cancelled"}:
                        return
        except (httpx.TransportError, httpx.HTTPStatusError):
            pass
        reconnects.append(last_id or "")
        await asyncio.sleep(0.2)


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
        key = archive_key_for(created["job_id"])
        assert await services.storage.size_of(key) is None
        assert await services.storage.pending_uploads(key) == []
    finally:
        worker.stop()
        api.stop()

"""Recovery in seconds: worker crashes, Redis restarts, deploys and a frozen S3 server.

Each test is a fault against real processes. It prints the time it measured and asserts a
bound that leaves room for a loaded CI machine; the targets (README, Reliability) are tighter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from backend import devstack
from backend.devstack import free_port
from backend.pages.views import job_view
from backend.services import Services
from tests.helpers import (
    fetch,
    follow_with_reconnects,
    start,
    wait_for_status,
    wait_until_running,
    zip_digests,
)
from tests.stack import CATALOGUE_BY_ID, seed_stack

pytestmark = pytest.mark.slow

FILES = [8, 3, 5]
# ~7 MiB at 1 MiB/s: long enough to interrupt. The job timeout is a production one, so only
# the lease can explain a quick recovery.
SLOW = {"THROTTLE_BYTES_PER_SECOND": str(1024 * 1024), "JOB_TIMEOUT_SECONDS": "600"}
RECOVERY_BOUND = 45.0  # target 30 s (issue: BullMQ's 30 s lock); room for a loaded machine
EXIT_BOUND = 15.0  # target 10 s; Kubernetes allows 30 s between SIGTERM and SIGKILL


def expected_digests(file_ids: list[int]) -> dict[str, str]:
    return {CATALOGUE_BY_ID[i].name: CATALOGUE_BY_ID[i].sha256 for i in file_ids}


async def one_archive_each(services: Services, job_ids: list[str]) -> None:
    found = [
        o.object_name or ""
        async for o in services.storage.client.list_objects(
            services.storage.results_bucket, prefix="archives/", recursive=True
        )
    ]
    records = [await services.store.get(j) for j in job_ids]
    # Jobs for the same files share one archive: one object per distinct content.
    keys = {r.archive_key for r in records if r is not None and r.archive_key}
    assert len(keys) == len({tuple(r.file_ids) for r in records if r is not None})
    assert sorted(found) == sorted(keys)
    for key in keys:
        assert await services.storage.pending_uploads(key) == []


@pytest.mark.parametrize("job_timeout", ["600", "3600"])
async def test_worker_killed_another_worker_resumes_the_job_within_a_lease(
    isolated_env: dict[str, str], services: Services, tmp_path: Path, job_timeout: str
) -> None:
    env = {**isolated_env, **SLOW, "JOB_TIMEOUT_SECONDS": job_timeout}
    api = devstack.start_api(env, tmp_path)
    doomed = devstack.start_worker(env, tmp_path, name="doomed")
    rescuer = None
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            created = await start(client, FILES)
            job_id = created["job_id"]
            await wait_until_running(client, job_id)
            rescuer = devstack.start_worker(env, tmp_path, name="rescuer")
            doomed.kill()
            killed_at = time.monotonic()
            resumed = await wait_until_running(client, job_id, attempt=2, timeout=90)
            took = time.monotonic() - killed_at
            print(f"\nSIGKILL -> resumed by another worker: {took:.1f} s (timeout {job_timeout})")
            assert took < RECOVERY_BOUND
            assert resumed["attempt"] == 2
            status = await wait_for_status(client, job_id, {"ready", "failed"}, 90)
            assert status["status"] == "ready", status
            assert not status["waiting_for_worker"]
            assert zip_digests(await fetch(status["download_url"])) == expected_digests(FILES)
        await one_archive_each(services, [job_id])
    finally:
        for process in (rescuer, doomed, api):
            if process is not None:
                process.stop()


async def test_a_worker_paused_past_its_lease_leaves_the_job_to_the_worker_that_took_it(
    isolated_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    env = {**isolated_env, **SLOW}
    api = devstack.start_api(env, tmp_path)
    paused = devstack.start_worker(env, tmp_path, name="paused")
    taker = None
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            job_id = (await start(client, FILES))["job_id"]
            await wait_until_running(client, job_id)
            paused.popen.send_signal(signal.SIGSTOP)  # a frozen VM, a stopped container
            taker = devstack.start_worker(env, tmp_path, name="taker")
            await wait_until_running(client, job_id, attempt=2, timeout=60)
            paused.popen.send_signal(signal.SIGCONT)
            status = await wait_for_status(client, job_id, {"ready", "failed"}, 90)
            assert status["status"] == "ready", status
            assert status["attempt"] == 2
            assert zip_digests(await fetch(status["download_url"])) == expected_digests(FILES)
        attempts = [
            json.loads(e.data)["attempt"]
            for e in await services.store.events_after(job_id)
            if e.event == "progress"
        ]
        assert attempts == sorted(attempts), "a stale attempt wrote over the new one"
        await one_archive_each(services, [job_id])
        assert paused.alive()
        assert "lost its lease" in paused.log_tail(200)
    finally:
        with contextlib.suppress(ProcessLookupError):
            paused.popen.send_signal(signal.SIGCONT)
        for process in (taker, paused, api):
            if process is not None:
                process.stop()


async def test_job_whose_only_worker_died_says_it_waits_for_a_worker(
    isolated_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    env = {**isolated_env, **SLOW}
    api = devstack.start_api(env, tmp_path)
    worker = devstack.start_worker(env, tmp_path, name="only")
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            created = await start(client, FILES)
            job_id = created["job_id"]
            await wait_until_running(client, job_id)
            worker.kill()
            killed_at = time.monotonic()

            async def waiting() -> dict[str, object]:
                while True:
                    body = (await client.get(f"/v1/download/status/{job_id}")).json()
                    if body["waiting_for_worker"]:
                        return dict(body)
                    await asyncio.sleep(0.1)

            status = await asyncio.wait_for(waiting(), 60)
            print(
                f"\nSIGKILL -> 'waiting for a worker' shown: {time.monotonic() - killed_at:.1f} s"
            )
            assert status["status"] == "processing"
            assert status["stalled_at"] is not None

            stalled = [e for e in await services.store.events_after(job_id) if e.event == "stalled"]
            assert len(stalled) == 1
            assert '"reason":"waiting for a worker"' in stalled[0].data
            record = await services.store.get(job_id)
            assert record is not None
            card = job_view(record)
            assert card.state_label == "Waiting for a worker"
            assert "Another worker will pick it up" in card.stalled_text
            assert card.eta_text == ""
            ops = await client.get("/ops/stats")
            assert 'data-testid="ops-waiting-for-worker">1<' in ops.text

            worker = devstack.start_worker(env, tmp_path, name="next")
            done = await wait_for_status(client, job_id, {"ready", "failed"}, 90)
            assert done["status"] == "ready", done
            assert done["waiting_for_worker"] is False
            assert done["stalled_at"] is None
            assert zip_digests(await fetch(done["download_url"])) == expected_digests(FILES)
        await one_archive_each(services, [job_id])
    finally:
        worker.stop()
        api.stop()


async def test_redis_restart_every_interrupted_job_resumes_and_a_resuming_client_misses_nothing(
    isolated_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    port = free_port()
    redis = devstack.start_redis(tmp_path / "own-redis", port)
    env = {**isolated_env, **SLOW, "REDIS_URL": redis.url}
    api = devstack.start_api(env, tmp_path)
    worker = devstack.start_worker(env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            jobs = [(await start(client, FILES))["job_id"] for _ in range(2)]
            for job_id in jobs:
                await wait_until_running(client, job_id)
            attempts = {
                j: (await client.get(f"/v1/download/status/{j}")).json()["attempt"] for j in jobs
            }
            cuts: list[str] = []
            received: list[tuple[str, str]] = []

            async def listen() -> None:
                async for item in follow_with_reconnects(api.url, jobs[0], cuts):
                    received.append(item)

            listener = asyncio.create_task(listen())
            await asyncio.sleep(0.5)
            redis.stop()  # SIGTERM: Redis writes its append-only file and exits
            outage = await client.get(f"/v1/download/status/{jobs[0]}")
            assert outage.status_code == 503
            assert "Redis" in outage.json()["detail"]
            assert int(outage.headers["retry-after"]) >= 1
            await asyncio.sleep(8)  # the bound: Redis away for up to 10 s
            redis = devstack.start_redis(tmp_path / "own-redis", port)
            back_at = time.monotonic()
            for job_id in jobs:
                await wait_until_running(client, job_id, attempt=attempts[job_id] + 1, timeout=90)
            took = time.monotonic() - back_at
            print(f"\nRedis back -> both interrupted jobs resumed: {took:.1f} s")
            assert took < RECOVERY_BOUND
            for job_id in jobs:
                status = await wait_for_status(client, job_id, {"ready", "failed"}, 90)
                assert status["status"] == "ready", status
                assert zip_digests(await fetch(status["download_url"])) == expected_digests(FILES)
            await asyncio.wait_for(listener, 30)
        # The restarted Redis (from its append-only file) holds the job's events.
        restarted = await Services.open(services.settings.replace(redis_url=env["REDIS_URL"]))
        try:
            everything = [(e.id, e.event) for e in await restarted.store.events_after(jobs[0])]
        finally:
            await restarted.close()
        assert cuts, "the stream was never cut"
        assert received == everything
        assert len({event_id for event_id, _ in received}) == len(received)
        assert worker.alive()
    finally:
        for process in (worker, api, redis):
            process.stop()


async def test_sigterm_a_busy_worker_hands_its_jobs_back_and_exits_at_once(
    isolated_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    env = {**isolated_env, **SLOW, "WORKER_CONCURRENCY": "5"}
    api = devstack.start_api(env, tmp_path)
    leaving = devstack.start_worker(env, tmp_path, name="leaving")
    staying = None
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            jobs = [(await start(client, FILES))["job_id"] for _ in range(5)]
            for job_id in jobs:
                await wait_until_running(client, job_id)
            signalled_at = time.monotonic()
            leaving.popen.send_signal(signal.SIGTERM)
            try:
                leaving.popen.wait(60)
            except Exception:
                pytest.fail(f"the worker did not exit:\n{leaving.log_tail()}")
            took = time.monotonic() - signalled_at
            print(f"\nSIGTERM with 5 running jobs -> worker exited: {took:.1f} s")
            assert took < EXIT_BOUND
            staying = devstack.start_worker(env, tmp_path, name="staying")
            for job_id in jobs:
                status = await wait_for_status(client, job_id, {"ready", "failed"}, 120)
                assert status["status"] == "ready", status
                assert zip_digests(await fetch(status["download_url"])) == expected_digests(FILES)
        await one_archive_each(services, jobs)
    finally:
        for process in (staying, leaving, api):
            if process is not None:
                process.stop()


async def timed_get(client: httpx.AsyncClient, path: str) -> tuple[int, float]:
    started = time.monotonic()
    response = await client.get(path, headers={"Accept": "text/html"})
    return response.status_code, time.monotonic() - started


async def test_frozen_s3_leaves_the_catalogue_readable_and_jobs_fail_well_under_two_minutes(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    s3 = devstack.start_s3(tmp_path / "own-s3")
    env = {**isolated_env, "S3_ENDPOINT": s3.url, "JOB_TIMEOUT_SECONDS": "600"}
    await seed_stack(env)
    api = devstack.start_api(env, tmp_path)
    worker = devstack.start_worker(env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
            assert (await client.get("/health")).status_code == 200
            # Builds the catalogue index (unless the worker has already).
            assert (await client.get("/v1/files")).status_code == 200
            s3.popen.send_signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            created = await start(client, [1, 3])
            # The catalogue is read from its index in Redis, so it stays readable.
            for path in ("/v1/files", "/"):
                status_code, took = await timed_get(client, path)
                print(f"\nS3 frozen: GET {path} -> {status_code} in {took:.1f} s")
                assert status_code == 200
                assert took < 6.0  # target 5 s
            # Health says storage is down once its last probe (cached briefly) is replaced.
            while (status_code := (await timed_get(client, "/health"))[0]) == 200:
                assert time.monotonic() - frozen_at < 6.0
                await asyncio.sleep(0.2)
            took = time.monotonic() - frozen_at
            print(f"S3 frozen: GET /health -> {status_code} after {took:.1f} s")
            assert status_code == 503
            failed = await wait_for_status(client, created["job_id"], {"failed", "ready"}, 150)
            took = time.monotonic() - frozen_at
            print(f"S3 frozen -> job failed after its retries: {took:.1f} s")
            assert failed["status"] == "failed"
            assert failed["attempt"] == 4
            assert "object storage at 127.0.0.1" in failed["error"]
            assert took < 120

            s3.popen.send_signal(signal.SIGCONT)
            thawed_at = time.monotonic()
            again = await start(client, [1, 3])
            ready = await wait_for_status(client, again["job_id"], {"ready", "failed"}, 60)
            print(f"S3 back -> a new job ready: {time.monotonic() - thawed_at:.1f} s")
            assert ready["status"] == "ready", ready
            assert zip_digests(await fetch(ready["download_url"])) == expected_digests([1, 3])
    finally:
        s3.popen.send_signal(signal.SIGCONT)
        for process in (worker, api, s3):
            process.stop()

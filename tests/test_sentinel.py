"""Redis behind Sentinel: every client finds the master through the sentinels, and a job, its
event stream and the API survive the master being killed mid-job; after a planned failover,
writes and the event hub leave the old master within seconds.

The failover test prints the time from SIGKILL to the API's first good answer and asserts a
bound that leaves room for a loaded CI machine (README, Redis failover, has the figure).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from backend import devstack, redisconn
from backend.downloads import start_job
from backend.events import EventHub
from backend.ops import worker_alive_here
from backend.services import Services
from backend.settings import load_settings
from tests.helpers import (
    eventually,
    fetch,
    follow_with_reconnects,
    start,
    wait_for_status,
    wait_until_running,
    zip_digests,
)
from tests.sentinel_stack import (
    MASTER_NAME,
    SENTINEL_PASSWORD,
    FailoverSet,
    command,
    start_failover_set,
)
from tests.stack import CATALOGUE_BY_ID, seed_stack

FILES = [8, 3, 5]
# ~10 MiB at 1 MiB/s: the master dies with the job well under way.
SLOW = {"THROTTLE_BYTES_PER_SECOND": str(1024 * 1024), "JOB_TIMEOUT_SECONDS": "600"}
ANSWER_BOUND = 30.0  # target 10 s (1 s to notice, promotion, then the next request)
# The sentinels demote a live old master only ~10 s after a switch; redisconn.follow_master
# moves clients within a second of it.
MOVE_BOUND = 6.0


@pytest.fixture(scope="module")
def shared_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailoverSet]:
    """For the tests that leave the master alive."""
    found = start_failover_set(tmp_path_factory.mktemp("redis-failover"))
    yield found
    found.stop()


@pytest.fixture
def failover_set(tmp_path: Path) -> Iterator[FailoverSet]:
    """A set of this test's own, whose master it may kill."""
    found = start_failover_set(tmp_path / "redis")
    yield found
    found.stop()


@pytest.fixture
def sentinel_env(isolated_env: dict[str, str], shared_set: FailoverSet) -> dict[str, str]:
    return {**isolated_env, **shared_set.env()}


@pytest.fixture
async def sentinel_services(sentinel_env: dict[str, str]) -> AsyncIterator[Services]:
    opened = await Services.open(load_settings(sentinel_env))
    yield opened
    await opened.close()


async def test_clients_reach_the_master_the_sentinels_name_and_not_the_url_host(
    sentinel_services: Services, shared_set: FailoverSet
) -> None:
    key = f"{sentinel_services.settings.key_prefix}:probe"
    await sentinel_services.redis.set(key, "1")
    master = Redis.from_url(shared_set.master.url)
    try:
        assert await master.get(key) == b"1"
        info = await master.info("server")
        assert info["tcp_port"] == shared_set.master_port()
    finally:
        await master.aclose()
    await sentinel_services.listener.ping()


async def test_the_health_check_client_goes_through_the_sentinels_too(
    sentinel_env: dict[str, str], sentinel_services: Services
) -> None:
    settings = load_settings(sentinel_env)
    assert not worker_alive_here(settings, host="sentinel-host")
    await sentinel_services.redis.set(f"{settings.queue_name}:worker:sentinel-host:1", "beat")
    assert worker_alive_here(settings, host="sentinel-host")


async def test_an_unknown_master_name_or_a_wrong_sentinel_password_is_a_connection_error(
    sentinel_env: dict[str, str],
) -> None:
    for change in ({"REDIS_SENTINEL_MASTER": "nobody"}, {"REDIS_SENTINEL_PASSWORD": "wrong"}):
        client = redisconn.connect(load_settings({**sentinel_env, **change}), Redis)
        try:
            # A Redis outage to every caller: the API answers 503, the worker rebuilds itself.
            with pytest.raises(RedisConnectionError, match="No master found"):
                await client.ping()
        finally:
            await client.aclose()


@pytest.mark.slow
async def test_master_killed_mid_job_the_job_completes_and_a_resuming_client_misses_nothing(
    isolated_env: dict[str, str], failover_set: FailoverSet, tmp_path: Path
) -> None:
    env = {**isolated_env, **failover_set.env(), **SLOW}
    await seed_stack(env)
    api = devstack.start_api(env, tmp_path)
    worker = devstack.start_worker(env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            job_id = (await start(client, FILES))["job_id"]
            await wait_until_running(client, job_id)
            cuts: list[str] = []
            received: list[tuple[str, str]] = []

            async def listen() -> None:
                async for item in follow_with_reconnects(api.url, job_id, cuts):
                    received.append(item)

            listener = asyncio.create_task(listen())
            await asyncio.sleep(1.0)
            assert received, "the stream delivered nothing before the kill"
            old_master = failover_set.master_port()
            failover_set.master.kill()
            killed_at = time.monotonic()
            while True:
                answer = await client.get(f"/v1/download/status/{job_id}")
                if answer.status_code == 200:
                    break
                assert answer.status_code == 503, answer.text
                await asyncio.sleep(0.05)
            took = time.monotonic() - killed_at
            print(f"\nmaster SIGKILLed -> the API answers again: {took:.1f} s")
            assert took < ANSWER_BOUND
            new_master = failover_set.master_port()
            assert new_master == FailoverSet.port_of(failover_set.replica) != old_master

            # The API's one event reader re-subscribed, and on the promoted replica.
            reader = f"name=longhaul-events-{api.popen.pid} "
            await eventually(
                lambda: asyncio.to_thread(command, new_master, "CLIENT", "LIST"),
                lambda clients: any(reader in line for line in clients),
            )

            status = await wait_for_status(client, job_id, {"ready", "failed"}, 120)
            print(
                f"master SIGKILLed -> job ready: {time.monotonic() - killed_at:.1f} s "
                f"(attempt {status['attempt']}, stream cut {len(cuts)}x)"
            )
            assert status["status"] == "ready", status
            archive = await fetch(status["download_url"])
            assert zip_digests(archive) == {
                CATALOGUE_BY_ID[i].name: CATALOGUE_BY_ID[i].sha256 for i in FILES
            }
            await asyncio.wait_for(listener, 30)
        # What the promoted replica holds: every event, in order, each delivered once.
        opened = await Services.open(load_settings(env))
        try:
            everything = [(e.id, e.event) for e in await opened.store.events_after(job_id)]
        finally:
            await opened.close()
        assert cuts, "the stream was never cut"
        assert received == everything
        assert everything[-1][1] == "completed"
        assert worker.alive()
    finally:
        for process in (worker, api):
            process.stop()


async def test_a_planned_failover_moves_writes_and_the_event_hub_to_the_new_master_at_once(
    isolated_env: dict[str, str], failover_set: FailoverSet
) -> None:
    env = {**isolated_env, **failover_set.env()}
    await seed_stack(env)
    services = await Services.open(load_settings(env))
    hub = EventHub(services.listener, services.store)
    await hub.start()
    try:
        await asyncio.wait_for(hub.connected.wait(), 5)
        record = await start_job(services, [1], "public")
        stream = hub.subscribe(record.job_id, idle_seconds=0.2)
        first = await anext(stream)
        assert first is not None and first.event == "progress"
        old = failover_set.master_port()
        # The old master stays up and keeps taking writes until the sentinels demote it.
        command(
            FailoverSet.port_of(failover_set.sentinel),
            *("SENTINEL", "FAILOVER", MASTER_NAME),
            password=SENTINEL_PASSWORD,
        )
        new = await eventually(
            lambda: asyncio.to_thread(failover_set.master_port), lambda port: port != old
        )
        switched_at = time.monotonic()
        direct = Redis(host="127.0.0.1", port=new)
        try:
            # Progress written through this process's clients until the new master has it.
            for progress in range(10, 100):
                record.progress = progress
                with contextlib.suppress(RedisError):
                    await services.store.save_progress(record)
                stored = await direct.get(services.store.record_key(record.job_id))
                if stored and f'"progress":{progress},'.encode() in stored:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("no write reached the new master")
            reader = f"longhaul-events-{os.getpid()}"
            await eventually(
                direct.client_list, lambda clients: any(c["name"] == reader for c in clients)
            )
        finally:
            await direct.aclose()
        took = time.monotonic() - switched_at
        print(f"\nplanned failover -> writes and the event reader on the new master: {took:.1f} s")
        assert took < MOVE_BOUND
        received = None
        while received is None or f'"progress":{progress},' not in received.data:
            received = await asyncio.wait_for(anext(stream), 10)
        await stream.aclose()
    finally:
        await hub.stop()
        await services.close()

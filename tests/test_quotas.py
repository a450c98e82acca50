"""Per-client quotas: the active-job cap is atomic, cheap, freed by ending; idempotency keys
are scoped to the caller."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend import devstack
from backend.downloads import start_job
from backend.jobs import ActiveJobsLimit, JobStore
from backend.models import JobRecord
from backend.services import Services
from backend.settings import load_settings
from tests.helpers import start
from tests.test_security import token

CAP = 20


@pytest.fixture
def two_capped_apis(
    isolated_env: dict[str, str], services: Services, tmp_path: Path
) -> Iterator[list[devstack.Process]]:
    # No worker runs on this stack: jobs stay queued, which is "active".
    env = {**isolated_env, "MAX_ACTIVE_JOBS_PER_CLIENT": str(CAP)}
    processes = [devstack.start_api(env, tmp_path, name=f"api{n}") for n in (1, 2)]
    yield processes
    for process in processes:
        process.stop()


async def test_active_job_cap_holds_for_sixty_parallel_posts_over_two_api_processes(
    two_capped_apis: list[devstack.Process], services: Services
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    f"{two_capped_apis[n % 2].url}/v1/download/async", json={"file_ids": [1]}
                )
                for n in range(60)
            )
        )
    assert Counter(a.status_code for a in answers) == {202: CAP, 429: 60 - CAP}
    for refused in (a for a in answers if a.status_code == 429):
        assert f"too many active jobs for this client (limit {CAP})" in refused.json()["detail"]
        assert refused.headers["retry-after"]
    assert len(await services.store.jobs_of("public")) == CAP


async def test_ending_a_job_gives_its_place_back(
    two_capped_apis: list[devstack.Process],
) -> None:
    async with httpx.AsyncClient(base_url=two_capped_apis[0].url, timeout=30) as client:
        jobs = [await start(client, [1]) for _ in range(CAP)]
        retry = {"Idempotency-Key": uuid.uuid4().hex}
        refused = await client.post("/v1/download/async", json={"file_ids": [1]}, headers=retry)
        assert refused.status_code == 429
        assert (await client.delete(f"/v1/download/{jobs[0]['job_id']}")).status_code == 200
        # The refused request's key was not spent: its retry makes the job now.
        made = await start(client, [1], headers=retry)
        assert made["job_id"] not in {job["job_id"] for job in jobs}
        assert (await start(client, [1], headers=retry))["job_id"] == made["job_id"]


async def test_a_double_click_at_the_cap_is_a_429_for_every_click_not_a_503(
    two_capped_apis: list[devstack.Process],
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        base = two_capped_apis[0].url
        for _ in range(CAP):
            made = await client.post(f"{base}/v1/download/async", json={"file_ids": [1]})
            assert made.status_code == 202
        key = {"Idempotency-Key": uuid.uuid4().hex}
        answers = await asyncio.gather(
            *(
                client.post(
                    f"{two_capped_apis[n % 2].url}/v1/download/async",
                    json={"file_ids": [1]},
                    headers=key,
                )
                for n in range(20)
            )
        )
    assert Counter(a.status_code for a in answers) == {429: 20}


async def test_places_of_jobs_whose_records_expired_are_reclaimed(services: Services) -> None:
    # Records vanish by TTL when nothing ends them (a queue lost, a job never picked up).
    store = JobStore(services.redis, prefix=f"{services.settings.key_prefix}:ttl", ttl_seconds=1)

    def job(n: int) -> JobRecord:
        return JobRecord(job_id=f"{n:032x}", owner="o", file_ids=[1], client="ip:192.0.2.7")

    await store.create(job(1), active_limit=2)
    await store.create(job(2), active_limit=2)
    with pytest.raises(ActiveJobsLimit):
        await store.create(job(3), active_limit=2)

    async def until_expired() -> None:
        while True:
            keys = [store.record_key(job(n).job_id) for n in (1, 2)]
            if not await services.redis.exists(*keys):
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(until_expired(), 5)
    await store.create(job(3), active_limit=2)
    assert await store.get(job(3).job_id) is not None


@pytest.fixture
async def quiet_services(isolated_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Services]:
    """Services on a Redis of this test's own, so its command counters see nobody else."""
    redis = devstack.start_redis(tmp_path / "redis", appendonly=False)
    opened = await Services.open(load_settings({**isolated_env, "REDIS_URL": redis.url}))
    try:
        yield opened
    finally:
        await opened.close()
        redis.stop()


async def redis_work_of_one_start(services: Services, client: str) -> tuple[int, int]:
    """(commands run, keys looked up) by Redis while one job starts for `client`."""

    async def counters() -> tuple[int, int]:
        stats: dict[str, Any] = await services.redis.info("stats")
        commands: dict[str, Any] = await services.redis.info("commandstats")
        calls = sum(int(c["calls"]) for c in commands.values())
        return calls, int(stats["keyspace_hits"]) + int(stats["keyspace_misses"])

    calls_before, keys_before = await counters()
    await start_job(services, [1], "public", client=client)
    calls_after, keys_after = await counters()
    return calls_after - calls_before, keys_after - keys_before


async def test_the_cap_check_costs_the_same_at_one_or_ten_thousand_active_jobs(
    quiet_services: Services,
) -> None:
    client = "ip:192.0.2.10"
    await start_job(quiet_services, [1], "public", client=client)
    with_one = await redis_work_of_one_start(quiet_services, client)
    for _ in range(50):
        await asyncio.gather(
            *(start_job(quiet_services, [1], "public", client=client) for _ in range(200))
        )
    with_ten_thousand = await redis_work_of_one_start(quiet_services, client)
    assert with_ten_thousand == with_one


async def test_anonymous_idempotency_keys_are_scoped_to_the_caller(
    http: httpx.AsyncClient,
) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    # Our client is the trusted proxy: X-Forwarded-For names the caller, as nginx would.
    alice = {**key, "X-Forwarded-For": "198.51.100.1"}
    bob = {**key, "X-Forwarded-For": "198.51.100.2"}
    first = await start(http, [5], headers=alice)
    assert (await start(http, [5], headers=alice))["job_id"] == first["job_id"]
    others = await start(http, [5], headers=bob)
    assert others["job_id"] != first["job_id"]
    # Another caller's key is no conflict, but one's own key with another body still is.
    assert await start(http, [1], headers={**alice, "X-Forwarded-For": "198.51.100.3"})
    conflict = await http.post("/v1/download/async", json={"file_ids": [1]}, headers=bob)
    assert conflict.status_code == 422


async def test_a_token_owners_idempotency_key_holds_from_any_address(
    http: httpx.AsyncClient,
) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex, **token("dora")}
    first = await start(http, [5], headers={**key, "X-Forwarded-For": "198.51.100.4"})
    again = await start(http, [5], headers={**key, "X-Forwarded-For": "198.51.100.5"})
    assert again["job_id"] == first["job_id"]

"""What a POST costs Redis: one round trip for the rate limit, one for the job (the create
script binds the key, takes the place, writes record, event and arq's queue entry).

Round trips are counted where redis-py sends them: one `send_packed_command` per command or
pipeline, in this process, against the session's real Redis.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio.connection import Connection

from backend.downloads import start_job
from backend.services import Services


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """A one-item list whose count grows with every round trip any client in this process makes."""
    count = [0]
    send = Connection.send_packed_command

    async def counted(self: Connection, *args: Any, **kwargs: Any) -> None:
        count[0] += 1
        await send(self, *args, **kwargs)

    monkeypatch.setattr(Connection, "send_packed_command", counted)
    yield count


async def test_starting_a_job_is_one_round_trip(services: Services, round_trips: list[int]) -> None:
    # The first also opens a connection and loads the script into Redis.
    await start_job(services, [1], "public")
    costs = []
    for n in range(5):
        before = round_trips[0]
        await start_job(
            services, [1, 2], "public", idempotency_key=f"key-{n}", client=f"10.9.0.{n}"
        )
        costs.append(round_trips[0] - before)
    assert costs == [1] * 5


async def test_a_post_is_two_round_trips_rate_limit_included(
    app_client: httpx.AsyncClient, round_trips: list[int]
) -> None:
    await app_client.post("/v1/download/async", json={"file_ids": [1]})  # connections, scripts
    costs = []
    for _ in range(7):
        before = round_trips[0]
        answer = await app_client.post(
            "/v1/download/async",
            json={"file_ids": [1, 2]},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert answer.status_code == 202, answer.text
        costs.append(round_trips[0] - before)
    # The API's lease watcher may read Redis during one of them: the median is the POST's.
    assert statistics.median(costs) == 2, costs

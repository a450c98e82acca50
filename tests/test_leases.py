"""Leases on real Redis: an attempt's hold ends with the attempt, whatever its keeper does."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest

from backend.leases import Lease, LeaseLost, lapsed
from backend.queue import in_progress_key
from backend.services import Services


class SwallowingLease(Lease):
    """A lease whose renewals lose a cancel that lands mid-call, as a Redis call did after a
    frozen worker woke up (the keeper then renewed forever and the attempt waited on it)."""

    async def renew(self, mode: str = "renew") -> bool:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.2)  # the call in flight
        return await super().renew(mode)


async def test_an_attempt_ends_even_when_its_keeper_swallows_the_cancel(
    services: Services,
) -> None:
    job_id = uuid.uuid4().hex
    lease = SwallowingLease(services.redis, services.settings.key_prefix, job_id, 0.6)

    async def attempt() -> None:
        async with lease.held():
            await asyncio.sleep(0.25)  # ends while the keeper is renewing

    started = time.monotonic()
    await asyncio.wait_for(attempt(), 5)
    assert time.monotonic() - started < 2.5
    # The keeper stops too: the lease is not renewed any more and lapses.
    await asyncio.sleep(1.0)
    assert await services.redis.exists(in_progress_key(job_id)) == 0
    assert job_id not in await lapsed(services.redis, services.settings.key_prefix)


async def test_a_lease_not_renewed_for_a_whole_lease_refuses_writes(services: Services) -> None:
    lease = Lease(services.redis, services.settings.key_prefix, uuid.uuid4().hex, 0.3)
    assert await lease.renew("take")
    lease.ensure_held()
    await asyncio.sleep(0.35)  # a frozen process: no renewal came in time
    with pytest.raises(LeaseLost):
        lease.ensure_held()
    assert lease.lost

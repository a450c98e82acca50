"""Cancelling a task in the middle of Redis commands always ends it (rediscancel.py).

Without the fix, Python 3.11 lost about one cancellation in three here: redis-py's send under
asyncio.wait_for returned its result instead of raising, and the task ran on.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from backend import rediscancel
from backend.services import Services

CANCELS = 300


async def test_a_task_cancelled_mid_command_always_ends(services: Services) -> None:
    key = f"{services.settings.key_prefix}:cancel-probe"
    await services.redis.set(key, "x")

    async def commands() -> None:
        while True:
            await services.redis.get(key)

    rng = random.Random(7)
    ran_on = 0
    for _ in range(CANCELS):
        task = asyncio.create_task(commands())
        # Land the cancel anywhere in a command: sending, waiting for the reply, reading it.
        await asyncio.sleep(rng.uniform(0, 0.002))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if not done:
            ran_on += 1
            while not task.done():  # stop it anyway, so the next round starts clean
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
        assert task.cancelled()
    assert ran_on == 0, f"{ran_on} of {CANCELS} cancellations were ignored"


async def test_wait_for_keeps_its_time_limit() -> None:
    with pytest.raises(TimeoutError):
        await rediscancel.wait_for(asyncio.sleep(5), 0.05)
    assert await rediscancel.wait_for(asyncio.sleep(0, "done"), None) == "done"


def test_install_is_idempotent() -> None:
    import redis.asyncio.connection

    rediscancel.install()
    patched = redis.asyncio.connection.asyncio
    rediscancel.install()
    assert redis.asyncio.connection.asyncio is patched
    assert patched.wait_for is rediscancel.wait_for
    assert patched.TimeoutError is asyncio.TimeoutError

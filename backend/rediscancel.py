"""Redis commands that can always be cancelled, on Python 3.11 too.

redis-py (5.x, the line arq 0.28 allows) sends each command under `asyncio.wait_for` when the
connection has a socket timeout, and every Longhaul client has one. Python 3.11's wait_for
returns the inner result when a cancellation arrives in the same loop step as the send
completes, and the cancellation is lost (CPython gh-86296; 3.12 rebuilt wait_for on
`asyncio.timeout`). Measured here: a task looping over GET, cancelled at a random moment,
ignored about one cancellation in three and ran on; a worker stopping its webhook sender
waited for ever.

`install()` gives redis-py's connection module 3.12's wait_for: the same time limit through
`asyncio.timeout`, which lets every cancellation through. Nothing else of asyncio changes, for
redis-py or anyone. On 3.12 and later it does nothing.
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio.connection

T = TypeVar("T")


async def wait_for(awaitable: Awaitable[T], timeout: float | None) -> T:
    """`asyncio.wait_for` as Python 3.12 defines it: TimeoutError after `timeout` seconds
    (None: no limit), and a cancellation always propagates."""
    async with asyncio.timeout(timeout):
        return await awaitable


class _AsyncioWithSafeWaitFor(types.ModuleType):
    """`asyncio` with `wait_for` replaced; every other name is asyncio's own."""

    wait_for = staticmethod(wait_for)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


def install() -> None:
    """Make redis-py's asyncio connections send through `wait_for` above (idempotent)."""
    if sys.version_info >= (3, 12):
        return
    if not isinstance(redis.asyncio.connection.asyncio, _AsyncioWithSafeWaitFor):
        redis.asyncio.connection.asyncio = _AsyncioWithSafeWaitFor("asyncio")

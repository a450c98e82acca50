"""Health: is each dependency reachable from this API process?

Load balancers, monitors and strangers poll this route, and each answer used to cost an S3
request and a Redis round trip. Each dependency is now probed at most once per
PROBE_TTL_SECONDS per process: callers in between get the last result, and callers while a
probe runs wait for that probe. A probe gives up after PROBE_TIMEOUT_SECONDS, so an outage
shows within PROBE_TTL_SECONDS + PROBE_TIMEOUT_SECONDS (3 s) of starting.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from litestar import Response, get

from backend.api.openapi_docs import HEALTHY, UNHEALTHY
from backend.models import HealthBody
from backend.services import Services

PROBE_TTL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 2.0


class CachedProbe:
    """A check run at most once per `ttl` seconds, shared by every caller meanwhile."""

    def __init__(
        self,
        check: Callable[[], Awaitable[bool]],
        ttl: float = PROBE_TTL_SECONDS,
        timeout: float = PROBE_TIMEOUT_SECONDS,
    ) -> None:
        self._check = check
        self._ttl = ttl
        self._timeout = timeout
        self._result = False
        self._started_at = -math.inf
        self._running: asyncio.Task[bool] | None = None

    async def __call__(self) -> bool:
        """The check's result, at most `ttl` seconds older than the start of its run."""
        if time.monotonic() - self._started_at < self._ttl:
            return self._result
        if self._running is None:
            self._running = asyncio.create_task(self._run())
        # Shielded: a caller that hangs up must not cancel the run the others wait for.
        return await asyncio.shield(self._running)

    async def _run(self) -> bool:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                result = await self._check()
        except Exception:
            result = False
        finally:
            self._running = None
        self._result, self._started_at = result, started
        return result


@dataclass(frozen=True, slots=True)
class HealthProbes:
    """This process's probes of its dependencies (built once, in the app's lifespan)."""

    redis: CachedProbe
    storage: CachedProbe

    @classmethod
    def of(cls, services: Services) -> HealthProbes:
        return cls(redis=CachedProbe(services.redis_ok), storage=CachedProbe(services.storage.ping))


@get(
    "/health",
    tags=["operations"],
    summary="Health of the API and its dependencies",
    cache=False,
    responses={200: HEALTHY, 503: UNHEALTHY},
)
async def health(health_probes: HealthProbes) -> Response[HealthBody]:
    redis_ok, storage_ok = await asyncio.gather(health_probes.redis(), health_probes.storage())
    checks = {
        "api": "ok",
        "redis": "ok" if redis_ok else "error",
        "storage": "ok" if storage_ok else "error",
    }
    healthy = redis_ok and storage_ok
    return Response(
        HealthBody(status="healthy" if healthy else "unhealthy", checks=checks),
        status_code=200 if healthy else 503,
    )

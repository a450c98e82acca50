"""Health: is each dependency reachable from this API process?"""

from __future__ import annotations

import asyncio

from litestar import Response, get

from backend.api.openapi_docs import HEALTHY, UNHEALTHY
from backend.models import HealthBody
from backend.services import Services


@get(
    "/health",
    tags=["operations"],
    summary="Health of the API and its dependencies",
    cache=False,
    responses={200: HEALTHY, 503: UNHEALTHY},
)
async def health(services: Services) -> Response[HealthBody]:
    redis_ok, storage_ok = await asyncio.gather(services.redis_ok(), services.storage.ping())
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

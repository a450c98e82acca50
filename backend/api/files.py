"""The catalogue: the files a job can ask for."""

from __future__ import annotations

from litestar import get

from backend.api.openapi_docs import FILES, error_response
from backend.models import CatalogueFile
from backend.services import Services


@get(
    "/v1/files",
    tags=["files"],
    summary="The catalogue of downloadable files",
    responses={
        200: FILES,
        401: error_response(401, "A bearer token was sent and is not valid (or one is required)."),
        429: error_response(429, "Rate limit; see Retry-After."),
        503: error_response(503, "Object storage is unavailable; retry shortly."),
    },
)
async def list_files(services: Services, requester: str) -> list[CatalogueFile]:
    # `requester` is resolved for its checks alone: a bad token is a 401 here as on every
    # route, never silently anonymous, and API_AUTH_REQUIRED covers the catalogue too.
    del requester
    return [
        CatalogueFile(file_id=item.file_id, name=item.name, size=item.size)
        for item in await services.storage.catalogue()
    ]

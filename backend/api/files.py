"""The catalogue: the files a job can ask for, a page at a time, from the index in Redis."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request, Response, get
from litestar.openapi.spec import Example
from litestar.params import Parameter

from backend.api.openapi_docs import (
    CURSOR_EXAMPLE,
    FILES,
    FILES_400,
    FILES_NOT_MODIFIED,
    error_response,
)
from backend.catalogue_index import IndexedFile, Order, Query, Sort
from backend.catalogue_listing import DEFAULT_LIMIT, MAX_LIMIT, Listing, etag_matches, list_page
from backend.models import CatalogueFile, CataloguePage
from backend.ratelimit import admit_search
from backend.services import Services

# Clients may keep a page but must ask again (cheaply, with If-None-Match) before using it.
CACHE_CONTROL = "no-cache"


def catalogue_file(item: IndexedFile) -> CatalogueFile:
    return CatalogueFile(file_id=item.file_id, name=item.name, size=item.size)


def next_link(request: Request[Any, Any, Any], listing: Listing) -> str | None:
    """The RFC 8288 `Link` to the next page: this request's query with the next cursor."""
    if listing.next_cursor is None:
        return None
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    params.append(("cursor", listing.next_cursor))
    return f'<{request.url.path}?{urlencode(params)}>; rel="next"'


@get(
    "/v1/files",
    tags=["files"],
    summary="The catalogue of downloadable files, a page at a time",
    description=(
        "Files in pages of `limit`, ordered by `sort` and `order`, optionally narrowed by `q` "
        "(a case-insensitive substring of the name) and size bounds. A `q` not searched in "
        "the last two minutes counts against CATALOGUE_SEARCHES_PER_MINUTE; size bounds, sort, "
        "order and paging of it do not. Follow `next_cursor` "
        '(or the `Link: <…>; rel="next"` header) for the next page; keep the other parameters '
        "unchanged. Answers come from an index of the source bucket that workers refresh every "
        "CATALOGUE_REFRESH_SECONDS, so a file added or deleted shows within about 1.5 times "
        "that; a job still checks each file when it runs. Send the `ETag` back as "
        "`If-None-Match` to get `304` while nothing changed."
    ),
    responses={
        200: FILES,
        304: FILES_NOT_MODIFIED,
        400: error_response(400, "A parameter is not valid; `detail` names it.", FILES_400),
        401: error_response(401, "A bearer token was sent and is not valid (or one is required)."),
        429: error_response(
            429,
            "Rate limit, or too many new searches (a `q` not searched in the last two minutes) "
            "from this client this minute (CATALOGUE_SEARCHES_PER_MINUTE); see Retry-After.",
        ),
        503: error_response(503, "Object storage is unavailable; retry shortly."),
    },
)
async def list_files(
    request: Request[Any, Any, Any],
    services: Services,
    requester: str,
    client: str,
    cursor: Annotated[
        str | None,
        Parameter(
            required=False,
            description="`next_cursor` of the previous page; omit for the first page.",
            examples=[Example(summary="a next_cursor", value=CURSOR_EXAMPLE)],
        ),
    ] = None,
    limit: Annotated[
        int,
        Parameter(
            ge=1,
            le=MAX_LIMIT,
            description="Files per page.",
            examples=[Example(summary="fifty", value=50)],
        ),
    ] = DEFAULT_LIMIT,
    q: Annotated[
        str | None,
        Parameter(
            required=False,
            max_length=200,
            description="Only files whose name contains this text, in any case.",
            examples=[Example(summary="a word of the name", value="report")],
        ),
    ] = None,
    sort: Annotated[Sort, Parameter(description="Order by file id, name, size or mtime.")] = "id",
    order: Annotated[Order, Parameter(description="Ascending or descending.")] = "asc",
    min_size: Annotated[
        int | None,
        Parameter(
            required=False,
            ge=0,
            description="Only files of at least this many bytes.",
            examples=[Example(summary="1 MiB", value=1048576)],
        ),
    ] = None,
    max_size: Annotated[
        int | None,
        Parameter(
            required=False,
            ge=0,
            description="Only files of at most this many bytes.",
            examples=[Example(summary="10 MiB", value=10485760)],
        ),
    ] = None,
) -> Response[CataloguePage] | Response[None]:
    # `requester` is resolved for its checks alone: a bad token is a 401 here as on every
    # route, never silently anonymous, and API_AUTH_REQUIRED covers the catalogue too.
    del requester
    query = Query(q=q or "", sort=sort, order=order, min_size=min_size, max_size=max_size)
    settings = services.settings

    async def admit() -> None:
        await admit_search(
            services.redis, settings.key_prefix, client, settings.catalogue_searches_per_minute
        )

    listing = await list_page(services.catalogue, query, cursor, limit, admit)
    headers = {"ETag": listing.etag, "Cache-Control": CACHE_CONTROL}
    link = next_link(request, listing)
    if link is not None:
        headers["Link"] = link
    # RFC 9110 §13.1.2: a GET whose If-None-Match names the current tag is answered 304.
    if etag_matches(request.headers.get("if-none-match"), listing.etag):
        return Response(None, status_code=304, headers=headers)
    body = CataloguePage(
        items=[catalogue_file(item) for item in listing.page.items],
        total=listing.page.total,
        next_cursor=listing.next_cursor,
    )
    return Response(body, headers=headers)

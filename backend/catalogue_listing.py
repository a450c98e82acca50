"""One page of the catalogue for a query and a cursor: what `GET /v1/files` and the page `/`
answer, with the cursor to the next page and the page's entity tag.

A cursor names a generation of the index, an offset in the query's answer there and the query
it belongs to (opaque to clients: base64url of JSON). While that generation lives (at least
two minutes after it was replaced, catalogue_index.MIN_GRACE_SECONDS), the pages of one walk
come from one snapshot, so no file is listed twice or skipped. A cursor that outlived its
generation carries on at the same offset in the current one.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from backend.catalogue_index import CatalogueIndex, Page, Query
from backend.downloads import InvalidInput

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
# A query string longer than this is not a file name anyone typed.
MAX_QUERY_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Listing:
    page: Page
    next_cursor: str | None
    # A weak entity tag (RFC 9110 §8.8.3): same generation, query and position, same answer.
    etag: str


def encode_cursor(generation: int, offset: int, query: Query) -> str:
    raw = msgspec.json.encode([generation, offset, query.fingerprint])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, query: Query) -> tuple[int, int]:
    """`(generation, offset)` of a cursor this API issued for `query`; InvalidInput else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        generation, offset, fingerprint = msgspec.json.decode(raw, type=tuple[int, int, str])
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise InvalidInput("cursor", "is not a cursor this API issued") from exc
    if generation < 1 or offset < 0:
        raise InvalidInput("cursor", "is not a cursor this API issued")
    if fingerprint != query.fingerprint:
        raise InvalidInput(
            "cursor",
            "belongs to another query (q, sort, order, min_size or max_size changed); "
            "start again without a cursor",
        )
    return generation, offset


def check_query(query: Query) -> None:
    """InvalidInput naming the parameter when `query` cannot be answered."""
    if len(query.q) > MAX_QUERY_LENGTH:
        raise InvalidInput("q", f"is longer than {MAX_QUERY_LENGTH} characters")
    if any(ch in query.q for ch in "\t\n\r\x00"):
        raise InvalidInput("q", "must not hold tabs, line breaks or NUL characters")
    for name, value in (("min_size", query.min_size), ("max_size", query.max_size)):
        if value is not None and value < 0:
            raise InvalidInput(name, "must be 0 or more (bytes)")
    if (
        query.min_size is not None
        and query.max_size is not None
        and query.min_size > query.max_size
    ):
        raise InvalidInput("min_size", "is larger than max_size")


async def list_page(
    index: CatalogueIndex,
    query: Query,
    cursor: str | None,
    limit: int = DEFAULT_LIMIT,
    admit: Callable[[], Awaitable[None]] | None = None,
) -> Listing:
    """The page of `query` at `cursor` (the first page without one), at most `limit` files.

    `admit` is awaited before a search runs a scan no one has kept (CatalogueIndex.page).
    Raises InvalidInput (400) for a bad cursor or query, StorageError when there is no index
    and the bucket cannot be listed to build one, RedisError when Redis fails, and whatever
    `admit` raises.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput("limit", f"must be 1 to {MAX_LIMIT}")
    check_query(query)
    offset = 0
    generation = None
    if cursor is not None:
        generation, offset = decode_cursor(cursor, query)
        if not await index.exists(generation):
            generation = None
    if generation is None:
        generation = await index.ensure()
    page = await index.page(query, offset, limit, generation, admit)
    following = page.next_offset
    next_cursor = None if following is None else encode_cursor(generation, following, query)
    etag = f'W/"{generation}-{query.fingerprint}-{offset}-{limit}"'
    return Listing(page=page, next_cursor=next_cursor, etag=etag)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether `If-None-Match` names `etag` (weak comparison, RFC 9110 §13.1.2), or is `*`."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == ours for tag in if_none_match.split(","))

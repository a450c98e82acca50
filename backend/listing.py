"""Listing an owner's jobs: newest first, filtered by status, a page at a time.

Pages are cut by a cursor that names the last job of the page by its place in the owner's
index, (created_at, job_id), not by an offset: jobs created while a client pages through are
newer than every cursor, so they never shift a page, and nothing is listed twice or skipped.
The cursor is opaque to clients (base64url of that pair) and checked on the way in.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable
from typing import NamedTuple

from backend.downloads import InvalidInput, is_job_id
from backend.jobs import JobStore
from backend.models import JobRecord, JobState

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Index entries read per round while a status filter throws records away.
_SCAN_BATCH = 200


class Cursor(NamedTuple):
    """The last job of a page: the next page starts after it."""

    created_at: float
    job_id: str


class Page(NamedTuple):
    records: list[JobRecord]
    # None on the last page.
    next_cursor: Cursor | None


def encode_cursor(cursor: Cursor) -> str:
    raw = json.dumps([cursor.created_at, cursor.job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str) -> Cursor:
    """The cursor a page handed out; InvalidInput naming `cursor` for anything else."""
    bad = InvalidInput("cursor", "not a cursor of this list; pass `next_cursor` as it was given")
    if not text or len(text) > 200:
        raise bad
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise bad from exc
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], int | float)
        or isinstance(value[0], bool)
        or not math.isfinite(value[0])
        or not isinstance(value[1], str)
        or not is_job_id(value[1])
    ):
        raise bad
    return Cursor(float(value[0]), value[1])


def parse_statuses(values: Iterable[str] | None) -> frozenset[JobState] | None:
    """The states asked for (`status=a&status=b` or `status=a,b`); None for every state."""
    if values is None:
        return None
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not names:
        return None
    known = {state.value: state for state in JobState}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidInput(
            "status", f"{unknown[0][:32]!r} is not a job status; one of {', '.join(known)}"
        )
    return frozenset(known[name] for name in names)


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput("limit", f"must be from 1 to {MAX_LIMIT}, got {limit}")
    return limit


async def list_jobs(
    store: JobStore,
    owner: str,
    limit: int = DEFAULT_LIMIT,
    statuses: frozenset[JobState] | None = None,
    after: Cursor | None = None,
) -> Page:
    """Up to `limit` of the owner's jobs after `after`, newest first, in `statuses` if given.

    Jobs whose records have expired are skipped. `next_cursor` is None when no further job
    of the owner (in `statuses`) exists now.
    """
    found: list[JobRecord] = []
    position: tuple[float, str] | None = after
    wanted = max(limit + 1, _SCAN_BATCH) if statuses else limit + 1
    while len(found) <= limit:
        batch = await store.owner_index_before(owner, position, wanted)
        records = await store.records([job_id for job_id, _ in batch])
        for record in records:
            if record is not None and (statuses is None or record.status in statuses):
                found.append(record)
        if len(batch) < wanted:
            break  # the index has nothing older
        position = batch[-1][1], batch[-1][0]
    page = found[:limit]
    more = len(found) > limit
    last = page[-1] if page else None
    return Page(page, Cursor(last.created_at, last.job_id) if more and last else None)

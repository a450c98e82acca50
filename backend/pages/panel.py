"""The "Your downloads" panel: the browser's jobs as cards, live by SSE or by polling."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from litestar import Request
from redis.exceptions import RedisError

from backend.archivenames import card_filename
from backend.models import JobRecord
from backend.pages.browser import LiveMode
from backend.pages.views import (
    CatalogueRow,
    JobCardView,
    JobTitle,
    catalogue_rows,
    job_title,
    job_view,
)
from backend.services import Services

logger = logging.getLogger(__name__)

# The panel shows the newest jobs; older ones stay reachable through the API until they expire.
PANEL_JOBS = 20
LIVE_TEMPLATE = "partials/job_live.html"
PANEL_TEMPLATE = "partials/downloads.html"


@dataclass(frozen=True, slots=True)
class Card:
    title: JobTitle
    job: JobCardView
    archive_name: str = ""


async def catalogue_by_id(
    services: Services, records: Sequence[JobRecord]
) -> dict[int, CatalogueRow]:
    """The indexed files the jobs of `records` name, by file id; {} before the first index
    or when Redis fails (cards fall back to ids)."""
    wanted = sorted({file_id for record in records for file_id in record.file_ids})
    try:
        found = await services.catalogue.lookup(wanted)
    except RedisError as exc:
        logger.warning("catalogue unavailable for job titles: %s", exc)
        return {}
    return {row.file_id: row for row in catalogue_rows(list(found.values()))}


def stream_url(records: Sequence[JobRecord]) -> str | None:
    """The one event stream of the page: every job still running, multiplexed."""
    active = [r.job_id for r in records if not r.status.is_terminal]
    return f"/events?{urlencode({'jobs': ','.join(active)})}" if active else None


async def panel_context(
    services: Services,
    owner: str,
    mode: LiveMode,
    names: Mapping[int, CatalogueRow] | None = None,
) -> dict[str, Any]:
    records = await services.store.jobs_of(owner, limit=PANEL_JOBS)
    context = await cards_context(services, owner, records, mode, names)
    return {**context, "stream_url": stream_url(records) if mode == "sse" else None}


def card_of(services: Services, record: JobRecord, names: Mapping[int, CatalogueRow]) -> Card:
    """A job's card: heading from the catalogue names at hand, live part as of now."""
    link_ttl = services.settings.presign_ttl_seconds
    return Card(
        job_title(record, names), job_view(record, link_ttl=link_ttl), card_filename(record, names)
    )


async def cards_context(
    services: Services,
    owner: str,
    records: Sequence[JobRecord],
    mode: LiveMode,
    names: Mapping[int, CatalogueRow] | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    """The cards of `records` (the owner's list from `offset`) and where "Show older" goes."""
    if records and names is None:
        names = await catalogue_by_id(services, records)
    cards = [card_of(services, r, names or {}) for r in records]
    next_offset = offset + PANEL_JOBS
    more = await services.store.count_jobs_of(owner) > next_offset if records else False
    return {
        "cards": cards,
        "live_mode": mode,
        "poll_every": f"{services.settings.sse_poll_fallback_seconds:g}s",
        "older_offset": next_offset if more else None,
        "any_ended": any(r.status.is_terminal for r in records),
    }


def render_live(request: Request[Any, Any, Any], record: JobRecord) -> str:
    """The live part of a job card as HTML, for an SSE `data:` payload."""
    engine = request.app.template_engine
    if engine is None:
        raise RuntimeError("the app has no template engine configured")
    link_ttl = request.app.state.services.settings.presign_ttl_seconds
    job = job_view(record, link_ttl=link_ttl)
    return str(engine.get_template(LIVE_TEMPLATE).render(job=job, oob=True))

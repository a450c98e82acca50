"""The "Your downloads" panel: the browser's jobs as cards, live by SSE or by polling."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
from backend.queueplaces import queue_places, queue_texts
from backend.services import Services

logger = logging.getLogger(__name__)

# The panel shows the newest jobs; older ones stay reachable through the API until they expire.
PANEL_JOBS = 20
LIVE_TEMPLATE = "partials/job_live.html"
PANEL_TEMPLATE = "partials/downloads.html"
CARD_TEMPLATE = "partials/job_card.html"
# The one stream of a browser (pages/livefeed.py): every job of the owner, new ones included.
BROWSER_STREAM_URL = "/events?scope=browser"


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


async def panel_context(
    services: Services,
    owner: str,
    mode: LiveMode,
    names: Mapping[int, CatalogueRow] | None = None,
) -> dict[str, Any]:
    records = await services.store.jobs_of(owner, limit=PANEL_JOBS)
    context = await cards_context(services, owner, records, mode, names)
    return {
        **context,
        # app.js/live.js open it (one per browser, shared by its tabs); polling pages have none.
        "stream_url": BROWSER_STREAM_URL if mode == "sse" else None,
        "ping_ms": int(services.settings.sse_ping_seconds * 1000),
        "panel_jobs": PANEL_JOBS,
    }


def card_of(
    services: Services,
    record: JobRecord,
    names: Mapping[int, CatalogueRow],
    queue_text: str = "",
) -> Card:
    """A job's card: heading from the catalogue names at hand, live part as of now."""
    link_ttl = services.settings.presign_ttl_seconds
    view = job_view(record, queue_text=queue_text, link_ttl=link_ttl)
    return Card(job_title(record, names), view, card_filename(record, names))


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
    waiting = queue_texts(await queue_places(services, records))
    cards = [card_of(services, r, names or {}, waiting.get(r.job_id, "")) for r in records]
    next_offset = offset + PANEL_JOBS
    more = await services.store.count_jobs_of(owner) > next_offset if records else False
    return {
        "cards": cards,
        "live_mode": mode,
        "poll_every": f"{services.settings.sse_poll_fallback_seconds:g}s",
        "older_offset": next_offset if more else None,
        "any_ended": any(r.status.is_terminal for r in records),
    }


def _engine(request: Request[Any, Any, Any]) -> Any:
    engine = request.app.template_engine
    if engine is None:
        raise RuntimeError("the app has no template engine configured")
    return engine


def render_live(request: Request[Any, Any, Any], record: JobRecord, queue_text: str = "") -> str:
    """The live part of a job card as HTML, for an SSE `data:` payload."""
    link_ttl = request.app.state.services.settings.presign_ttl_seconds
    view = job_view(record, queue_text=queue_text, link_ttl=link_ttl)
    return str(_engine(request).get_template(LIVE_TEMPLATE).render(job=view, oob=True))


def render_card(
    request: Request[Any, Any, Any],
    record: JobRecord,
    names: Mapping[int, CatalogueRow],
    queue_text: str = "",
) -> str:
    """A whole job card (`<li>`) as the panel shows it in SSE mode, for a `job-new` event."""
    card = card_of(request.app.state.services, record, names, queue_text)
    template = _engine(request).get_template(CARD_TEMPLATE)
    return str(template.render(card=card, live_mode="sse"))

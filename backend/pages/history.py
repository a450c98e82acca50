"""The panel's history ("Show older", "Clear finished") and a card's heading on its own.

The panel shows the newest PANEL_JOBS jobs and holds the page's one event stream for them;
older cards arrive here in pages of the same size and, should one still be running, follow it
by polling, so the stream stays the panel's alone.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.params import Parameter
from litestar.response import Template

from backend.downloads import find_job
from backend.pages.browser import browser_owner, live_mode
from backend.pages.panel import (
    PANEL_JOBS,
    PANEL_TEMPLATE,
    card_of,
    cards_context,
    catalogue_by_id,
    panel_context,
)
from backend.services import Services

NO_STORE = {"Cache-Control": "no-store"}
OLDER_TEMPLATE = "partials/older_jobs.html"
HEAD_TEMPLATE = "partials/job_head.html"
# Far beyond any list a person pages through; bounds the Redis range asked for.
MAX_OFFSET = 100_000


@get("/downloads/older", include_in_schema=False)
async def older_jobs(
    request: Request[Any, Any, Any],
    services: Services,
    offset: Annotated[int, Parameter(query="offset", ge=PANEL_JOBS, le=MAX_OFFSET)] = PANEL_JOBS,
) -> Template:
    """Cards of the owner's jobs from the `offset`-th newest on, and the next "Show older"."""
    browser = browser_owner(request, services.settings)
    records = await services.store.jobs_of(browser.owner, limit=PANEL_JOBS, offset=offset)
    context = await cards_context(services, browser.owner, records, "poll", offset=offset)
    return Template(OLDER_TEMPLATE, context=context, cookies=browser.cookies, headers=NO_STORE)


@get("/jobs/{job_id:str}/head", include_in_schema=False)
async def job_head(request: Request[Any, Any, Any], services: Services, job_id: str) -> Template:
    """A card's heading now: asked for by a card whose job ended with files left out, so its
    names, count and archive name follow what the ZIP holds."""
    browser = browser_owner(request, services.settings)
    record = await find_job(services, job_id, browser.owner)
    card = card_of(services, record, await catalogue_by_id(services, [record]))
    return Template(HEAD_TEMPLATE, context={"card": card, "job": card.job}, headers=NO_STORE)


@post("/downloads/clear", include_in_schema=False, status_code=200)
async def clear_finished(request: Request[Any, Any, Any], services: Services) -> Template:
    """Take this browser's ended jobs off its list; the panel, saying how many went."""
    browser = browser_owner(request, services.settings)
    cleared = await services.store.forget_ended(browser.owner)
    context = await panel_context(services, browser.owner, live_mode(request))
    return Template(
        PANEL_TEMPLATE,
        context={**context, "cleared": cleared},
        cookies=browser.cookies,
        headers=NO_STORE,
    )

"""The panel's history: "Show older" (the next jobs of the owner's list) and "Clear finished".

The panel shows the newest PANEL_JOBS jobs and holds the page's one event stream for them;
older cards arrive here in pages of the same size and, should one still be running, follow it
by polling, so the stream stays the panel's alone.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.params import Parameter
from litestar.response import Template

from backend.pages.browser import browser_owner, live_mode
from backend.pages.panel import PANEL_JOBS, PANEL_TEMPLATE, cards_context, panel_context
from backend.services import Services

NO_STORE = {"Cache-Control": "no-store"}
OLDER_TEMPLATE = "partials/older_jobs.html"
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

"""Page routes: the catalogue page, the downloads panel and the actions on a job.

Actions answer with the whole panel (htmx swaps it): it is the one place that knows which
jobs are still running, so the page's event stream URL is always right after a change.
"""

from __future__ import annotations

import contextlib
from typing import Any

from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.response import Template

from backend.downloads import InvalidInput, JobAlreadyFinished, cancel_job, download_url, find_job
from backend.downloads import start_job as start_download_job
from backend.models import JobState
from backend.pages.browser import BrowserOwner, browser_owner, live_mode
from backend.pages.catalogue import CURSOR, DEFAULT_SORT, SIZE, SORT, Q, catalogue_view
from backend.pages.panel import LIVE_TEMPLATE, PANEL_TEMPLATE, panel_context
from backend.pages.views import job_view
from backend.queueplaces import queue_places, queue_texts
from backend.retries import retry_job
from backend.services import Services
from backend.storage import StorageError

NO_STORE = {"Cache-Control": "no-store"}
# htmx stops polling an element when its request answers 286.
STOP_POLLING = 286
_MAX_FILE_ID = 2**53


def parse_file_ids(values: list[str]) -> list[int]:
    """The ticked catalogue ids of the form; InvalidInput naming the bad one."""
    if not values:
        raise InvalidInput("file_ids", "select at least one file")
    ids = []
    for value in values:
        text = value.strip()
        if not text.isdigit() or not 0 < int(text) <= _MAX_FILE_ID:
            raise InvalidInput("file_ids", f"{text[:32]!r} is not a catalogue file id")
        ids.append(int(text))
    return ids


async def _panel(
    request: Request[Any, Any, Any], services: Services, browser: BrowserOwner
) -> Template:
    context = await panel_context(services, browser.owner, live_mode(request))
    return Template(PANEL_TEMPLATE, context=context, cookies=browser.cookies, headers=NO_STORE)


@get("/", include_in_schema=False)
async def index(
    request: Request[Any, Any, Any],
    services: Services,
    q: Q = "",
    sort: SORT = DEFAULT_SORT,
    size: SIZE = "",
    cursor: CURSOR = None,
) -> Template:
    """A page of the catalogue (search `q`, `size` band, `sort`, at `cursor`) and the
    browser's downloads; sets the owner cookie on the first visit."""
    browser = browser_owner(request, services.settings)
    view = None
    catalogue_error = ""
    try:
        view = await catalogue_view(services, q, sort, size, cursor)
    except StorageError:
        catalogue_error = "The catalogue cannot be listed right now. Reload the page in a moment."
    # When storage just failed, cards name files by id instead of asking again.
    panel = await panel_context(services, browser.owner, "sse", {} if catalogue_error else None)
    # Without the catalogue the page is degraded, not broken: it still shows the browser's
    # downloads (ready ones can be fetched), but says 503 so monitors and proxies see it.
    degraded = {"Retry-After": "5"} if catalogue_error else {}
    return Template(
        "index.html",
        context={
            "view": view,
            "catalogue_error": catalogue_error,
            # Shown with the selection before submitting (catalogue.js).
            "max_files": services.settings.max_files_per_job,
            **panel,
        },
        cookies=browser.cookies,
        headers={**NO_STORE, **degraded},
        status_code=503 if catalogue_error else 200,
    )


@get("/downloads", include_in_schema=False)
async def downloads_panel(request: Request[Any, Any, Any], services: Services) -> Template:
    """The panel alone: app.js fetches it to switch to polling or to refresh a restored page."""
    return await _panel(request, services, browser_owner(request, services.settings))


@post("/downloads", include_in_schema=False, status_code=200)
async def start_download(
    request: Request[Any, Any, Any], services: Services, client: str
) -> Template:
    """Start a job with the ticked files (form field `file_ids`, repeated)."""
    browser = browser_owner(request, services.settings)
    form = await request.form()
    file_ids = parse_file_ids([str(v) for v in form.getall("file_ids", [])])
    # Set by app.js per intended download, so a double click makes one job.
    key = str(form.get("idempotency_key") or "").strip() or None
    # Optional: without it the archive is named after its files (archivenames.py).
    name = str(form.get("name") or "").strip() or None
    await start_download_job(services, file_ids, browser.owner, key, client=client, name=name)
    return await _panel(request, services, browser)


@get("/jobs/{job_id:str}/live", include_in_schema=False)
async def job_live(request: Request[Any, Any, Any], services: Services, job_id: str) -> Template:
    """The live part of a card, for polling; 286 once the job has ended, so polling stops."""
    browser = browser_owner(request, services.settings)
    record = await find_job(services, job_id, browser.owner)
    status_code = STOP_POLLING if record.status.is_terminal else 200
    waiting = queue_texts(await queue_places(services, [record]))
    view = job_view(
        record,
        queue_text=waiting.get(record.job_id, ""),
        link_ttl=services.settings.presign_ttl_seconds,
    )
    return Template(
        LIVE_TEMPLATE,
        context={"job": view, "oob": True},
        status_code=status_code,
        headers=NO_STORE,
    )


@post("/jobs/{job_id:str}/cancel", include_in_schema=False, status_code=200)
async def cancel(request: Request[Any, Any, Any], services: Services, job_id: str) -> Template:
    browser = browser_owner(request, services.settings)
    record = await find_job(services, job_id, browser.owner)
    # It may have ended while the click was on its way; the panel then shows how.
    with contextlib.suppress(JobAlreadyFinished):
        await cancel_job(services, record)
    return await _panel(request, services, browser)


@post("/jobs/{job_id:str}/retry", include_in_schema=False, status_code=200)
async def retry(
    request: Request[Any, Any, Any], services: Services, client: str, job_id: str
) -> Template:
    """Start a new job with the same files as a failed, cancelled or expired one (409 else)."""
    browser = browser_owner(request, services.settings)
    record = await find_job(services, job_id, browser.owner)
    await retry_job(services, record, browser.owner, client=client)
    return await _panel(request, services, browser)


@get("/jobs/{job_id:str}/download", include_in_schema=False)
async def download(
    request: Request[Any, Any, Any], services: Services, job_id: str
) -> Response[str]:
    """303 to a freshly presigned URL of the archive, so a link on the page never goes stale."""
    browser = browser_owner(request, services.settings)
    record = await find_job(services, job_id, browser.owner)
    if record.status is not JobState.READY:
        raise HTTPException(
            status_code=409,
            detail=f"job {job_id} is {record.status.value}; only a ready job has an archive",
        )
    url = await download_url(services, record)
    return Response("", status_code=303, headers={"Location": url, **NO_STORE})

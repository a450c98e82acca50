"""What a person does on the page, as small steps the journeys share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Locator, Page, expect

from tests.helpers import zip_digests
from tests.stack import CATALOGUE_BY_ID

# Long enough for the slowest journey's job (a few MB at the e2e throttle) plus retries.
JOB_TIMEOUT_MS = 45_000


def card(page: Page, job_id: str) -> Locator:
    return page.locator(f'[data-testid="job-card"][data-job-id="{job_id}"]')


def state_of(job_card: Locator, state: str) -> Locator:
    return job_card.locator(f'[data-testid="job-state"][data-state="{state}"]')


async def job_ids(page: Page) -> list[str]:
    ids: list[str] = await page.get_by_test_id("job-card").evaluate_all(
        "cards => cards.map(card => card.dataset.jobId)"
    )
    return ids


async def download_files(page: Page, file_ids: list[int]) -> str:
    """Tick `file_ids`, press Download selected, and return the id of the card that appears."""
    before = await job_ids(page)
    for file_id in file_ids:
        row = page.locator(f'[data-testid="catalogue-row"][data-file-id="{file_id}"]')
        await row.get_by_test_id("file-checkbox").check()
    await page.get_by_test_id("download-selected").click()
    await page.wait_for_function(
        "count => document.querySelectorAll('[data-testid=job-card]').length > count",
        arg=len(before),
    )
    new = [job_id for job_id in await job_ids(page) if job_id not in before]
    assert len(new) == 1, new
    return new[0]


async def wait_for_state(page: Page, job_id: str, state: str) -> Locator:
    job_card = card(page, job_id)
    await expect(state_of(job_card, state)).to_be_visible(timeout=JOB_TIMEOUT_MS)
    return job_card


async def sse_log(page: Page, job_id: str | None = None) -> list[dict[str, Any]]:
    """What arrived by SSE since the page loaded (recorded by the context's init script)."""
    entries: list[dict[str, Any]] = await page.evaluate("() => window.__sse || []")
    return [e for e in entries if job_id is None or e["job"] == job_id]


def intermediate_values(entries: list[dict[str, Any]]) -> set[int]:
    return {e["value"] for e in entries if e["value"] is not None and 0 < e["value"] < 100}


async def download_archive(page: Page, job_card: Locator) -> Path:
    """Click the card's Download button and wait for the browser's download to finish."""
    async with page.expect_download() as info:
        await job_card.get_by_test_id("download-button").click()
    download = await info.value
    assert download.suggested_filename.endswith(".zip"), download.suggested_filename
    path = await download.path()
    assert path is not None
    return Path(path)


def expected_digests(file_ids: list[int]) -> dict[str, str]:
    return {CATALOGUE_BY_ID[i].name: CATALOGUE_BY_ID[i].sha256 for i in file_ids}


def archive_digests(path: Path) -> dict[str, str]:
    return zip_digests(path.read_bytes())

"""Browser journeys on the downloads page, against the real API, worker, Redis and S3 server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Page, Request, Route, expect

from e2e.conftest import PHONE, E2EStack, screenshot
from e2e.journey import (
    JOB_TIMEOUT_MS,
    archive_digests,
    card,
    download_archive,
    download_files,
    expected_digests,
    intermediate_values,
    job_ids,
    sse_log,
    state_of,
    wait_for_state,
)

pytestmark = pytest.mark.e2e


async def test_happy_path_progress_arrives_by_sse_and_the_zip_matches_the_sources(
    page: Page,
) -> None:
    files = [1, 3, 4]
    await page.goto("/")
    await expect(page.get_by_test_id("catalogue-row")).to_have_count(8)
    job_id = await download_files(page, files)

    job_card = await wait_for_state(page, job_id, "ready")
    panel = page.get_by_test_id("downloads-panel")
    await expect(panel).to_have_attribute("data-live-mode", "sse")
    progress = job_card.get_by_test_id("job-progress")
    await expect(progress).to_have_attribute("aria-valuenow", "100")
    await expect(job_card.get_by_test_id("job-files")).to_have_text("3 of 3 files")
    received = await sse_log(page, job_id)
    assert len(intermediate_values(received)) >= 2, received
    assert received[-1]["state"] == "ready"
    await expect(page.get_by_test_id("announcer")).to_contain_text("Ready")

    archive = await download_archive(page, job_card)
    assert archive_digests(archive) == expected_digests(files)
    await screenshot(page, "happy-path-desktop")
    await page.set_viewport_size(PHONE)
    await screenshot(page, "happy-path-phone")


async def _refuse(route: Route) -> None:
    await route.abort()


async def _hold(route: Route) -> None:
    """Never answer: a proxy that buffers the stream, so it never opens."""


@pytest.mark.parametrize("block", [_refuse, _hold], ids=["stream-refused", "stream-never-opens"])
async def test_blocked_event_stream_falls_back_to_polling_and_completes(
    page: Page, block: Callable[[Route], Awaitable[None]]
) -> None:
    # Big enough (~8 s at the e2e throttle) to still be running after the 3 s wait for SSE;
    # other files per case, as the same files again would reuse the first case's archive.
    files = [2, 3, 4] if block is _refuse else [2, 4, 6]
    polls: list[str] = []

    def count_polls(request: Request) -> None:
        if request.url.endswith("/live"):
            polls.append(request.url)

    page.on("request", count_polls)
    await page.route("**/events?**", block)
    await page.goto("/")
    job_id = await download_files(page, files)

    await expect(page.get_by_test_id("downloads-panel")).to_have_attribute("data-live-mode", "poll")
    job_card = await wait_for_state(page, job_id, "ready")
    assert await sse_log(page) == []
    assert len(polls) >= 2, polls
    assert all(job_id in url for url in polls)

    # The ready answer was a 286: polling has stopped. Absence needs a wait longer than the
    # poll interval (2 s) to be seen.
    polls_at_ready = len(polls)
    await asyncio.sleep(3)
    assert len(polls) == polls_at_ready

    archive = await download_archive(page, job_card)
    assert archive_digests(archive) == expected_digests(files)
    await screenshot(page, f"sse-blocked-polling-{block.__name__.strip('_')}")


@pytest.mark.slow
async def test_job_failing_after_its_retries_shows_the_error_and_try_again_works(
    page: Page, e2e_stack: E2EStack
) -> None:
    files = [2, 3]
    await page.goto("/")
    job_id = await download_files(page, files)
    job_card = card(page, job_id)
    await expect(state_of(job_card, "processing")).to_be_visible()
    await page.wait_for_function(
        "id => (window.__sse || []).some(e => e.job === id && e.value > 0)", arg=job_id
    )

    await e2e_stack.stop_s3()
    try:
        await expect(job_card.get_by_test_id("job-attempt")).to_be_visible(timeout=JOB_TIMEOUT_MS)
        await expect(job_card.get_by_test_id("job-state")).to_have_text("Retrying")
        await screenshot(page, "retrying")
        await wait_for_state(page, job_id, "failed")
        await expect(job_card.get_by_test_id("job-state")).to_have_text("Failed")
        error = job_card.get_by_test_id("job-error")
        await expect(error).to_contain_text("could not be built after 4 attempts")
        await expect(error).to_contain_text("Reason:")
        await expect(job_card.get_by_test_id("retry-button")).to_be_visible()
        # While it waited out each backoff (1, 2, 4 s), the card named the attempt to come.
        # An attempt that fails at once may collapse into the next render, so running
        # attempts are not asserted one by one.
        attempts = {e["attempt"] for e in await sse_log(page, job_id) if e["attempt"]}
        waits = {f"Next: attempt {n} of 4" for n in (2, 3, 4)}
        assert waits <= attempts, attempts
        await screenshot(page, "failed-after-retries")
    finally:
        await e2e_stack.start_s3()

    before = await job_ids(page)
    await job_card.get_by_test_id("retry-button").click()
    await expect(page.get_by_test_id("job-card")).to_have_count(len(before) + 1)
    new_id = next(i for i in await job_ids(page) if i not in before)
    new_card = await wait_for_state(page, new_id, "ready")
    await expect(state_of(card(page, job_id), "failed")).to_be_visible()
    archive = await download_archive(page, new_card)
    assert archive_digests(archive) == expected_digests(files)
    await screenshot(page, "try-again-ready")


async def test_cancel_stops_a_running_job_and_the_card_says_so(page: Page) -> None:
    await page.goto("/")
    job_id = await download_files(page, [8])
    job_card = card(page, job_id)
    await page.wait_for_function(
        "id => (window.__sse || []).some(e => e.job === id && e.value > 0)", arg=job_id
    )
    await job_card.get_by_test_id("cancel-button").click()

    await expect(state_of(job_card, "cancelled")).to_be_visible()
    await expect(job_card.get_by_test_id("job-state")).to_have_text("Cancelled")
    await expect(job_card.get_by_test_id("cancel-button")).to_have_count(0)
    await expect(job_card.get_by_test_id("retry-button")).to_be_visible()
    # Focus stays on the card's action, so a keyboard user is not thrown to the top.
    await expect(job_card.get_by_test_id("retry-button")).to_be_focused()
    status = await (await page.request.get(f"/v1/download/status/{job_id}")).json()
    assert status["status"] == "cancelled"
    assert status["progress"] < 100
    await screenshot(page, "cancelled")


async def test_reload_mid_job_brings_the_card_back_and_it_completes_live(page: Page) -> None:
    # Files no other journey asks for together: the same files again would reuse that
    # journey's archive and be ready at once, with no running job to reload over.
    files = [2, 7]
    await page.goto("/")
    job_id = await download_files(page, files)
    await page.wait_for_function(
        "id => (window.__sse || []).some(e => e.job === id && e.value > 0)", arg=job_id
    )

    await page.reload()
    job_card = card(page, job_id)
    await expect(job_card).to_be_visible()
    await expect(state_of(job_card, "processing")).to_be_visible()

    await wait_for_state(page, job_id, "ready")
    after_reload = await sse_log(page, job_id)
    assert after_reload, "no live update reached the reloaded page"
    assert after_reload[-1]["state"] == "ready"
    await expect(page.get_by_test_id("downloads-panel")).to_have_attribute("data-live-mode", "sse")
    archive = await download_archive(page, job_card)
    assert archive_digests(archive) == expected_digests(files)
    await screenshot(page, "reload-mid-job")


async def test_two_jobs_at_once_both_complete(page: Page) -> None:
    first_files, second_files = [1, 3], [4, 5, 6]
    streams: list[str] = []
    # Listening before the page loads: the browser's stream may open before `goto` returns.
    page.on("request", lambda r: streams.append(r.url) if "/events?" in r.url else None)
    await page.goto("/")
    first = await download_files(page, first_files)
    second = await download_files(page, second_files)

    first_card = await wait_for_state(page, first, "ready")
    second_card = await wait_for_state(page, second, "ready")
    assert await sse_log(page, first) and await sse_log(page, second)
    # One stream carried both jobs (browsers allow six connections): the browser's own.
    assert [urlsplit(url).query for url in streams] == ["scope=browser"], streams
    assert archive_digests(await download_archive(page, first_card)) == expected_digests(
        first_files
    )
    assert archive_digests(await download_archive(page, second_card)) == expected_digests(
        second_files
    )
    await screenshot(page, "two-jobs")


async def test_empty_selection_explains_itself(page: Page) -> None:
    await page.goto("/")
    await page.get_by_test_id("download-selected").click()
    # Said next to the button, where the person is looking; not at the top of the page.
    notice = page.get_by_test_id("form-notice")
    await expect(notice).to_be_visible(timeout=JOB_TIMEOUT_MS)
    await expect(notice).to_have_text("Select at least one file.")
    await expect(page.get_by_test_id("notice")).to_be_hidden()
    await expect(page.get_by_test_id("jobs-empty")).to_be_visible()


async def test_keyboard_alone_starts_a_download_and_reaches_the_download_button(
    page: Page,
) -> None:
    await page.goto("/")
    first_box = page.locator('[data-testid="catalogue-row"][data-file-id="5"]').get_by_test_id(
        "file-checkbox"
    )
    await first_box.focus()
    await page.keyboard.press("Space")
    await expect(first_box).to_be_checked()
    await expect(page.get_by_test_id("selection-summary")).to_have_text(
        "1 file selected · 10 B · up to 6 per download"
    )
    await page.get_by_test_id("download-selected").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("job-card")).to_have_count(1)
    job_id = (await job_ids(page))[0]
    job_card = await wait_for_state(page, job_id, "ready")
    download = job_card.get_by_test_id("download-button")
    for _ in range(40):
        if await download.evaluate("el => el === document.activeElement"):
            break
        await page.keyboard.press("Tab")
    await expect(download).to_be_focused()
    async with page.expect_download() as info:
        await page.keyboard.press("Enter")
    # Named after the file inside, as the card says, not after the job id.
    assert (await info.value).suggested_filename == "echo.zip"
    await expect(job_card.get_by_test_id("job-archive-name")).to_have_text("echo.zip")


async def test_a_double_click_on_download_makes_one_job(page: Page) -> None:
    await page.goto("/")
    row = page.locator('[data-testid="catalogue-row"][data-file-id="5"]')
    await row.get_by_test_id("file-checkbox").check()
    await page.get_by_test_id("download-selected").dblclick()
    await expect(page.get_by_test_id("job-card")).to_have_count(1)
    job_id = (await job_ids(page))[0]
    await wait_for_state(page, job_id, "ready")
    await page.reload()
    await expect(page.get_by_test_id("job-card")).to_have_count(1)

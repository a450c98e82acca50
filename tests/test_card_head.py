"""A card whose job left files out asks for its heading again, which then names the ZIP's own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from backend import devstack
from tests.test_pages import live_until_ended, open_page, start_from_form


@pytest.fixture
async def browser(
    api_server: devstack.Process, worker_process: devstack.Process
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30) as client:
        await open_page(client)
        yield client


async def test_an_ended_job_with_files_left_out_refreshes_its_heading(
    browser: httpx.AsyncClient,
) -> None:
    job_id = await start_from_form(browser, [987_654_320, 3, 1])
    live = await live_until_ended(browser, job_id)
    assert f'hx-get="/jobs/{job_id}/head" hx-trigger="load"' in live.text
    head = await browser.get(f"/jobs/{job_id}/head")
    assert head.status_code == 200
    assert f'id="job-head-{job_id}"' in head.text
    assert '"job-title">charlie.csv and alpha.txt</h3>' in head.text
    assert f'<span id="job-detail-{job_id}">2 files · 900 KB</span>' in head.text
    assert '<span data-testid="job-archive-name">charlie-and-1-more.zip</span>' in head.text


async def test_a_job_with_every_file_asks_for_no_new_heading(browser: httpx.AsyncClient) -> None:
    job_id = await start_from_form(browser, [5])
    live = await live_until_ended(browser, job_id)
    assert "/head" not in live.text


async def test_another_browser_gets_no_heading(
    browser: httpx.AsyncClient, api_server: devstack.Process
) -> None:
    job_id = await start_from_form(browser, [5])
    async with httpx.AsyncClient(base_url=api_server.url) as other:
        assert (await other.get(f"/jobs/{job_id}/head")).status_code == 404

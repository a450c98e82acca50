"""Page routes without a browser: cookie, fragments, polling stop, download redirect, stream."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from httpx_sse import aconnect_sse

from backend import devstack
from backend.downloads import InvalidInput
from backend.models import JobRecord, JobState
from backend.pages.downloads import parse_file_ids
from backend.pages.views import format_size, job_title, job_view
from tests.helpers import fetch, zip_digests
from tests.stack import CATALOGUE_BY_ID

CSRF_TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]*)">')
JOB_ID = re.compile(r'data-testid="job-card" data-job-id="([0-9a-f]{32})"')


@pytest.fixture
async def browser(
    api_server: devstack.Process, worker_process: devstack.Process
) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies like a browser, holding its own owner cookie."""
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30) as client:
        await open_page(client)
        yield client


async def open_page(client: httpx.AsyncClient) -> str:
    """Load the page like a browser and send its CSRF token with later requests, as app.js does."""
    page = await client.get("/")
    assert page.status_code == 200
    match = CSRF_TOKEN.search(page.text)
    assert match is not None and match.group(1), "the page carries no CSRF token"
    client.headers["X-CSRFToken"] = match.group(1)
    return match.group(1)


async def start_from_form(client: httpx.AsyncClient, file_ids: list[int], **headers: str) -> str:
    response = await client.post(
        "/downloads",
        data={"file_ids": [str(f) for f in file_ids]},
        headers={"HX-Request": "true", **headers},
    )
    assert response.status_code == 200, response.text
    match = JOB_ID.search(response.text)
    assert match is not None, response.text
    return match.group(1)


async def live_until_ended(client: httpx.AsyncClient, job_id: str) -> httpx.Response:
    async def poll() -> httpx.Response:
        while True:
            response = await client.get(f"/jobs/{job_id}/live")
            if response.status_code != 200:
                return response
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), 60)


async def test_first_visit_sets_an_httponly_samesite_owner_cookie_once(
    api_server: devstack.Process,
) -> None:
    async with httpx.AsyncClient(base_url=api_server.url) as client:
        first = await client.get("/")
        assert first.status_code == 200
        cookie = first.headers["set-cookie"]
        assert cookie.startswith("longhaul_owner=")
        assert "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower()
        assert first.text.count('data-testid="catalogue-row"') == len(CATALOGUE_BY_ID)
        assert "délta résumé.pdf" in first.text
        again = await client.get("/")
        assert "set-cookie" not in again.headers
        assert 'data-testid="jobs-empty"' in again.text


async def test_starting_from_the_form_returns_the_panel_naming_the_browser_stream(
    browser: httpx.AsyncClient,
) -> None:
    response = await browser.post("/downloads", data={"file_ids": ["1", "5"]})
    assert response.status_code == 200
    job_id = JOB_ID.search(response.text).group(1)  # type: ignore[union-attr]
    assert 'id="downloads"' in response.text
    assert "alpha.txt and echo.log" in response.text
    # One stream per browser, whatever its jobs: live.js opens it in one tab only.
    assert 'data-stream-url="/events?scope=browser"' in response.text
    assert 'data-ping-ms="' in response.text
    # The job may already be done (no throttle here); then its card listens no more.
    if 'data-state="ready"' not in response.text:
        assert f'data-live-event="job-{job_id}"' in response.text
    polling = await browser.post(
        "/downloads", data={"file_ids": ["2"]}, headers={"X-Live-Mode": "poll"}
    )
    assert "data-stream-url" not in polling.text
    assert "data-live-event" not in polling.text


async def test_polling_panel_cards_poll_every_two_seconds_until_the_job_ends(
    browser: httpx.AsyncClient,
) -> None:
    job_id = await start_from_form(browser, [8], **{"X-Live-Mode": "poll"})
    panel = await browser.get("/downloads", headers={"X-Live-Mode": "poll"})
    if f'hx-get="/jobs/{job_id}/live"' in panel.text:
        assert 'hx-trigger="every 2s"' in panel.text
    ended = await live_until_ended(browser, job_id)
    assert ended.status_code == 286
    assert 'data-state="ready"' in ended.text
    assert f'href="/jobs/{job_id}/download"' in ended.text
    assert 'aria-valuenow="100"' in ended.text
    final_panel = await browser.get("/downloads", headers={"X-Live-Mode": "poll"})
    assert f'hx-get="/jobs/{job_id}/live"' not in final_panel.text


@pytest.mark.parametrize(
    ("form", "detail"),
    [
        ({}, "file_ids: select at least one file"),
        ({"file_ids": ["abc"]}, "file_ids: 'abc' is not a catalogue file id"),
        ({"file_ids": ["0"]}, "file_ids: '0' is not a catalogue file id"),
        ({"file_ids": ["3", "3"]}, "file_ids: duplicate ids [3]"),
    ],
)
async def test_bad_selection_is_a_400_naming_file_ids(
    browser: httpx.AsyncClient, form: dict[str, list[str]], detail: str
) -> None:
    response = await browser.post("/downloads", data=form)
    assert response.status_code == 400
    assert response.json()["detail"] == detail


async def test_download_redirects_to_a_presigned_url_of_the_archive(
    browser: httpx.AsyncClient, stack_env: dict[str, str]
) -> None:
    asked = [1, 4]
    job_id = await start_from_form(browser, asked)
    await live_until_ended(browser, job_id)
    response = await browser.get(f"/jobs/{job_id}/download")
    assert response.status_code == 303
    assert response.headers["cache-control"] == "no-store"
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}" == stack_env["S3_ENDPOINT"]
    assert re.search(r"/archives/sha256/[0-9a-f]{64}\.zip$", location.path)
    disposition = parse_qs(location.query)["response-content-disposition"][0]
    # Named after its files (archivenames.py), not after the shared object.
    assert 'filename="alpha-and-1-more.zip"' in disposition
    assert parse_qs(location.query)["X-Amz-Expires"] == ["3600"]
    archive = await fetch(response.headers["location"])
    assert zip_digests(archive) == {
        CATALOGUE_BY_ID[i].name: CATALOGUE_BY_ID[i].sha256 for i in asked
    }


async def test_retry_is_refused_for_a_job_that_did_not_fail(browser: httpx.AsyncClient) -> None:
    job_id = await start_from_form(browser, [5])
    await live_until_ended(browser, job_id)
    response = await browser.post(f"/jobs/{job_id}/retry")
    assert response.status_code == 409
    assert "only failed, cancelled or expired jobs" in response.json()["detail"]


async def test_another_browser_cannot_see_or_touch_a_job(
    browser: httpx.AsyncClient, api_server: devstack.Process
) -> None:
    job_id = await start_from_form(browser, [5])
    async with httpx.AsyncClient(base_url=api_server.url) as stranger:
        await open_page(stranger)
        for method, path in [
            ("GET", f"/jobs/{job_id}/live"),
            ("GET", f"/jobs/{job_id}/download"),
            ("POST", f"/jobs/{job_id}/cancel"),
            ("POST", f"/jobs/{job_id}/retry"),
        ]:
            response = await stranger.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
        panel = await stranger.get("/downloads")
        assert job_id not in panel.text


async def test_page_stream_sends_cards_as_html_then_done(browser: httpx.AsyncClient) -> None:
    job_id = await start_from_form(browser, [1, 3])
    events: list[tuple[str, str]] = []

    async def read() -> None:
        async with aconnect_sse(browser, "GET", f"/events?jobs={job_id}") as source:
            assert source.response.headers["x-accel-buffering"] == "no"
            async for sse in source.aiter_sse():
                if sse.event != "message":
                    events.append((sse.event, sse.data))

    await asyncio.wait_for(read(), 60)
    assert events[-1][0] == "done"
    cards = [data for name, data in events if name == f"job-{job_id}"]
    assert cards, events
    assert 'data-state="ready"' in cards[-1]
    assert 'role="progressbar"' in cards[-1]


async def test_page_stream_refuses_malformed_job_ids(browser: httpx.AsyncClient) -> None:
    response = await browser.get("/events?jobs=abc")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("jobs: 'abc' is not a job id")


def test_parse_file_ids_keeps_order_and_names_the_bad_value() -> None:
    assert parse_file_ids(["3", " 1 "]) == [3, 1]
    with pytest.raises(InvalidInput, match="'-1' is not a catalogue file id"):
        parse_file_ids(["-1"])
    with pytest.raises(InvalidInput, match="select at least one file"):
        parse_file_ids([])


def test_format_size() -> None:
    assert format_size(0) == "0 B"
    assert format_size(1023) == "1023 B"
    assert format_size(200 * 1024) == "200 KB"
    assert format_size(int(1.5 * 1024 * 1024)) == "1.5 MB"


def _record(**changes: object) -> JobRecord:
    record = JobRecord(job_id="a" * 32, owner="o", file_ids=[1, 2, 3], total_files=3)
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def test_view_of_a_running_job_shows_speed_and_time_left() -> None:
    record = _record(
        status=JobState.PROCESSING,
        attempt=1,
        started_at=100.0,
        bytes_processed=2 * 1024 * 1024,
        bytes_total=4 * 1024 * 1024,
        processed_files=1,
        progress=50,
    )
    view = job_view(record, now=102.0)
    assert view.speed_text == "1.0 MB/s"
    assert view.eta_text == "about 2 s left"
    assert view.files_text == "1 of 3 files"
    assert view.bytes_text == "2.0 MB of 4.0 MB"
    assert view.attempt_text == ""


def test_view_of_a_retrying_job_names_the_attempt_and_the_last_error() -> None:
    record = _record(status=JobState.PROCESSING, attempt=2, last_error="S3 went away")
    view = job_view(record, now=10.0)
    assert view.state_label == "Retrying"
    assert view.attempt_text == "Attempt 2 of 4"
    assert view.retry_reason == "S3 went away"
    assert view.speed_text == ""


def test_view_of_a_job_waiting_out_its_backoff_names_the_next_attempt() -> None:
    # The first attempt failed: the card says so at once, not only when attempt 2 starts.
    record = _record(
        status=JobState.PROCESSING, attempt=1, last_error="S3 went away", retry_at=11.0
    )
    view = job_view(record, now=10.0)
    assert view.state_label == "Retrying"
    assert view.attempt_text == "Next: attempt 2 of 4"
    assert view.retry_reason == "S3 went away"


def test_view_of_a_failed_job_explains_the_error_in_words() -> None:
    record = _record(status=JobState.FAILED, attempt=4, error="cannot list the catalogue")
    view = job_view(record)
    assert not view.is_active
    assert view.error_text == (
        "The archive could not be built after 4 attempts. Reason: cannot list the catalogue"
    )


def test_title_names_three_files_then_counts_the_rest() -> None:
    from backend.pages.views import CatalogueRow

    names = {i: CatalogueRow(i, f"f{i}.txt", 1024) for i in range(1, 6)}
    assert job_title(_record(file_ids=[1]), names).text == "f1.txt"
    assert job_title(_record(file_ids=[1, 2]), names).text == "f1.txt and f2.txt"
    five = job_title(_record(file_ids=[1, 2, 3, 4, 5]), names)
    assert five.text == "f1.txt, f2.txt, f3.txt and 2 more"
    assert five.detail == "5 files · 5.0 KB"
    assert job_title(_record(file_ids=[9]), {}).text == "file 9"


async def test_page_posts_without_the_csrf_token_are_refused(
    browser: httpx.AsyncClient, api_server: devstack.Process
) -> None:
    forged = await browser.post(
        "/downloads", data={"file_ids": ["5"]}, headers={"X-CSRFToken": "forged"}
    )
    assert forged.status_code == 403
    assert "CSRF" in forged.json()["detail"]
    # A cross-site form carries neither our token nor (SameSite) our cookies.
    async with httpx.AsyncClient(base_url=api_server.url) as elsewhere:
        response = await elsewhere.post("/downloads", data={"file_ids": ["5"]})
        assert response.status_code == 403


async def test_a_double_click_makes_one_job(browser: httpx.AsyncClient) -> None:
    # This browser (a fresh owner) has no jobs yet; both posts carry the form's one key.
    form = {"file_ids": ["3", "5"], "idempotency_key": "c0ffee00c0ffee00c0ffee00c0ffee00"}
    first, second = await asyncio.gather(
        browser.post("/downloads", data=form, headers={"HX-Request": "true"}),
        browser.post("/downloads", data=form, headers={"HX-Request": "true"}),
    )
    assert first.status_code == second.status_code == 200
    panel = await browser.get("/downloads")
    assert len(set(JOB_ID.findall(panel.text))) == 1
    # The next intended download draws a new key and is a job of its own.
    form["idempotency_key"] = "c0ffee00c0ffee00c0ffee00c0ffee01"
    assert (await browser.post("/downloads", data=form)).status_code == 200
    panel = await browser.get("/downloads")
    assert len(set(JOB_ID.findall(panel.text))) == 2


def test_view_of_an_expired_job_offers_to_build_it_again() -> None:
    record = JobRecord(job_id="b" * 32, owner="o", file_ids=[1], status=JobState.EXPIRED)
    view = job_view(record)
    assert view.state_label == "Expired"
    assert "deleted" in view.error_text


async def test_a_person_navigating_to_a_bad_page_gets_an_html_error_page(
    browser: httpx.AsyncClient,
) -> None:
    html = {"Accept": "text/html,application/xhtml+xml"}
    missing = await browser.get(f"/jobs/{'0' * 32}/download", headers=html)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert 'data-testid="error-page"' in missing.text
    assert "No job with id" in missing.text
    # A job of a file that does not exist never becomes ready.
    job_id = await start_from_form(browser, [424_242])
    early = await browser.get(f"/jobs/{job_id}/download", headers=html)
    assert early.status_code == 409
    assert "only a ready job has an archive" in early.text
    # The JSON API and htmx swaps keep their JSON bodies whatever the Accept header says.
    api = await browser.get(f"/v1/download/status/{'0' * 32}", headers=html)
    assert api.headers["content-type"].startswith("application/json")
    swap = await browser.get(f"/jobs/{'0' * 32}/live", headers={**html, "HX-Request": "true"})
    assert swap.json()["status_code"] == 404


async def test_a_card_names_the_files_left_out_and_its_heading_counts_the_zip(
    browser: httpx.AsyncClient,
) -> None:
    # Issue 13: a file gone before packing was named nowhere, under "2 files · 11.0 MB".
    job_id = await start_from_form(browser, [1, 987_654_321])
    live = await live_until_ended(browser, job_id)
    assert 'data-testid="job-skipped"' in live.text
    assert "1 file could not be included: file 987654321 (no longer available)" in live.text
    assert "1 of 1 files" in live.text
    assert f'id="job-detail-{job_id}" hx-swap-oob="true">1 file · 200 KB<' in live.text
    page = await browser.get("/")
    card = page.text[page.text.index(f'data-job-id="{job_id}"') :]
    card = card[: card.index("</li>")]
    assert f'<span id="job-detail-{job_id}">1 file · 200 KB</span>' in card
    assert '"job-title">alpha.txt</h3>' in card
    assert "could not be included: file 987654321 (no longer available)" in card

"""The panel's history: "Show older" pages through the owner's list, "Clear finished" trims it."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from backend import devstack
from backend.models import JobRecord, JobState
from backend.owners import OWNER_COOKIE, owner_from_cookie
from backend.services import Services
from backend.settings import load_settings
from tests.test_pages import JOB_ID, open_page

ENDED = (JobState.READY, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED)


@pytest.fixture
async def stack_services(stack_env: dict[str, str]) -> AsyncIterator[Services]:
    """Clients of the session stack's own Redis keys, to give a browser a long history."""
    opened = await Services.open(load_settings(stack_env))
    yield opened
    await opened.close()


@pytest.fixture
async def browser(api_server: devstack.Process) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30) as client:
        await open_page(client)
        yield client


def owner_of(client: httpx.AsyncClient) -> str:
    owner = owner_from_cookie(client.cookies.get(OWNER_COOKIE), "test-secret")
    assert owner is not None
    return owner


async def give_history(services: Services, owner: str, states: list[JobState]) -> list[str]:
    """Jobs of `owner` in `states`, oldest first (one second apart); their ids in that order."""
    ids = []
    start = time.time() - len(states)
    for n, state in enumerate(states):
        record = JobRecord(
            job_id=uuid.uuid4().hex,
            owner=owner,
            file_ids=[5],
            total_files=1,
            status=state,
            created_at=start + n,
        )
        await services.store.create(record)
        ids.append(record.job_id)
    return ids


def card_ids(html: str) -> list[str]:
    return JOB_ID.findall(html)


async def test_jobs_of_pages_newest_first(stack_services: Services) -> None:
    owner = uuid.uuid4().hex
    ids = await give_history(stack_services, owner, [JobState.READY] * 7)
    newest_first = list(reversed(ids))
    first = await stack_services.store.jobs_of(owner, limit=3)
    second = await stack_services.store.jobs_of(owner, limit=3, offset=3)
    last = await stack_services.store.jobs_of(owner, limit=3, offset=6)
    assert [r.job_id for r in first + second + last] == newest_first
    assert await stack_services.store.jobs_of(owner, limit=3, offset=9) == []
    assert await stack_services.store.count_jobs_of(owner) == 7


async def test_show_older_brings_the_next_twenty_and_then_stops(
    browser: httpx.AsyncClient, stack_services: Services
) -> None:
    ids = await give_history(stack_services, owner_of(browser), [JobState.READY] * 45)
    newest_first = list(reversed(ids))

    page = await browser.get("/")
    assert card_ids(page.text) == newest_first[:20]
    assert 'hx-get="/downloads/older?offset=20"' in page.text

    older = await browser.get("/downloads/older", params={"offset": 20})
    assert older.status_code == 200
    assert card_ids(older.text) == newest_first[20:40]
    # Out of band, the next button replaces the one that was pressed.
    assert 'id="history-more" hx-swap-oob="true"' in older.text
    assert 'hx-get="/downloads/older?offset=40"' in older.text
    assert older.text.count("data-older") == 20

    last = await browser.get("/downloads/older", params={"offset": 40})
    assert card_ids(last.text) == newest_first[40:]
    assert 'data-testid="show-older"' not in last.text


async def test_older_cards_of_running_jobs_poll_instead_of_joining_the_stream(
    browser: httpx.AsyncClient, stack_services: Services
) -> None:
    ids = await give_history(
        stack_services, owner_of(browser), [JobState.PROCESSING] + [JobState.READY] * 20
    )
    older = await browser.get("/downloads/older", params={"offset": 20})
    assert card_ids(older.text) == [ids[0]]
    assert f'hx-get="/jobs/{ids[0]}/live"' in older.text
    assert "sse-swap" not in older.text


@pytest.mark.parametrize("offset", ["-1", "5", "abc", "100001"])
async def test_a_bad_offset_is_a_400_naming_it(browser: httpx.AsyncClient, offset: str) -> None:
    response = await browser.get("/downloads/older", params={"offset": offset})
    assert response.status_code == 400
    assert "offset" in response.text


async def test_clear_finished_removes_only_this_browsers_ended_jobs(
    browser: httpx.AsyncClient, stack_services: Services
) -> None:
    owner = owner_of(browser)
    states = [*ENDED, JobState.QUEUED, JobState.PROCESSING] * 4  # 24 jobs, 16 ended
    ids = await give_history(stack_services, owner, states)
    active = [job_id for job_id, state in zip(ids, states, strict=True) if not state.is_terminal]
    someone_else = uuid.uuid4().hex
    their_ids = await give_history(stack_services, someone_else, [JobState.READY] * 3)
    # A record that expired away leaves its id in the list; clearing takes that too.
    gone = (await give_history(stack_services, owner, [JobState.READY]))[0]
    await stack_services.redis.delete(stack_services.store.record_key(gone))

    page = await browser.get("/")
    assert 'data-testid="clear-finished"' in page.text
    response = await browser.post("/downloads/clear", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert re.search(r"Removed 17 finished downloads from this list\.", response.text)
    assert sorted(card_ids(response.text)) == sorted(active)
    assert 'data-testid="clear-finished"' not in response.text

    remaining = await stack_services.store.jobs_of(owner, limit=100)
    assert sorted(r.job_id for r in remaining) == sorted(active)
    # Records stay readable by id (the API), and other owners' lists are untouched.
    assert await stack_services.store.get(ids[0]) is not None
    theirs = await stack_services.store.jobs_of(someone_else)
    assert sorted(r.job_id for r in theirs) == sorted(their_ids)

    again = await browser.post("/downloads/clear")
    assert "No finished downloads to remove." in again.text


async def test_clear_finished_needs_the_csrf_token(
    browser: httpx.AsyncClient, stack_services: Services
) -> None:
    owner = owner_of(browser)
    await give_history(stack_services, owner, [JobState.READY])
    forged = await browser.post("/downloads/clear", headers={"X-CSRFToken": "forged"})
    assert forged.status_code == 403
    assert await stack_services.store.count_jobs_of(owner) == 1

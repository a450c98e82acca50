"""The catalogue on the page: search by name, size bands, sort, and pages there and back."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from litestar.testing import AsyncTestClient

from backend.app import create_app
from backend.pages.catalogue import page_query, page_url
from backend.services import Services
from backend.settings import Settings
from tests.stack import CATALOGUE_BY_ID

ROW = re.compile(r'data-testid="catalogue-row" data-file-id="(\d+)"')
HX_GET = re.compile(r'hx-get="(/catalogue[^"]*)"[^>]*data-testid="catalogue-(next|previous)"')


@pytest.fixture
async def page(services: Services, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with AsyncTestClient(app=create_app(settings), raise_server_exceptions=False) as client:
        yield client


def rows(html: str) -> list[int]:
    return [int(r) for r in ROW.findall(html)]


def link(html: str, which: str) -> str | None:
    found = {kind: url.replace("&amp;", "&") for url, kind in HX_GET.findall(html)}
    return found.get(which)


async def test_search_size_and_sort_narrow_and_order_the_rows(page: httpx.AsyncClient) -> None:
    searched = await page.get("/catalogue", params={"q": "ALPHA"})
    assert searched.status_code == 200
    assert rows(searched.text) == [1, 7]
    assert "Files 1–2 of 2 matching “ALPHA”" in searched.text
    # The address bar follows, so a reload or a shared link shows the same rows.
    assert searched.headers["hx-push-url"] == "/?q=ALPHA"

    small = await page.get("/catalogue", params={"size": "small"})
    assert rows(small.text) == [i for i, f in CATALOGUE_BY_ID.items() if len(f.data) < 1024**2]

    largest = await page.get("/catalogue", params={"sort": "size-desc"})
    by_size = sorted(CATALOGUE_BY_ID, key=lambda i: -len(CATALOGUE_BY_ID[i].data))
    assert rows(largest.text)[:3] == by_size[:3]

    none = await page.get("/catalogue", params={"q": "zzz", "size": "large"})
    assert rows(none.text) == []
    assert "No files match “zzz” in this size." in none.text

    # The whole page answers the same query from its address.
    whole = await page.get("/", params={"q": "o", "sort": "name-desc"})
    named = {i: f.name for i, f in CATALOGUE_BY_ID.items() if "o" in f.name}
    assert rows(whole.text) == sorted(named, key=lambda i: named[i], reverse=True)
    assert 'value="o"' in whole.text
    assert '<option value="name-desc" selected>' in whole.text


async def test_pages_go_forward_and_back_with_the_query_kept(
    page: httpx.AsyncClient, services: Services
) -> None:
    await asyncio.gather(
        *(services.storage.put_source(2000 + i, f"bulk-{i:03d}.txt", b"b") for i in range(150))
    )
    first = await page.get("/catalogue", params={"q": "bulk"})
    assert rows(first.text) == [2000 + i for i in range(100)]
    assert "Files 1–100 of 150 matching “bulk”" in first.text
    assert link(first.text, "previous") is None
    forward = link(first.text, "next")
    assert forward is not None and "q=bulk" in forward

    second = await page.get(forward)
    assert rows(second.text) == [2000 + i for i in range(100, 150)]
    assert "Files 101–150 of 150" in second.text
    assert link(second.text, "next") is None
    back = link(second.text, "previous")
    # Back to the first page needs no cursor at all.
    assert back == "/catalogue?q=bulk"
    assert rows((await page.get(back)).text) == rows(first.text)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"sort": "price"}, "sort"), ({"size": "huge"}, "size"), ({"cursor": "nonsense"}, "cursor")],
)
async def test_bad_controls_are_a_400_naming_them(
    page: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await page.get("/catalogue", params=params)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}:")


def test_page_urls_leave_defaults_out() -> None:
    assert page_url("/", "", "id", "", None) == "/"
    assert page_url("/catalogue", "a b", "name", "small", "c1") == (
        "/catalogue?q=a+b&size=small&sort=name&cursor=c1"
    )
    query = page_query(" report ", "size-desc", "medium")
    assert (query.q, query.sort, query.order) == ("report", "size", "desc")
    assert (query.min_size, query.max_size) == (1024**2, 100 * 1024**2)

"""The catalogue index on real Redis and a real S3 server: paging, search, sort, ETag, the
refresh that makes bucket changes show, and the atomic swap of generations."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from backend.app import create_app
from backend.catalogue_index import CatalogueIndex, Query
from backend.catalogue_listing import encode_cursor
from backend.services import Services
from backend.settings import Settings
from backend.storage import Catalogue, SourceObject
from backend.storage.memory import MemoryStore
from backend.worker import create_worker
from tests.helpers import run_worker_until_idle, start, wait_for_status
from tests.stack import CATALOGUE, CATALOGUE_BY_ID

NEXT_LINK = re.compile(r'^<(/v1/files\?[^>]+)>; rel="next"$')
# Extra files beyond the test catalogue, so paging crosses several pages: (id, name, size).
EXTRA = [
    (100 + i, f"{'Report' if i % 3 == 0 else 'data'}-{i:03d}.bin", (i * 37) % 101)
    for i in range(40)
]


@pytest.fixture
async def api(services: Services, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app on this test's own stack (catalogue seeded, index not yet built)."""
    async with AsyncTestClient(app=create_app(settings), raise_server_exceptions=False) as client:
        yield client


async def seed_extra(services: Services) -> None:
    await asyncio.gather(
        *(services.storage.put_source(i, name, b"x" * size) for i, name, size in EXTRA)
    )


def all_files() -> dict[int, tuple[str, int]]:
    files = {f.file_id: (f.name, len(f.data)) for f in CATALOGUE}
    files.update({i: (name, size) for i, name, size in EXTRA})
    return files


async def walk(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every item of a query, page by page through `next_cursor`, checking the Link header."""
    items: list[dict[str, Any]] = []
    response = await api.get("/v1/files", params=params)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        if body["next_cursor"] is None:
            assert "link" not in response.headers
            assert len(items) == body["total"]
            return items
        link = NEXT_LINK.match(response.headers["link"])
        assert link is not None, response.headers["link"]
        response = await api.get(link.group(1))


async def test_first_call_builds_the_index_and_lists_the_catalogue(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/files")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "items": [{"file_id": f.file_id, "name": f.name, "size": len(f.data)} for f in CATALOGUE],
        "total": len(CATALOGUE),
        "next_cursor": None,
    }
    assert response.headers["etag"].startswith('W/"')
    assert response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    ("sort", "order", "key"),
    [
        ("id", "asc", lambda i, f: i),
        ("id", "desc", lambda i, f: -i),
        ("name", "asc", lambda i, f: (f[0].lower(), f[0], i)),
        ("size", "asc", lambda i, f: (f[1], i)),
        ("size", "desc", lambda i, f: (-f[1], -i)),
    ],
)
async def test_paging_is_complete_and_in_order_for_each_sort(
    api: httpx.AsyncClient, services: Services, sort: str, order: str, key: Any
) -> None:
    await seed_extra(services)
    await services.catalogue.refresh()
    items = await walk(api, limit=7, sort=sort, order=order)
    ids = [item["file_id"] for item in items]
    files = all_files()
    assert len(ids) == len(set(ids)) == len(files)
    assert ids == sorted(files, key=lambda i: key(i, files[i]))
    assert all((item["name"], item["size"]) == files[item["file_id"]] for item in items)


async def test_modified_order_follows_the_objects_mtime(
    api: httpx.AsyncClient, services: Services
) -> None:
    await services.catalogue.refresh()
    listed = {
        o.key: o.modified
        for o in await services.storage.store.list_objects(services.storage.source_bucket)
    }
    stamps = {int(k.split("/")[0]): m.timestamp() for k, m in listed.items() if m}
    items = await walk(api, sort="modified", order="desc", limit=3)
    ids = [item["file_id"] for item in items]
    assert ids == sorted(stamps, key=lambda i: (-stamps[i], -i))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"q": "ALPHA"}, [1, 7]),
        ({"q": "résumé"}, [4]),
        ({"q": "RÉSUMÉ"}, [4]),
        ({"q": "report"}, [100 + i for i in range(0, 40, 3)]),
        (
            {"q": "report", "min_size": 50},
            [100 + i for i in range(0, 40, 3) if (i * 37) % 101 >= 50],
        ),
        ({"min_size": 1024 * 1024}, [2, 4, 8]),
        ({"max_size": 10}, [5, 6] + [100 + i for i in range(40) if (i * 37) % 101 <= 10]),
        (
            {"min_size": 10, "max_size": 10},
            [5] + [100 + i for i in range(40) if (i * 37) % 101 == 10],
        ),
        ({"q": "no such file"}, []),
        # Only names: not ids (100…139, 10) nor sizes (echo.log has 10 bytes).
        ({"q": "10"}, [110]),
        ({"q": "."}, sorted(all_files())),
    ],
)
async def test_search_by_name_and_size(
    api: httpx.AsyncClient, services: Services, params: dict[str, Any], expected: list[int]
) -> None:
    await seed_extra(services)
    await services.catalogue.refresh()
    items = await walk(api, limit=4, **params)
    assert [item["file_id"] for item in items] == sorted(expected)


async def test_search_pages_follow_the_asked_order(
    api: httpx.AsyncClient, services: Services
) -> None:
    await seed_extra(services)
    await services.catalogue.refresh()
    items = await walk(api, q="data-", sort="size", order="desc", limit=5)
    expected = sorted(
        (i for i, (name, _) in all_files().items() if "data-" in name),
        key=lambda i: (-all_files()[i][1], -i),
    )
    assert [item["file_id"] for item in items] == expected


async def test_etag_answers_304_until_the_catalogue_changes(
    api: httpx.AsyncClient, services: Services
) -> None:
    first = await api.get("/v1/files", params={"limit": 3})
    etag = first.headers["etag"]
    same = await api.get("/v1/files", params={"limit": 3}, headers={"If-None-Match": etag})
    assert same.status_code == 304
    assert same.content == b""
    assert same.headers["etag"] == etag
    listed = await api.get("/v1/files", params={"limit": 3}, headers={"If-None-Match": '"x", *'})
    assert listed.status_code == 200  # "*" only counts on its own
    strong = await api.get(
        "/v1/files", params={"limit": 3}, headers={"If-None-Match": f'"other", {etag[2:]}'}
    )
    assert strong.status_code == 304  # weak comparison: W/ is ignored
    other_query = await api.get("/v1/files", params={"limit": 4}, headers={"If-None-Match": etag})
    assert other_query.status_code == 200

    unchanged = await services.catalogue.refresh()
    assert unchanged is not None and not unchanged.changed
    again = await api.get("/v1/files", params={"limit": 3}, headers={"If-None-Match": etag})
    assert again.status_code == 304

    await services.storage.put_source(9, "golf.txt", b"g")
    await services.catalogue.refresh()
    changed = await api.get("/v1/files", params={"limit": 3}, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag


async def test_a_file_added_or_deleted_shows_after_a_refresh_and_a_job_checks_it_anyway(
    api: httpx.AsyncClient, services: Services, settings: Settings
) -> None:
    assert (await api.get("/v1/files")).json()["total"] == len(CATALOGUE)
    await services.storage.put_source(9, "golf.txt", b"golf")
    await services.storage.store.delete(services.storage.source_bucket, "3/charlie.csv")
    # Until the next refresh the index still answers as it was.
    stale = {i["file_id"] for i in (await api.get("/v1/files")).json()["items"]}
    assert 3 in stale and 9 not in stale
    # A job asking for the deleted file reports it missing, whatever the index says.
    created = await start(api, [3, 5])
    await run_worker_until_idle(settings)
    done = await wait_for_status(api, created["job_id"], {"ready", "failed"}, 30)
    assert done["status"] == "ready"
    assert done["skipped_file_ids"] == [3]

    outcome = await services.catalogue.refresh()
    assert outcome is not None and outcome.changed
    fresh = (await api.get("/v1/files")).json()
    ids = {i["file_id"] for i in fresh["items"]}
    assert 9 in ids and 3 not in ids
    assert fresh["total"] == len(CATALOGUE)
    searched = (await api.get("/v1/files", params={"q": "charlie"})).json()
    assert searched == {"items": [], "total": 0, "next_cursor": None}


async def test_a_walk_that_began_before_a_refresh_ends_on_the_same_snapshot(
    api: httpx.AsyncClient, services: Services
) -> None:
    await seed_extra(services)
    await services.catalogue.refresh()
    first = await api.get("/v1/files", params={"limit": 10, "q": "-"})
    old_ids = [i["file_id"] for i in first.json()["items"]]
    await services.storage.put_source(99, "data-new.bin", b"n")
    await services.storage.store.delete(services.storage.source_bucket, "138/data-038.bin")
    await services.catalogue.refresh()
    rest = await walk_from(api, first)
    assert old_ids + rest == [100 + i for i in range(40)]
    # A new walk sees the new generation.
    now = [i["file_id"] for i in await walk(api, limit=10, q="-")]
    assert now == [99] + [100 + i for i in range(40) if i != 38]


async def walk_from(api: httpx.AsyncClient, response: httpx.Response) -> list[int]:
    ids: list[int] = []
    while (link := response.headers.get("link")) is not None:
        match = NEXT_LINK.match(link)
        assert match is not None
        response = await api.get(match.group(1))
        assert response.status_code == 200, response.text
        ids.extend(i["file_id"] for i in response.json()["items"])
    return ids


async def test_a_cursor_that_outlived_its_generation_carries_on_in_the_current_one(
    api: httpx.AsyncClient, services: Services
) -> None:
    first = (await api.get("/v1/files", params={"limit": 5})).json()
    generation = await services.catalogue.current()
    assert generation is not None
    await services.storage.put_source(9, "golf.txt", b"g")
    await services.catalogue.refresh()
    await services.redis.delete(*services.catalogue._keys_of(generation))
    rest = (await api.get("/v1/files", params={"limit": 5, "cursor": first["next_cursor"]})).json()
    assert [i["file_id"] for i in rest["items"]] == [6, 7, 8, 9]


async def test_readers_during_a_refresh_see_the_old_index_or_the_new_never_part(
    services: Services,
) -> None:
    # A large listing (in memory, so it is quick to make) makes the refresh take a while.
    store = MemoryStore()
    await store.ensure_bucket("big")
    for i in range(1, 20_001):
        await store.put("big", f"{i}/f{i}.bin", b"", "application/octet-stream")
    index = CatalogueIndex(services.redis, Catalogue(store, "big"), "lh-swap-" + str(id(store)), 30)
    await index.refresh()
    for i in range(20_001, 25_001):
        await store.put("big", f"{i}/f{i}.bin", b"", "application/octet-stream")
    seen: set[int] = set()

    async def read_until(done: asyncio.Event) -> None:
        while not done.is_set():
            generation = await index.ensure()
            page = await index.page(Query(sort="id", order="desc"), 0, 1, generation)
            # The newest id and the count agree with one generation or the other.
            assert (page.total, page.items[0].file_id) in {(20_000, 20_000), (25_000, 25_000)}
            seen.add(page.total)
            await asyncio.sleep(0)

    done = asyncio.Event()
    reader = asyncio.create_task(read_until(done))
    outcome = await index.refresh()
    await asyncio.sleep(0.05)
    done.set()
    await reader
    assert outcome is not None and outcome.changed
    assert seen == {20_000, 25_000}
    await services.redis.delete(*[k async for k in services.redis.scan_iter(f"{index.base}:*")])


async def test_a_lookup_of_thousands_of_ids_is_one_round_trip_with_each_files_version(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await services.catalogue.lookup([1, 2]) == {}  # no index yet
    await services.catalogue.refresh()
    listed = {f.file_id: f for f in await services.storage.catalogue()}
    # More ids than one HMGET slice of the script takes; the indexed ones spread across them.
    asked = [*range(10_000, 12_500), 2, *range(20_000, 21_000), 5]
    await services.catalogue.lookup([1])  # loads the script
    sent: list[object] = []
    execute = services.redis.execute_command

    async def counted(*args: object, **options: object) -> object:
        sent.append(args[0])
        return await execute(*args, **options)

    monkeypatch.setattr(services.redis, "execute_command", counted)
    found = await services.catalogue.lookup(asked)

    assert sent == ["EVALSHA"]
    assert sorted(found) == [2, 5]
    for file_id, entry in found.items():
        source = listed[file_id]
        assert (entry.key, entry.name, entry.size, entry.etag) == (
            source.key,
            source.name,
            source.size,
            source.etag,
        )


async def test_one_refresh_at_a_time(services: Services) -> None:
    results = await asyncio.gather(*(services.catalogue.refresh() for _ in range(4)))
    assert sum(r is not None for r in results) == 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"sort": "colour"}, "sort"),
        ({"order": "up"}, "order"),
        ({"min_size": -1}, "min_size"),
        ({"max_size": "big"}, "max_size"),
        ({"min_size": 10, "max_size": 5}, "min_size"),
        ({"q": "x" * 201}, "q"),
        ({"q": "a\tb"}, "q"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": encode_cursor(1, 5, Query(q="other"))}, "cursor"),
        ({"cursor": encode_cursor(0, -1, Query())}, "cursor"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    api: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    response = await api.get("/v1/files", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(f"{field}:"), response.json()


async def test_the_page_lists_the_first_page_and_links_the_next(
    api: httpx.AsyncClient, services: Services
) -> None:
    await asyncio.gather(
        *(services.storage.put_source(1000 + i, f"bulk-{i}.txt", b"b") for i in range(100))
    )
    first = await api.get("/")
    assert first.status_code == 200
    rows = re.findall(r'data-testid="catalogue-row" data-file-id="(\d+)"', first.text)
    assert [int(r) for r in rows] == sorted(CATALOGUE_BY_ID) + [1000 + i for i in range(92)]
    link = re.search(r'href="(/\?cursor=[^"]+)" rel="next"', first.text)
    assert link is not None
    second = await api.get(link.group(1).replace("&amp;", "&"))
    rows = re.findall(r'data-testid="catalogue-row" data-file-id="(\d+)"', second.text)
    assert [int(r) for r in rows] == [1000 + i for i in range(92, 100)]
    assert 'data-testid="catalogue-next"' not in second.text


async def test_a_worker_refreshes_the_index_on_its_clock(
    services: Services, settings: Settings
) -> None:
    fast = settings.replace(catalogue_refresh_seconds=1.0)
    worker = create_worker(fast, poll_delay=0.05, handle_signals=False)
    running = asyncio.create_task(worker.async_run())
    try:
        generation = await wait_for(lambda: services.catalogue.current(), 10)
        await services.storage.put_source(9, "golf.txt", b"golf")
        await services.storage.store.delete(services.storage.source_bucket, "5/echo.log")

        async def changed() -> bool:
            now = await services.catalogue.current()
            if now == generation:
                return False
            found = await services.catalogue.lookup([5, 9])
            return set(found) == {9}

        await wait_for(changed, 10)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()


async def wait_for(check: Any, seconds: float) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = await check()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_an_index_no_worker_refreshes_is_refreshed_by_the_api_aside(
    api: httpx.AsyncClient, services: Services
) -> None:
    assert (await api.get("/v1/files")).json()["total"] == len(CATALOGUE)
    generation = await services.catalogue.current()
    assert generation is not None
    await services.storage.put_source(9, "golf.txt", b"g")
    # As if the last refresh were long ago (no worker running since).
    await services.redis.hset(services.catalogue._key(generation, "meta"), "built_at", "1")
    stale = await api.get("/v1/files")
    assert stale.json()["total"] == len(CATALOGUE)  # served at once, as it is

    async def refreshed() -> bool:
        return (await api.get("/v1/files")).json()["total"] == len(CATALOGUE) + 1

    await wait_for(refreshed, 10)


class SlowCatalogue(Catalogue):
    """A catalogue whose listing takes `delay` seconds, like a large bucket on a slow store."""

    def __init__(self, store: MemoryStore, bucket: str, delay: float) -> None:
        super().__init__(store, bucket)
        self.delay = delay

    async def files(self, prefix: str | None = None) -> list[SourceObject]:
        await asyncio.sleep(self.delay)
        return await super().files(prefix)


async def test_a_refresh_longer_than_its_lock_keeps_the_lock(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("backend.catalogue_index.REFRESH_LOCK_MS", 300)
    store = MemoryStore()
    await store.ensure_bucket("slow")
    await store.put("slow", "1/one.txt", b"1", "text/plain")
    prefix = f"lh-slow-{id(store)}"
    slow = CatalogueIndex(services.redis, SlowCatalogue(store, "slow", 1.2), prefix, 30)
    other = CatalogueIndex(services.redis, Catalogue(store, "slow"), prefix, 30)
    running = asyncio.create_task(slow.refresh())
    await asyncio.sleep(0.7)  # more than twice the lock's time to live
    assert await other.refresh() is None
    outcome = await running
    assert outcome is not None and outcome.files == 1
    assert await other.refresh() is not None  # released at the end
    await services.redis.delete(*[k async for k in services.redis.scan_iter(f"{prefix}:*")])

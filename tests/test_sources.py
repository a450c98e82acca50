"""A job's files, found through the catalogue index and a HEAD each (backend/sources.py),
against real Redis and the S3 server: no listing of the bucket for indexed files, and the
bucket as it is now, not as the index last saw it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pytest

from backend.services import Services
from backend.sources import resolve_sources
from backend.storage import ObjectInfo


@pytest.fixture
def listings(services: Services, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the S3 calls the lookup makes, by kind."""
    calls: Counter[str] = Counter()
    store = services.storage.store
    list_objects, stat = store.list_objects, store.stat

    async def counted_list(*args: Any, **kwargs: Any) -> list[ObjectInfo]:
        calls["LIST"] += 1
        return await list_objects(*args, **kwargs)

    async def counted_stat(*args: Any, **kwargs: Any) -> ObjectInfo:
        calls["HEAD"] += 1
        return await stat(*args, **kwargs)

    monkeypatch.setattr(store, "list_objects", counted_list)
    monkeypatch.setattr(store, "stat", counted_stat)
    return calls


async def test_indexed_files_are_found_with_one_head_each_and_no_listing(
    services: Services, listings: Counter[str]
) -> None:
    for file_id in (7101, 7102, 7103):
        await services.storage.put_source(file_id, f"f-{file_id}.txt", b"x" * file_id)
    await services.catalogue.refresh()
    listings.clear()

    resolved = await resolve_sources(services.catalogue, services.storage, [7103, 7101])

    assert [(s.file_id, s.name, s.size) for s in resolved.found] == [
        (7103, "f-7103.txt", 7103),
        (7101, "f-7101.txt", 7101),
    ]
    assert all(s.etag for s in resolved.found)
    assert resolved.missing == []
    assert listings == {"HEAD": 2}


async def test_the_bucket_as_it_is_now_wins_over_the_index(
    services: Services, listings: Counter[str]
) -> None:
    await services.storage.put_source(7201, "kept.txt", b"old")
    await services.storage.put_source(7202, "deleted.txt", b"gone soon")
    await services.catalogue.refresh()
    # After the index was built: one file overwritten, one deleted, one added.
    await services.storage.put_source(7201, "kept.txt", b"new bytes")
    await services.storage.store.delete(services.storage.source_bucket, "7202/deleted.txt")
    await services.storage.put_source(7203, "added.txt", b"fresh")
    listings.clear()

    resolved = await resolve_sources(services.catalogue, services.storage, [7201, 7202, 7203, 7999])

    found = {s.file_id: s for s in resolved.found}
    assert found[7201].size == len(b"new bytes")
    assert found[7203].name == "added.txt"
    assert resolved.missing == [7202, 7999]
    # The deleted file is named from the index, so people read which one is missing.
    assert resolved.names[7202] == "deleted.txt"
    # Listings only for the ids the index could not place: one prefix listing each.
    assert listings["LIST"] == 3


async def test_without_an_index_every_file_is_looked_up_in_the_bucket(
    services: Services, listings: Counter[str]
) -> None:
    await services.storage.put_source(7301, "solo.txt", b"solo")
    assert await services.catalogue.current() is None

    resolved = await resolve_sources(services.catalogue, services.storage, [7301])

    assert [s.name for s in resolved.found] == ["solo.txt"]
    assert listings["LIST"] == 1 and listings["HEAD"] == 0


async def test_unverified_the_index_serves_every_indexed_file_without_an_s3_request(
    services: Services, listings: Counter[str]
) -> None:
    for file_id in (7401, 7402):
        await services.storage.put_source(file_id, f"u-{file_id}.txt", b"u" * file_id)
    await services.catalogue.refresh()
    listed = {f.file_id: f for f in await services.storage.catalogue()}
    listings.clear()

    resolved = await resolve_sources(
        services.catalogue, services.storage, [7402, 7401, 7998], verify=False
    )

    assert [(s.file_id, s.key, s.size, s.etag) for s in resolved.found] == [
        (i, listed[i].key, listed[i].size, listed[i].etag) for i in (7402, 7401)
    ]
    assert resolved.missing == [7998]
    # Only the id the index does not know was looked up in the bucket.
    assert listings == {"LIST": 1}


async def test_unverified_an_index_without_etags_still_heads_each_file(
    services: Services, listings: Counter[str]
) -> None:
    await services.storage.put_source(7501, "old-index.txt", b"o" * 10)
    await services.catalogue.refresh()
    generation = await services.catalogue.current()
    assert generation is not None
    base = f"{services.settings.key_prefix}:catalogue:g:{generation}"
    # The rows older code reads stay four fields; the ETags live apart. An index written
    # before ETags were kept has no ETag for the file.
    row = msgspec.json.decode(await services.redis.hget(f"{base}:files", "7501"))
    assert row[:3] == ["7501/old-index.txt", "old-index.txt", 10] and len(row) == 4
    await services.redis.hdel(f"{base}:etags", "7501")
    [listed] = await services.storage.catalogue("7501/")
    listings.clear()

    resolved = await resolve_sources(services.catalogue, services.storage, [7501], verify=False)

    assert [s.etag for s in resolved.found] == [listed.etag]
    assert listings == {"HEAD": 1}

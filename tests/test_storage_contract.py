"""One contract, two stores: the in-memory store must behave as the real S3 server does.

Every test runs against `MemoryStore` and against the session's S3 server (tests/stack.py),
so the fake that the archive tests use cannot drift from what S3 does. The rules pinned are
the ones Longhaul relies on (S3 API: UploadPart, CompleteMultipartUpload, AbortMultipartUpload).
"""

from __future__ import annotations

import itertools
from urllib.parse import parse_qs, urlsplit

import pytest

from backend.services import Services
from backend.settings import Settings
from backend.storage import NoSuchObject, Storage, StorageError, VersionChanged
from backend.storage.base import MIN_PART_SIZE
from backend.storage.memory import MemoryStore

_keys = itertools.count(1)
BIG = b"b" * MIN_PART_SIZE


@pytest.fixture
async def memory_storage(settings: Settings) -> Storage:
    storage = Storage(settings, MemoryStore())
    await storage.open()
    await storage.ensure_buckets()
    return storage


@pytest.fixture(params=["memory", "s3"])
def storage(request: pytest.FixtureRequest) -> Storage:
    if request.param == "s3":
        services: Services = request.getfixturevalue("services")
        return services.storage
    memory: Storage = request.getfixturevalue("memory_storage")
    return memory


@pytest.fixture
def key() -> str:
    return f"archives/contract-{next(_keys)}.zip"


async def read_all(storage: Storage, key: str) -> bytes:
    return b"".join([c async for c in storage.read(key, bucket=storage.results_bucket)])


async def test_sources_round_trip_and_list_in_id_order(storage: Storage) -> None:
    await storage.put_source(9002, "b.txt", b"bee")
    await storage.put_source(9001, "a.txt", b"a" * 1000)
    await storage.store.put(storage.source_bucket, "not-a-file-key", b"x", "text/plain")
    files = await storage.catalogue("900")
    assert [(f.file_id, f.name, f.size, f.key) for f in files] == [
        (9001, "a.txt", 1000, "9001/a.txt"),
        (9002, "b.txt", 3, "9002/b.txt"),
    ]
    assert b"".join([c async for c in storage.read("9001/a.txt", chunk_size=300)]) == b"a" * 1000
    found, missing = await storage.resolve([9002, 9999])
    assert [f.key for f in found] == ["9002/b.txt"] and missing == [9999]


async def test_a_missing_object_is_no_such_object_and_deleting_it_is_fine(
    storage: Storage, key: str
) -> None:
    with pytest.raises(NoSuchObject):
        async for _ in storage.read("9999/missing.bin"):
            pass
    assert await storage.size_of(key) is None
    await storage.delete(key)


async def test_stat_gives_the_listings_size_and_etag_without_reading(storage: Storage) -> None:
    await storage.put_source(9101, "c.txt", b"version one")
    [listed] = await storage.catalogue("9101/")
    stat = await storage.stat_source("9101/c.txt")
    assert (stat.key, stat.size, stat.etag) == ("9101/c.txt", 11, listed.etag)
    assert stat.etag
    await storage.put_source(9101, "c.txt", b"version two!")
    changed = await storage.stat_source("9101/c.txt")
    assert changed.size == 12 and changed.etag != stat.etag
    with pytest.raises(NoSuchObject):
        await storage.stat_source("9101/missing.txt")


async def test_a_read_with_if_match_gets_that_version_or_version_changed(
    storage: Storage,
) -> None:
    await storage.put_source(9102, "d.txt", b"version one")
    etag = (await storage.stat_source("9102/d.txt")).etag
    assert b"".join([c async for c in storage.read("9102/d.txt", if_match=etag)]) == b"version one"
    await storage.put_source(9102, "d.txt", b"version two")
    with pytest.raises(VersionChanged):
        _ = [c async for c in storage.read("9102/d.txt", if_match=etag)]
    with pytest.raises(NoSuchObject):
        _ = [c async for c in storage.read("9102/gone.txt", if_match=etag)]


async def test_a_missing_bucket_is_a_storage_error(storage: Storage) -> None:
    with pytest.raises(StorageError):
        await storage.store.list_objects("lh-no-such-bucket")
    assert await storage.store.bucket_exists("lh-no-such-bucket") is False


async def test_completed_parts_become_one_object_in_part_number_order(
    storage: Storage, key: str
) -> None:
    upload = storage.start_upload(key)
    await upload.write_part(b"tail", 2)  # the last part may be small, and written first
    await upload.write_part(BIG, 1)
    assert await storage.size_of(key) is None, "visible before complete"
    assert len(await storage.pending_uploads(key)) == 1
    await upload.complete()
    assert await read_all(storage, key) == BIG + b"tail"
    assert await storage.size_of(key) == MIN_PART_SIZE + 4
    assert await storage.pending_uploads(key) == []
    await upload.abort()  # after complete: nothing to drop
    assert await storage.size_of(key) == MIN_PART_SIZE + 4


async def test_a_small_part_that_is_not_the_last_fails_completion(
    storage: Storage, key: str
) -> None:
    upload = storage.start_upload(key)
    await upload.write_part(b"too small", 1)
    await upload.write_part(b"last", 2)
    with pytest.raises(StorageError):
        await upload.complete()
    assert await storage.size_of(key) is None
    await upload.abort()
    assert await storage.pending_uploads(key) == []


async def test_abort_drops_the_parts_and_keeps_the_earlier_object(
    storage: Storage, key: str
) -> None:
    first = storage.start_upload(key)
    await first.write_part(b"earlier archive", 1)
    await first.complete()
    upload = storage.start_upload(key)
    await upload.write_part(BIG, 1)
    await upload.abort()
    await upload.abort()  # twice is fine
    assert await storage.pending_uploads(key) == []
    assert await read_all(storage, key) == b"earlier archive"


async def test_abort_or_complete_with_nothing_written(storage: Storage, key: str) -> None:
    await storage.start_upload(key).abort()
    with pytest.raises(StorageError):
        await storage.start_upload(key).complete()
    assert await storage.pending_uploads(key) == []
    assert await storage.size_of(key) is None


async def test_uploads_left_behind_are_found_and_aborted(storage: Storage, key: str) -> None:
    for _ in range(2):  # two crashed attempts, each with a part written
        await storage.start_upload(key).write_part(b"part", 1)
    assert len(await storage.pending_uploads(key)) == 2
    assert await storage.pending_uploads(key + ".other") == []
    assert await storage.abort_pending_uploads(key) == 2
    assert await storage.pending_uploads(key) == []


async def test_part_numbers_outside_one_to_ten_thousand_are_refused(
    storage: Storage, key: str
) -> None:
    upload = storage.start_upload(key)
    for number in (0, 10_001):
        with pytest.raises(ValueError):
            await upload.write_part(b"x", number)
    await upload.abort()


async def test_a_download_link_names_the_object_its_lifetime_and_filename(
    storage: Storage, key: str
) -> None:
    url = await storage.presign_download(key, "Übersicht.zip")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path.endswith(key)
    assert query["X-Amz-Expires"] == [str(storage.settings.presign_ttl_seconds)]
    assert query["response-content-type"] == ["application/zip"]
    assert "filename*=UTF-8''%C3%9Cbersicht.zip" in query["response-content-disposition"][0]

"""build_archive against the in-memory store: the archive's rules without any server.

The store keeps S3's multipart contract (tests/test_storage_contract.py pins that), so what
these tests show about parts, aborts and visibility holds against S3 too.
"""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import AsyncIterator

import pytest

from backend.archive import ArchiveProgress, SourceMissing, build_archive
from backend.settings import load_settings
from backend.storage import NoSuchObject, SourceObject, Storage, StorageError
from backend.storage.base import MIN_PART_SIZE, READ_CHUNK
from backend.storage.memory import MemoryStore, MemoryUpload
from tests.helpers import zip_digests
from tests.stack import CATALOGUE, CATALOGUE_BY_ID, seed_catalogue

KEY = "archives/memory-job.zip"
MIB = 1024 * 1024


class Boom(Exception):
    """Raised by a progress callback, as a cancelled job's callback does."""


@pytest.fixture
async def storage() -> Storage:
    storage = Storage(load_settings({}), MemoryStore())
    await storage.open()
    await seed_catalogue(storage)
    return storage


def memory_of(storage: Storage) -> MemoryStore:
    assert isinstance(storage.store, MemoryStore)
    return storage.store


async def ignore(_: ArchiveProgress) -> None:
    return None


async def stored(storage: Storage, key: str = KEY) -> bytes:
    return b"".join([c async for c in storage.read(key, bucket=storage.results_bucket)])


async def test_archive_holds_every_source_under_its_name_with_its_bytes(storage: Storage) -> None:
    sources, missing = await storage.resolve([1, 4, 5, 7])
    assert missing == []
    size = await build_archive(storage, sources, KEY, on_progress=ignore, part_size=8 * MIB)
    data = await stored(storage)
    assert size == len(data) == await storage.size_of(KEY)
    assert zip_digests(data) == {
        "alpha.txt": CATALOGUE_BY_ID[1].sha256,
        "délta résumé.pdf": CATALOGUE_BY_ID[4].sha256,
        "echo.log": CATALOGUE_BY_ID[5].sha256,
        "alpha (2).txt": CATALOGUE_BY_ID[7].sha256,
    }
    assert await storage.pending_uploads(KEY) == []


async def test_a_zero_byte_source_is_stored_without_data(storage: Storage) -> None:
    sources, _ = await storage.resolve([6])
    await build_archive(storage, sources, KEY, on_progress=ignore, part_size=8 * MIB)
    with zipfile.ZipFile(io.BytesIO(await stored(storage))) as archive:
        (info,) = archive.infolist()
    assert (info.filename, info.file_size, info.compress_size) == ("empty.dat", 0, 0)
    assert info.compress_type == zipfile.ZIP_STORED


async def test_a_large_archive_is_uploaded_in_parts_of_part_size_but_the_last(
    storage: Storage,
) -> None:
    sources, _ = await storage.resolve(f.file_id for f in CATALOGUE)
    total = sum(s.size for s in sources)
    assert total > 2 * MIN_PART_SIZE  # at least three parts
    size = await build_archive(storage, sources, KEY, on_progress=ignore, part_size=MIN_PART_SIZE)
    parts = memory_of(storage).part_sizes[(storage.results_bucket, KEY)]
    assert len(parts) >= 3
    assert all(p >= MIN_PART_SIZE for p in parts[:-1])
    assert parts[-1] > 0
    assert sum(parts) == size
    assert len(zip_digests(await stored(storage))) == len(CATALOGUE)


async def test_an_archive_smaller_than_one_part_is_one_put_without_a_multipart_upload(
    storage: Storage,
) -> None:
    sources, _ = await storage.resolve([1, 5])
    size = await build_archive(storage, sources, KEY, on_progress=ignore, part_size=8 * MIB)
    assert size < 8 * MIB
    # No multipart upload completed for the key, and none is left pending.
    assert (storage.results_bucket, KEY) not in memory_of(storage).part_sizes
    assert await storage.pending_uploads(KEY) == []
    assert zip_digests(await stored(storage)) == {
        "alpha.txt": CATALOGUE_BY_ID[1].sha256,
        "echo.log": CATALOGUE_BY_ID[5].sha256,
    }


async def test_a_source_that_vanished_aborts_the_upload_and_leaves_no_archive(
    storage: Storage,
) -> None:
    sources, _ = await storage.resolve([8])  # 6 MiB: part 1 is written before the failure
    gone = SourceObject(file_id=99, name="gone.bin", size=10, key="99/gone.bin")
    pending_midway: list[list[str]] = []

    async def watch(state: ArchiveProgress) -> None:
        if state.files_done == 1 and not pending_midway:
            pending_midway.append(await storage.pending_uploads(KEY))

    with pytest.raises(NoSuchObject) as raised:
        await build_archive(
            storage, [*sources, gone], KEY, on_progress=watch, part_size=MIN_PART_SIZE
        )
    # Named, so the job can go on without it (or fail naming it).
    assert isinstance(raised.value, SourceMissing) and raised.value.source == gone
    assert len(pending_midway[0]) == 1, "the failure should come after a part was written"
    assert await storage.pending_uploads(KEY) == []
    assert await storage.size_of(KEY) is None


async def test_an_error_outside_storage_aborts_the_upload_and_is_raised_unchanged(
    storage: Storage,
) -> None:
    sources, _ = await storage.resolve([8, 2])

    async def cancel_after_first_file(state: ArchiveProgress) -> None:
        if state.files_done == 1:
            raise Boom("cancelled")

    with pytest.raises(Boom):
        await build_archive(
            storage, sources, KEY, on_progress=cancel_after_first_file, part_size=MIN_PART_SIZE
        )
    assert await storage.pending_uploads(KEY) == []
    assert await storage.size_of(KEY) is None


class FailingPartStore(MemoryStore):
    """A MemoryStore whose uploads fail at part `fail_at`, as a server that went away."""

    fail_at = 2

    def start_upload(self, bucket: str, key: str, content_type: str) -> MemoryUpload:
        store = self

        class Failing(MemoryUpload):
            async def write_part(self, data: bytes, number: int) -> None:
                if number == store.fail_at:
                    raise StorageError("object storage at memory cannot be reached")
                await super().write_part(data, number)

        return Failing(self, bucket, key, content_type)


async def test_a_failed_part_aborts_the_upload_and_keeps_the_earlier_archive() -> None:
    storage = Storage(load_settings({}), FailingPartStore())
    await seed_catalogue(storage)
    small, _ = await storage.resolve([5])
    # An archive from an earlier attempt: a failed re-run must not damage it.
    await build_archive(storage, small, KEY, on_progress=ignore, part_size=8 * MIB)
    earlier = await stored(storage)
    sources, _ = await storage.resolve([8, 2])
    with pytest.raises(StorageError, match="cannot be reached"):
        await build_archive(storage, sources, KEY, on_progress=ignore, part_size=MIN_PART_SIZE)
    assert await storage.pending_uploads(KEY) == []
    assert await stored(storage) == earlier


class RaggedStore(MemoryStore):
    """Hands each object over in pieces of random sizes, as a socket does."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.random = random.Random(seed)

    async def read(
        self, bucket: str, key: str, chunk_size: int = READ_CHUNK, if_match: str = ""
    ) -> AsyncIterator[bytes]:
        data = b"".join([c async for c in super().read(bucket, key, chunk_size, if_match)])
        start = 0
        while start < len(data):
            end = start + self.random.randint(1, 100_000)
            yield data[start:end]
            start = end


@pytest.mark.parametrize("file_ids", [[5, 1], [4, 2]], ids=["inline", "threaded"])
async def test_the_same_files_make_the_same_bytes_however_the_reads_are_cut(
    file_ids: list[int],
) -> None:
    builds = []
    for seed in (1, 2):
        ragged = Storage(load_settings({}), RaggedStore(seed))
        await ragged.open()
        await seed_catalogue(ragged)
        sources, _ = await ragged.resolve(file_ids)
        await build_archive(ragged, sources, KEY, on_progress=ignore, part_size=8 * MIB)
        builds.append(await stored(ragged))
    assert builds[0] == builds[1]
    assert zip_digests(builds[0]) == {
        CATALOGUE_BY_ID[i].name: CATALOGUE_BY_ID[i].sha256 for i in file_ids
    }

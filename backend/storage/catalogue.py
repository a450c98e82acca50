"""The catalogue: the source bucket read as a list of files.

No database: an object keyed `<file_id>/<name>` is the file `<file_id>` named `<name>`; keys of
any other shape are not part of the catalogue. This module is the only one that knows that
layout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import datetime

from backend.models import CatalogueFile
from backend.storage.base import READ_CHUNK, ObjectStore

# Up to this many ids, a job looks each up by prefix; beyond it one full listing is cheaper.
PER_FILE_LOOKUP_LIMIT = 32


class SourceObject(CatalogueFile, frozen=True):
    """A catalogue file plus where it lives and when it last changed."""

    key: str = ""
    modified: datetime | None = None
    # The object's ETag when listed: the same key, size and ETag are the same bytes.
    etag: str = ""


def catalogue_key(file_id: int, name: str) -> str:
    """The source-bucket key of file `file_id` named `name`: `<file_id>/<name>`."""
    return f"{file_id}/{name}"


def parse_catalogue_key(key: str) -> tuple[int, str] | None:
    """`(file_id, name)` for a key `<positive int>/<name without '/'>`, else None."""
    head, _, name = key.partition("/")
    if not head.isdigit() or not name or "/" in name or int(head) <= 0:
        return None
    return int(head), name


class Catalogue:
    """The files of `bucket` in `store`. Every method raises StorageError when the store fails."""

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self.store = store
        self.bucket = bucket

    async def files(self, prefix: str | None = None) -> list[SourceObject]:
        """Every file of the bucket (under `prefix`, if given), ordered by id, then key."""
        found: list[SourceObject] = []
        for obj in await self.store.list_objects(self.bucket, prefix):
            parsed = parse_catalogue_key(obj.key)
            if parsed is None:
                continue
            file_id, name = parsed
            found.append(
                SourceObject(
                    file_id=file_id,
                    name=name,
                    size=obj.size,
                    key=obj.key,
                    modified=obj.modified,
                    etag=obj.etag,
                )
            )
        found.sort(key=lambda item: (item.file_id, item.key))
        return found

    async def resolve(self, file_ids: Iterable[int]) -> tuple[list[SourceObject], list[int]]:
        """The catalogue files for `file_ids` in the order asked, and the ids not found."""
        wanted = list(file_ids)
        by_id: dict[int, SourceObject] = {}
        if len(wanted) <= PER_FILE_LOOKUP_LIMIT:
            # A few ids: one small listing each, so the cost does not grow with the catalogue.
            listings = await asyncio.gather(*(self.files(f"{i}/") for i in wanted))
            items = [item for listing in listings for item in listing]
        else:
            items = await self.files()
        for item in items:
            by_id.setdefault(item.file_id, item)
        found: list[SourceObject] = []
        missing: list[int] = []
        for file_id in wanted:
            match = by_id.get(file_id)
            if match is None:
                missing.append(file_id)
            else:
                found.append(match)
        return found, missing

    def read(self, key: str, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """A source object's bytes in chunks of at most `chunk_size` (NoSuchObject if gone)."""
        return self.store.read(self.bucket, key, chunk_size)

    async def put(self, file_id: int, name: str, data: bytes) -> None:
        """Store `data` as file `file_id` named `name`."""
        await self.store.put(
            self.bucket, catalogue_key(file_id, name), data, "application/octet-stream"
        )

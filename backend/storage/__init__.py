"""Object storage as the service needs it: the catalogue and the results store over one seam.

`base.ObjectStore` is the seam (Longhaul's own types, `StorageError` its only exception);
`s3.S3Store` is the one real backend and `memory.MemoryStore` the in-memory one tests swap in,
as httpx's tests swap its transport. `catalogue.Catalogue` owns the source bucket's layout,
`results.Results` the archives; `Storage` composes the two for the process's shared clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from backend.settings import Settings
from backend.storage.base import (
    READ_CHUNK,
    NoSuchObject,
    ObjectInfo,
    ObjectStore,
    StorageError,
    Upload,
    VersionChanged,
)
from backend.storage.catalogue import (
    PER_FILE_LOOKUP_LIMIT,
    Catalogue,
    SourceObject,
    catalogue_key,
    parse_catalogue_key,
)
from backend.storage.results import Results
from backend.storage.s3 import S3Store

if TYPE_CHECKING:
    from miniopy_async.api import Minio

__all__ = [
    "PER_FILE_LOOKUP_LIMIT",
    "READ_CHUNK",
    "Catalogue",
    "NoSuchObject",
    "ObjectInfo",
    "ObjectStore",
    "Results",
    "SourceObject",
    "Storage",
    "StorageError",
    "Upload",
    "VersionChanged",
    "catalogue_key",
    "parse_catalogue_key",
]


class Storage:
    """The catalogue (`sources`) and the results store (`results`) over one `store`.

    S3 unless another store is given. Open with `await open()`, close with `close()`. Every
    method raises StorageError (only) when the store fails.
    """

    def __init__(self, settings: Settings, store: ObjectStore | None = None) -> None:
        self.settings = settings
        self.store: ObjectStore = store if store is not None else S3Store(settings)
        self.source_bucket = settings.s3_source_bucket
        self.results_bucket = settings.s3_bucket_name
        self.sources = Catalogue(self.store, self.source_bucket)
        self.results = Results(self.store, self.results_bucket, settings.presign_ttl_seconds)

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    @property
    def client(self) -> Minio:
        """The S3 client, for tests and benchmarks that inspect the server itself."""
        if not isinstance(self.store, S3Store):
            raise RuntimeError(f"{type(self.store).__name__} has no S3 client")
        return self.store.client

    async def ensure_buckets(self) -> None:
        """Create the source and results buckets when they are missing."""
        for bucket in (self.source_bucket, self.results_bucket):
            await self.store.ensure_bucket(bucket)

    async def ping(self, timeout: float = 2.0) -> bool:
        """True when the results bucket answers within `timeout` seconds; never raises."""
        try:
            async with asyncio.timeout(timeout):
                return await self.store.bucket_exists(self.results_bucket)
        except Exception:
            return False

    # The catalogue (source bucket).

    async def catalogue(self, prefix: str | None = None) -> list[SourceObject]:
        """Every file of the source bucket (under `prefix`, if given), ordered by id."""
        return await self.sources.files(prefix)

    async def resolve(self, file_ids: Iterable[int]) -> tuple[list[SourceObject], list[int]]:
        """The catalogue files for `file_ids` in the order asked, and the ids not found."""
        return await self.sources.resolve(file_ids)

    def read(
        self,
        key: str,
        bucket: str | None = None,
        chunk_size: int = READ_CHUNK,
        if_match: str = "",
    ) -> AsyncIterator[bytes]:
        """An object's bytes (the source bucket's unless `bucket`), in chunks of `chunk_size`;
        VersionChanged if `if_match` is given and is no longer its ETag."""
        return self.store.read(bucket or self.source_bucket, key, chunk_size, if_match)

    async def stat_source(self, key: str) -> ObjectInfo:
        """A source object's size, last change and ETag, no bytes read (NoSuchObject if gone)."""
        return await self.store.stat(self.source_bucket, key)

    async def put_source(self, file_id: int, name: str, data: bytes) -> None:
        """Store `data` in the source bucket as catalogue file `file_id` named `name`."""
        await self.sources.put(file_id, name, data)

    # The results store (archives).

    def start_upload(self, key: str, content_type: str = "application/zip") -> Upload:
        """A multipart upload into the results bucket (parts of at least 5 MiB but the last)."""
        return self.results.start_upload(key, content_type)

    async def put_result(
        self, key: str, data: bytes, content_type: str = "application/zip"
    ) -> None:
        """Store a whole archive in the results bucket with one PUT (no multipart upload)."""
        await self.results.put(key, data, content_type)

    async def pending_uploads(self, key: str) -> list[str]:
        """Ids of multipart uploads to `key` that were started and never completed."""
        return await self.results.pending_uploads(key)

    async def abort_pending_uploads(self, key: str) -> int:
        """Abort what a crashed attempt left behind for `key`; returns how many were aborted."""
        return await self.results.abort_pending_uploads(key)

    async def size_of(self, key: str) -> int | None:
        """The archive's size, or None when there is no such object."""
        return await self.results.size_of(key)

    async def delete(self, key: str) -> None:
        """Remove the archive at `key` (a missing one is no error)."""
        await self.results.delete(key)

    async def presign_download(self, key: str, filename: str) -> str:
        """A GET URL for the archive, valid for the presign TTL, signed for the public endpoint."""
        return await self.results.presign_download(key, filename)

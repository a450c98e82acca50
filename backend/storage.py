"""The only S3 code: buckets, the catalogue, reading sources, multipart writes, presigning.

Plain S3 calls through miniopy-async, so MinIO, AWS S3, R2 or any S3-compatible server work
unchanged. The catalogue is the source bucket itself: an object keyed `<file_id>/<name>` is the
file `<file_id>` named `<name>`; keys of any other shape are not part of the catalogue.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from urllib.parse import quote, urlsplit

import aiohttp
from miniopy_async.api import Minio
from miniopy_async.datatypes import MultipartUploader
from miniopy_async.error import S3Error

from backend.models import CatalogueFile
from backend.settings import Settings

READ_CHUNK = 256 * 1024
# A part upload must move at least this fast; a slower one is a stalled server, not a slow link.
MIN_UPLOAD_BYTES_PER_SECOND = 1024 * 1024
# What a call to object storage can fail with once it is on the wire.
_TRANSPORT_ERRORS = (S3Error, aiohttp.ClientError, OSError, TimeoutError)
# Up to this many ids, a job looks each up by prefix; beyond it one full listing is cheaper.
PER_FILE_LOOKUP_LIMIT = 32


class StorageError(Exception):
    """Object storage could not do what was asked (unreachable, refused, or missing data)."""


def describe_failure(endpoint: str, action: str, exc: BaseException, read_timeout: float) -> str:
    """A sentence naming the object store, what was being done, and how it failed."""
    where = f"object storage at {urlsplit(endpoint).netloc}"
    if isinstance(exc, TimeoutError):
        return f"{where} did not answer within {read_timeout:g} s ({action})"
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return f"{where} cannot be reached ({action}): {exc}"
    if isinstance(exc, S3Error):
        return f"{where} refused to {action}: {exc.code} {exc.message}"
    return f"{where} failed to {action}: {exc}"


class SourceObject(CatalogueFile, frozen=True):
    """A catalogue file plus where it lives and when it last changed."""

    key: str = ""
    modified: datetime | None = None


def _client(endpoint: str, settings: Settings, session: aiohttp.ClientSession | None) -> Minio:
    parts = urlsplit(endpoint)
    # The region is given so presigning never needs a network round trip to discover it.
    return Minio(
        parts.netloc,
        access_key=settings.s3_access_key_id,
        secret_key=settings.s3_secret_access_key,
        secure=parts.scheme == "https",
        region=settings.s3_region,
        session=session,
    )


def catalogue_key(file_id: int, name: str) -> str:
    return f"{file_id}/{name}"


def parse_catalogue_key(key: str) -> tuple[int, str] | None:
    head, _, name = key.partition("/")
    if not head.isdigit() or not name or "/" in name or int(head) <= 0:
        return None
    return int(head), name


class Storage:
    """Object storage as the service needs it. Open with `await open()`, close with `close()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.results_bucket = settings.s3_bucket_name
        self.source_bucket = settings.s3_source_bucket
        self._session: aiohttp.ClientSession | None = None
        self._client: Minio | None = None
        self._presigner = _client(settings.public_endpoint, settings, None)

    def failure(self, action: str, exc: BaseException) -> StorageError:
        """The StorageError for `exc`, raised while trying to `action`."""
        return StorageError(
            describe_failure(
                self.settings.s3_endpoint, action, exc, self.settings.s3_read_timeout_seconds
            )
        )

    async def open(self) -> None:
        # Our own session and no hidden retry layer: retries with their backoff are the job's
        # policy, not the HTTP client's. No total timeout, because an object read may last
        # minutes; instead every wait for the server (connect, each read) is short, so a frozen
        # server shows within seconds (S3_CONNECT_TIMEOUT_SECONDS, S3_READ_TIMEOUT_SECONDS).
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.settings.s3_connect_timeout_seconds,
            sock_connect=self.settings.s3_connect_timeout_seconds,
            sock_read=self.settings.s3_read_timeout_seconds,
        )
        self._session = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=64)
        )
        self._client = _client(self.settings.s3_endpoint, self.settings, self._session)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def client(self) -> Minio:
        if self._client is None:
            raise RuntimeError("Storage.open() was not awaited")
        return self._client

    async def ensure_buckets(self) -> None:
        """Create the source and results buckets when they are missing."""
        for bucket in (self.source_bucket, self.results_bucket):
            try:
                if not await self.client.bucket_exists(bucket):
                    await self.client.make_bucket(bucket)
            except S3Error as exc:
                # Another process created it between our check and our create.
                if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise

    async def ping(self, timeout: float = 2.0) -> bool:
        """True when the results bucket answers within `timeout` seconds."""
        try:
            return await asyncio.wait_for(self.client.bucket_exists(self.results_bucket), timeout)
        except Exception:
            return False

    async def catalogue(self, prefix: str | None = None) -> list[SourceObject]:
        """Every file of the source bucket (under `prefix`, if given), ordered by id."""
        found: list[SourceObject] = []
        try:
            async for obj in self.client.list_objects(
                self.source_bucket, prefix=prefix, recursive=True
            ):
                parsed = parse_catalogue_key(obj.object_name or "")
                if parsed is None or obj.is_dir:
                    continue
                file_id, name = parsed
                found.append(
                    SourceObject(
                        file_id=file_id,
                        name=name,
                        size=obj.size or 0,
                        key=obj.object_name or "",
                        modified=obj.last_modified,
                    )
                )
        except _TRANSPORT_ERRORS as exc:
            raise self.failure("list the catalogue", exc) from exc
        found.sort(key=lambda item: (item.file_id, item.key))
        return found

    async def resolve(self, file_ids: Iterable[int]) -> tuple[list[SourceObject], list[int]]:
        """The catalogue files for `file_ids` in the order asked, and the ids not found."""
        wanted = list(file_ids)
        by_id: dict[int, SourceObject] = {}
        if len(wanted) <= PER_FILE_LOOKUP_LIMIT:
            # A few ids: one small listing each, so the cost does not grow with the catalogue.
            listings = await asyncio.gather(*(self.catalogue(f"{i}/") for i in wanted))
            items = [item for listing in listings for item in listing]
        else:
            items = await self.catalogue()
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

    async def read(
        self, key: str, bucket: str | None = None, chunk_size: int = READ_CHUNK
    ) -> AsyncIterator[bytes]:
        """Stream an object's bytes in chunks of at most `chunk_size`."""
        response = None
        try:
            response = await self.client.get_object(bucket or self.source_bucket, key)
            async for chunk in response.content.iter_chunked(chunk_size):
                yield chunk
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"read {key!r}", exc) from exc
        finally:
            if response is not None:
                response.close()

    def uploader(self, key: str, content_type: str = "application/zip") -> MultipartUploader:
        """A multipart upload into the results bucket (parts of >= 5 MiB but the last)."""
        return self.client.multipart_uploader(self.results_bucket, key, content_type=content_type)

    async def upload_part(self, uploader: MultipartUploader, data: bytes, number: int) -> None:
        """Upload part `number` of `uploader`, bounded in time by its size.

        Socket reads have their own timeout, but a write to a server that stopped reading only
        waits on the kernel's buffer; this bound catches that (connect + read timeouts plus the
        part at MIN_UPLOAD_BYTES_PER_SECOND).
        """
        limit = (
            self.settings.s3_connect_timeout_seconds
            + self.settings.s3_read_timeout_seconds
            + len(data) / MIN_UPLOAD_BYTES_PER_SECOND
        )
        try:
            async with asyncio.timeout(limit):
                await uploader.upload_part(data, number)
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"upload archive part {number}", exc) from exc

    async def pending_uploads(self, key: str) -> list[str]:
        """Ids of multipart uploads to `key` that were started and never completed."""
        # miniopy-async has no public wrapper for ListMultipartUploads / AbortMultipartUpload.
        result = await self.client._list_multipart_uploads(self.results_bucket, prefix=key)
        return [u.upload_id for u in result.uploads if u.object_name == key and u.upload_id]

    async def abort_pending_uploads(self, key: str) -> int:
        """Abort what a crashed attempt left behind for `key`; returns how many were aborted."""
        try:
            upload_ids = await self.pending_uploads(key)
            for upload_id in upload_ids:
                await self.client._abort_multipart_upload(self.results_bucket, key, upload_id)
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"clean up earlier uploads of {key!r}", exc) from exc
        return len(upload_ids)

    async def put_source(self, file_id: int, name: str, data: bytes) -> None:
        """Store `data` in the source bucket as catalogue file `file_id` named `name`."""
        # One part at a time: parallel parts make miniopy-async read the whole stream first.
        await self.client.put_object(
            self.source_bucket,
            catalogue_key(file_id, name),
            io.BytesIO(data),
            len(data),
            num_parallel_uploads=1,
        )

    async def size_of(self, key: str, bucket: str | None = None) -> int | None:
        """The object's size, or None when there is no such object."""
        try:
            stat = await self.client.stat_object(bucket or self.results_bucket, key)
        except S3Error as exc:
            if exc.code in {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}:
                return None
            raise StorageError(f"cannot stat {key!r}: {exc}") from exc
        return stat.size

    async def delete(self, key: str, bucket: str | None = None) -> None:
        await self.client.remove_object(bucket or self.results_bucket, key)

    async def presign_download(self, key: str, filename: str) -> str:
        """A GET URL for the archive, valid for the presign TTL, signed for the public endpoint."""
        disposition = (
            f'attachment; filename="{_ascii_fallback(filename)}"; '
            f"filename*=UTF-8''{quote(filename, safe='')}"
        )
        return await self._presigner.presigned_get_object(
            self.results_bucket,
            key,
            expires=timedelta(seconds=self.settings.presign_ttl_seconds),
            response_headers={
                "response-content-disposition": disposition,
                "response-content-type": "application/zip",
            },
        )


def _ascii_fallback(name: str) -> str:
    safe = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in name)
    return safe or "download.zip"

"""The S3 backend of the storage seam: the only module that speaks miniopy-async or aiohttp.

Plain S3 calls, so MinIO, AWS S3, R2 or any S3-compatible server work unchanged. Every call
is bounded in time (S3_CONNECT_TIMEOUT_SECONDS, S3_READ_TIMEOUT_SECONDS) and every failure
leaves as a StorageError whose message names the server, the action and the cause.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import urlsplit

import aiohttp
from miniopy_async.api import Minio
from miniopy_async.datatypes import Part
from miniopy_async.error import S3Error
from miniopy_async.helpers import DictType

from backend.settings import Settings
from backend.storage.base import (
    READ_CHUNK,
    NoSuchObject,
    ObjectInfo,
    StorageError,
    VersionChanged,
    check_part_number,
)

# A part upload must move at least this fast; a slower one is a stalled server, not a slow link.
MIN_UPLOAD_BYTES_PER_SECOND = 1024 * 1024
# CompleteMultipartUpload may stay silent while the server assembles the object ("several
# minutes" in the S3 API reference; AWS sends whitespace, MinIO and others may not), so it gets
# no per-read limit, only a total one that grows with the object: this rate, plus the usual
# connect and read timeouts.
MIN_COMPLETE_BYTES_PER_SECOND = 32 * 1024 * 1024
# What a call to object storage can fail with once it is on the wire.
_TRANSPORT_ERRORS = (S3Error, aiohttp.ClientError, OSError, TimeoutError)
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
_BUCKET_RACE = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


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


class S3Store:
    """`ObjectStore` over an S3 server. Open with `await open()`, close with `close()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._client: Minio | None = None
        # The same server without a per-read limit, for calls bounded as a whole instead.
        self._patient_session: aiohttp.ClientSession | None = None
        self._patient_client: Minio | None = None
        self._presigner = _client(settings.public_endpoint, settings, None)

    def failure(self, action: str, exc: BaseException) -> StorageError:
        """The StorageError for `exc`, raised while trying to `action` (NoSuchObject if 404)."""
        message = describe_failure(
            self.settings.s3_endpoint, action, exc, self.settings.s3_read_timeout_seconds
        )
        if isinstance(exc, S3Error) and exc.code in _NOT_FOUND:
            return NoSuchObject(message)
        if isinstance(exc, S3Error) and exc.code == "PreconditionFailed":
            return VersionChanged(message)
        return StorageError(message)

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
        patient = aiohttp.ClientTimeout(
            total=None,
            connect=self.settings.s3_connect_timeout_seconds,
            sock_connect=self.settings.s3_connect_timeout_seconds,
        )
        self._patient_session = aiohttp.ClientSession(
            timeout=patient, connector=aiohttp.TCPConnector(limit=8)
        )
        self._patient_client = _client(
            self.settings.s3_endpoint, self.settings, self._patient_session
        )

    async def close(self) -> None:
        for session in (self._session, self._patient_session):
            if session is not None:
                await session.close()
        self._session = self._patient_session = None

    @property
    def patient_client(self) -> Minio:
        """The client without a per-read limit: each use bounds its call as a whole."""
        if self._patient_client is None:
            raise RuntimeError("Storage.open() was not awaited")
        return self._patient_client

    @property
    def client(self) -> Minio:
        """The miniopy-async client, for tests and benchmarks that look at the server itself."""
        if self._client is None:
            raise RuntimeError("Storage.open() was not awaited")
        return self._client

    async def bucket_exists(self, bucket: str) -> bool:
        try:
            return await self.client.bucket_exists(bucket)
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"look up bucket {bucket!r}", exc) from exc

    async def ensure_bucket(self, bucket: str) -> None:
        try:
            if not await self.client.bucket_exists(bucket):
                await self.client.make_bucket(bucket)
        except S3Error as exc:
            # Another process created it between our check and our create.
            if exc.code not in _BUCKET_RACE:
                raise self.failure(f"create bucket {bucket!r}", exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"create bucket {bucket!r}", exc) from exc

    async def list_objects(self, bucket: str, prefix: str | None = None) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        try:
            async for obj in self.client.list_objects(bucket, prefix=prefix, recursive=True):
                if obj.is_dir or not obj.object_name:
                    continue
                etag = (obj.etag or "").strip('"')
                found.append(ObjectInfo(obj.object_name, obj.size or 0, obj.last_modified, etag))
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"list the {bucket!r} bucket", exc) from exc
        return found

    async def read(
        self, bucket: str, key: str, chunk_size: int = READ_CHUNK, if_match: str = ""
    ) -> AsyncIterator[bytes]:
        response = None
        headers: DictType | None = {"If-Match": f'"{if_match}"'} if if_match else None
        try:
            response = await self.client.get_object(bucket, key, request_headers=headers)
            async for chunk in response.content.iter_chunked(chunk_size):
                yield chunk
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"read {key!r}", exc) from exc
        finally:
            if response is not None:
                response.close()

    async def put(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        try:
            # One part at a time: parallel parts make miniopy-async read the whole stream first.
            await self.client.put_object(
                bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                num_parallel_uploads=1,
            )
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"write {key!r}", exc) from exc

    async def size(self, bucket: str, key: str) -> int:
        try:
            stat = await self.client.stat_object(bucket, key)
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"stat {key!r}", exc) from exc
        return stat.size or 0

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        try:
            stat = await self.client.stat_object(bucket, key)
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"stat {key!r}", exc) from exc
        return ObjectInfo(key, stat.size or 0, stat.last_modified, (stat.etag or "").strip('"'))

    async def delete(self, bucket: str, key: str) -> None:
        try:
            await self.client.remove_object(bucket, key)
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"delete {key!r}", exc) from exc

    def start_upload(self, bucket: str, key: str, content_type: str) -> S3Upload:
        return S3Upload(self, bucket, key, content_type)

    async def pending_uploads(self, bucket: str, key: str) -> list[str]:
        try:
            # miniopy-async has no public wrapper for ListMultipartUploads.
            result = await self.client._list_multipart_uploads(bucket, prefix=key)
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"list pending uploads of {key!r}", exc) from exc
        return [u.upload_id for u in result.uploads if u.object_name == key and u.upload_id]

    async def pending_uploads_under(self, bucket: str, prefix: str) -> list[tuple[str, str]]:
        try:
            # One page (S3 returns up to 1,000): the sweeper that calls this runs every minute.
            result = await self.client._list_multipart_uploads(bucket, prefix=prefix)
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"list pending uploads under {prefix!r}", exc) from exc
        return [
            (u.object_name, u.upload_id) for u in result.uploads if u.object_name and u.upload_id
        ]

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        try:
            # Bounded: a frozen server must not hold a cancelled attempt (or a stopping worker).
            async with asyncio.timeout(self.settings.s3_read_timeout_seconds + 1):
                # miniopy-async has no public wrapper for AbortMultipartUpload.
                await self.client._abort_multipart_upload(bucket, key, upload_id)
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"abort an upload of {key!r}", exc) from exc

    async def presign_get(
        self, bucket: str, key: str, expires_seconds: int, response_headers: dict[str, str]
    ) -> str:
        try:
            # Signed for the public endpoint, without a round trip (the region is known).
            return await self._presigner.presigned_get_object(
                bucket,
                key,
                expires=timedelta(seconds=expires_seconds),
                response_headers=dict(response_headers),
            )
        except _TRANSPORT_ERRORS as exc:
            raise self.failure(f"presign {key!r}", exc) from exc


class S3Upload:
    """An S3 multipart upload (see `base.Upload`), created on the first part written."""

    def __init__(self, store: S3Store, bucket: str, key: str, content_type: str) -> None:
        self._store = store
        self._bucket = bucket
        self._key = key
        self._headers = {"Content-Type": content_type}
        self._upload_id = ""
        self._etags: dict[int, str] = {}
        self._sizes: dict[int, int] = {}
        self._ended = False

    async def write_part(self, data: bytes, number: int) -> None:
        """Upload part `number`, bounded in time by its size.

        Socket reads have their own timeout, but a write to a server that stopped reading only
        waits on the kernel's buffer; this bound catches that (connect + read timeouts plus the
        part at MIN_UPLOAD_BYTES_PER_SECOND).
        """
        check_part_number(number)
        settings = self._store.settings
        limit = (
            settings.s3_connect_timeout_seconds
            + settings.s3_read_timeout_seconds
            + len(data) / MIN_UPLOAD_BYTES_PER_SECOND
        )
        client = self._store.client
        try:
            async with asyncio.timeout(limit):
                if not self._upload_id:
                    # miniopy-async's own uploader keeps its upload id private; we need it to
                    # know whether there is anything to abort.
                    self._upload_id = await client._create_multipart_upload(
                        self._bucket, self._key, dict(self._headers)
                    )
                self._etags[number] = await client._upload_part(
                    self._bucket, self._key, data, dict(self._headers), self._upload_id, number
                )
                self._sizes[number] = len(data)
        except _TRANSPORT_ERRORS as exc:
            raise self._store.failure(f"upload archive part {number}", exc) from exc

    async def complete(self) -> None:
        """Make the object; bounded in time by its size (MIN_COMPLETE_BYTES_PER_SECOND)."""
        if not self._etags:
            raise StorageError(f"cannot complete the upload of {self._key!r}: no part was written")
        # CompleteMultipartUpload wants the parts in ascending order.
        parts = [Part(number, etag) for number, etag in sorted(self._etags.items())]
        settings = self._store.settings
        limit = (
            settings.s3_connect_timeout_seconds
            + settings.s3_read_timeout_seconds
            + sum(self._sizes.values()) / MIN_COMPLETE_BYTES_PER_SECOND
        )
        try:
            async with asyncio.timeout(limit):
                await self._store.patient_client._complete_multipart_upload(
                    self._bucket, self._key, self._upload_id, parts
                )
        except _TRANSPORT_ERRORS as exc:
            raise self._store.failure(f"write archive {self._key!r}", exc) from exc
        self._ended = True

    async def abort(self) -> None:
        if not self._upload_id or self._ended:
            return
        self._ended = True
        await self._store.abort_upload(self._bucket, self._key, self._upload_id)

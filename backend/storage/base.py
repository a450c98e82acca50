"""The storage seam: what Longhaul asks of object storage, in Longhaul's own types.

Every backend (S3 in `s3.py`, the in-memory one in `memory.py`) implements `ObjectStore`, and
the only exceptions leaving one are `StorageError` and its subclasses; callers never see a
client library's errors. `Upload` follows S3 multipart semantics (S3 API reference,
UploadPart and CompleteMultipartUpload): parts numbered 1 to 10 000, every part but the last
at least 5 MiB, nothing visible until `complete()`, and `abort()` drops the parts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol

import msgspec

# S3 UploadPart: every part but the last must hold at least 5 MiB (EntityTooSmall otherwise,
# reported by CompleteMultipartUpload), and a part number is 1 to 10 000.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_NUMBER = 10_000
# Bytes per chunk when streaming an object.
READ_CHUNK = 256 * 1024


class StorageError(Exception):
    """Object storage could not do what was asked (unreachable, refused, or missing data)."""


class NoSuchObject(StorageError):
    """The key names no object (S3 NoSuchKey)."""


class VersionChanged(StorageError):
    """The object is no longer the version a read asked for: its ETag changed (S3 answers a
    GET with `If-Match` this way, 412 PreconditionFailed; RFC 9110 §13.1.1)."""


class ObjectInfo(msgspec.Struct, frozen=True):
    """One object of a listing: its key, its size in bytes, when it last changed, and its
    ETag (without quotes; "" when the store gives none), which changes whenever its bytes do."""

    key: str
    size: int
    modified: datetime | None = None
    etag: str = ""


def check_part_number(number: int) -> None:
    """Raise ValueError unless `number` is a valid part number (1 to 10 000)."""
    if not 1 <= number <= MAX_PART_NUMBER:
        raise ValueError(f"part number must be 1 to {MAX_PART_NUMBER}, not {number}")


class Upload(Protocol):
    """One multipart write of one object, made visible only by `complete()`.

    Nothing is started on the server until the first `write_part`, so an upload that never
    wrote a part leaves nothing behind.
    """

    async def write_part(self, data: bytes, number: int) -> None:
        """Store `data` as part `number` (1 to 10 000); writing a number again replaces it.

        Raises StorageError when the store fails, ValueError for a number out of range.
        """
        ...

    async def complete(self) -> None:
        """Make the object the parts in number order; it replaces any object at the key.

        Raises StorageError when no part was written, when a part other than the last is
        under MIN_PART_SIZE (S3: EntityTooSmall), or when the store fails.
        """
        ...

    async def abort(self) -> None:
        """Drop every part written. A no-op when nothing was started or it already ended.

        Returns within a bounded time; raises StorageError when the store fails (the parts
        may then linger until a lifecycle rule or `ObjectStore.abort_upload` removes them).
        """
        ...


class ObjectStore(Protocol):
    """Buckets of objects. Every method raises StorageError (only) when the store fails."""

    async def open(self) -> None:
        """Get ready to serve calls (connect lazily: nothing here fails if the store is down)."""
        ...

    async def close(self) -> None:
        """Release connections; no call may follow."""
        ...

    async def bucket_exists(self, bucket: str) -> bool:
        """Whether `bucket` exists."""
        ...

    async def ensure_bucket(self, bucket: str) -> None:
        """Create `bucket` unless it exists (also when another process creates it meanwhile)."""
        ...

    async def list_objects(self, bucket: str, prefix: str | None = None) -> list[ObjectInfo]:
        """Every object in `bucket` whose key starts with `prefix`, ordered by key."""
        ...

    def read(
        self, bucket: str, key: str, chunk_size: int = READ_CHUNK, if_match: str = ""
    ) -> AsyncIterator[bytes]:
        """The object's bytes in chunks of at most `chunk_size`; NoSuchObject if it is missing,
        VersionChanged if `if_match` (an ETag, no quotes) is given and is not its ETag."""
        ...

    async def put(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        """Store `data` at `key` in one go, replacing any object there."""
        ...

    async def size(self, bucket: str, key: str) -> int:
        """The object's size in bytes; NoSuchObject if it is missing."""
        ...

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        """The object's size, last change and ETag, reading none of its bytes (S3 HeadObject);
        NoSuchObject if it is missing."""
        ...

    async def delete(self, bucket: str, key: str) -> None:
        """Remove the object at `key`; removing a missing object succeeds (S3 DeleteObject)."""
        ...

    def start_upload(self, bucket: str, key: str, content_type: str) -> Upload:
        """A multipart upload to `key`; nothing is sent until its first part."""
        ...

    async def pending_uploads(self, bucket: str, key: str) -> list[str]:
        """Ids of multipart uploads to exactly `key` that were started and never ended."""
        ...

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Abort the pending upload `upload_id` to `key`, dropping its parts."""
        ...

    async def pending_uploads_under(self, bucket: str, prefix: str) -> list[tuple[str, str]]:
        """(key, upload id) of uploads under `prefix` started and never ended (first 1,000)."""
        ...

    async def presign_get(
        self, bucket: str, key: str, expires_seconds: int, response_headers: dict[str, str]
    ) -> str:
        """A URL that GETs the object for `expires_seconds`, answering with `response_headers`."""
        ...

"""An in-memory `ObjectStore`: the S3 contract without a server, for fast archive tests.

It keeps the rules an S3 server enforces that Longhaul relies on (tests/test_storage_contract.py
runs one suite against both, so the two cannot drift): a missing bucket or object is an
error, a multipart upload is invisible until completed, every part but the last holds at
least MIN_PART_SIZE bytes (checked at completion, as S3 does), and an abort drops the parts.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from backend.storage.base import (
    MIN_PART_SIZE,
    READ_CHUNK,
    NoSuchObject,
    ObjectInfo,
    StorageError,
    VersionChanged,
    check_part_number,
)


@dataclass(slots=True)
class _Stored:
    data: bytes
    content_type: str
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(slots=True)
class _Pending:
    bucket: str
    key: str
    parts: dict[int, bytes] = field(default_factory=dict)


class MemoryStore:
    """`ObjectStore` in a dict. `part_sizes` records each completed upload's parts, for tests."""

    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, _Stored]] = {}
        # (bucket, key) -> the sizes of the parts its last completed upload was made of.
        self.part_sizes: dict[tuple[str, str], list[int]] = {}
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)

    def _bucket(self, bucket: str) -> dict[str, _Stored]:
        try:
            return self.buckets[bucket]
        except KeyError:
            raise StorageError(f"memory store: no bucket {bucket!r}") from None

    def _object(self, bucket: str, key: str) -> _Stored:
        try:
            return self._bucket(bucket)[key]
        except KeyError:
            raise NoSuchObject(f"memory store: no object {key!r} in {bucket!r}") from None

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def bucket_exists(self, bucket: str) -> bool:
        return bucket in self.buckets

    async def ensure_bucket(self, bucket: str) -> None:
        self.buckets.setdefault(bucket, {})

    async def list_objects(self, bucket: str, prefix: str | None = None) -> list[ObjectInfo]:
        objects = self._bucket(bucket)
        return [
            # An S3 single-part ETag is the MD5 of the bytes (S3 API reference, Common Response
            # Headers); a fingerprint, not security.
            ObjectInfo(key, len(stored.data), stored.modified, hashlib.md5(stored.data).hexdigest())
            for key, stored in sorted(objects.items())
            if key.startswith(prefix or "")
        ]

    async def read(
        self, bucket: str, key: str, chunk_size: int = READ_CHUNK, if_match: str = ""
    ) -> AsyncIterator[bytes]:
        data = self._object(bucket, key).data
        if if_match and hashlib.md5(data).hexdigest() != if_match:
            raise VersionChanged(f"{key!r} is no longer version {if_match}")
        for start in range(0, len(data), chunk_size):
            yield data[start : start + chunk_size]

    async def put(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        self._bucket(bucket)[key] = _Stored(bytes(data), content_type)

    async def size(self, bucket: str, key: str) -> int:
        return len(self._object(bucket, key).data)

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        stored = self._object(bucket, key)
        etag = hashlib.md5(stored.data).hexdigest()
        return ObjectInfo(key, len(stored.data), stored.modified, etag)

    async def delete(self, bucket: str, key: str) -> None:
        self._bucket(bucket).pop(key, None)

    def start_upload(self, bucket: str, key: str, content_type: str) -> MemoryUpload:
        return MemoryUpload(self, bucket, key, content_type)

    async def pending_uploads(self, bucket: str, key: str) -> list[str]:
        self._bucket(bucket)
        return [i for i, p in self._pending.items() if p.bucket == bucket and p.key == key]

    async def pending_uploads_under(self, bucket: str, prefix: str) -> list[tuple[str, str]]:
        self._bucket(bucket)
        return [
            (p.key, i)
            for i, p in self._pending.items()
            if p.bucket == bucket and p.key.startswith(prefix)
        ]

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        pending = self._pending.get(upload_id)
        if pending is None or (pending.bucket, pending.key) != (bucket, key):
            raise StorageError(f"memory store: no upload {upload_id!r} of {key!r} (NoSuchUpload)")
        del self._pending[upload_id]

    async def presign_get(
        self, bucket: str, key: str, expires_seconds: int, response_headers: dict[str, str]
    ) -> str:
        query = urlencode({"X-Amz-Expires": expires_seconds, **response_headers})
        return f"memory://{quote(bucket)}/{quote(key)}?{query}"

    # The upload's side of the store: one place that changes `_pending`.

    def _begin(self, bucket: str, key: str) -> str:
        self._bucket(bucket)
        upload_id = f"memory-upload-{next(self._ids)}"
        self._pending[upload_id] = _Pending(bucket, key)
        return upload_id

    def _parts(self, upload_id: str) -> dict[int, bytes]:
        try:
            return self._pending[upload_id].parts
        except KeyError:
            raise StorageError(f"memory store: upload {upload_id!r} ended (NoSuchUpload)") from None

    def _complete(self, upload_id: str, content_type: str) -> None:
        pending = self._pending[upload_id]
        numbers = sorted(pending.parts)
        if not numbers:
            raise StorageError(f"memory store: upload of {pending.key!r} has no parts")
        for number in numbers[:-1]:
            if len(pending.parts[number]) < MIN_PART_SIZE:
                raise StorageError(
                    f"memory store: part {number} of {pending.key!r} is under 5 MiB "
                    "and not the last (EntityTooSmall)"
                )
        data = b"".join(pending.parts[number] for number in numbers)
        self._bucket(pending.bucket)[pending.key] = _Stored(data, content_type)
        self.part_sizes[(pending.bucket, pending.key)] = [len(pending.parts[n]) for n in numbers]
        del self._pending[upload_id]


class MemoryUpload:
    """A multipart upload into a MemoryStore (see `base.Upload`)."""

    def __init__(self, store: MemoryStore, bucket: str, key: str, content_type: str) -> None:
        self._store = store
        self._bucket = bucket
        self._key = key
        self._content_type = content_type
        self._upload_id = ""
        self._ended = False

    async def write_part(self, data: bytes, number: int) -> None:
        check_part_number(number)
        if not self._upload_id:
            self._upload_id = self._store._begin(self._bucket, self._key)
        self._store._parts(self._upload_id)[number] = bytes(data)

    async def complete(self) -> None:
        if not self._upload_id:
            raise StorageError(f"cannot complete the upload of {self._key!r}: no part was written")
        self._store._parts(self._upload_id)  # raises if it was aborted meanwhile
        self._store._complete(self._upload_id, self._content_type)
        self._ended = True

    async def abort(self) -> None:
        if not self._upload_id or self._ended:
            return
        self._ended = True
        await self._store.abort_upload(self._bucket, self._key, self._upload_id)

"""The results store: archives in the results bucket, written by multipart upload, fetched by
presigned link. Where an archive's key comes from is the worker's business, not this one's.
"""

from __future__ import annotations

from urllib.parse import quote

from backend.storage.base import NoSuchObject, ObjectStore, Upload


class Results:
    """Archives in `bucket` of `store`. Every method raises StorageError when the store fails."""

    def __init__(self, store: ObjectStore, bucket: str, presign_ttl_seconds: int) -> None:
        self.store = store
        self.bucket = bucket
        self.presign_ttl_seconds = presign_ttl_seconds

    def start_upload(self, key: str, content_type: str = "application/zip") -> Upload:
        """A multipart upload to `key` (parts of at least 5 MiB but the last)."""
        return self.store.start_upload(self.bucket, key, content_type)

    async def put(self, key: str, data: bytes, content_type: str = "application/zip") -> None:
        """Store a whole archive at `key` with one PUT (S3 PutObject), replacing any there."""
        await self.store.put(self.bucket, key, data, content_type)

    async def pending_uploads(self, key: str) -> list[str]:
        """Ids of multipart uploads to `key` that were started and never completed."""
        return await self.store.pending_uploads(self.bucket, key)

    async def abort_pending_uploads(self, key: str) -> int:
        """Abort what a crashed attempt left behind for `key`; returns how many were aborted."""
        upload_ids = await self.pending_uploads(key)
        for upload_id in upload_ids:
            await self.store.abort_upload(self.bucket, key, upload_id)
        return len(upload_ids)

    async def pending_uploads_under(self, prefix: str) -> list[tuple[str, str]]:
        """(key, upload id) of every upload under `prefix` that was started and never ended."""
        return await self.store.pending_uploads_under(self.bucket, prefix)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        await self.store.abort_upload(self.bucket, key, upload_id)

    async def size_of(self, key: str) -> int | None:
        """The archive's size in bytes, or None when there is no such object."""
        try:
            return await self.store.size(self.bucket, key)
        except NoSuchObject:
            return None

    async def delete(self, key: str) -> None:
        """Remove the archive at `key` (a missing one is no error)."""
        await self.store.delete(self.bucket, key)

    async def presign_download(self, key: str, filename: str) -> str:
        """A GET URL for the archive, valid for the presign TTL, saved as `filename`."""
        disposition = (
            f'attachment; filename="{_ascii_fallback(filename)}"; '
            f"filename*=UTF-8''{quote(filename, safe='')}"
        )
        return await self.store.presign_get(
            self.bucket,
            key,
            self.presign_ttl_seconds,
            {
                "response-content-disposition": disposition,
                "response-content-type": "application/zip",
            },
        )


def _ascii_fallback(name: str) -> str:
    safe = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in name)
    return safe or "download.zip"

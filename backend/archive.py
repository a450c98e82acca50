"""Streaming ZIP of source objects into a multipart upload: memory stays flat at any size.

Bytes flow catalogue read -> stream-zip (ZIP64-capable, one member at a time) -> a part buffer
of `part_size` -> `Upload.write_part`. Nothing holds more than one part plus a few read chunks.
An archive that ends before its first part is full is stored with one PUT instead: one S3
request where a multipart upload takes three (create, part, complete).
Storage is reached only through `backend.storage`, so its failures arrive as StorageError.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from stat import S_IFREG

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode
from stream_zip import NO_COMPRESSION_64, ZIP_64

from backend import entrynames, tracing
from backend.storage import (
    READ_CHUNK,
    NoSuchObject,
    SourceObject,
    Storage,
    StorageError,
    Upload,
    VersionChanged,
)
from backend.zipstream import zip_stream

_EPOCH = datetime(1980, 1, 1, tzinfo=UTC)
# stream-zip runs in a thread and hands every output chunk back to the event loop; at its
# 64 KiB default those hand-offs cost more than the copying (bench/throughput.py).
_ZIP_CHUNK = 1024 * 1024
# Archives of at most this many source bytes are read whole and zipped on the event loop
# (zipstream.py): the loop is then busy for about a millisecond, less than the writer
# thread's start and hand-offs cost a small job.
INLINE_ZIP_BYTES = 1024 * 1024


@dataclass(slots=True)
class ArchiveProgress:
    """Where an archive build stands; passed to the progress callback."""

    files_done: int = 0
    bytes_done: int = 0
    current_file: str = ""


ProgressCallback = Callable[[ArchiveProgress], Awaitable[None]]


class SourceMissing(NoSuchObject):
    """A source object vanished after it was listed (before or while it was read)."""

    def __init__(self, source: SourceObject, cause: NoSuchObject) -> None:
        super().__init__(str(cause))
        self.source = source


class SourceChanged(VersionChanged):
    """A source object is no longer the version its ETag names (overwritten since listed)."""

    def __init__(self, source: SourceObject, cause: VersionChanged) -> None:
        super().__init__(str(cause))
        self.source = source


class Throttle:
    """Caps a byte stream to `rate` bytes/s (0 = unlimited); simulates slow sources."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.sent = 0

    async def pace(self, nbytes: int) -> None:
        if self.rate <= 0:
            return
        self.sent += nbytes
        ahead = self.sent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            await asyncio.sleep(ahead)


def entry_names(sources: list[SourceObject]) -> list[str | None]:
    """ZIP entry names for `sources` (rules in backend.entrynames); None for unusable names."""
    return entrynames.entry_names([source.name for source in sources])


async def build_archive(
    storage: Storage,
    sources: list[SourceObject],
    key: str,
    *,
    on_progress: ProgressCallback,
    part_size: int,
    throttle_bytes_per_second: int = 0,
    compression_level: int = 0,
) -> int:
    """Write one ZIP holding every source under its catalogue name to `key`; return its size.

    `part_size` is the bytes per uploaded part (at least 5 MiB: S3's minimum for every part
    but the last). Each source with an ETag is read with `If-Match` on it, so the archive
    holds exactly the versions it was asked for. Raises SourceMissing when a source is gone by
    the time it is read, SourceChanged when it is no longer that version, StorageError when
    storage fails, or whatever `on_progress` raises.
    On any error or cancellation the partial multipart upload is aborted, so no half archive
    and no orphaned parts are left behind.
    """
    progress = ArchiveProgress()
    throttle = Throttle(throttle_bytes_per_second)
    parent = otel_context.get_current()

    async def member_bytes(source: SourceObject) -> AsyncIterator[bytes]:
        progress.current_file = source.name
        try:
            chunks = _even(storage.read(source.key, if_match=source.etag), READ_CHUNK)
            async for chunk in _traced_file(chunks, source, parent):
                await throttle.pace(len(chunk))
                progress.bytes_done += len(chunk)
                await on_progress(progress)
                yield chunk
        except NoSuchObject as exc:
            raise SourceMissing(source, exc) from exc
        except VersionChanged as exc:
            raise SourceChanged(source, exc) from exc
        progress.files_done += 1
        await on_progress(progress)

    async def members() -> AsyncIterator[tuple[str, datetime, int, object, AsyncIterator[bytes]]]:
        for source, name in zip(sources, entry_names(sources), strict=True):
            if name is None:
                continue  # the worker reports these as skipped; a member needs a name
            # A stable timestamp makes a re-run produce the same bytes.
            modified = source.modified or _EPOCH
            # APPNOTE 4.3.8: a zero-byte member is stored with no data (deflate would add 5 bytes);
            # the CRC-32 of no bytes is 0.
            method = NO_COMPRESSION_64(0, 0) if source.size == 0 else ZIP_64
            yield name, modified, S_IFREG | 0o644, method, member_bytes(source)

    def compressor() -> zlib._Compress:
        return zlib.compressobj(level=compression_level, wbits=-zlib.MAX_WBITS)

    upload = storage.start_upload(key)
    buffer = bytearray()
    part_number = 0
    size = 0
    try:
        async for chunk in zip_stream(
            members(),
            chunk_size=_ZIP_CHUNK,
            get_compressobj=compressor,
            inline=sum(source.size for source in sources) <= INLINE_ZIP_BYTES,
        ):
            buffer += chunk
            size += len(chunk)
            if len(buffer) >= part_size:
                part_number += 1
                await _upload_part(upload, bytes(buffer), part_number)
                buffer.clear()
        if part_number == 0:
            # Nothing was sent yet, so no multipart upload was started (Upload is lazy).
            with tracing.tracer().start_as_current_span(
                "s3.put_archive", attributes={"size": size}
            ):
                await storage.put_result(key, bytes(buffer))
            return size
        if buffer:
            part_number += 1
            await _upload_part(upload, bytes(buffer), part_number)
        with tracing.tracer().start_as_current_span("s3.complete_upload"):
            await upload.complete()
    except BaseException:
        # Shielded so a cancelled attempt still drops its parts; the store bounds the abort's
        # time. If storage is what failed, a lifecycle rule on the results bucket (or the next
        # attempt's abort_pending_uploads) sweeps the parts, and the first error is the one
        # worth reporting.
        with contextlib.suppress(StorageError):
            await asyncio.shield(upload.abort())
        raise
    return size


async def _even(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """`chunks` re-cut to exactly `size` bytes each (the last may be shorter).

    A socket hands a body over in pieces that vary from read to read, and the deflate stream
    (level 0: stored blocks, RFC 1951 §3.2.4) cuts its blocks where compress() calls end; even
    pieces make the same files give the same archive bytes on every build, as content-addressed
    archives must (reuse.py: two builders of one address write the same bytes).
    """
    pending = bytearray()
    async for chunk in chunks:
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


async def _traced_file(
    chunks: AsyncIterator[bytes], source: SourceObject, parent: Context
) -> AsyncIterator[bytes]:
    """The chunks of one source object, inside one span that covers its S3 GET."""
    # Started but not made current: stream-zip resumes this generator from a new task for
    # every chunk, and a context attached in one task cannot be detached in another.
    span = tracing.tracer().start_span(
        "archive.file",
        context=parent,
        attributes={"longhaul.file_id": source.file_id, "s3.key": source.key, "size": source.size},
    )
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        raise
    finally:
        span.end()


async def _upload_part(upload: Upload, data: bytes, number: int) -> None:
    attributes = {"s3.part_number": number, "size": len(data)}
    with tracing.tracer().start_as_current_span("s3.upload_part", attributes=attributes):
        await upload.write_part(data, number)

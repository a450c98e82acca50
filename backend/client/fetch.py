"""Download an archive to disk, resuming an interrupted transfer with an HTTP Range request."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from backend.client.checks import check_destination, part_path
from backend.client.errors import FetchFailed

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

# (bytes on disk, total size when known)
OnBytes = Callable[[int, int | None], None]
# A download URL for the next attempt; presigned URLs expire, so it may mint a fresh one.
UrlSource = Callable[[int], Awaitable[str]]


@dataclass
class Fetched:
    path: Path
    size: int
    resumes: int


@dataclass
class _Transfer:
    """What the attempts so far learnt about the object."""

    out: BinaryIO
    etag: str | None = None
    total: int | None = None

    @property
    def done(self) -> bool:
        return self.total is not None and self.out.tell() >= self.total


async def fetch(
    http: httpx.AsyncClient,
    url_for: UrlSource,
    dest: Path,
    on_bytes: OnBytes = lambda done, total: None,
    attempts: int = 6,
) -> Fetched:
    """Download into `<dest>.part`, resuming with `Range: bytes=<size>-` after a drop, then
    rename to `dest`. The ETag pins the object: a 206 of another object restarts from zero.

    `attempts` counts consecutive attempts that add no byte; raises FetchFailed after that.
    InvalidArgument, before any request, if `dest` or `<dest>.part` is not a regular file
    (checks.check_destination); checked again before the rename.
    """
    check_destination(dest)
    part = part_path(dest)
    part.parent.mkdir(parents=True, exist_ok=True)
    resumes = stalled = attempt = 0
    with part.open("wb") as out:
        transfer = _Transfer(out)
        while not transfer.done:
            before = out.tell()
            try:
                await _get(http, await url_for(attempt), transfer, on_bytes)
            except (httpx.TransportError, FetchFailed) as exc:
                if isinstance(exc, _Restart):
                    out.seek(0)
                    out.truncate()
                    transfer.etag = transfer.total = None
                stalled = stalled + 1 if out.tell() <= before else 0
                if stalled >= attempts:
                    message = f"download failed after {attempt + 1} attempts: {exc}"
                    raise FetchFailed(message) from exc
                resumes += 1
                await asyncio.sleep(min(0.25 * 2**stalled, 5.0))
            attempt += 1
        size = out.tell()
    check_destination(dest)  # the transfer may have taken hours: something may be there now
    part.replace(dest)
    return Fetched(dest, size, resumes)


async def _get(http: httpx.AsyncClient, url: str, transfer: _Transfer, on_bytes: OnBytes) -> None:
    out = transfer.out
    offset = out.tell()
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    async with http.stream("GET", url, headers=headers) as response:
        start = await _check(response, offset, transfer)
        if start != offset:
            # The server sent the whole object, not the range: start the file over.
            out.seek(start)
            out.truncate()
        # Raw bytes, as they arrive: Range offsets count bytes on the wire, and a chunk
        # buffered but not yet handed over would be lost when the connection drops.
        async for chunk in response.aiter_raw():
            out.write(chunk)
            on_bytes(out.tell(), transfer.total)
        out.flush()
    if transfer.total is None:
        transfer.total = out.tell()  # no length announced: the body's end is the file's end
    elif out.tell() < transfer.total:
        raise FetchFailed(f"connection closed at byte {out.tell()} of {transfer.total}")


async def _check(response: httpx.Response, offset: int, transfer: _Transfer) -> int:
    """Where the response's body starts in the file; records the object's ETag and size."""
    etag = response.headers.get("etag")
    if response.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
        if match is None or int(match.group(1)) != offset:
            raise FetchFailed(f"bad Content-Range {response.headers.get('content-range')!r}")
        if transfer.etag is not None and etag is not None and etag != transfer.etag:
            raise _Restart(f"the archive changed (ETag {transfer.etag} -> {etag})")
        transfer.total = None if match.group(3) == "*" else int(match.group(3))
        transfer.etag = etag or transfer.etag
        return offset
    if response.status_code == 200:
        length = response.headers.get("content-length", "")
        transfer.total = int(length) if length.isdigit() else None
        transfer.etag = etag
        return 0
    await response.aread()
    # 403 is usually an expired link: the next attempt asks for a freshly presigned one.
    raise FetchFailed(f"archive download answered HTTP {response.status_code}")


class _Restart(FetchFailed):
    """The object changed between attempts (its ETag differs): start the file over."""

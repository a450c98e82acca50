"""zip_stream's two ways, against stream-zip's own output: a writer thread for any size, and
on the event loop for archives held whole (`inline`)."""

from __future__ import annotations

import io
import threading
import zipfile
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from stat import S_IFREG
from typing import Any

import pytest
from stream_zip import ZIP_64

from backend.zipstream import zip_stream

MODIFIED = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
FILES = {"a.txt": b"alpha " * 5000, "empty.dat": b"", "c.bin": bytes(range(256)) * 300}


def zip_threads() -> int:
    return sum(t.name.startswith("zip") for t in threading.enumerate())


async def members() -> AsyncIterator[tuple[str, Any, int, Any, AsyncIterator[bytes]]]:
    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]

    for name, data in FILES.items():
        yield name, MODIFIED, S_IFREG | 0o644, ZIP_64, chunks(data)


async def zipped(inline: bool, threads_seen: list[int]) -> bytes:
    out = bytearray()
    async for chunk in zip_stream(
        members(),
        chunk_size=64 * 1024,
        get_compressobj=lambda: zlib.compressobj(level=0, wbits=-zlib.MAX_WBITS),
        inline=inline,
    ):
        threads_seen.append(zip_threads())
        out += chunk
    return bytes(out)


@pytest.mark.parametrize("inline", [False, True])
async def test_both_ways_make_the_same_valid_zip(inline: bool) -> None:
    seen: list[int] = []
    data = await zipped(inline, seen)
    assert data == await zipped(not inline, [])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert {i.filename: archive.read(i) for i in archive.infolist()} == FILES
    # Inline runs on the loop alone; otherwise a writer thread does the zipping.
    assert (max(seen) == 0) is inline

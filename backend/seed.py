"""Demo catalogue: deterministic files uploaded to the source bucket under `<id>/<name>`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from backend.storage import Storage, catalogue_key

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class DemoFile:
    file_id: int
    name: str
    size: int


DEMO_FILES: tuple[DemoFile, ...] = (
    DemoFile(10001, "annual-report-2025.pdf", 6 * MIB),
    DemoFile(10002, "product-photos.tar", 24 * MIB),
    DemoFile(10003, "customer-export.csv", 3 * MIB),
    DemoFile(10004, "site-survey-video.mp4", 40 * MIB),
    DemoFile(10005, "floor-plans.dwg", 12 * MIB),
    DemoFile(10006, "invoices-q3.zip", 8 * MIB),
    DemoFile(10007, "sensor-readings.parquet", 16 * MIB),
    DemoFile(10008, "brand-guidelines.pdf", 2 * MIB),
    DemoFile(10009, "meeting-notes.md", 48 * 1024),
    DemoFile(10010, "training-dataset.jsonl", 32 * MIB),
    DemoFile(10011, "Übersicht & Budget 2026.xlsx", 1 * MIB),
    DemoFile(10012, "logo.svg", 12 * 1024),
)


def demo_bytes(file_id: int, size: int) -> bytes:
    """Reproducible content for a demo file (tests recompute it to compare hashes)."""
    return b"".join(_blocks(file_id, size))


def _blocks(file_id: int, size: int) -> Iterator[bytes]:
    block = hashlib.sha256(str(file_id).encode()).digest() * 2048  # 64 KiB
    produced = 0
    counter = 0
    while produced < size:
        # Vary each block so the data does not compress to nothing.
        piece = hashlib.sha256(block[:64] + counter.to_bytes(8, "big")).digest() + block[32:]
        piece = piece[: size - produced]
        produced += len(piece)
        counter += 1
        yield piece


async def seed_demo(storage: Storage, files: tuple[DemoFile, ...] = DEMO_FILES) -> int:
    """Upload every demo file that is not there yet; returns how many were uploaded."""
    await storage.ensure_buckets()
    present = {item.key for item in await storage.catalogue()}
    uploaded = 0
    for demo in files:
        if catalogue_key(demo.file_id, demo.name) in present:
            continue
        await storage.put_source(demo.file_id, demo.name, demo_bytes(demo.file_id, demo.size))
        uploaded += 1
    return uploaded

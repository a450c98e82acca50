"""Catalogue scale: `GET /v1/files` (first page, searches, a deep page, a 304) and the page `/`
with 10,000 and 100,000 catalogue files, beside a static file on the same API process.

The 10,000-file catalogue is real objects in the S3 server, indexed by a real refresh (one
LIST of the bucket), whose time is measured too. The 100,000-file index is written from a
generated listing of the same shape (catalogue_index over an in-memory store: the same write
path, without the LIST), because uploading 100,000 objects to moto takes longer than the rest
of the run; the LIST cost at that size is the 10,000 figure's times ten (LIST pages hold 1,000
keys each). Requests are sent one at a time (closed loop), so each figure is one request's
own latency.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import cast

import httpx

from backend.catalogue_index import CatalogueIndex, Query
from backend.catalogue_listing import encode_cursor
from backend.services import Services
from backend.storage import Catalogue, ObjectInfo, ObjectStore
from bench.report import Result, Table, ms, percentile
from bench.stack import Stack

WORDS = ("report", "invoice", "photo", "survey", "export", "notes", "plan", "dataset")
EXTENSIONS = ("pdf", "csv", "jpg", "zip", "parquet", "md")
PUT_CONCURRENCY = 32
TARGET = 0.300
QUICK_FILES = 300


def _name(i: int) -> str:
    rng = random.Random(i)
    return f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{i:06d}.{rng.choice(EXTENSIONS)}"


def _size(i: int) -> int:
    return random.Random(-i).randrange(0, 50 * 2**20)


async def _put_objects(services: Services, count: int) -> float:
    """Upload `count` empty catalogue objects to the S3 server; returns seconds taken."""
    started = time.monotonic()
    pending = iter(range(1, count + 1))

    async def put_some() -> None:
        for i in pending:
            await services.storage.put_source(i, _name(i), b"")

    await asyncio.gather(*(put_some() for _ in range(PUT_CONCURRENCY)))
    return time.monotonic() - started


class _GeneratedListing:
    """Just enough of an ObjectStore for `Catalogue.files()`: a listing of `count` files."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def list_objects(self, bucket: str, prefix: str | None = None) -> list[ObjectInfo]:
        now = datetime.now(UTC)
        return [
            ObjectInfo(f"{i}/{_name(i)}", _size(i), now - timedelta(seconds=i))
            for i in range(1, self.count + 1)
        ]


async def _write_generated(services: Services, count: int) -> float:
    """Index a generated listing of `count` files under the stack's keys; returns seconds."""
    listing = cast(ObjectStore, _GeneratedListing(count))
    index = CatalogueIndex(
        services.redis,
        Catalogue(listing, services.storage.source_bucket),
        services.settings.key_prefix,
        services.catalogue.refresh_seconds,
    )
    outcome = await index.refresh()
    assert outcome is not None
    return outcome.seconds


async def _redis_settled(services: Services) -> None:
    """Wait out the AOF rewrite (a fork) that writing a whole index may start in Redis: it
    competes for the same two cores, and every later write would pay for it anyway."""
    for _ in range(600):
        info = await services.redis.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("rdb_bgsave_in_progress"):
            return
        await asyncio.sleep(0.1)


async def _timed(
    client: httpx.AsyncClient, samples: int, make: Callable[[int], tuple[str, dict[str, str]]]
) -> tuple[list[float], int]:
    """Latencies of `samples` sequential GETs; `make(n)` gives the path and headers."""
    latencies = []
    status = 0
    for n in range(samples):
        path, headers = make(n)
        started = time.perf_counter()
        response = await client.get(path, headers=headers)
        latencies.append(time.perf_counter() - started)
        status = response.status_code
        if status not in (200, 304):
            raise RuntimeError(f"GET {path} answered {status}: {response.text[:200]}")
    return latencies, status


async def _measure(
    stack: Stack,
    count: int,
    samples: int,
    seeded_by: str,
    tables: tuple[Table, Table],
    p99s: dict[str, float],
) -> None:
    table, refresh = tables
    # Requests come one after another from one address: the per-client limit would cut in.
    env = stack.env(
        f"bench-cat-{count}",
        RATE_LIMIT_PER_MINUTE="1000000",
        CATALOGUE_SEARCHES_PER_MINUTE="1000000",
    )
    services = await stack.services(env)
    try:
        if seeded_by == "S3":
            await _refresh_times(services, count, refresh)
        else:
            written = await _write_generated(services, count)
            refresh.add(f"{count:,}", "index write alone (generated listing)", f"{written:.2f} s")
        await _redis_settled(services)
        # Only the API: a worker would rebuild the 100k index from the (empty) bucket.
        api = stack.api(env)
        try:
            async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
                first = await client.get("/v1/files")
                assert first.status_code == 200, first.text
                total = first.json()["total"]
                etag = first.headers["etag"]
                generation = await services.catalogue.current()
                assert generation is not None
                deep = encode_cursor(generation, total - 100, Query())
                plain: dict[str, str] = {}
                rows: list[tuple[str, Callable[[int], tuple[str, dict[str, str]]]]] = [
                    ("GET /static/favicon.svg (floor)", lambda n: ("/static/favicon.svg", plain)),
                    ("first page (100, by id)", lambda n: ("/v1/files", plain)),
                    ("first page, sort=name", lambda n: ("/v1/files?sort=name", plain)),
                    (
                        "first page, sort=size desc",
                        lambda n: ("/v1/files?sort=size&order=desc", plain),
                    ),
                    ("deep page (last 100)", lambda n: (f"/v1/files?cursor={deep}", plain)),
                    ("If-None-Match → 304", lambda n: ("/v1/files", {"If-None-Match": etag})),
                    # A new q each time: a full (sliced) scan, never a kept result.
                    (
                        "search, new narrow q",
                        lambda n: (f"/v1/files?q={n * 7919 % count:06d}", plain),
                    ),
                    (
                        "search, broad q (~1/8 match), new max_size",
                        lambda n: (f"/v1/files?q=report-&max_size={2**40 + n}", plain),
                    ),
                    ("search, repeated q (cached)", lambda n: ("/v1/files?q=survey-plan", plain)),
                    ("GET / (page render)", lambda n: ("/", {"Accept": "text/html"})),
                    # The page's own catalogue controls: a search typed into the page, and the
                    # results htmx swaps in for a new search and for the next page.
                    ("GET /?q=survey-plan (page, a search)", lambda n: ("/?q=survey-plan", plain)),
                    (
                        "GET /catalogue?q=… (htmx results, new q)",
                        # Other numbers than the API's row, so no result is cached yet.
                        lambda n: (f"/catalogue?q={(n * 104729 + 17) % count:06d}", plain),
                    ),
                    (
                        "GET /catalogue?cursor=… (htmx, next page)",
                        lambda n: (f"/catalogue?cursor={deep}", plain),
                    ),
                ]
                for label, make in rows:
                    await _timed(client, 3, make)  # warm up the route
                    latencies, status = await _timed(client, samples, make)
                    table.add(
                        f"{count:,}",
                        label,
                        status,
                        ms(percentile(latencies, 50)),
                        ms(percentile(latencies, 99)),
                        ms(max(latencies)),
                    )
                    p99s[f"{label} @ {count:,}"] = percentile(latencies, 99)
                    print(f"  {count:,} files, {label}: p50 {ms(percentile(latencies, 50))} ms")
        finally:
            stack.stop(api)
    finally:
        await services.redis.delete(
            *[k async for k in services.redis.scan_iter(f"{env['KEY_PREFIX']}:catalogue:*")]
        )
        await services.close()


async def _refresh_times(services: Services, count: int, table: Table) -> None:
    """Upload `count` objects to the S3 server and time real refreshes (LIST + index write)."""
    put = await _put_objects(services, count)
    first = await services.catalogue.refresh()
    assert first is not None
    started = time.monotonic()
    listed = await services.storage.sources.files()
    list_seconds = time.monotonic() - started
    assert len(listed) == count
    unchanged = await services.catalogue.refresh()
    assert unchanged is not None and not unchanged.changed
    await services.storage.put_source(count + 1, "one-more.txt", b"")
    changed = await services.catalogue.refresh()
    assert changed is not None and changed.changed
    table.add(f"{count:,}", f"upload the objects ({PUT_CONCURRENCY} at a time)", f"{put:.1f} s")
    table.add(f"{count:,}", "LIST of the bucket alone", f"{list_seconds:.2f} s")
    table.add(f"{count:,}", "first refresh (LIST + write index)", f"{first.seconds:.2f} s")
    table.add(
        f"{count:,}", "refresh, nothing changed (LIST + compare)", f"{unchanged.seconds:.2f} s"
    )
    table.add(f"{count:,}", "refresh after one file added", f"{changed.seconds:.2f} s")


async def run(stack: Stack, quick: bool) -> Result:
    sizes = ((QUICK_FILES, "S3"),) if quick else ((10_000, "S3"), (100_000, "generated"))
    samples = 10 if quick else 200
    reads = Table(["files", "request", "status", "p50 ms", "p99 ms", "max ms"])
    refresh = Table(["files", "step", "took"])
    p99s: dict[str, float] = {}
    for count, seeded_by in sizes:
        await _measure(stack, count, samples, seeded_by, (reads, refresh), p99s)

    result = Result("catalogue", "6. Catalogue scale (one API process)")
    result.tables.append((f"{samples} sequential requests per row, after 3 to warm up:", reads))
    result.tables.append(("Refreshing the index (what a worker does every interval):", refresh))
    biggest = f"{sizes[-1][0]:,}"
    for label in (
        "first page (100, by id)",
        "search, new narrow q",
        "search, broad q (~1/8 match), new max_size",
    ):
        figure = p99s[f"{label} @ {biggest}"]
        result.target(
            f"{label} p99 at {biggest} files", f"{ms(figure)} ms", "< 300 ms", figure < TARGET
        )
    result.notes.append(
        "Reads come from the catalogue index in Redis (backend/catalogue_index.py): a page is "
        "a ZRANGE over a rank set plus an HMGET; a new q is a scan of a text of every name in "
        "Lua calls of 128 KiB each (catalogue_search.py), whose matches (ids, sizes, places in "
        "every order) are kept two minutes per (generation, lower-cased q); size bounds, sort "
        "and order are applied to them in the API process, so 'broad q, new max_size' (about "
        "12,500 of 100,000 names) scans once and then filters a kept result. The 100,000-file "
        "index is written from a generated listing (see the module "
        "docstring); 10,000 is a real bucket and a real LIST from moto, much slower per page "
        "than S3. Rows start once Redis has finished any AOF rewrite the index write began."
    )
    return result

"""The catalogue index: the source bucket's listing kept in Redis, so reading the catalogue
never lists the bucket.

Workers rebuild the index on a clock (`run_refresher`, every CATALOGUE_REFRESH_SECONDS): one
full LIST of the bucket becomes a new *generation*, written under keys of its own, and only
then does the generation pointer move to it (one SET, atomic), so a reader sees the old index
or the new one, never half of one. A listing identical to the current generation's changes
nothing but its `built_at`. The previous generation lives on for a grace period so a paging
walk that started on it finishes on the same snapshot. One refresh runs at a time: a Redis
lock (SET NX PX, released by its holder only) keeps a second worker, or an API process
building the first index, from listing the bucket as well.

Redis keys (`<KEY_PREFIX>:catalogue:` …):

| Key | Type | Meaning |
| --- | --- | --- |
| `current` | string | the generation readers use |
| `next` | string | counter of generation numbers (INCR) |
| `lock` | string | the refresher's token while a refresh runs (PX = REFRESH_LOCK_MS) |
| `g:<n>:meta` | hash | `built_at` (epoch s), `digest` of the listing, `count` |
| `g:<n>:files` | hash | file id -> JSON `[key, name, size, modified epoch s or null]` |
| `g:<n>:etags` | hash | file id -> its ETag when listed (apart: older readers parse `files`) |
| `g:<n>:order:<sort>` | zset | file id -> its rank (0…) in `sort` order: id, name, size, modified |
| `g:<n>:scan` | string | a line `<lower-case name>\\t<id>\\t<size>\\t<4 ranks>` per file |
| `g:<n>:m:<digest>` | string | a search's matches, packed (catalogue_search.py; TTL 120 s) |

Search is a case-insensitive substring match on the name (Unicode lower-casing, done in
Python when indexing and on the query), with optional size bounds. The scan of the
generation's `scan` text depends on the lower-cased query alone: it runs once per (generation,
query), in Lua calls of a bounded slice each so Redis serves others between them, and its
matches are kept for two minutes; size bounds, sort and order are applied to the kept matches
in the API process (catalogue_search.py). Names in `scan` have tabs and line breaks turned
into spaces, and a query may hold neither, so a match never spans two fields.

File ids are the catalogue's own (`<file_id>/<name>` keys, storage/catalogue.py); when two keys
share an id, the first key in key order is the file, as a job resolving that id finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.catalogue_search import SearchCache, window
from backend.storage import Catalogue, SourceObject, StorageError

logger = logging.getLogger(__name__)
T = TypeVar("T")

Sort = Literal["id", "name", "size", "modified"]
Order = Literal["asc", "desc"]
SORTS: tuple[Sort, ...] = ("id", "name", "size", "modified")

# A refresh of 100,000 files takes seconds; its refresher extends the lock every third of this
# while it runs, and a dead refresher's lock blocks the next one for at most this long.
REFRESH_LOCK_MS = 120_000
# Pages of a replaced generation stay readable this long after the swap (at least), so a walk
# through the pages that began before a refresh ends on the same snapshot.
MIN_GRACE_SECONDS = 120
# How long an API process waits for another process's first build before answering 503.
FIRST_BUILD_WAIT_SECONDS = 10.0
_WRITE_BATCH = 5_000

# KEYS: the lock. ARGV: the holder's token. Deletes the lock only if the caller holds it.
# KEYS: current. ARGV: the generations' key prefix, then file ids. The current generation,
# then each id's row and ETag (nil when absent), in one round trip; false while there is no
# index. The keys are named from the generation read here, so a swap cannot fall between.
# HMGET in slices: Lua's unpack has a stack limit of a few thousand values.
_LOOKUP = """
local g = redis.call('GET', KEYS[1])
if not g then return false end
local out = {g}
for _, name in ipairs({':files', ':etags'}) do
  local key = ARGV[1] .. g .. name
  for first = 2, #ARGV, 1000 do
    local rows = redis.call('HMGET', key, unpack(ARGV, first, math.min(first + 999, #ARGV)))
    for i = 1, #rows do out[#out + 1] = rows[i] end
  end
end
return out
"""
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: the lock. ARGV: the holder's token, the lock's time to live in ms. Extends the lock
# only if the caller still holds it.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class IndexUnavailable(StorageError):
    """No index yet, and none could be built now (another process is building it)."""


@dataclass(frozen=True, slots=True)
class IndexedFile:
    """One file as the index holds it: id, key in the source bucket, name, size, mtime, and
    the ETag it had when listed ("" in an index written before ETags were kept)."""

    file_id: int
    key: str
    name: str
    size: int
    modified: float | None
    etag: str = ""


@dataclass(frozen=True, slots=True)
class Query:
    """What to list: a name substring (`q`, any case), size bounds in bytes, an order."""

    q: str = ""
    sort: Sort = "id"
    order: Order = "asc"
    min_size: int | None = None
    max_size: int | None = None

    @property
    def filtered(self) -> bool:
        return bool(self.q) or self.min_size is not None or self.max_size is not None

    @property
    def fingerprint(self) -> str:
        """A short digest naming the query, for cursors, result keys and ETags."""
        text = f"{self.q.lower()}\x00{self.min_size}\x00{self.max_size}\x00{self.sort}"
        return hashlib.sha256(f"{text}\x00{self.order}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Page:
    """`limit` files from `offset` of the query's answer in `generation`, of `total`."""

    items: list[IndexedFile]
    total: int
    generation: int
    offset: int

    @property
    def next_offset(self) -> int | None:
        end = self.offset + len(self.items)
        return end if end < self.total else None


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    generation: int
    files: int
    changed: bool
    seconds: float


def _ranks(files: list[SourceObject], sort: Sort) -> list[int]:
    """The file ids in `sort` order; ties broken by id, so every order is total."""
    keyed = {
        "id": lambda f: (f.file_id,),
        "name": lambda f: (f.name.lower(), f.name, f.file_id),
        "size": lambda f: (f.size, f.file_id),
        "modified": lambda f: (f.modified.timestamp() if f.modified else 0.0, f.file_id),
    }[sort]
    return [f.file_id for f in sorted(files, key=keyed)]


def _digest(files: list[SourceObject]) -> str:
    hasher = hashlib.sha256()
    for f in files:
        stamp = f.modified.timestamp() if f.modified else ""
        hasher.update(f"{f.key}\x00{f.size}\x00{stamp}\x00{f.etag}\n".encode())
    return hasher.hexdigest()


def _searchable(name: str) -> str:
    """The name as searches see it: lower case, without tabs or line breaks."""
    return name.lower().replace("\t", " ").replace("\n", " ").replace("\r", " ")


async def _done(result: Awaitable[T] | T) -> T:
    # redis-py types its hash commands for the sync and the async client at once.
    return await result if inspect.isawaitable(result) else result  # type: ignore[no-any-return]


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class CatalogueIndex:
    """The index of `catalogue` in `redis` under `<prefix>:catalogue:`.

    `refresh_seconds` is how often workers rebuild it (CATALOGUE_REFRESH_SECONDS). Reads raise
    RedisError when Redis fails, and StorageError (IndexUnavailable included) when there is no
    index yet and it cannot be built from the bucket now.
    """

    def __init__(
        self, redis: Redis, catalogue: Catalogue, prefix: str, refresh_seconds: float
    ) -> None:
        self.redis = redis
        self.catalogue = catalogue
        self.base = f"{prefix}:catalogue"
        self.refresh_seconds = refresh_seconds
        self.grace_seconds = max(MIN_GRACE_SECONDS, int(refresh_seconds * 4))
        # Refreshes an API process started aside (asyncio holds tasks weakly).
        self._background: set[asyncio.Task[None]] = set()
        self.search = SearchCache(redis, self.base)
        self._unlock = redis.register_script(_UNLOCK)
        self._extend = redis.register_script(_EXTEND)
        self._lookup = redis.register_script(_LOOKUP)

    def _key(self, generation: int, name: str) -> str:
        return f"{self.base}:g:{generation}:{name}"

    def _keys_of(self, generation: int) -> list[str]:
        names = ["meta", "files", "etags", "scan", *(f"order:{sort}" for sort in SORTS)]
        return [self._key(generation, name) for name in names]

    # Building.

    async def current(self) -> int | None:
        """The generation readers use, or None before the first build."""
        value = _text(await self.redis.get(f"{self.base}:current"))
        return int(value) if value else None

    async def built_at(self, generation: int) -> float | None:
        value = _text(await _done(self.redis.hget(self._key(generation, "meta"), "built_at")))
        return float(value) if value else None

    async def refresh(self) -> RefreshOutcome | None:
        """List the bucket once and make it the current generation; None when another
        refresh holds the lock. Raises StorageError when the bucket cannot be listed."""
        lock = f"{self.base}:lock"
        token = secrets.token_hex(8)
        if not await self.redis.set(lock, token, nx=True, px=REFRESH_LOCK_MS):
            return None
        # A slow listing (a large bucket, a slow store) keeps the lock for as long as it runs.
        keeper = asyncio.create_task(self._keep_lock(lock, token))
        try:
            return await self._rebuild()
        finally:
            keeper.cancel()
            with contextlib.suppress(RedisError):
                await self._unlock(keys=[lock], args=[token])

    async def _keep_lock(self, lock: str, token: str) -> None:
        while True:
            await asyncio.sleep(REFRESH_LOCK_MS / 3000)
            with contextlib.suppress(RedisError):
                await self._extend(keys=[lock], args=[token, REFRESH_LOCK_MS])

    async def _rebuild(self) -> RefreshOutcome:
        started = time.monotonic()
        files = self._unique(await self.catalogue.files())
        digest = _digest(files)
        old = await self.current()
        if old is not None:
            old_digest = _text(await _done(self.redis.hget(self._key(old, "meta"), "digest")))
            if old_digest == digest:
                await _done(self.redis.hset(self._key(old, "meta"), "built_at", str(time.time())))
                return RefreshOutcome(old, len(files), False, time.monotonic() - started)
        generation = int(await self.redis.incr(f"{self.base}:next"))
        await self._write(generation, files, digest)
        # The swap: one SET. Readers that already read the old number keep reading the old
        # keys, which live on for the grace period. The number replaced is the one to retire,
        # even when it is not `old` (a refresh that outlived its lock ran beside this one).
        replaced = _text(await self.redis.set(f"{self.base}:current", str(generation), get=True))
        if replaced is not None and int(replaced) != generation:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in self._keys_of(int(replaced)):
                    pipe.expire(key, self.grace_seconds)
                await pipe.execute()
        seconds = time.monotonic() - started
        logger.info(
            "catalogue index generation %d: %d files in %.2f s", generation, len(files), seconds
        )
        return RefreshOutcome(generation, len(files), True, seconds)

    @staticmethod
    def _unique(files: list[SourceObject]) -> list[SourceObject]:
        # `files` is ordered by id, then key: the first of an id is the one a job resolves.
        seen: set[int] = set()
        unique = []
        for f in files:
            if f.file_id not in seen:
                seen.add(f.file_id)
                unique.append(f)
        return unique

    async def _write(self, generation: int, files: list[SourceObject], digest: str) -> None:
        key = self._key
        # Unfinished generations must not linger if the writer dies mid-way: every key gets a
        # TTL until the generation is complete.
        pending_ttl = REFRESH_LOCK_MS // 1000 + self.grace_seconds
        rows = {
            str(f.file_id): msgspec.json.encode(
                [f.key, f.name, f.size, f.modified.timestamp() if f.modified else None]
            )
            for f in files
        }
        etags = {str(f.file_id): f.etag for f in files if f.etag}
        orders = {sort: _ranks(files, sort) for sort in SORTS}
        ranks = {
            sort: {file_id: rank for rank, file_id in enumerate(ids)}
            for sort, ids in orders.items()
        }
        scan = "".join(
            f"{_searchable(f.name)}\t{f.file_id}\t{f.size}\t"
            + ",".join(str(ranks[sort][f.file_id]) for sort in SORTS)
            + "\n"
            for f in files
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            items = list(rows.items())
            for start in range(0, len(items), _WRITE_BATCH):
                pipe.hset(
                    key(generation, "files"), mapping=dict(items[start : start + _WRITE_BATCH])
                )
            tags = list(etags.items())
            for start in range(0, len(tags), _WRITE_BATCH):
                batch = dict(tags[start : start + _WRITE_BATCH])
                pipe.hset(key(generation, "etags"), mapping=batch)
            pipe.set(key(generation, "scan"), scan)
            for sort in SORTS:
                pairs = [(str(file_id), rank) for file_id, rank in ranks[sort].items()]
                for start in range(0, len(pairs), _WRITE_BATCH):
                    pipe.zadd(
                        key(generation, f"order:{sort}"), dict(pairs[start : start + _WRITE_BATCH])
                    )
            pipe.hset(
                key(generation, "meta"),
                mapping={"built_at": str(time.time()), "digest": digest, "count": len(files)},
            )
            for name in self._keys_of(generation):
                pipe.expire(name, pending_ttl)
            await pipe.execute()
            for name in self._keys_of(generation):
                pipe.persist(name)
            await pipe.execute()

    async def ensure(self) -> int:
        """The current generation; builds the first one here when no worker has yet.

        When another process holds the lock, waits up to FIRST_BUILD_WAIT_SECONDS for its
        generation, then raises IndexUnavailable. A stale index (no refresh for three
        intervals: no worker running) is served as it is while one refresh starts aside.
        """
        generation = await self.current()
        if generation is not None:
            await self._refresh_if_stale(generation)
            return generation
        deadline = time.monotonic() + FIRST_BUILD_WAIT_SECONDS
        while True:
            outcome = await self.refresh()
            if outcome is not None:
                return outcome.generation
            generation = await self.current()
            if generation is not None:
                return generation
            if time.monotonic() > deadline:
                raise IndexUnavailable("the catalogue index is being built; try again shortly")
            await asyncio.sleep(0.1)

    async def _refresh_if_stale(self, generation: int) -> None:
        built = await self.built_at(generation)
        if built is None or time.time() - built < 3 * self.refresh_seconds + 5:
            return
        task = asyncio.create_task(self._quiet_refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quiet_refresh(self) -> None:
        try:
            await self.refresh()
        except (StorageError, RedisError) as exc:
            logger.warning("catalogue index refresh failed: %s", exc)

    # Reading.

    async def exists(self, generation: int) -> bool:
        return bool(await self.redis.exists(self._key(generation, "files")))

    async def page(
        self,
        query: Query,
        offset: int,
        limit: int,
        generation: int,
        admit: Callable[[], Awaitable[None]] | None = None,
    ) -> Page:
        """`limit` files of `query` from `offset` in `generation` (which must exist).

        A filtered query shares the scan of its lower-cased `q` (catalogue_search.py);
        `admit` is awaited before a scan no one has kept runs (it may raise to refuse it).
        """
        file_ids: list[int] = []
        if query.filtered:
            matches, positions = await self.search.positions(
                generation, query.q.lower(), query.sort, query.min_size, query.max_size, admit
            )
            total = len(positions)
            chosen = window(positions, offset, limit, query.order == "desc")
            file_ids = [matches.ids[p] for p in chosen]
        else:
            result = self._key(generation, f"order:{query.sort}")
            total = int(await self.redis.zcard(result))
            if total and offset < total:
                ids = await self.redis.zrange(
                    result, offset, offset + limit - 1, desc=query.order == "desc"
                )
                file_ids = [int(_text(i) or 0) for i in ids]
        found = await self.lookup_in(generation, file_ids)
        return Page(
            items=[found[i] for i in file_ids if i in found],
            total=total,
            generation=generation,
            offset=offset,
        )

    async def lookup_in(self, generation: int, file_ids: list[int]) -> dict[int, IndexedFile]:
        """The indexed files of `file_ids` in `generation`; ids not in it are left out."""
        if not file_ids:
            return {}
        rows = await _done(
            self.redis.hmget(self._key(generation, "files"), [str(i) for i in file_ids])
        )
        return _indexed(file_ids, rows)

    async def lookup(self, file_ids: list[int]) -> dict[int, IndexedFile]:
        """The current generation's files of `file_ids` ({} while there is no index)."""
        if not file_ids:
            return {}
        found = await self._lookup(
            keys=[f"{self.base}:current"], args=[f"{self.base}:g:", *map(str, file_ids)]
        )
        if not found:
            return {}
        rows, etags = found[1 : len(file_ids) + 1], found[len(file_ids) + 1 :]
        return _indexed(file_ids, rows, etags)


def _indexed(
    file_ids: list[int], rows: list[bytes | None], etags: list[bytes | None] | None = None
) -> dict[int, IndexedFile]:
    found: dict[int, IndexedFile] = {}
    for n, (file_id, row) in enumerate(zip(file_ids, rows, strict=True)):
        if row is not None:
            key, name, size, modified = msgspec.json.decode(row)[:4]
            etag = etags[n] if etags else None
            found[file_id] = IndexedFile(file_id, key, name, size, modified, _text(etag) or "")
    return found


async def run_refresher(index: CatalogueIndex) -> None:
    """Refresh `index` every `refresh_seconds` for as long as the task lives (workers run it).

    Every worker runs one; the lock and the generation's `built_at` keep it to about one full
    listing per interval across all of them. Failures are logged and retried next interval.
    """
    interval = index.refresh_seconds
    while True:
        try:
            generation = await index.current()
            built = await index.built_at(generation) if generation is not None else None
            # A little early, so a refresh lands every interval despite the loop's own lag.
            if built is None or time.time() - built >= interval * 0.9:
                await index.refresh()
        except (StorageError, RedisError) as exc:
            logger.warning("catalogue index refresh failed: %s", exc)
        # A check every quarter to half interval (jitter spreads the workers' checks), so a
        # change in the bucket shows within about 1.4 intervals plus one listing.
        await asyncio.sleep(interval * (0.25 + secrets.randbelow(250) / 1000))

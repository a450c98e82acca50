"""Archive reuse: one archive per content, shared by every job that asks for the same thing.

Safe because every archive holds only catalogue files anyone may request (issue 14 item 5);
each job keeps its own id, owner, events, link and download name.

- **Content address.** sha256 of the format version, the archive options (`on_missing`,
  compression level) and the sorted (entry name, key, ETag, size, modified in whole seconds)
  of the files it holds, from the catalogue index or a HEAD: zero bytes read. S3 changes an
  object's ETag whenever its bytes change, so an overwritten file makes a new address. The
  archive lives at `archives/sha256/<address>.zip`.
- **Records.** `<prefix>:archive:<address>` (JSON: key, size, members, bytes, skipped, built_at)
  and the index `<prefix>:archives` (address -> last use, epoch seconds). A job that finds a
  record, and the object behind it, completes at once and marks the use.
- **Single flight.** One build per address at a time: the builder holds
  `<prefix>:archive:<address>:builder` (SET NX, a lease of JOB_LEASE_SECONDS renewed every
  third of it, like a job's lease in leases.py). Others wait for its record; a builder that
  dies stops renewing, the key lapses within one lease and a waiter takes over. Two builders
  at once (one stalled past its lease) write the same bytes to the same key: wasted work,
  never a wrong archive.
- **Expiry from last use.** The sweeper deletes an archive once ARCHIVE_TTL_SECONDS have passed
  since its last use, holding the builder key so no build or reuse of it runs meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.models import OnMissing, SkippedFile
from backend.settings import Settings
from backend.storage import SourceObject

logger = logging.getLogger(__name__)

# Changes whenever the same sources would make different bytes (layout, member metadata).
FORMAT_VERSION = 1
SHARED_PREFIX = "archives/sha256/"
# How often a waiter looks for the builder's result (or its absence).
WAIT_INTERVAL = 0.05
# The counters of `<prefix>:archive_stats`.
BUILT, REUSED, SOURCE_BYTES_READ = "built", "reused", "source_bytes_read"

# KEYS: record, index, builder. ARGV: address, now, token, lease ms. {1, record JSON} when the
# archive exists (its use marked); {2} when the caller now holds the builder lease; {0} when
# someone else holds it. One round trip where a look and a SET NX took two.
_CLAIM = """
local raw = redis.call('GET', KEYS[1])
if raw then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  return {1, raw}
end
if redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) then return {2} end
return {0}
"""
# KEYS: record, index, counters, builder. ARGV: address, record JSON, record TTL s, now,
# BUILT, SOURCE_BYTES_READ, bytes read, builder token ('' = none). Records a finished build,
# counts it, and gives back the builder lease if the caller still holds it: one round trip.
_PUBLISH = """
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
redis.call('HINCRBY', KEYS[3], ARGV[6], ARGV[7])
if ARGV[8] ~= '' and redis.call('GET', KEYS[4]) == ARGV[8] then redis.call('DEL', KEYS[4]) end
return 1
"""
# KEYS: record, index. ARGV: address, now. The record's JSON (and its use marked), or false.
_USE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return raw
"""
# KEYS: record, index. ARGV: address, cutoff. 1 when the record was unused since `cutoff` and
# is now gone (the index entry stays until the object is deleted), else 0.
_FORGET_IF_UNUSED = """
local used = redis.call('ZSCORE', KEYS[2], ARGV[1])
if used and tonumber(used) > tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
# KEYS: lock. ARGV: token, lease ms. Renew (or release, when ms is 0) only our own hold.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then redis.call('DEL', KEYS[1]) else
  redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class SharedArchive(msgspec.Struct, kw_only=True):
    """A built archive and what it holds: `members` files, `bytes_total` bytes of them, and
    the files its build found deleted mid-way (`skipped`)."""

    address: str
    key: str
    size: int
    members: int
    bytes_total: int
    skipped: list[SkippedFile] = msgspec.field(default_factory=list)
    built_at: float = 0.0


_decoder = msgspec.json.Decoder(SharedArchive)


@dataclass(slots=True)
class BuilderLease:
    """A held builder lease: its key, the holder's token, and whether it was given back."""

    key: str
    token: str
    released: bool = False


@dataclass(frozen=True, slots=True)
class Claim:
    """What `ArchiveRegistry.claim` found: the archive (`shared`), or the builder lease this
    caller now holds (`lease`), or neither (someone else is building it)."""

    shared: SharedArchive | None = None
    lease: BuilderLease | None = None


def content_address(
    sources: Sequence[SourceObject],
    names: Sequence[str],
    on_missing: OnMissing,
    compression_level: int = 0,
) -> str:
    """The hex sha256 naming the archive of `sources` under entry `names` with these options."""
    members = sorted(
        # Whole seconds: a listing gives milliseconds, a HEAD's Last-Modified (an HTTP-date)
        # seconds, and the ZIP keeps no finer time (APPNOTE 4.4.6, extra field 0x5455).
        [name, s.key, s.etag, s.size, int(s.modified.timestamp()) if s.modified else ""]
        for s, name in zip(sources, names, strict=True)
    )
    payload = {
        "format": FORMAT_VERSION,
        "on_missing": on_missing,
        "compression_level": compression_level,
        "members": members,
    }
    return hashlib.sha256(msgspec.json.encode(payload)).hexdigest()


def shared_archive_key(address: str) -> str:
    """Where the archive of `address` lives in the results store."""
    return f"{SHARED_PREFIX}{address}.zip"


def address_of_key(key: str) -> str | None:
    """The content address of a shared archive's key, or None for any other key."""
    name = key.removeprefix(SHARED_PREFIX)
    if name == key or not name.endswith(".zip"):
        return None
    address = name.removesuffix(".zip")
    return address if len(address) == 64 and all(c in "0123456789abcdef" for c in address) else None


def registry_for(redis: Redis, settings: Settings) -> ArchiveRegistry:
    """The registry under the settings' key prefix, with builder leases of JOB_LEASE_SECONDS."""
    return ArchiveRegistry(redis, settings.key_prefix, settings.job_lease_seconds)


class ArchiveRegistry:
    """The shared archives' records, builder leases and counters in Redis."""

    def __init__(self, redis: Redis, prefix: str, lease_seconds: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self.index_key = f"{prefix}:archives"
        self.stats_key = f"{prefix}:archive_stats"
        self._use = redis.register_script(_USE)
        self._claim = redis.register_script(_CLAIM)
        self._publish = redis.register_script(_PUBLISH)
        self._forget = redis.register_script(_FORGET_IF_UNUSED)
        self._renew = redis.register_script(_RENEW)

    def record_key(self, address: str) -> str:
        return f"{self.prefix}:archive:{address}"

    def builder_key(self, address: str) -> str:
        return f"{self.prefix}:archive:{address}:builder"

    async def use(self, address: str, now: float | None = None) -> SharedArchive | None:
        """The archive of `address`, its last use set to now; None when there is none."""
        raw = await self._use(
            keys=[self.record_key(address), self.index_key],
            args=[address, repr(now or time.time())],
        )
        return None if raw is None else _decoder.decode(raw)

    async def publish(
        self,
        archive: SharedArchive,
        ttl_seconds: int,
        source_bytes_read: int = 0,
        lease: BuilderLease | None = None,
    ) -> None:
        """Record a finished build (used now), count it (BUILT, SOURCE_BYTES_READ) and give
        back the builder `lease`, in one round trip. The record outlives the sweep that
        deletes it."""
        address = archive.address
        await self._publish(
            keys=[
                self.record_key(address),
                self.index_key,
                self.stats_key,
                self.builder_key(address),
            ],
            args=[
                address,
                msgspec.json.encode(archive),
                2 * ttl_seconds + 3600,
                repr(time.time()),
                BUILT,
                SOURCE_BYTES_READ,
                source_bytes_read,
                lease.token if lease else "",
            ],
        )
        if lease is not None:
            lease.released = True

    @contextlib.asynccontextmanager
    async def claim(self, address: str, holder: str = "") -> AsyncIterator[Claim]:
        """The archive of `address` (its use marked), or else its builder lease for `holder`
        if it is free, kept while inside; one round trip either way."""
        lease = self._new_lease(address, holder)
        found = await self._claim(
            keys=[self.record_key(address), self.index_key, lease.key],
            args=[address, repr(time.time()), lease.token, self.lease_ms],
        )
        if found[0] == 1:
            yield Claim(shared=_decoder.decode(found[1]))
        elif found[0] == 2:
            async with self._holding(lease):
                yield Claim(lease=lease)
        else:
            yield Claim()

    async def last_used(self, address: str) -> float | None:
        score = await self.redis.zscore(self.index_key, address)
        return None if score is None else float(score)

    async def building_now(self, address: str) -> bool:
        """Whether someone holds the builder lease of `address`."""
        return bool(await self.redis.exists(self.builder_key(address)))

    async def builder_of(self, address: str) -> str | None:
        """Who holds the builder lease of `address` (the `holder` given to `lead`), if anyone."""
        value = await self.redis.get(self.builder_key(address))
        return None if value is None else _text(value).rpartition(" ")[0]

    @contextlib.asynccontextmanager
    async def lead(self, address: str, holder: str = "") -> AsyncIterator[BuilderLease | None]:
        """Take the builder lease of `address` for `holder` (a job id, say) if it is free
        (None if not), and keep it while inside."""
        lease = self._new_lease(address, holder)
        if not await self.redis.set(lease.key, lease.token, nx=True, px=self.lease_ms):
            yield None
            return
        async with self._holding(lease):
            yield lease

    def _new_lease(self, address: str, holder: str) -> BuilderLease:
        # The holder is for others to read; the random part makes this hold ours alone.
        return BuilderLease(self.builder_key(address), f"{holder} {secrets.token_hex(16)}")

    @contextlib.asynccontextmanager
    async def _holding(self, lease: BuilderLease) -> AsyncIterator[None]:
        """Renew `lease` while inside; give it back on the way out unless already given."""
        keeper = asyncio.create_task(self._keep(lease.key, lease.token))
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if not lease.released:
                # Shielded: a cancelled build still frees its address at once for a waiter.
                with contextlib.suppress(RedisError):
                    await asyncio.shield(self._renew(keys=[lease.key], args=[lease.token, 0]))

    async def _keep(self, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                if not await self._renew(keys=[key], args=[token, self.lease_ms]):
                    # Someone took over after we stalled; both write the same bytes.
                    logger.warning("lost the builder lease %s; the build goes on", key)
                    return
            except RedisError as exc:
                logger.warning("could not renew the builder lease %s: %s", key, exc)

    async def forget_if_unused(self, address: str, cutoff: float) -> bool:
        """Drop the record of `address` unless it was used after `cutoff`; True if dropped."""
        dropped = await self._forget(
            keys=[self.record_key(address), self.index_key], args=[address, repr(cutoff)]
        )
        return bool(dropped)

    async def unused_since(self, cutoff: float, limit: int = 100) -> list[str]:
        """Addresses last used at or before `cutoff`."""
        found = await self.redis.zrangebyscore(self.index_key, "-inf", cutoff, start=0, num=limit)
        return [a.decode() if isinstance(a, bytes) else a for a in found]

    async def drop_from_index(self, address: str) -> None:
        await self.redis.zrem(self.index_key, address)

    async def count(self, field: str, amount: int = 1) -> None:
        """Add to one of the counters (BUILT, REUSED, SOURCE_BYTES_READ)."""
        # redis-py types hash commands as sync-or-async; the asyncio client's are awaitable.
        await cast("Awaitable[int]", self.redis.hincrby(self.stats_key, field, amount))

    async def stats(self) -> dict[str, int]:
        """The counters: archives built and reused, source bytes read by builds."""
        raw = await cast("Awaitable[dict[Any, Any]]", self.redis.hgetall(self.stats_key))
        return {_text(k): int(v) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

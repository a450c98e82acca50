"""Name search over the catalogue index, shared between every search of the same text.

A search is a case-insensitive substring of the name (the index's `scan` text holds the
lower-cased names). The scan depends on the lower-cased text alone: its matches, with their
sizes and their places in every sort order, are kept per (generation, text) for SEARCH_TTL
seconds in one packed string, and size bounds, sort and order are applied to that afterwards
in the API process. So a client that varies `min_size`, `max_size`, `sort` or `order` costs
Redis one GET of a kept answer, never another scan.

The scan itself runs in slices: one Lua call reads SLICE_BYTES of the scan text (GETRANGE)
and returns the matching lines of that slice, so Redis serves other clients between slices
and no single call holds it for more than a few milliseconds, however many names match.

Packed matches (`g:<n>:m:<digest of text>`, little-endian): count n (u32), then the ids in id
order (u32 × n), their sizes in bytes (u64 × n), and for `name`, `size`, `modified` the
positions (u32 × n, indexes into the first two arrays) in that order. 24 bytes a match.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis

# Bytes of scan text one Lua call reads (about 2,000 names): a millisecond or two of Redis.
SLICE_BYTES = 128 * 1024
SEARCH_TTL_SECONDS = 120
# Decoded match sets and filtered answers an API process keeps (each at most ~2.4 MB and
# ~0.4 MB at 100,000 matches), so the pages after the first cost no Redis work but a GET.
LOCAL_MATCH_SETS = 8
LOCAL_FILTERED = 32
_RANKED_SORTS = ("name", "size", "modified")
# (generation, lower-case text, sort, min_size, max_size)
_Memo = tuple[int, str, str, int | None, int | None]

# KEYS: the generation's scan text. ARGV: lower-case query ("" matches every name), the byte
# offset to start at, how many bytes to read. Lines are `name\tid\tsize\tr1,r2,r3,r4\n`.
# Returns {next offset or -1 at the end, the matching lines' fields after the name}.
_SLICE = r"""
local start, len = tonumber(ARGV[2]), tonumber(ARGV[3])
local text = redis.call('GETRANGE', KEYS[1], start, start + len - 1)
if #text == 0 then return {-1, ''} end
local following = -1
if #text == len then
  -- Stop after the slice's last whole line; the next call starts at the line it cut.
  local back = string.find(string.reverse(text), '\n', 1, true)
  if not back then return redis.error_reply('catalogue scan: a line longer than a slice') end
  local keep = #text - back + 1
  text = string.sub(text, 1, keep)
  following = start + keep
end
local q = ARGV[1]
local out = {}
local pos = 1
while pos <= #text do
  local hit = pos
  if q ~= '' then
    hit = string.find(text, q, pos, true)
    if not hit then break end
  end
  local line_end = string.find(text, '\n', hit, true)
  local tab = string.find(text, '\t', hit, true)
  -- A hit in the name is followed by exactly the line's number fields; a hit inside a
  -- number field is not, and the name before it did not match (find returns the first).
  if tab < line_end and string.find(text, '^%d+\t%d+\t%d+,%d+,%d+,%d+\n', tab + 1) then
    out[#out + 1] = string.sub(text, tab + 1, line_end)
  end
  pos = line_end + 1
end
return {following, table.concat(out)}
"""


@dataclass(frozen=True, slots=True)
class Matches:
    """Files whose name holds a text: ids and sizes in id order, and for each ranked sort
    the positions (into `ids`/`sizes`) in that order."""

    ids: array[int]
    sizes: array[int]
    orders: dict[str, array[int]]

    def positions(self, sort: str) -> range | array[int]:
        return range(len(self.ids)) if sort == "id" else self.orders[sort]

    def pack(self) -> bytes:
        parts = [array("I", [len(self.ids)]), self.ids, self.sizes]
        parts += [self.orders[sort] for sort in _RANKED_SORTS]
        if sys.byteorder == "big":
            parts = [array(part.typecode, part) for part in parts]
            for part in parts:
                part.byteswap()
        return b"".join(part.tobytes() for part in parts)

    @classmethod
    def unpack(cls, raw: bytes) -> Matches:
        def take(typecode: str, start: int, count: int) -> tuple[array[int], int]:
            part = array(typecode)
            end = start + count * part.itemsize
            part.frombytes(raw[start:end])
            if sys.byteorder == "big":
                part.byteswap()
            return part, end

        head, at = take("I", 0, 1)
        n = head[0]
        ids, at = take("I", at, n)
        sizes, at = take("Q", at, n)
        orders = {}
        for sort in _RANKED_SORTS:
            orders[sort], at = take("I", at, n)
        return cls(ids, sizes, orders)

    @classmethod
    def from_lines(cls, text: str) -> Matches:
        """From the scan's fields `id\\tsize\\tr_id,r_name,r_size,r_modified\\n`, in id order."""
        ids, sizes = array("I"), array("Q")
        ranks: dict[str, list[int]] = {sort: [] for sort in _RANKED_SORTS}
        for line in text.splitlines():
            file_id, size, rank_text = line.split("\t")
            ids.append(int(file_id))
            sizes.append(int(size))
            _, by_name, by_size, by_modified = rank_text.split(",")
            ranks["name"].append(int(by_name))
            ranks["size"].append(int(by_size))
            ranks["modified"].append(int(by_modified))
        orders = {
            sort: array("I", sorted(range(len(ids)), key=ranks[sort].__getitem__))
            for sort in _RANKED_SORTS
        }
        return cls(ids, sizes, orders)


def filtered(
    matches: Matches, sort: str, min_size: int | None, max_size: int | None
) -> range | array[int]:
    """Positions of `matches` in `sort` order whose size is within the bounds (inclusive)."""
    positions = matches.positions(sort)
    if min_size is None and max_size is None:
        return positions
    lo = 0 if min_size is None else min_size
    hi = (1 << 64) - 1 if max_size is None else max_size
    sizes = matches.sizes
    if sort == "size":
        # In size order the files within bounds are one run: two binary searches.
        first = bisect_left(positions, lo, key=sizes.__getitem__)
        end = bisect_right(positions, hi, key=sizes.__getitem__)
        return positions[first:end]
    return array("I", [p for p in positions if lo <= sizes[p] <= hi])


class SearchCache:
    """Shared name searches of one index (`base` is its key prefix) in `redis`.

    `admit` (given per search) is awaited before a scan that no one has kept runs, so the
    caller can refuse it (raise) for a client that starts too many.
    """

    def __init__(self, redis: Redis, base: str) -> None:
        self.redis = redis
        self.base = base
        self._slice = redis.register_script(_SLICE)
        self._local: OrderedDict[tuple[int, str], Matches] = OrderedDict()
        self._filtered: OrderedDict[
            tuple[int, str, str, int | None, int | None], range | array[int]
        ]
        self._filtered = OrderedDict()
        self._running: dict[tuple[int, str], asyncio.Future[Matches]] = {}
        # Scans this process ran (tests and benchmarks read it).
        self.scans = 0
        self.slices = 0

    def key(self, generation: int, text: str) -> str:
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return f"{self.base}:g:{generation}:m:{digest}"

    async def positions(
        self,
        generation: int,
        text: str,
        sort: str,
        min_size: int | None,
        max_size: int | None,
        admit: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[Matches, range | array[int]]:
        """The matches of lower-case `text` and the positions of those within the size
        bounds in `sort` order."""
        matches = await self.matches(generation, text, admit)
        memo = (generation, text, sort, min_size, max_size)
        found = self._filtered.get(memo)
        if found is None:
            found = filtered(matches, sort, min_size, max_size)
            self._filtered[memo] = found
            while len(self._filtered) > LOCAL_FILTERED:
                self._filtered.popitem(last=False)
        else:
            self._filtered.move_to_end(memo)
        return matches, found

    async def matches(
        self, generation: int, text: str, admit: Callable[[], Awaitable[None]] | None = None
    ) -> Matches:
        name = (generation, text)
        local = self._local.get(name)
        if local is not None:
            self._local.move_to_end(name)
            return local
        running = self._running.get(name)
        if running is not None:
            # Share a load already under way; if it failed (another client's search refused,
            # say), this one tries for itself.
            with contextlib.suppress(Exception):
                return await asyncio.shield(running)
        future: asyncio.Future[Matches] = asyncio.get_running_loop().create_future()
        self._running[name] = future
        try:
            result = await self._load(generation, text, admit)
            future.set_result(result)
        except BaseException as exc:
            future.set_exception(exc)
            # Nobody else may be waiting; mark the exception as retrieved.
            future.exception()
            raise
        finally:
            if self._running.get(name) is future:
                del self._running[name]
        self._local[name] = result
        while len(self._local) > LOCAL_MATCH_SETS:
            self._local.popitem(last=False)
        return result

    async def _load(
        self, generation: int, text: str, admit: Callable[[], Awaitable[None]] | None
    ) -> Matches:
        key = self.key(generation, text)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.expire(key, SEARCH_TTL_SECONDS)
            raw, _ = await pipe.execute()
        if raw is not None:
            return Matches.unpack(raw)
        if admit is not None:
            await admit()
        # Parsing 100,000 matches takes a while; a thread leaves the event loop to others.
        matches = await asyncio.to_thread(Matches.from_lines, await self._scan(generation, text))
        await self.redis.set(key, matches.pack(), ex=SEARCH_TTL_SECONDS)
        return matches

    async def _scan(self, generation: int, text: str) -> str:
        scan_key = f"{self.base}:g:{generation}:scan"
        parts: list[str] = []
        offset = 0
        self.scans += 1
        while offset >= 0:
            following, found = await self._slice(keys=[scan_key], args=[text, offset, SLICE_BYTES])
            self.slices += 1
            parts.append(found.decode() if isinstance(found, bytes) else found)
            offset = int(following)
        return "".join(parts)


def window(positions: range | array[int], offset: int, limit: int, descending: bool) -> list[int]:
    """`limit` positions from `offset`, counted from the end when `descending`."""
    total = len(positions)
    if descending:
        first = max(total - offset - limit, 0)
        return list(reversed(positions[first : max(total - offset, 0)]))
    return list(positions[offset : offset + limit])

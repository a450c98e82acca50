"""Where a job's files are: the index names each file's key and version, a HEAD confirms it.

A job packs the files as they are when it runs, not as the catalogue index last saw them, and
finds them without listing the source bucket:

- the index in Redis (catalogue_index.py) maps file ids to keys, names, sizes and the ETags
  they had when listed;
- unverified (`verify=False`), a file is taken as the index saw it, with no S3 request: the
  archive then reads it with `If-Match` on that ETag (RFC 9110 §13.1.1), so a file changed,
  renamed or deleted since the index was built fails its read (412 or 404) instead of being
  packed as it was, and the job resolves again, verified;
- verified (the default), one HEAD per file (S3 HeadObject, no bytes read) gives its current
  size, last change and ETag, and finds a file deleted since the index was built, by name;
- ids the index does not know (added since its last refresh, renamed, or no index yet) are
  looked up in the bucket itself (Catalogue.resolve: a prefix listing each, or one listing).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from backend.catalogue_index import CatalogueIndex, IndexedFile
from backend.storage import NoSuchObject, ObjectInfo, SourceObject, Storage

# HEADs in flight at once for one job: enough to hide latency, few enough for any S3.
HEAD_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Resolved:
    """The files found, in the order asked; the ids not found; the last known name of each;
    and whether any found file was taken from the index unconfirmed (no HEAD, no listing)."""

    found: list[SourceObject]
    missing: list[int]
    names: dict[int, str] = field(default_factory=dict)
    unconfirmed: bool = False


async def resolve_sources(
    index: CatalogueIndex, storage: Storage, file_ids: list[int], *, verify: bool = True
) -> Resolved:
    """The source object of each of `file_ids`: its current version, or with `verify=False`
    the version the index holds where it has one (StorageError when S3 fails)."""
    indexed = await index.lookup(file_ids)
    slots = asyncio.Semaphore(HEAD_CONCURRENCY)

    async def current(entry: IndexedFile) -> SourceObject | None:
        if not verify and entry.etag:
            stamp = entry.modified
            modified = None if stamp is None else datetime.fromtimestamp(stamp, UTC)
            info = ObjectInfo(entry.key, entry.size, modified, entry.etag)
        else:
            async with slots:
                try:
                    info = await storage.stat_source(entry.key)
                except NoSuchObject:
                    return None
        return SourceObject(
            file_id=entry.file_id,
            name=entry.name,
            size=info.size,
            key=entry.key,
            modified=info.modified,
            etag=info.etag,
        )

    heads = await asyncio.gather(*(current(indexed[i]) for i in file_ids if i in indexed))
    by_id = {source.file_id: source for source in heads if source is not None}
    # Not indexed, or gone from the key the index knows (perhaps under another name now).
    unknown = [i for i in file_ids if i not in by_id]
    if unknown:
        listed, _ = await storage.resolve(unknown)
        for source in listed:
            by_id.setdefault(source.file_id, source)
    return Resolved(
        found=[by_id[i] for i in file_ids if i in by_id],
        missing=[i for i in file_ids if i not in by_id],
        names={i: entry.name for i, entry in indexed.items()},
        unconfirmed=not verify and any(entry.etag for entry in indexed.values()),
    )

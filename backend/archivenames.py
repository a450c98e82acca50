"""What an archive is called when it is saved: a name people recognise, not a job id.

One rule, used by the presigned link's `Content-Disposition` filename and by the job card, so
the card names the file the browser saves:

- a name the person typed (`name` of the request): that name, with `.zip` added;
- otherwise from the files inside: the first included file's stem, whitespace as `-`, and
  `-and-<N>-more` for the other N files (`board-minutes-and-2-more.zip`);
- when no file name is at hand (catalogue unavailable, every file missing):
  `longhaul-<first 8 hex digits of the job id>.zip`.

Both kinds lose leading dots (a saved ".name.zip" would be hidden on Linux and macOS) and go
through `entry_names` (backend/entrynames.py), so a name saves as one flat file on Linux, macOS
and Windows alike.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Protocol

from redis.exceptions import RedisError

from backend.entrynames import entry_names
from backend.models import JobRecord
from backend.services import Services
from backend.storage import StorageError

NAME_MAX_CHARS = 100
"""Longest name a request may give (`name`), in characters; it is shown on one card line."""

# A derived stem longer than this is cut: the name is for recognising, not for reading.
_STEM_MAX_CHARS = 60
_SUFFIX = ".zip"
# Separators would make a folder, controls are invisible, and both mislead about the name.
_SEPARATORS = frozenset("/\\")
_WHITESPACE = re.compile(r"\s+")


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def name_problem(value: str) -> str | None:
    """Why `value` cannot name an archive (a sentence for a 400 naming `name`), or None.

    Rules: 1 to NAME_MAX_CHARS characters, not only whitespace, no "/" or "\\" (path
    separators) and no control or format characters (Unicode categories Cc and Cf, which hide
    text or reorder it, UAX #9).
    """
    if not value.strip():
        return "must not be empty or only spaces"
    if len(value) > NAME_MAX_CHARS:
        return f"must be at most {NAME_MAX_CHARS} characters, got {len(value)}"
    if any(ch in _SEPARATORS for ch in value):
        return 'must not contain "/" or "\\"'
    if any(unicodedata.category(ch) in {"Cc", "Cf"} for ch in value):
        return "must not contain control characters"
    return None


def fallback_filename(job_id: str) -> str:
    return f"longhaul-{job_id[:8]}{_SUFFIX}"


def archive_filename(
    job_id: str, typed: str | None, first_name: str | None, file_count: int
) -> str:
    """The file name of a job's archive (see the module docstring for the rule).

    `first_name` is the catalogue name of the first file in the archive and `file_count` the
    number of files in it; `typed` the name given with the request, if any.
    """
    if typed:
        stem = typed.strip()
        if stem.casefold().endswith(_SUFFIX):
            stem = stem[: -len(_SUFFIX)]
        # A leading dot would hide the saved file on Linux and macOS.
        stem = stem.strip(". ")
    elif first_name:
        stem = _WHITESPACE.sub("-", _stem(first_name).strip())[:_STEM_MAX_CHARS].strip("-. ")
        if stem and file_count > 1:
            stem = f"{stem}-and-{file_count - 1}-more"
    else:
        stem = ""
    safe = entry_names([f"{stem}{_SUFFIX}"])[0] if stem else None
    # A stem of dots alone cleans to nothing usable.
    if safe is None or safe == _SUFFIX:
        return fallback_filename(job_id)
    return safe


def included_ids(record: JobRecord) -> list[int]:
    """The files the archive holds (or will): asked for, less those found missing."""
    skipped = {f.file_id for f in record.skipped} | set(record.skipped_file_ids)
    return [f for f in record.file_ids if f not in skipped]


def card_filename(record: JobRecord, names: Mapping[int, _Named]) -> str:
    """The archive's file name from a catalogue already at hand (the page's)."""
    included = included_ids(record)
    first = next((names[f].name for f in included if f in names), None)
    return archive_filename(record.job_id, record.name, first, len(included))


async def filename_of(services: Services, record: JobRecord) -> str:
    """The archive's file name, looking up the first included file's name.

    Only without a typed name: one Redis read of the catalogue index (a few ids, in case the
    first was deleted since), else a small listing of the bucket before the first index;
    when neither can answer, the fallback name rather than no link.
    """
    included = included_ids(record)
    if record.name or not included:
        return archive_filename(record.job_id, record.name, None, len(included))
    first: str | None = None
    try:
        found = await services.catalogue.lookup(included[:3])
        first = next((found[f].name for f in included[:3] if f in found), None)
        if first is None:
            sources, _ = await services.storage.resolve(included[:1])
            first = sources[0].name if sources else None
    except (RedisError, StorageError):
        first = None
    return archive_filename(record.job_id, None, first, len(included))


def _stem(name: str) -> str:
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name

"""Is a downloaded archive sound? It opens, every entry's CRC checks, the count is right."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from backend.client.errors import VerificationFailed


@dataclass(frozen=True)
class Verified:
    entries: int
    size: int
    sha256: str


def verify_archive(path: Path, expected_entries: int | None = None) -> Verified:
    """Check the ZIP at `path`; raises VerificationFailed naming the first problem found."""
    try:
        with zipfile.ZipFile(path) as archive:
            # testzip reads every entry to its end, so CRC and ZIP64 sizes are both checked.
            bad = archive.testzip()
            entries = len(archive.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise VerificationFailed(f"{path} is not a readable ZIP archive: {exc}") from exc
    if bad is not None:
        raise VerificationFailed(f"{path}: entry {bad!r} fails its CRC check")
    if expected_entries is not None and entries != expected_entries:
        raise VerificationFailed(
            f"{path} holds {entries} entries, the job reported {expected_entries} files"
        )
    return Verified(entries=entries, size=path.stat().st_size, sha256=sha256_of(path))


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of the file at `path`, read a MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()

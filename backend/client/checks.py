"""Arguments the client refuses before any request: job ids and download paths.

Both raise InvalidArgument (a ClientError and a ValueError) naming the value, so a bad id never
becomes another URL and a long job is never built for a file that cannot be saved.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from backend.client.errors import InvalidArgument

# The server's job ids: uuid4().hex, 32 lowercase hex characters (backend/downloads.py
# is_job_id). Repeated here because the client installs without the server's modules.
JOB_ID_LENGTH = 32
_HEX = frozenset("0123456789abcdef")


def check_job_id(job_id: str) -> str:
    """`job_id` itself if it is 32 lowercase hex characters; InvalidArgument otherwise."""
    if not isinstance(job_id, str) or len(job_id) != JOB_ID_LENGTH or not _HEX.issuperset(job_id):
        raise InvalidArgument(f"job_id: {job_id!r} is not a job id (32 lowercase hex characters)")
    return job_id


def part_path(dest: Path) -> Path:
    """Where an archive is written until it is whole: `<dest>.part`, beside `dest`."""
    return dest.with_name(dest.name + ".part")


def check_destination(dest: Path) -> None:
    """Refuse a download path the archive must not be renamed over.

    `dest` and `<dest>.part` may be missing or regular files (an existing file is replaced
    when the archive is whole); a directory, device, FIFO or socket there is refused, since
    renaming a file over `/dev/null` replaces the device node. Missing parent directories are
    created at the first byte, but an ancestor that exists must be a directory.
    Raises InvalidArgument naming the path.
    """
    for candidate in (dest, part_path(dest)):
        kind = _kind(candidate)
        if kind not in (None, "regular file"):
            raise InvalidArgument(f"path: {str(candidate)!r} is a {kind}, not a regular file")
    for ancestor in dest.absolute().parents:
        kind = _kind(ancestor)
        if kind == "directory":
            return
        if kind is not None:
            raise InvalidArgument(f"path: {str(ancestor)!r} (in {str(dest)!r}) is not a directory")


def _kind(path: Path) -> str | None:
    """What is at `path`, following symbolic links; None when nothing is."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None  # under a file, nothing can be: the ancestors' check names that file
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"

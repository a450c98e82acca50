"""Archive entry names and the throttle: pure rules of the archive builder."""

from __future__ import annotations

import time

from backend.archive import Throttle, entry_names
from backend.storage import SourceObject, parse_catalogue_key


def source(name: str, file_id: int = 1) -> SourceObject:
    return SourceObject(file_id=file_id, name=name, size=0, key=f"{file_id}/{name}")


def test_entry_names_are_unique_case_insensitively() -> None:
    names = entry_names([source("a.txt"), source("A.txt"), source("a.txt"), source("b")])
    assert names == ["a.txt", "A (2).txt", "a (3).txt", "b"]


def test_entry_names_cannot_escape_the_extraction_folder() -> None:
    names = entry_names(
        [
            source("../../etc/passwd"),
            source("/abs/path.txt"),
            source("..\\win.ini"),
            source("bell\x07.txt"),
            source(".."),
        ]
    )
    assert names == ["etc_passwd", "abs_path.txt", "win.ini", "bell_.txt", None]


def test_catalogue_keys_are_id_slash_name() -> None:
    assert parse_catalogue_key("10001/report.pdf") == (10001, "report.pdf")
    assert parse_catalogue_key("10001/Übersicht & Budget.xlsx") == (
        10001,
        "Übersicht & Budget.xlsx",
    )
    for key in ("report.pdf", "0/x", "abc/x", "12/", "12/a/b", "-1/x"):
        assert parse_catalogue_key(key) is None


async def test_throttle_paces_a_stream_to_its_rate() -> None:
    throttle = Throttle(200_000)
    started = time.monotonic()
    for _ in range(10):
        await throttle.pace(10_000)
    assert time.monotonic() - started >= 0.45  # 100 kB at 200 kB/s


async def test_a_zero_throttle_never_waits() -> None:
    throttle = Throttle(0)
    started = time.monotonic()
    for _ in range(1000):
        await throttle.pace(10_000_000)
    assert time.monotonic() - started < 0.5

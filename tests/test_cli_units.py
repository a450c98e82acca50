"""The CLI's pure parts: the progress line, the archive check, how events update the view."""

from __future__ import annotations

import io
import json
import os
import socket
import zipfile
from pathlib import Path
from typing import Any

import pytest

from backend.client.cli import main
from backend.client.commands import _describe
from backend.client.errors import VerificationFailed
from backend.client.follow import JobProgress
from backend.client.progress import ProgressBar, Rate, format_iec_size, human_duration
from backend.client.verify import verify_archive
from backend.jobevents import JobEventData, decode_event
from backend.models import JobState, JobStatus, SkippedFile, SkipReason


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def make_zip(path: Path, entries: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path.read_bytes()


def test_progress_line_shows_percent_files_bytes_speed_and_eta() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, "building", width=10)
    bar.update(0, 4 * 1024 * 1024, percent=0, files=(0, 3), at=100.0)
    bar.update(2 * 1024 * 1024, 4 * 1024 * 1024, percent=50, files=(1, 3), at=101.0)
    lines = out.getvalue().splitlines()
    assert lines[0] == "building [----------]   0%  0/3 files  0 B/4.0 MiB"
    assert lines[1] == (
        "building [#####-----]  50%  1/3 files  2.0 MiB/4.0 MiB  2.0 MiB/s  ETA 0:01"
    )


def test_plain_output_writes_a_line_per_ten_percent_not_per_update() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, "download")
    for done in range(0, 1001):
        bar.update(done, 1000)
    assert len(out.getvalue().splitlines()) == 11  # 0 %, 10 %, … 100 %


def test_terminal_output_redraws_one_line_in_place() -> None:
    out = Terminal()
    bar = ProgressBar(out, "download")
    bar.update(500, 1000)
    bar.message("resuming the download at 500 bytes")
    bar.update(1000, 1000)
    bar.close()
    text = out.getvalue()
    assert text.startswith("\rdownload [")
    assert "\r\x1b[Kresuming the download at 500 bytes\n" in text
    last = text.rsplit("\r", 1)[-1]
    assert last.startswith("download [########################] 100%  1000 B/1000 B")
    assert last.endswith("\x1b[K\n")


def test_quiet_bar_writes_nothing() -> None:
    out = Terminal()
    bar = ProgressBar(out, "download", enabled=False)
    bar.update(1, 2)
    bar.message("hello")
    bar.close()
    assert out.getvalue() == ""


def test_speed_forgets_old_samples_and_restarts() -> None:
    rate = Rate()
    rate.add(0, 0.0)
    rate.add(1000, 1.0)
    assert rate.per_second() == 1000
    rate.add(1000, 20.0)  # a stall: the window now only sees the flat part
    assert rate.per_second() == 0
    rate.add(10, 21.0)  # a restart from zero drops the history
    assert rate.per_second() is None


def test_human_units() -> None:
    assert format_iec_size(1023) == "1023 B"
    assert format_iec_size(1536) == "1.5 KiB"
    assert format_iec_size(5 * 1024**4) == "5120.0 GiB"
    assert human_duration(59.6) == "1:00"
    assert human_duration(3725) == "1:02:05"


def decoded(event: str, data: dict[str, Any]) -> JobEventData:
    """`data` as the client decodes it off the wire."""
    found = decode_event(event, json.dumps(data))
    assert found is not None
    return found


PROGRESS = {
    "status": "processing",
    "progress": 40,
    "processed_files": 1,
    "total_files": 3,
    "bytes_processed": 40,
    "bytes_total": 100,
    "attempt": 1,
    "max_attempts": 4,
}


def test_events_update_the_view_and_carry_their_server_time() -> None:
    view = JobProgress("j")
    view.apply_event(decoded("progress", PROGRESS), "1795917627124-0")
    assert (view.status, view.progress, view.processed_files, view.at) == (
        "processing",
        40,
        1,
        1795917627.124,
    )
    view.apply_event(decoded("retrying", PROGRESS | {"error": "S3 down", "retry_in": 2.0}))
    assert (view.error, view.retry_in, view.at) == ("S3 down", 2.0, None)
    view.apply_event(
        decoded(
            "completed",
            {
                "download_url": "http://x",
                "total_files": 3,
                "archive_size": 300,
                "skipped_file_ids": [],
            },
        )
    )
    assert (view.status, view.progress, view.error) == ("ready", 100, None)
    view.apply_event(decoded("cancelled", {"status": "cancelled"}))
    assert view.status == "cancelled"


def test_sound_archive_is_verified(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    make_zip(path, {"a.txt": b"alpha" * 1000, "b.bin": b"\x00" * 10})
    verified = verify_archive(path, expected_entries=2)
    assert verified.entries == 2
    assert verified.size == path.stat().st_size
    assert len(verified.sha256) == 64


def test_flipped_byte_fails_the_crc_check(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    data = bytearray(make_zip(path, {"a.txt": b"alpha" * 1000}))
    data[100] ^= 0xFF  # inside the stored entry's data
    path.write_bytes(bytes(data))
    with pytest.raises(VerificationFailed, match=r"'a\.txt' fails its CRC check"):
        verify_archive(path)


def test_truncated_archive_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(make_zip(path, {"a.txt": b"alpha" * 1000})[:-30])
    with pytest.raises(VerificationFailed, match="is not a readable ZIP archive"):
        verify_archive(path)


def test_wrong_entry_count_fails(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    make_zip(path, {"a.txt": b"a"})
    with pytest.raises(VerificationFailed, match="holds 1 entries, the job reported 2 files"):
        verify_archive(path, expected_entries=2)


def test_status_names_each_skipped_file_with_its_reason() -> None:
    status = JobStatus(
        job_id="a" * 32,
        status=JobState.READY,
        progress=100,
        total_files=1,
        processed_files=1,
        skipped_file_ids=[7, 9],
        skipped=[
            SkippedFile(file_id=7, name="invoices-q3.zip", reason=SkipReason.NOT_FOUND),
            SkippedFile(file_id=9, reason=SkipReason.NOT_FOUND),
        ],
    )
    assert "skipped   invoices-q3.zip (not_found), file 9 (not_found)" in _describe(status)


def free_url() -> str:
    """A URL nothing listens at: a command that sent a request would exit 3 (unreachable)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["directory", "FIFO"])
def test_download_to_a_directory_or_fifo_exits_2_naming_it_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    target = tmp_path / "target"
    if kind == "directory":
        target.mkdir()
    else:
        os.mkfifo(target)  # stands in for -o /dev/null, whose node a rename would replace
    for job in (["5"], ["--job", "0" * 32]):
        code = main(["--api", free_url(), "--json", "download", *job, "-o", str(target)])
        body = json.loads(capsys.readouterr().out)
        assert code == 2
        assert body == {
            "ok": False,
            "error": f"path: {str(target)!r} is a {kind}, not a regular file",
            "exit_code": 2,
        }
    assert not (tmp_path / "target.part").exists()
    assert target.is_dir() if kind == "directory" else target.is_fifo()


def test_download_under_a_file_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"keep")
    out = a_file / "sub" / "out.zip"
    code = main(["--api", free_url(), "download", "5", "-o", str(out)])
    assert code == 2
    assert f"path: {str(a_file)!r} (in {str(out)!r}) is not a directory" in capsys.readouterr().err
    assert a_file.read_bytes() == b"keep"

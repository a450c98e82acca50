"""What each `longhaul` command does, and how it reports to people (text) and scripts (JSON)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import msgspec

from backend.client.checks import check_destination
from backend.client.errors import ApiError, ClientError, ExitCode, JobFailed
from backend.client.fetch import Fetched
from backend.client.follow import JobProgress, OnUpdate
from backend.client.library import Client
from backend.client.progress import ProgressBar, format_iec_size
from backend.client.verify import verify_archive
from backend.models import JobStatus


@dataclass
class Output:
    """Results go to stdout (JSON with `--json`); progress and errors go to stderr."""

    as_json: bool = False
    quiet: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def result(self, human: str, data: Any) -> None:
        if self.as_json:
            self.out.write(json.dumps(data, ensure_ascii=False) + "\n")
        elif human:
            self.out.write(human + "\n")
        self.out.flush()

    def failure(self, message: str, code: ExitCode, **data: Any) -> ExitCode:
        self.err.write(f"longhaul: {message}\n")
        self.err.flush()
        if self.as_json:
            self.result("", {"ok": False, "error": message, "exit_code": int(code), **data})
        return code

    def note(self, text: str) -> None:
        if not self.quiet:
            self.err.write(text + "\n")
            self.err.flush()

    def bar(self, label: str) -> ProgressBar:
        return ProgressBar(self.err, label, enabled=not self.quiet)


def _builtins(status: JobStatus) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(status)
    return data


def files(client: Client, output: Output) -> ExitCode:
    catalogue = client.files()
    lines = [
        f"{item.file_id:>8}  {format_iec_size(item.size):>10}  {item.name}" for item in catalogue
    ]
    output.result("\n".join(lines), msgspec.to_builtins(catalogue))
    return ExitCode.OK


def status(client: Client, output: Output, job_id: str) -> ExitCode:
    """Print a job's status. Exit 0 whatever the state: the question was answered."""
    current = client.status(job_id)
    output.result(_describe(current), _builtins(current))
    return ExitCode.OK


def cancel(client: Client, output: Output, job_id: str) -> ExitCode:
    try:
        current = client.cancel(job_id)
    except ApiError as exc:
        if exc.status_code == 409:
            return output.failure(exc.detail, ExitCode.JOB_FAILED, job_id=job_id)
        raise
    output.result(f"job {job_id} cancelled", {"ok": True, **_builtins(current)})
    return ExitCode.OK


def _describe(current: JobStatus) -> str:
    lines = [
        f"job       {current.job_id}",
        f"status    {current.status.value}",
        f"progress  {current.progress}%  {current.processed_files}/{current.total_files} files  "
        f"{format_iec_size(current.bytes_processed)}/{format_iec_size(current.bytes_total)}",
    ]
    if current.attempt:
        lines.append(f"attempt   {current.attempt}/{current.max_attempts}")
    if current.skipped:
        left_out = (f"{f.name or f'file {f.file_id}'} ({f.reason.value})" for f in current.skipped)
        lines.append(f"skipped   {', '.join(left_out)}")
    elif current.skipped_file_ids:  # a server from before `skipped`
        lines.append(f"skipped   {', '.join(map(str, current.skipped_file_ids))} (not found)")
    if current.error or current.last_error:
        lines.append(f"error     {current.error or current.last_error}")
    if current.download_url:
        lines.append(f"download  {current.download_url}")
    return "\n".join(lines)


def retry(client: Client, output: Output, job_id: str) -> ExitCode:
    """Start an ended job again; exit 1 (the API's sentence) if it has not ended unready."""
    try:
        current = client.retry(job_id)
    except ApiError as exc:
        if exc.status_code == 409:
            return output.failure(exc.detail, ExitCode.JOB_FAILED, job_id=job_id)
        raise
    output.result(
        f"job {current.job_id} started (retry of {job_id})", {"ok": True, **_builtins(current)}
    )
    return ExitCode.OK


def jobs(client: Client, output: Output, states: list[str], limit: int | None) -> ExitCode:
    """The caller's jobs, newest first (every page, or the newest `limit`)."""
    found = []
    for job in client.list_jobs(states, page_size=min(limit or 100, 100)):
        found.append(job)
        if limit is not None and len(found) >= limit:
            break
    lines = [
        f"{job.job_id}  {job.status.value:<10} {job.progress:>3}%  "
        f"{job.total_files:>4} files  {format_iec_size(job.bytes_total):>10}"
        + (f"  retry of {job.retry_of}" if job.retry_of else "")
        for job in found
    ]
    output.result("\n".join(lines), [_builtins(job) for job in found])
    return ExitCode.OK


@dataclass
class DownloadArgs:
    file_ids: list[int]
    job_id: str | None
    dest: Path | None
    use_sse: bool = True
    verify: bool = True
    idempotency_key: str | None = None
    poll_interval: float = 2.0


def download(client: Client, output: Output, request: DownloadArgs) -> ExitCode:
    """Start (or join) a job, follow it to its end, fetch the archive and verify it.

    A `dest` that is a directory, device, FIFO or socket is refused (exit 2) before any job
    starts; the default name, known once the job is, is checked before following it.
    """
    if request.dest is not None:
        check_destination(request.dest)
    if request.job_id is not None:
        job_id = request.job_id
        client.status(job_id)  # an unknown job fails here, before any waiting
    else:
        job_id = client.start(request.file_ids, request.idempotency_key).job_id
    try:
        if request.job_id is None:
            output.note(f"job {job_id} started")
        return _follow_and_fetch(client, output, request, job_id)
    except KeyboardInterrupt:
        return output.failure(
            f"interrupted; job {job_id} goes on: `longhaul download --job {job_id}` resumes",
            ExitCode.INTERRUPTED,
            job_id=job_id,
        )


def _follow_and_fetch(
    client: Client, output: Output, request: DownloadArgs, job_id: str
) -> ExitCode:
    dest = request.dest or Path(f"longhaul-{job_id[:8]}.zip")
    check_destination(dest)
    bar = output.bar("building")
    try:
        followed = client.follow(
            job_id,
            _job_display(bar),
            use_sse=request.use_sse,
            poll_interval=request.poll_interval,
            on_note=bar.message,
        )
    finally:
        bar.close()
    final = followed.status
    summary: dict[str, Any] = {
        "job_id": job_id,
        "status": final.status.value,
        "follow": {"mode": followed.mode, "reconnects": followed.reconnects},
        "skipped_file_ids": final.skipped_file_ids,
    }
    if final.status.value != "ready" or not final.download_url:
        return output.failure(str(JobFailed(final)), ExitCode.JOB_FAILED, **summary)
    fetched = _fetch(client, output, job_id, final.download_url, dest)
    summary |= {"output": str(dest), "size": fetched.size, "resumes": fetched.resumes}
    if request.verify:
        verified = verify_archive(dest, expected_entries=final.total_files)
        summary |= {"entries": verified.entries, "sha256": verified.sha256, "verified": True}
    else:
        summary["verified"] = False
    checked = f", {summary['entries']} files verified" if request.verify else ""
    output.result(
        f"saved {dest} ({format_iec_size(fetched.size)}{checked})", {"ok": True, **summary}
    )
    return ExitCode.OK


def _job_display(bar: ProgressBar) -> OnUpdate:
    seen: dict[str, Any] = {"status": None, "attempt": 0}

    def show(view: JobProgress) -> None:
        if view.retry_in is not None and view.attempt != seen["attempt"]:
            bar.message(
                f"attempt {view.attempt}/{view.max_attempts} failed ({view.error}); "
                f"retrying in {view.retry_in:g}s"
            )
            seen["attempt"] = view.attempt
        note = "" if view.status == "processing" else view.status
        if view.waiting_for_worker:
            note = "waiting for a worker"
        bar.update(
            view.bytes_processed,
            view.bytes_total,
            percent=view.progress,
            files=(view.processed_files, view.total_files),
            note=note,
            at=view.at,
        )

    return show


def _fetch(client: Client, output: Output, job_id: str, first_url: str, dest: Path) -> Fetched:
    bar = output.bar("download")
    try:
        return client.fetch(job_id, dest, first_url, on_bytes=bar.update, on_note=bar.message)
    finally:
        bar.close()


def report(output: Output, exc: ClientError) -> ExitCode:
    return output.failure(str(exc), exc.exit_code)

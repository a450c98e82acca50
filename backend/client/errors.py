"""What can go wrong on the client side, and the exit code each failure gives scripts."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend.models import JobStatus


class ExitCode(enum.IntEnum):
    OK = 0
    # The job ended failed, cancelled or expired (or `cancel` found it already ended).
    JOB_FAILED = 1
    # Bad arguments, or the API refused the request (4xx: unknown job, bad ids, bad token).
    USAGE = 2
    # The API or the storage could not be reached, or kept answering 5xx.
    UNREACHABLE = 3
    # The archive arrived but is not a sound ZIP with the expected entries.
    VERIFICATION_FAILED = 4
    # The output file could not be written (permissions, full disk).
    LOCAL_IO = 5
    INTERRUPTED = 130


class ClientError(Exception):
    """A failure the CLI reports in one sentence and turns into an exit code."""

    exit_code = ExitCode.UNREACHABLE


class ApiError(ClientError):
    """The API answered with an error: `status_code`, `detail` (the body's sentence naming
    the problem, e.g. "file_ids: duplicate ids [3]") and `extra` (the body's details, or None).
    """

    def __init__(self, status_code: int, detail: str, extra: Any = None) -> None:
        super().__init__(f"{detail} (HTTP {status_code})")
        self.status_code = status_code
        self.detail = detail
        self.extra = extra

    @property
    def exit_code(self) -> ExitCode:  # type: ignore[override]
        return ExitCode.UNREACHABLE if self.status_code >= 500 else ExitCode.USAGE


class InvalidArgument(ClientError, ValueError):
    """An argument refused before any request: a job id that is not 32 lowercase hex
    characters, or a download path that is not a regular file. Also a ValueError."""

    exit_code = ExitCode.USAGE


class Unreachable(ClientError):
    """No answer at all: connection refused, reset or timed out, after retries."""

    exit_code = ExitCode.UNREACHABLE


class FetchFailed(ClientError):
    """The archive could not be downloaded, even after resuming."""

    exit_code = ExitCode.UNREACHABLE


class VerificationFailed(ClientError):
    exit_code = ExitCode.VERIFICATION_FAILED


class JobFailed(ClientError):
    """The job ended without an archive: `status` is its final JobStatus (failed, cancelled
    or expired, with `error`)."""

    exit_code = ExitCode.JOB_FAILED

    def __init__(self, status: JobStatus) -> None:
        state = status.status.value
        if state == "failed":
            message = f"job {status.job_id} failed: {status.error or status.last_error}"
        elif state == "ready":
            message = f"job {status.job_id} is ready but has no download link"
        else:
            message = f"job {status.job_id} was {state}"
        super().__init__(message)
        self.status = status

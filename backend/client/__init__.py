"""The Longhaul client: a typed Python library of the JSON API, and the `longhaul` command.

    from backend.client import Client, AsyncClient, ApiError

`Client(base_url, token).download(file_ids, path, progress=...)` starts a job, follows it
(SSE resumed with Last-Event-ID, polling when streams cannot get through), saves the archive
(resuming a cut transfer with Range) and verifies it; `AsyncClient` is its async twin. See
backend/client/library.py. Needs msgspec, httpx and httpx-sse: none of the server's packages.
"""

from backend.client.errors import (
    ApiError,
    ClientError,
    FetchFailed,
    InvalidArgument,
    JobFailed,
    Unreachable,
    VerificationFailed,
)
from backend.client.follow import Followed, JobProgress
from backend.client.library import AsyncClient, Client, Downloaded
from backend.models import CatalogueFile, JobPage, JobState, JobStatus

__all__ = [
    "ApiError",
    "AsyncClient",
    "CatalogueFile",
    "Client",
    "ClientError",
    "Downloaded",
    "FetchFailed",
    "Followed",
    "InvalidArgument",
    "JobFailed",
    "JobPage",
    "JobProgress",
    "JobState",
    "JobStatus",
    "Unreachable",
    "VerificationFailed",
]

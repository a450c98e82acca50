"""The Python client of the Longhaul API: `AsyncClient`, and `Client`, its synchronous twin.

    from backend.client import Client

    with Client("http://127.0.0.1:8000", token=None) as longhaul:
        done = longhaul.download([10009, 10012], "small.zip", progress=print)
        print(done.path, done.sha256)

Every method of `Client` is the same method of `AsyncClient`, run to its end on an event loop
the client owns (so call `Client` from synchronous code; in a coroutine, await `AsyncClient`).

Errors: ApiError (the API refused: `status_code`, `detail` naming the field, `extra`),
Unreachable (no answer after retries), JobFailed (the job ended failed, cancelled or expired:
`status`), FetchFailed (the archive could not be downloaded), VerificationFailed (it is not a
sound ZIP of the job's files), InvalidArgument (a job id or download path refused before any
request; also a ValueError). All are ClientError. Needs msgspec, httpx and httpx-sse only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from backend.client.api import USER_AGENT, Transport, job_path, status_path
from backend.client.checks import check_destination, check_job_id, part_path
from backend.client.errors import ClientError, JobFailed
from backend.client.fetch import Fetched, OnBytes, fetch
from backend.client.follow import Followed, Follower, JobProgress, OnNote, OnUpdate
from backend.client.verify import sha256_of, verify_archive
from backend.models import CatalogueFile, CataloguePage, JobPage, JobState, JobStatus

T = TypeVar("T")

__all__ = ["AsyncClient", "Client", "Downloaded", "JobProgress"]


@dataclass(frozen=True)
class Downloaded:
    """An archive saved by `download`: where, how big (bytes), its SHA-256 (hex) and the
    number of entries (None when not verified), the job's final status and how it went."""

    job_id: str
    path: Path
    size: int
    sha256: str
    entries: int | None
    status: JobStatus
    followed: Followed
    # How many times a cut transfer was resumed with a Range request.
    resumes: int


def _ignore(*args: object) -> None:
    return None


class AsyncClient:
    """The API at `base_url` (e.g. "http://127.0.0.1:8000"), as `token`'s owner if given.

    Retries 429/502/503/504 (honouring Retry-After) and dropped connections `attempts` times.
    Use as `async with AsyncClient(...) as client:` or call `aclose()`.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        stream_idle_timeout: float = 60.0,
        attempts: int = 4,
    ) -> None:
        self.transport = Transport(base_url, token, timeout, stream_idle_timeout, attempts)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def files(self, page_size: int = 500) -> list[CatalogueFile]:
        """The catalogue: every file a job can ask for (`file_id`, `name`, `size` in bytes),
        read `page_size` files a request, following `next_cursor` to the last page."""
        found: list[CatalogueFile] = []
        params: dict[str, Any] = {"limit": page_size}
        while True:
            page = await self.transport.call("GET", "/v1/files", CataloguePage, params=params)
            found.extend(page.items)
            if page.next_cursor is None:
                return found
            params = {"limit": page_size, "cursor": page.next_cursor}

    async def start(self, file_ids: list[int], idempotency_key: str | None = None) -> JobStatus:
        """Start a job building one ZIP of `file_ids`; its status, queued.

        Sends an Idempotency-Key (a fresh one unless given), so the retries of a POST whose
        answer was lost never make two jobs, and repeating a call with the same key gives the
        same job back.
        """
        key = idempotency_key or _new_key()
        return await self.transport.call(
            "POST",
            "/v1/download/async",
            JobStatus,
            json={"file_ids": file_ids},
            headers={"Idempotency-Key": key},
        )

    async def status(self, job_id: str) -> JobStatus:
        """The job's status now (`download_url` freshly presigned once it is ready)."""
        return await self.transport.call("GET", status_path(job_id), JobStatus)

    async def cancel(self, job_id: str) -> JobStatus:
        """Cancel a queued or running job; ApiError 409 if it has already ended."""
        return await self.transport.call("DELETE", job_path("/v1/download/{}", job_id), JobStatus)

    async def retry(self, job_id: str, idempotency_key: str | None = None) -> JobStatus:
        """Start a failed, cancelled or expired job again: the new job (`retry_of` = job_id).

        ApiError 409 if the job is queued, running or ready. Idempotent as `start` is.
        """
        path = job_path("/v1/download/{}/retry", job_id)
        key = idempotency_key or _new_key()
        return await self.transport.call("POST", path, JobStatus, headers={"Idempotency-Key": key})

    async def jobs_page(
        self,
        status: Iterable[JobState | str] | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of the caller's jobs, newest first (needs a token): `jobs` and
        `next_cursor` (None on the last page). ApiError 400 names a bad `status`/`limit`."""
        params: list[tuple[str, str | int]] = [("limit", limit)]
        params += [("status", str(getattr(s, "value", s))) for s in status or ()]
        if cursor is not None:
            params.append(("cursor", cursor))
        return await self.transport.call("GET", "/v1/downloads", JobPage, params=params)

    async def list_jobs(
        self, status: Iterable[JobState | str] | None = None, page_size: int = 20
    ) -> AsyncIterator[JobStatus]:
        """Every job of the caller, newest first, fetching a page at a time as it goes."""
        wanted = list(status or ())
        cursor: str | None = None
        while True:
            page = await self.jobs_page(wanted, page_size, cursor)
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def follow(
        self,
        job_id: str,
        progress: OnUpdate | None = None,
        *,
        use_sse: bool = True,
        poll_interval: float = 2.0,
        on_note: OnNote | None = None,
    ) -> Followed:
        """Wait for the job to end, calling `progress(JobProgress)` at each change.

        Follows the event stream, reconnecting with Last-Event-ID after a drop (so no event
        is missed); after three streams in a row that bring nothing, or an error answer in
        place of a stream (a proxy that blocks SSE), polls the status every `poll_interval`
        seconds. Returns the final status and how it was followed; `on_note` hears of the
        switch to polling.
        """
        follower = Follower(
            self.transport,
            on_update=progress or _ignore,
            on_note=on_note or _ignore,
            poll_interval=poll_interval,
        )
        return await follower.follow(job_id, use_sse=use_sse)

    async def fetch(
        self,
        job_id: str,
        path: str | Path,
        download_url: str | None = None,
        on_bytes: OnBytes | None = None,
        on_note: OnNote | None = None,
    ) -> Fetched:
        """Save a ready job's archive at `path` (through `<path>.part`, renamed when whole).

        A cut transfer resumes with `Range: bytes=<size>-` from a freshly presigned URL;
        an archive whose ETag changed starts over. `on_bytes(done, total)` reports bytes.
        FetchFailed after six attempts in a row that add nothing. InvalidArgument, before any
        request, for a bad job id or a `path` that is a directory, device, FIFO or socket
        (an existing regular file is replaced).
        """
        check_job_id(job_id)
        dest = Path(path)
        check_destination(dest)
        first = download_url or (await self.status(job_id)).download_url
        if not first:
            raise JobFailed(await self.status(job_id))
        note = on_note or _ignore

        async def url_for(attempt: int) -> str:
            if attempt == 0:
                return first
            note(f"resuming the download at {part_path(dest).stat().st_size} bytes")
            try:
                return (await self.status(job_id)).download_url or first
            except ClientError:
                return first  # the API is away; the link we have may still be valid

        timeout = httpx.Timeout(30.0, read=60.0)
        # A client of its own: the API's bearer token must never travel to the storage server.
        async with httpx.AsyncClient(
            timeout=timeout, follow_redirects=True, headers={"User-Agent": USER_AGENT}
        ) as storage:
            return await fetch(storage, url_for, dest, on_bytes=on_bytes or _ignore)

    async def download(
        self,
        file_ids: list[int] | None,
        path: str | Path,
        progress: OnUpdate | None = None,
        *,
        job_id: str | None = None,
        transfer: OnBytes | None = None,
        verify: bool = True,
        use_sse: bool = True,
        poll_interval: float = 2.0,
        idempotency_key: str | None = None,
    ) -> Downloaded:
        """Start a job of `file_ids` (or join `job_id`), follow it, save its archive at
        `path` and check it: the ZIP opens, every CRC holds, one entry per file.

        `progress(JobProgress)` hears of the job, `transfer(done, total)` of the bytes saved.
        Raises JobFailed when the job ends without an archive; InvalidArgument (a ValueError),
        before any job is started, for a bad `job_id` or a `path` that is a directory, device,
        FIFO or socket, or lies under a file (an existing regular file is replaced; missing
        parent directories are created).
        """
        check_destination(Path(path))
        if job_id is not None:
            check_job_id(job_id)
        else:
            if not file_ids:
                raise ValueError("download needs file_ids or job_id")
            job_id = (await self.start(file_ids, idempotency_key)).job_id
        followed = await self.follow(job_id, progress, use_sse=use_sse, poll_interval=poll_interval)
        final = followed.status
        if final.status is not JobState.READY or not final.download_url:
            raise JobFailed(final)
        fetched = await self.fetch(job_id, path, final.download_url, transfer)
        entries: int | None = None
        if verify:
            verified = verify_archive(fetched.path, expected_entries=final.total_files)
            digest, entries = verified.sha256, verified.entries
        else:
            digest = sha256_of(fetched.path)
        return Downloaded(
            job_id, fetched.path, fetched.size, digest, entries, final, followed, fetched.resumes
        )


class Client:
    """The synchronous twin of AsyncClient: the same methods, the same arguments, answers
    returned instead of awaited. Not for use inside a running event loop (await
    AsyncClient there). Use as `with Client(...) as client:` or call `close()`.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        stream_idle_timeout: float = 60.0,
        attempts: int = 4,
    ) -> None:
        self._runner = asyncio.Runner()
        self.aio = AsyncClient(
            base_url,
            token,
            timeout=timeout,
            stream_idle_timeout=stream_idle_timeout,
            attempts=attempts,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._run(self.aio.aclose())
        finally:
            self._runner.close()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            # Ctrl-C cancels the work and surfaces here as KeyboardInterrupt (asyncio.Runner).
            return self._runner.run(work)
        work.close()
        raise RuntimeError(
            "Client cannot run inside a running event loop; await AsyncClient's methods there"
        )

    def files(self) -> list[CatalogueFile]:
        return self._run(self.aio.files())

    def start(self, file_ids: list[int], idempotency_key: str | None = None) -> JobStatus:
        return self._run(self.aio.start(file_ids, idempotency_key))

    def status(self, job_id: str) -> JobStatus:
        return self._run(self.aio.status(job_id))

    def cancel(self, job_id: str) -> JobStatus:
        return self._run(self.aio.cancel(job_id))

    def retry(self, job_id: str, idempotency_key: str | None = None) -> JobStatus:
        return self._run(self.aio.retry(job_id, idempotency_key))

    def jobs_page(
        self,
        status: Iterable[JobState | str] | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> JobPage:
        return self._run(self.aio.jobs_page(status, limit, cursor))

    def list_jobs(
        self, status: Iterable[JobState | str] | None = None, page_size: int = 20
    ) -> Iterator[JobStatus]:
        wanted = list(status or ())
        cursor: str | None = None
        while True:
            page = self.jobs_page(wanted, page_size, cursor)
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def follow(
        self,
        job_id: str,
        progress: OnUpdate | None = None,
        *,
        use_sse: bool = True,
        poll_interval: float = 2.0,
        on_note: OnNote | None = None,
    ) -> Followed:
        return self._run(
            self.aio.follow(
                job_id, progress, use_sse=use_sse, poll_interval=poll_interval, on_note=on_note
            )
        )

    def fetch(
        self,
        job_id: str,
        path: str | Path,
        download_url: str | None = None,
        on_bytes: OnBytes | None = None,
        on_note: OnNote | None = None,
    ) -> Fetched:
        return self._run(self.aio.fetch(job_id, path, download_url, on_bytes, on_note))

    def download(
        self,
        file_ids: list[int] | None,
        path: str | Path,
        progress: OnUpdate | None = None,
        *,
        job_id: str | None = None,
        transfer: OnBytes | None = None,
        verify: bool = True,
        use_sse: bool = True,
        poll_interval: float = 2.0,
        idempotency_key: str | None = None,
    ) -> Downloaded:
        return self._run(
            self.aio.download(
                file_ids,
                path,
                progress,
                job_id=job_id,
                transfer=transfer,
                verify=verify,
                use_sse=use_sse,
                poll_interval=poll_interval,
                idempotency_key=idempotency_key,
            )
        )


# The twins' methods share their documentation.
for _name in ("files", "start", "status", "cancel", "retry", "jobs_page", "list_jobs", "follow",
              "fetch", "download"):  # fmt: skip
    getattr(Client, _name).__doc__ = getattr(AsyncClient, _name).__doc__


def _new_key() -> str:
    return uuid.uuid4().hex

"""The Python client library (backend.client.Client and AsyncClient) against a real API,
worker, Redis and S3 server, reached through proxies that cut or block chosen responses."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import stat
import uuid
from pathlib import Path

import jwt
import pytest

from backend import devstack
from backend.client import (
    ApiError,
    AsyncClient,
    Client,
    Downloaded,
    InvalidArgument,
    JobFailed,
    JobProgress,
    JobState,
    Unreachable,
)
from tests.cli_fixtures import (
    MIB,
    CliStack,
    Fault,
    cli_stack_fixture,  # noqa: F401 (provides the `cli_stack` fixture)
    complete_event_ids,
)
from tests.helpers import zip_digests
from tests.stack import CATALOGUE_BY_ID


def expected_digests(file_ids: list[int]) -> dict[str, str]:
    return {CATALOGUE_BY_ID[i].name: CATALOGUE_BY_ID[i].sha256 for i in file_ids}


def token_for(stack: CliStack) -> str:
    subject = f"library-{uuid.uuid4().hex[:12]}"
    return jwt.encode({"sub": subject}, stack.env["JWT_SECRET"], algorithm="HS256")


def assert_saved(done: Downloaded, path: Path, asked: list[int]) -> None:
    assert done.path == path
    assert done.status.status is JobState.READY
    assert done.entries == len(asked)
    data = path.read_bytes()
    assert done.size == len(data)
    assert done.sha256 == hashlib.sha256(data).hexdigest()
    assert zip_digests(data) == expected_digests(asked)
    assert not path.with_name(path.name + ".part").exists()


async def test_sync_download_resumes_a_cut_stream_and_a_cut_transfer(
    cli_stack: CliStack, tmp_path: Path
) -> None:
    cli_stack.api_proxy.arm(Fault("/subscribe/", cut_after=600))
    cli_stack.s3_proxy.arm(Fault("/archives/", cut_after=MIB))
    asked = [8, 2, 3]
    path = tmp_path / "sync.zip"
    seen: list[JobProgress] = []
    bytes_seen: list[int] = []

    def work() -> Downloaded:
        with Client(cli_stack.api_url, token_for(cli_stack)) as client:
            return client.download(
                asked,
                path,
                progress=lambda view: seen.append(JobProgress(**vars(view))),
                transfer=lambda done, total: bytes_seen.append(done),
            )

    # The proxies serve on this test's event loop; the synchronous client runs beside it.
    done = await asyncio.to_thread(work)
    assert_saved(done, path, asked)
    assert done.followed.mode == "sse" and done.followed.reconnects == 1
    assert done.resumes == 1
    streams = cli_stack.api_proxy.requests_to(f"/subscribe/{done.job_id}")
    assert len(streams) == 2
    assert streams[1].headers["last-event-id"] == complete_event_ids(streams[0].response)[-1]
    # The archive may be shared with other jobs; the name of the job's files is in its link.
    gets = cli_stack.s3_proxy.requests_to("foxtrot-and-2-more.zip")
    assert [g.status_code for g in gets] == [200, 206]
    assert gets[1].headers["range"] == f"bytes={MIB}-"
    assert all("authorization" not in g.headers for g in gets)
    assert seen[-1].status is JobState.READY and seen[-1].progress == 100
    assert [view.progress for view in seen] == sorted(view.progress for view in seen)
    assert bytes_seen[-1] == done.size


async def test_async_download_falls_back_to_polling_when_streams_are_blocked(
    cli_stack: CliStack, tmp_path: Path
) -> None:
    blocked = cli_stack.api_proxy.arm(Fault("/subscribe/", status=502, times=None))
    cli_stack.s3_proxy.arm(Fault("/archives/", cut_after=512 * 1024))
    asked = [2, 4]
    path = tmp_path / "async.zip"
    statuses: list[JobState] = []
    try:
        async with AsyncClient(cli_stack.api_url) as client:
            done = await client.download(
                asked, path, lambda view: statuses.append(view.status), poll_interval=0.2
            )
    finally:
        blocked.times = 0
    assert_saved(done, path, asked)
    assert done.followed.mode == "poll"
    assert done.resumes == 1
    assert statuses[-1] is JobState.READY
    assert len(cli_stack.api_proxy.requests_to(f"/status/{done.job_id}")) >= 3


async def test_async_list_retry_cancel_and_status(cli_stack: CliStack) -> None:
    async with AsyncClient(cli_stack.api_url, token_for(cli_stack)) as client:
        failed = await client.start([999_999])
        followed = await client.follow(failed.job_id)
        assert followed.status.status is JobState.FAILED
        retried = await client.retry(failed.job_id)
        assert retried.retry_of == failed.job_id
        running = await client.start([8, 2])
        cancelled = await client.cancel(running.job_id)
        assert cancelled.status is JobState.CANCELLED
        with pytest.raises(ApiError) as refused:
            await client.cancel(running.job_id)
        assert refused.value.status_code == 409
        assert refused.value.extra == {"status": "cancelled"}

        listed = [job.job_id async for job in client.list_jobs(page_size=2)]
        assert listed == [running.job_id, retried.job_id, failed.job_id]
        only = [job.job_id async for job in client.list_jobs(["cancelled"])]
        assert only == [running.job_id]
        page = await client.jobs_page(limit=1)
        assert [job.job_id for job in page.jobs] == [running.job_id]
        assert page.next_cursor is not None
        assert (await client.status(failed.job_id)).error == followed.status.error


async def test_errors_are_typed_and_name_the_field(cli_stack: CliStack, tmp_path: Path) -> None:
    def work() -> None:
        with Client(cli_stack.direct_url) as client:
            with pytest.raises(ApiError) as duplicate:
                client.start([3, 3])
            assert duplicate.value.status_code == 400
            assert duplicate.value.detail == "file_ids: duplicate ids [3]"
            assert duplicate.value.extra == [{"key": "file_ids", "message": "duplicate ids [3]"}]
            with pytest.raises(ApiError) as unknown:
                client.status("0" * 32)
            assert unknown.value.status_code == 404
            with pytest.raises(ApiError) as anonymous:
                list(client.list_jobs())
            assert anonymous.value.status_code == 401
            assert anonymous.value.detail.startswith("Authorization: listing jobs needs")
            with pytest.raises(JobFailed) as failed:
                client.download([999_999], tmp_path / "never.zip")
            assert failed.value.status.status is JobState.FAILED
            assert "none of the requested files exist" in str(failed.value)
            assert not (tmp_path / "never.zip").exists()
            assert {f.file_id for f in client.files()} >= set(CATALOGUE_BY_ID)

    await asyncio.to_thread(work)
    async with AsyncClient(cli_stack.direct_url, token_for(cli_stack)) as named:
        with pytest.raises(ApiError) as bad_status:
            await named.jobs_page(["done"])
        assert bad_status.value.status_code == 400
        assert bad_status.value.detail.startswith("status: 'done' is not a job status")
    nowhere = f"http://127.0.0.1:{devstack.free_port()}"
    async with AsyncClient(nowhere, attempts=1) as client:
        with pytest.raises(Unreachable, match=f"cannot reach {nowhere}"):
            await client.files()


async def test_sync_client_refuses_to_run_inside_an_event_loop(cli_stack: CliStack) -> None:
    client = Client(cli_stack.direct_url)
    with pytest.raises(RuntimeError, match="running event loop"):
        client.files()
    await asyncio.to_thread(client.close)


async def test_download_refuses_a_path_that_is_not_a_regular_file_before_starting_a_job(
    cli_stack: CliStack, tmp_path: Path
) -> None:
    # A FIFO and a socket stand in for /dev/null: renaming the archive over a special file
    # would replace it with a regular one (as root, the system's /dev/null).
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "sock"))
    folder = tmp_path / "folder"
    folder.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"keep")
    refused = {
        fifo: "is a FIFO, not a regular file",
        tmp_path / "sock": "is a socket, not a regular file",
        folder: "is a directory, not a regular file",
        a_file / "out.zip": f"path: {str(a_file)!r} (in {str(a_file / 'out.zip')!r}) is not a",
    }
    try:
        async with AsyncClient(cli_stack.direct_url, token_for(cli_stack)) as client:
            for path, message in refused.items():
                with pytest.raises(InvalidArgument, match=re.escape(message)) as caught:
                    await client.download([5], path)
                assert isinstance(caught.value, ValueError)
                assert not path.with_name(path.name + ".part").exists()
            with pytest.raises(InvalidArgument, match="is a directory"):
                await client.fetch("0" * 32, folder)
            # Nothing was started for the refused paths.
            assert [job async for job in client.list_jobs()] == []

            # An existing regular file is replaced, and missing directories are made.
            done = await client.download([5], a_file)
            assert_saved(done, a_file, [5])
            nested = tmp_path / "new" / "dir" / "out.zip"
            assert_saved(await client.download([5], nested), nested, [5])
    finally:
        listener.close()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert stat.S_ISSOCK(os.stat(tmp_path / "sock").st_mode)
    assert folder.is_dir() and list(folder.iterdir()) == []


@pytest.mark.parametrize(
    "job_id", ["../../files", "abc?x=1", "a" * 31 + "/", "A" * 32, "0" * 31, "0" * 33, ""]
)
async def test_job_ids_that_are_not_32_lowercase_hex_characters_are_refused_unsent(
    tmp_path: Path, job_id: str
) -> None:
    # Before the fix, status("../../files") asked GET /v1/files and status("abc?x=1") asked
    # about job "abc". Nothing listens at `nowhere`: a request that went out would raise
    # Unreachable, not InvalidArgument.
    nowhere = f"http://127.0.0.1:{devstack.free_port()}"
    async with AsyncClient(nowhere, attempts=1) as client:
        calls = [
            client.status(job_id),
            client.cancel(job_id),
            client.retry(job_id),
            client.follow(job_id),
            client.follow(job_id, use_sse=False),
            client.fetch(job_id, tmp_path / "out.zip", f"{nowhere}/archive.zip"),
            client.download(None, tmp_path / "out.zip", job_id=job_id),
        ]
        for call in calls:
            with pytest.raises(InvalidArgument) as caught:
                await call
            assert isinstance(caught.value, ValueError)
            assert str(caught.value) == (
                f"job_id: {job_id!r} is not a job id (32 lowercase hex characters)"
            )
    assert not (tmp_path / "out.zip").exists()

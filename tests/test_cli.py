"""The `longhaul` command, run as a real process against a real API, worker, Redis and S3."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import jwt

from backend import devstack
from tests.cli_fixtures import (
    CliStack,
    Fault,
    cli_stack_fixture,  # noqa: F401 (provides the `cli_stack` fixture)
    complete_event_ids,
    finish,
    run_cli,
    start_cli,
)
from tests.helpers import start, wait_for_status, zip_digests
from tests.stack import CATALOGUE, CATALOGUE_BY_ID


def expected_digests(file_ids: list[int]) -> dict[str, str]:
    return {CATALOGUE_BY_ID[i].name: CATALOGUE_BY_ID[i].sha256 for i in file_ids}


async def test_files_lists_the_catalogue(http: httpx.AsyncClient) -> None:
    listed = await run_cli(str(http.base_url), "files", "--json")
    assert listed.code == 0, listed.stderr
    assert {(f["file_id"], f["name"], f["size"]) for f in listed.json()} == {
        (f.file_id, f.name, len(f.data)) for f in CATALOGUE
    }
    text = await run_cli(str(http.base_url), "files")
    assert text.code == 0
    assert "délta résumé.pdf" in text.stdout
    assert len(text.stdout.splitlines()) == len(CATALOGUE)


async def test_download_saves_a_verified_archive_of_the_files(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    asked = [1, 4, 6, 7]
    out = tmp_path / "nested" / "out.zip"
    run = await run_cli(str(http.base_url), "--json", "download", *map(str, asked), "-o", str(out))
    assert run.code == 0, run.stderr
    summary = run.json()
    assert summary["ok"] is True
    assert summary["status"] == "ready"
    assert summary["verified"] is True
    assert summary["entries"] == 4
    assert summary["output"] == str(out)
    assert summary["size"] == out.stat().st_size
    assert summary["follow"] == {"mode": "sse", "reconnects": 0}
    assert not out.with_name("out.zip.part").exists()
    digests = zip_digests(out.read_bytes())
    # Two sources are both named alpha.txt; the archive keeps both under distinct names.
    assert sorted(digests.values()) == sorted(CATALOGUE_BY_ID[i].sha256 for i in asked)
    assert f"job {summary['job_id']} started" in run.stderr
    assert "100%" in run.stderr


async def test_download_by_polling_when_asked(http: httpx.AsyncClient, tmp_path: Path) -> None:
    out = tmp_path / "polled.zip"
    run = await run_cli(
        str(http.base_url), "download", "2", "5", "--poll", "--poll-interval", "0.2", "-o", str(out)
    )
    assert run.code == 0, run.stderr
    assert zip_digests(out.read_bytes()) == expected_digests([2, 5])
    assert run.stdout.startswith(f"saved {out}")


async def test_failed_job_exits_1_with_the_error(http: httpx.AsyncClient, tmp_path: Path) -> None:
    run = await run_cli(str(http.base_url), "download", "999999", "--json", cwd=tmp_path)
    assert run.code == 1
    body = run.json()
    assert body["ok"] is False
    assert body["status"] == "failed"
    assert "none of the requested files exist" in body["error"]
    assert "none of the requested files exist" in run.stderr
    assert os.listdir(tmp_path) == []


async def test_refused_request_exits_2_with_the_api_detail(http: httpx.AsyncClient) -> None:
    run = await run_cli(str(http.base_url), "download", "3", "3", "--json")
    assert run.code == 2
    assert run.json() == {
        "ok": False,
        "error": "file_ids: duplicate ids [3] (HTTP 400)",
        "exit_code": 2,
    }
    bad_token = await run_cli(str(http.base_url), "--token", "not-a-jwt", "status", "0" * 32)
    assert bad_token.code == 2
    assert "Authorization: invalid bearer token" in bad_token.stderr
    unknown = await run_cli(str(http.base_url), "status", "0" * 32)
    assert unknown.code == 2
    assert f"no job with id '{'0' * 32}'" in unknown.stderr


async def test_bad_arguments_exit_2_before_any_request() -> None:
    nowhere = f"http://127.0.0.1:{devstack.free_port()}"
    for args in (["download"], ["download", "x1"], ["status", "nope"], ["download", "0"]):
        run = await run_cli(nowhere, *args)
        assert run.code == 2, args
        assert "usage: longhaul" in run.stderr
    both = await run_cli(nowhere, "download", "1", "--job", "a" * 32)
    assert both.code == 2
    assert "one of the two" in both.stderr


async def test_unreachable_server_exits_3() -> None:
    nowhere = f"http://127.0.0.1:{devstack.free_port()}"
    run = await run_cli(nowhere, "files", "--json")
    assert run.code == 3
    assert run.json()["exit_code"] == 3
    assert f"cannot reach {nowhere}" in run.stderr


async def test_status_and_cancel_of_a_running_job(cli_stack: CliStack, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=cli_stack.direct_url, timeout=30) as http:
        job_id = (await start(http, [8, 2, 3, 4, 1]))["job_id"]
        follower = await start_cli(
            cli_stack.api_url, "download", "--job", job_id, "--json", "-o", str(tmp_path / "x.zip")
        )
        await wait_for_status(http, job_id, {"processing"})
        status = await run_cli(cli_stack.api_url, "status", job_id, "--json")
        assert status.code == 0
        assert status.json()["job_id"] == job_id
        assert status.json()["status"] == "processing"

        cancelled = await run_cli(cli_stack.api_url, "cancel", job_id, "--json")
        assert cancelled.code == 0, cancelled.stderr
        assert cancelled.json()["status"] == "cancelled"

        followed = await finish(follower)
        assert followed.code == 1
        assert followed.json()["status"] == "cancelled"
        assert f"job {job_id} was cancelled" in followed.stderr
        assert not (tmp_path / "x.zip").exists()

        again = await run_cli(cli_stack.api_url, "cancel", job_id)
        assert again.code == 1
        assert "already cancelled" in again.stderr
        text = await run_cli(cli_stack.api_url, "status", job_id)
        assert text.code == 0
        assert "status    cancelled" in text.stdout


async def test_dropped_stream_resumes_with_last_event_id(
    cli_stack: CliStack, tmp_path: Path
) -> None:
    # The first event stream is cut after its first few events, mid-job.
    cli_stack.api_proxy.arm(Fault("/subscribe/", cut_after=600))
    out = tmp_path / "resumed.zip"
    asked = [8, 2, 3, 5]
    run = await run_cli(cli_stack.api_url, "download", *map(str, asked), "-o", str(out), "--json")
    assert run.code == 0, run.stderr
    summary = run.json()
    assert summary["follow"] == {"mode": "sse", "reconnects": 1}
    assert zip_digests(out.read_bytes()) == expected_digests(asked)

    streams = cli_stack.api_proxy.requests_to(f"/subscribe/{summary['job_id']}")
    assert len(streams) == 2
    first, second = streams
    seen = complete_event_ids(first.response)
    assert seen, first.response
    assert "last-event-id" not in first.headers
    # Exactly after the last event that arrived whole: nothing missed, nothing twice.
    assert second.headers["last-event-id"] == seen[-1]
    assert seen[-1] not in complete_event_ids(second.response)
    assert b"event: completed" in second.response


async def test_interrupted_download_resumes_with_a_range_request(
    cli_stack: CliStack, tmp_path: Path
) -> None:
    cli_stack.s3_proxy.arm(Fault("/archives/", cut_after=1024 * 1024))
    out = tmp_path / "ranged.zip"
    asked = [2, 8]
    token = jwt.encode({"sub": "cli-user"}, cli_stack.env["JWT_SECRET"], algorithm="HS256")
    run = await run_cli(
        cli_stack.api_url,
        *("download", *map(str, asked), "-o", str(out), "--json", "--token", token),
    )
    assert run.code == 0, run.stderr
    summary = run.json()
    assert summary["resumes"] == 1
    assert zip_digests(out.read_bytes()) == expected_digests(asked)

    # The archive may be shared with other jobs; the name of the job's files is in its link.
    gets = cli_stack.s3_proxy.requests_to("bravo-and-1-more.zip")
    assert [g.status_code for g in gets] == [200, 206]
    assert "range" not in gets[0].headers
    assert gets[1].headers["range"] == f"bytes={1024 * 1024}-"
    # The token is the API's business: it never travels to the storage server.
    assert all("authorization" not in g.headers for g in gets)
    job = cli_stack.api_proxy.requests_to("/v1/download/async")[-1]
    assert job.headers["authorization"] == f"Bearer {token}"
    assert "resuming the download" in run.stderr


async def test_stream_blocked_by_a_proxy_falls_back_to_polling(
    cli_stack: CliStack, tmp_path: Path
) -> None:
    blocked = cli_stack.api_proxy.arm(Fault("/subscribe/", status=502, times=None))
    try:
        out = tmp_path / "polled.zip"
        run = await run_cli(
            cli_stack.api_url,
            "download",
            "3",
            "1",
            "--poll-interval",
            "0.2",
            "-o",
            str(out),
            "--json",
        )
    finally:
        blocked.times = 0
    assert run.code == 0, run.stderr
    summary = run.json()
    assert summary["follow"]["mode"] == "poll"
    assert zip_digests(out.read_bytes()) == expected_digests([3, 1])
    polls = cli_stack.api_proxy.requests_to(f"/status/{summary['job_id']}")
    assert len(polls) >= 3  # several while the throttled job ran


async def test_streams_that_bring_nothing_give_way_to_polling(
    cli_stack: CliStack, tmp_path: Path
) -> None:
    # Every stream is cut right after its head, as by a proxy that drops long requests.
    silent = cli_stack.api_proxy.arm(Fault("/subscribe/", cut_after=0, times=None))
    try:
        out = tmp_path / "after-silence.zip"
        run = await run_cli(
            cli_stack.api_url, "download", "3", "--poll-interval", "0.2", "-o", str(out), "--json"
        )
    finally:
        silent.times = 0
    assert run.code == 0, run.stderr
    summary = run.json()
    assert summary["follow"] == {"mode": "poll", "reconnects": 2}
    assert len(cli_stack.api_proxy.requests_to(f"/subscribe/{summary['job_id']}")) == 3
    assert "the event stream is not getting through; polling every 0.2 s" in run.stderr
    assert zip_digests(out.read_bytes()) == expected_digests([3])


async def test_corrupted_archive_fails_verification_with_exit_4(
    cli_stack: CliStack, tmp_path: Path
) -> None:
    cli_stack.s3_proxy.arm(Fault("/archives/", corrupt_at=300_000))
    out = tmp_path / "bad.zip"
    run = await run_cli(cli_stack.api_url, "download", "2", "-o", str(out), "--json")
    assert run.code == 4
    body = run.json()
    assert body["exit_code"] == 4
    assert "fails its CRC check" in body["error"] or "not a readable ZIP" in body["error"]


async def test_repeated_download_with_the_same_idempotency_key_is_one_job(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    args = ["download", "5", "--idempotency-key", "cli-test-key-1", "--json", "-q"]
    first = await run_cli(str(http.base_url), *args, "-o", str(tmp_path / "a.zip"))
    second = await run_cli(str(http.base_url), *args, "-o", str(tmp_path / "b.zip"))
    assert first.code == second.code == 0
    assert first.json()["job_id"] == second.json()["job_id"]
    assert first.stderr == second.stderr == ""
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


async def test_interrupt_says_how_to_pick_the_job_up(cli_stack: CliStack, tmp_path: Path) -> None:
    process = await start_cli(
        cli_stack.api_url, "download", "8", "4", "-o", str(tmp_path / "i.zip")
    )
    assert process.stderr is not None
    started = (await process.stderr.readline()).decode()
    job_id = started.split()[1]
    process.send_signal(2)  # SIGINT, as Ctrl-C
    run = await finish(process)
    assert run.code == 130
    assert f"`longhaul download --job {job_id}` resumes" in run.stderr
    resumed = await run_cli(
        cli_stack.api_url, "download", "--job", job_id, "-o", str(tmp_path / "i.zip"), "-q"
    )
    assert resumed.code == 0, resumed.stderr
    assert zip_digests((tmp_path / "i.zip").read_bytes()) == expected_digests([8, 4])


async def test_retry_and_jobs_commands(http: httpx.AsyncClient, tmp_path: Path) -> None:
    base = str(http.base_url)
    anonymous = await run_cli(base, "jobs")
    assert anonymous.code == 2
    assert "listing jobs needs a bearer token" in anonymous.stderr
    token = jwt.encode({"sub": f"cli-jobs-{tmp_path.name}"}, "test-jwt-secret-of-at-least-32-bytes")
    failed = await run_cli(base, "--token", token, "download", "999999", "--json", cwd=tmp_path)
    assert failed.code == 1
    job_id = failed.json()["job_id"]
    retried = await run_cli(base, "--token", token, "retry", job_id, "--json")
    assert retried.code == 0, retried.stderr
    new_id = retried.json()["job_id"]
    assert retried.json()["retry_of"] == job_id
    listed = await run_cli(base, "--token", token, "jobs", "--json")
    assert listed.code == 0, listed.stderr
    assert [job["job_id"] for job in listed.json()] == [new_id, job_id]
    text = await run_cli(base, "--token", token, "jobs", "--status", "failed", "--limit", "1")
    assert text.code == 0
    assert text.stdout.startswith(f"{job_id}  failed") or text.stdout.startswith(new_id)
    assert len(text.stdout.splitlines()) == 1
    bad = await run_cli(base, "--token", token, "jobs", "--status", "done")
    assert bad.code == 2
    assert "status: 'done' is not a job status" in bad.stderr
    ready = await start(http, [5])
    await wait_for_status(http, ready["job_id"], {"ready"})
    refused = await run_cli(base, "retry", ready["job_id"])
    assert refused.code == 1
    assert "only failed, cancelled or expired jobs can be tried again" in refused.stderr

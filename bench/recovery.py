"""Recovery: how long a job stays frozen after a worker crash, a Redis restart, a deploy's
SIGTERM or a frozen S3 server, beside the figures measured before job leases and S3 timeouts.

Each scenario starts its own API and workers (and, where it breaks them, its own Redis or S3
server) and times the fault from the outside, as a person watching the status would.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx

from backend import devstack
from backend.seed import demo_bytes
from bench.report import Result, Table
from bench.stack import Stack

# Before: measured against `make run` with throttled jobs, before leases and S3 timeouts.
BEFORE = {
    "kill": "611 s (job timeout + 10 s)",
    "redis": "624 s",
    "sigterm": "never (alive after 7 min)",
    "s3_files": "60.6 s",
    "s3_failed": "~250 s",
}
FILE_IDS = [1, 2, 3]
FILE_SIZE = 3 * 1024 * 1024
SLOW = {"THROTTLE_BYTES_PER_SECOND": str(1024 * 1024), "JOB_TIMEOUT_SECONDS": "600"}


async def _seed(stack: Stack, env: dict[str, str]) -> None:
    services = await stack.services(env)
    try:
        for file_id in FILE_IDS:
            await services.storage.put_source(
                file_id, f"part-{file_id}.bin", demo_bytes(file_id, FILE_SIZE)
            )
    finally:
        await services.close()


async def _status(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(f"/v1/download/status/{job_id}")).json()
    return body


async def _until(client: httpx.AsyncClient, job_id: str, test: Any, timeout: float) -> float:
    """Seconds until the job's status passes `test`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if test(await _status(client, job_id)):
                return time.monotonic() - started
        except (httpx.TransportError, ValueError):
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not get there within {timeout:.0f} s")


def _running(attempt: int) -> Any:
    return lambda s: (
        s["status"] == "processing" and s["attempt"] >= attempt and s["bytes_processed"] > 0
    )


async def _start(client: httpx.AsyncClient) -> str:
    response = await client.post("/v1/download/async", json={"file_ids": FILE_IDS})
    response.raise_for_status()
    return str(response.json()["job_id"])


async def _after_sigkill(stack: Stack, job_timeout: str) -> float:
    env = stack.env(f"rec-kill-{job_timeout}", **{**SLOW, "JOB_TIMEOUT_SECONDS": job_timeout})
    await _seed(stack, env)
    api, doomed = stack.api(env), stack.worker(env)
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        job_id = await _start(client)
        await _until(client, job_id, _running(1), 60)
        rescuer = stack.worker(env)
        doomed.kill()
        took = await _until(client, job_id, _running(2), 120)
    for process in (rescuer, doomed, api):
        stack.stop(process)
    return took


async def _after_redis_restart(stack: Stack) -> float:
    port = devstack.free_port()
    redis = devstack.start_redis(stack.root / "rec-redis", port)
    env = {**stack.env("rec-redis", **SLOW), "REDIS_URL": redis.url}
    await _seed(stack, env)
    api, worker = stack.api(env), stack.worker(env)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            job_id = await _start(client)
            await _until(client, job_id, _running(1), 60)
            attempt = (await _status(client, job_id))["attempt"]
            redis.stop()
            await asyncio.sleep(3)
            redis = devstack.start_redis(stack.root / "rec-redis", port)
            return await _until(client, job_id, _running(attempt + 1), 120)
    finally:
        for process in (worker, api):
            stack.stop(process)
        redis.stop()


async def _sigterm_to_exit(stack: Stack, jobs: int) -> float:
    env = stack.env("rec-term", **SLOW, WORKER_CONCURRENCY=str(jobs))
    await _seed(stack, env)
    api, worker = stack.api(env), stack.worker(env)
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        job_ids = [await _start(client) for _ in range(jobs)]
        for job_id in job_ids:
            await _until(client, job_id, _running(1), 60)
        started = time.monotonic()
        worker.popen.send_signal(signal.SIGTERM)
        worker.popen.wait(120)
        took = time.monotonic() - started
    for process in (worker, api):
        stack.stop(process)
    return took


async def _with_s3_frozen(stack: Stack) -> tuple[float, float]:
    s3 = devstack.start_s3(stack.root / "rec-s3")
    env = {**stack.env("rec-s3"), "S3_ENDPOINT": s3.url, "JOB_TIMEOUT_SECONDS": "600"}
    await _seed(stack, env)
    api, worker = stack.api(env), stack.worker(env)
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=120) as client:
            s3.popen.send_signal(signal.SIGSTOP)
            frozen = time.monotonic()
            job_id = await _start(client)
            started = time.monotonic()
            await client.get("/v1/files")
            files = time.monotonic() - started
            await _until(client, job_id, lambda s: s["status"] == "failed", 180)
            return files, time.monotonic() - frozen
    finally:
        s3.popen.send_signal(signal.SIGCONT)
        for process in (worker, api):
            stack.stop(process)
        s3.stop()


async def run(stack: Stack, quick: bool) -> Result:
    table = Table(["fault", "measured", "before", "target"])
    kill = await _after_sigkill(stack, "600")
    table.add(
        "worker SIGKILLed → resumed (JOB_TIMEOUT 600 s)", f"{kill:.1f} s", BEFORE["kill"], "< 30 s"
    )
    term = await _sigterm_to_exit(stack, 2 if quick else 5)
    table.add(
        "worker SIGTERMed with jobs running → exited", f"{term:.1f} s", BEFORE["sigterm"], "< 10 s"
    )
    verdicts = [("resume after SIGKILL", kill, 30.0), ("exit after SIGTERM", term, 10.0)]
    if not quick:
        long_kill = await _after_sigkill(stack, "3600")
        table.add(
            "worker SIGKILLed → resumed (JOB_TIMEOUT 3600 s)",
            f"{long_kill:.1f} s",
            "~3615 s (timeout + 15 s)",
            "< 30 s",
        )
        redis = await _after_redis_restart(stack)
        table.add(
            "Redis restarted (AOF) → job resumed", f"{redis:.1f} s", BEFORE["redis"], "< 30 s"
        )
        files, failed = await _with_s3_frozen(stack)
        table.add(
            "S3 frozen → GET /v1/files answered (503, or 200 from the catalogue index)",
            f"{files:.1f} s",
            BEFORE["s3_files"],
            "< 5 s",
        )
        table.add(
            "S3 frozen → job failed after retries",
            f"{failed:.1f} s",
            BEFORE["s3_failed"],
            "< 120 s",
        )
        verdicts += [
            ("resume after SIGKILL, 1 h timeout", long_kill, 30.0),
            ("resume after a Redis restart", redis, 30.0),
            ("503 with S3 frozen", files, 5.0),
            ("failed with S3 frozen", failed, 120.0),
        ]
    result = Result("recovery", "5. Recovery")
    result.tables.append(
        (
            f"Jobs of {len(FILE_IDS)} × {FILE_SIZE // 2**20} MiB at 1 MiB/s; JOB_LEASE_SECONDS=10, "
            "S3 read timeout 4 s. Times from the fault (for Redis: from its return) to what a "
            "person watching the status sees:",
            table,
        )
    )
    result.notes.append(
        "The resume figures are bounded by the 10 s lease plus one worker poll; the frozen-S3 "
        'ones by the 4 s read timeout and the 1 + 2 + 4 s backoffs. "Before" was measured '
        "against `make run` before leases and S3 timeouts (the 3600 s row is computed: arq "
        "waited for its in-progress key, job timeout + 15 s)."
    )
    for what, seconds, bound in verdicts:
        result.target(what, f"{seconds:.1f} s", f"< {bound:g} s", seconds < bound)
    return result

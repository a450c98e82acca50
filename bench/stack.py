"""The real processes a benchmark measures: Redis, the S3 server, API and workers.

Started with `backend.devstack` on free loopback ports under one temp dir, exactly as
`make run` starts them, and read through /proc for their memory.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from backend import devstack
from backend.services import Services
from backend.settings import load_settings
from bench.profiling import Profiler


def raise_open_file_limit() -> int:
    """Lift this process's soft RLIMIT_NOFILE to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def env_for(redis_url: str, s3_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """Environment of a Longhaul process with its own key prefix, queue and buckets.

    Per-client limits keep their defaults: the load generators spread requests over many
    client addresses (X-Forwarded-For through the trusted loopback proxy), as nginx would.
    """
    return devstack.stack_env(
        redis_url, s3_url, prefix, **{"SECRET_KEY": secrets.token_hex(16), **extra}
    )


def proc_status(pid: int) -> dict[str, int]:
    """The kB figures of /proc/<pid>/status (VmRSS, VmHWM, …) as bytes."""
    figures: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            figures[name] = int(parts[0]) * 1024
    return figures


def rss(process: devstack.Process) -> int:
    return proc_status(process.popen.pid)["VmRSS"]


def peak_rss(process: devstack.Process) -> int:
    return proc_status(process.popen.pid)["VmHWM"]


@dataclass
class Stack:
    """Redis and the S3 server shared by every benchmark of one run."""

    root: Path
    redis: devstack.Process
    s3: devstack.Process
    started: list[devstack.Process] = field(default_factory=list)
    profiler: Profiler = field(default_factory=lambda: Profiler(enabled=False))

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def env(self, prefix: str, **extra: str) -> dict[str, str]:
        return env_for(self.redis.url, self.s3.url, prefix, **extra)

    def api(self, env: dict[str, str]) -> devstack.Process:
        process = devstack.start_api(env, self.logs)
        self.started.append(process)
        return process

    def worker(self, env: dict[str, str]) -> devstack.Process:
        process = devstack.start_worker(env, self.logs)
        self.started.append(process)
        return process

    def stop(self, process: devstack.Process) -> None:
        process.stop()
        with contextlib.suppress(ValueError):
            self.started.remove(process)

    async def services(self, env: dict[str, str]) -> Services:
        """The same shared clients a Longhaul process builds, for seeding and reading back."""
        services = await Services.open(load_settings(env))
        await services.storage.ensure_buckets()
        return services


@contextlib.contextmanager
def running_stack(profile: bool = False) -> Iterator[Stack]:
    """Redis (with its AOF, as `make run` has it) and the S3 server; everything stops after."""
    with contextlib.ExitStack() as cleanup:
        root = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        redis = devstack.start_redis(root / "redis")
        cleanup.callback(redis.stop)
        s3 = devstack.start_s3(root / "logs")
        cleanup.callback(s3.stop)
        stack = Stack(root, redis, s3, profiler=Profiler(profile))
        try:
            yield stack
        finally:
            for process in reversed(stack.started):
                process.stop()


def cpu_seconds(process: devstack.Process) -> float:
    """User + system CPU time the process and its live children have used so far.

    Children count because `--workers N` serves from N processes under one manager.
    """
    return sum(_own_cpu_seconds(pid) for pid in _tree(process.popen.pid))


def _own_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _tree(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            found += _tree(int(child))
    return found

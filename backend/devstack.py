"""Local processes for `make run` and the tests: Redis, an S3 server, the API and workers.

Each helper starts one real process on a free loopback port, waits until it answers, and
returns a handle whose `stop()` ends it. Nothing here is used in production.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortInUse(RuntimeError):
    """A port a local process needs is taken (a stale stack, or anything else)."""

    def __init__(self, port: int, what: str) -> None:
        super().__init__(
            f"port {port} ({what}) is already in use; stop whatever holds it "
            f"(a stale `make run`?) or choose another port"
        )
        self.port = port


def ensure_port_free(port: int, what: str) -> None:
    """Raise PortInUse unless `port` can be bound on loopback now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers bind: connections of a stopped server in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortInUse(port, what) from exc


@dataclass
class Process:
    """A started child process and what it serves."""

    name: str
    popen: subprocess.Popen[bytes]
    url: str
    log_path: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` without waiting (see `stop_all`)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


_STOP_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)


def parent_is_stopping(ppid: int) -> bool:
    """True when `ppid` is GNU make handling a stop signal that was sent to make alone.

    On SIGHUP or SIGINT make does not pass the signal on: it expects the terminal to have
    signalled the whole process group, blocks the signal and waits for its children. Its
    blocked-signal mask (Linux /proc) is the only trace of that, so it is read here.
    """
    try:
        if Path(f"/proc/{ppid}/comm").read_text().strip() != "make":
            return False
        status = Path(f"/proc/{ppid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigBlk:"):
            blocked = int(line.split()[1], 16)
            return any(blocked & (1 << (sig - 1)) for sig in _STOP_SIGNALS)
    return False


def stop_all(processes: list[Process], timeout: float = 8.0) -> None:
    """Stop `processes` within `timeout` seconds in all, whatever they do.

    Services that use Redis and S3 (the API, workers) go first, so a worker can still hand its
    jobs back; then the rest. Each group gets SIGTERM at once and shares one deadline; what is
    still alive after it gets SIGKILL.
    """
    deadline = time.monotonic() + timeout
    users = [p for p in processes if p.name not in {"redis", "s3"}]
    servers = [p for p in processes if p.name in {"redis", "s3"}]
    for group, share in ((users, 0.7), (servers, 1.0)):
        for process in group:
            process.signal(signal.SIGTERM)
        group_deadline = time.monotonic() + (deadline - time.monotonic()) * share
        for process in group:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(max(0.0, group_deadline - time.monotonic()))
    for process in processes:
        if process.popen.poll() is None:
            process.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(2)


def stack_env(redis_url: str, s3_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """Environment of a Longhaul process with its own key prefix, queue and buckets, and no
    worker metrics endpoint unless `extra` gives METRICS_PORT (workers here share a host)."""
    return {
        "REDIS_URL": redis_url,
        "S3_ENDPOINT": s3_url,
        "S3_ACCESS_KEY_ID": "longhaul",
        "S3_SECRET_ACCESS_KEY": "longhaul-secret",
        "S3_BUCKET_NAME": f"{prefix}-downloads",
        "S3_SOURCE_BUCKET": f"{prefix}-catalogue",
        "KEY_PREFIX": prefix,
        "QUEUE_NAME": f"{prefix}:queue",
        "THROTTLE_BYTES_PER_SECOND": "0",
        "METRICS_PORT": "0",
        **extra,
    }


def _spawn(
    name: str,
    argv: list[str],
    log_dir: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], Path]:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    popen = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
    )
    log.close()
    return popen, log_path


def wait_until(check: object, timeout: float, what: str, process: Process | None = None) -> None:
    """Return once `check()` is true; raise TimeoutError after `timeout` seconds.

    If `process` is given and it exits, or the wait ends any other way (a signal, a timeout),
    the process is stopped: a half-started process is never left behind.
    """
    try:
        _wait(check, timeout, what, process)
    except BaseException:
        if process is not None:
            process.stop(timeout=5)
        raise


def _wait(check: object, timeout: float, what: str, process: Process | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{what} exited early:\n{process.log_tail()}")
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.05)
    tail = process.log_tail() if process else ""
    raise TimeoutError(f"{what} did not come up within {timeout:.0f}s\n{tail}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500


def _http_answers(url: str) -> bool:
    """True once anything answers HTTP at `url` (an unhealthy 503 still means "up")."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status)
    except urllib.error.HTTPError:
        return True


def redis_binary() -> str:
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    return found


def start_redis(data_dir: Path, port: int | None = None, appendonly: bool = True) -> Process:
    """A private redis-server on loopback with its data (AOF) in `data_dir`."""
    if port:
        ensure_port_free(port, "Redis")
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "everysec",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
    ]
    popen, log_path = _spawn(f"redis-{port}", argv, data_dir)
    process = Process("redis", popen, f"redis://127.0.0.1:{port}/0", log_path)

    def ping() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    wait_until(ping, 15, "redis-server", process)
    return process


def start_s3(log_dir: Path, port: int | None = None) -> Process:
    """moto's S3-compatible server on loopback (a stand-in for MinIO in dev and tests), served
    with keep-alive connections as a real store's are (`backend.s3standin`)."""
    if port:
        ensure_port_free(port, "S3 server")
    port = port or free_port()
    argv = [sys.executable, "-m", "backend.s3standin", "127.0.0.1", str(port)]
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    popen, log_path = _spawn(f"s3-{port}", argv, log_dir, env=env)
    process = Process("s3", popen, f"http://127.0.0.1:{port}", log_path)
    wait_until(lambda: _http_ok(f"http://127.0.0.1:{port}/"), 30, "S3 server", process)
    return process


def service_env(settings_env: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **settings_env}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def start_api(
    settings_env: dict[str, str], log_dir: Path, port: int | None = None, name: str = "api"
) -> Process:
    """`python -m backend api` on loopback, ready when /health answers."""
    if port:
        # Else an old API on the port would answer /health and pass for this one.
        ensure_port_free(port, name)
    port = port or free_port()
    env = service_env({**settings_env, "PORT": str(port), "HOST": "127.0.0.1"})
    popen, log_path = _spawn(
        f"{name}-{port}", [sys.executable, "-m", "backend", "api"], log_dir, env=env
    )
    process = Process(name, popen, f"http://127.0.0.1:{port}", log_path)
    wait_until(lambda: _http_answers(f"http://127.0.0.1:{port}/health"), 30, name, process)
    return process


def start_worker(settings_env: dict[str, str], log_dir: Path, name: str = "worker") -> Process:
    """`python -m backend worker`; it has no port, so it is ready once it logs its start."""
    env = service_env(settings_env)
    popen, log_path = _spawn(
        f"{name}-{time.monotonic_ns()}",
        [sys.executable, "-m", "backend", "worker"],
        log_dir,
        env=env,
    )
    process = Process(name, popen, "", log_path)
    wait_until(
        lambda: "Starting worker" in (log_path.read_text(errors="replace")), 30, name, process
    )
    return process

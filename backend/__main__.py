"""Server CLI: `python -m backend api|worker|seed|dev`. Argument plumbing only."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from backend.settings import load_settings

try:
    from backend import errorreporting, tracing
    from backend.logs import configure_logging
except ModuleNotFoundError as missing:  # a client-only install (`pip install longhaul`)
    sys.exit(
        f"longhaul-server needs the server's dependencies ({missing.name} is not installed): "
        "pip install 'longhaul[server]'"
    )

logger = logging.getLogger("longhaul")

DEV_THROTTLE = str(2 * 1024 * 1024)


def run_api(processes: int | None = None) -> None:
    """Serve the app on HOST:PORT with `processes` processes (default API_PROCESSES)."""
    import uvicorn

    settings = load_settings()
    configure_logging(settings.log_level)
    processes = processes or settings.api_processes
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "proxy_headers": True,
        # nginx's address, and only it: X-Forwarded-For from anyone else is ignored, so client
        # addresses in logs and rate limits cannot be forged (nginx/longhaul.conf.template).
        "forwarded_allow_ips": os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        "timeout_graceful_shutdown": 3,
    }
    if processes == 1:
        from backend.app import configure_api_process, create_app

        configure_api_process(settings)
        uvicorn.run(create_app(settings), **options)
        return
    # uvicorn's process manager spawns each process fresh and builds the app there from an
    # import string: tracing exporters and Redis pools must not cross a fork. Their metrics
    # meet in one directory, so that any process answers a scrape for all (metrics/api.py).
    own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    if own_metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="longhaul-api-metrics-")
    try:
        uvicorn.run("backend.app:app_from_environment", factory=True, workers=processes, **options)
    finally:
        if own_metrics_dir:
            shutil.rmtree(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"), ignore_errors=True)


def run_worker() -> None:
    from backend.worker import serve

    settings = load_settings()
    configure_logging(settings.log_level)
    tracing.configure("longhaul-worker")
    errorreporting.configure(settings, "longhaul-worker")
    serve(settings)


def run_seed() -> None:
    from backend.seed import seed_demo
    from backend.storage import Storage

    async def seed() -> int:
        storage = Storage(load_settings())
        await storage.open()
        try:
            return await seed_demo(storage)
        finally:
            await storage.close()

    configure_logging("INFO")
    logger.info("uploaded %d demo files", asyncio.run(seed()))


class _Stop(BaseException):
    """A stop signal arrived (Ctrl-C, SIGTERM, SIGHUP) or make went away."""


def _raise_stop(signum: int, _frame: object) -> None:
    reason = "make stopped or gone" if signum == signal.SIGUSR1 else signal.Signals(signum).name
    raise _Stop(reason)


def _watch_parent(parent: int) -> None:
    """Signal this process when its parent dies or is a make that was stopped on its own.

    A thread, so that startup (which can take seconds) is interrupted as well as the wait.
    """
    from backend import devstack

    while os.getppid() == parent and not devstack.parent_is_stopping(parent):
        time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGUSR1)


def run_dev(state_dir: Path) -> int:
    """Redis + S3 server + seed + API + one worker, in the foreground until stopped.

    Ctrl-C, SIGTERM or SIGHUP (to this process, to make, or to the whole group), or the death
    of the parent (make killed alone), stop every process started here within 10 s: they run
    in sessions of their own, so only this supervisor reaches them. Returns the exit status.
    """
    from backend import devstack

    configure_logging("INFO")
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, _raise_stop)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    processes: list[devstack.Process] = []
    status = 0
    try:
        port = int(os.environ.get("PORT", "8000"))
        s3_port = int(os.environ.get("S3_PORT", "0")) or devstack.free_port()
        # Checked before anything starts: a stale stack must not pass for this one.
        devstack.ensure_port_free(port, "API")
        devstack.ensure_port_free(s3_port, "S3 server")
        redis = devstack.start_redis(state_dir / "redis")
        processes.append(redis)
        s3 = devstack.start_s3(state_dir / "logs", s3_port)
        processes.append(s3)
        env = {
            "REDIS_URL": redis.url,
            "S3_ENDPOINT": s3.url,
            "S3_ACCESS_KEY_ID": "longhaul",
            "S3_SECRET_ACCESS_KEY": "longhaul-secret",
            "THROTTLE_BYTES_PER_SECOND": os.environ.get("THROTTLE_BYTES_PER_SECOND", DEV_THROTTLE),
        }
        env = {**env, **{k: v for k, v in os.environ.items() if k in {"S3_PUBLIC_ENDPOINT"}}}
        os.environ.update(env)
        run_seed()
        processes.append(devstack.start_worker(env, state_dir / "logs"))
        api = devstack.start_api(env, state_dir / "logs", port=port)
        processes.append(api)
        print(
            f"\nLonghaul is running at {api.url}/  (API docs: {api.url}/docs)\n"
            f"Logs in {state_dir / 'logs'}. Press Ctrl-C to stop.\n",
            flush=True,
        )
        while all(process.alive() for process in processes):
            time.sleep(0.5)
        dead = [p.name for p in processes if not p.alive()]
        logger.error("%s stopped unexpectedly; stopping the rest", ", ".join(dead))
        status = 1
    except devstack.PortInUse as exc:
        print(f"cannot start: {exc}", file=sys.stderr, flush=True)
        status = 2
    except _Stop as stop:
        print(f"\nstopping ({stop})…", flush=True)
    except Exception as exc:
        logger.error("could not start the stack: %s", exc)
        status = 1
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(signum, signal.SIG_IGN)
        devstack.stop_all(processes)
    return status


def _at_least_one(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    api = sub.add_parser("api", help="serve the API and pages (HOST, PORT)")
    api.add_argument(
        "--workers",
        type=_at_least_one,
        default=None,
        help="API processes sharing the port (default API_PROCESSES, 1)",
    )
    sub.add_parser("worker", help="run an arq worker")
    sub.add_parser("seed", help="upload the demo catalogue to the source bucket")
    dev = sub.add_parser("dev", help="run the whole stack locally with demo data")
    dev.add_argument("--state-dir", type=Path, default=Path(".dev"))
    args = parser.parse_args(argv)
    if args.command == "api":
        run_api(args.workers)
    elif args.command == "worker":
        run_worker()
    elif args.command == "seed":
        run_seed()
    else:
        sys.exit(run_dev(args.state_dir))


if __name__ == "__main__":
    main()

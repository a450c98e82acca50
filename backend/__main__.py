"""Server CLI: `python -m backend api|worker|seed|dev`. Argument plumbing only."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

from backend import tracing
from backend.logs import configure_logging
from backend.settings import load_settings

logger = logging.getLogger("longhaul")

DEV_THROTTLE = str(2 * 1024 * 1024)


def run_api() -> None:
    import uvicorn

    from backend.app import create_app

    settings = load_settings()
    configure_logging(settings.log_level)
    tracing.configure("longhaul-api")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=True,
        # nginx's address, and only it: X-Forwarded-For from anyone else is ignored, so client
        # addresses in logs and rate limits cannot be forged (nginx/longhaul.conf.template).
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        timeout_graceful_shutdown=3,
    )


def run_worker() -> None:
    from backend.worker import serve

    settings = load_settings()
    configure_logging(settings.log_level)
    tracing.configure("longhaul-worker")
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


def run_dev(state_dir: Path) -> None:
    """Redis + S3 server + seed + API + one worker, in the foreground until Ctrl-C."""
    from backend import devstack

    configure_logging("INFO")
    processes: list[devstack.Process] = []

    def stop_all(*_: object) -> None:
        for process in reversed(processes):
            process.stop()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        redis = devstack.start_redis(state_dir / "redis")
        processes.append(redis)
        s3_port = int(os.environ.get("S3_PORT", "0")) or devstack.free_port()
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
        port = int(os.environ.get("PORT", "8000"))
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
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
    finally:
        stop_all()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="serve the API and pages (HOST, PORT)")
    sub.add_parser("worker", help="run an arq worker")
    sub.add_parser("seed", help="upload the demo catalogue to the source bucket")
    dev = sub.add_parser("dev", help="run the whole stack locally with demo data")
    dev.add_argument("--state-dir", type=Path, default=Path(".dev"))
    args = parser.parse_args(argv)
    if args.command == "api":
        run_api()
    elif args.command == "worker":
        run_worker()
    elif args.command == "seed":
        run_seed()
    else:
        run_dev(args.state_dir)


if __name__ == "__main__":
    main()

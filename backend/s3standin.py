"""`python -m backend.s3standin HOST PORT`: moto's S3 API served with keep-alive, for dev and tests.

moto's own `moto.server` runs on werkzeug's development server, which answers every request
with `Connection: close` (werkzeug/serving.py: "This disables HTTP/1.1 keep-alive"). Every S3
call then pays a new TCP connection and a new server thread, a cost MinIO, AWS S3 and R2 do
not charge a client that keeps its connections (every S3 SDK does, aiohttp included). Here the
same moto application is served by waitress, a threaded WSGI server with HTTP/1.1 persistent
connections (RFC 9112 §9.3), so the dev stack's per-request costs resemble a real store's.

One access line per request goes to stdout in werkzeug's format
(`127.0.0.1 - - [date] "GET /bucket/key?query HTTP/1.1" 200 -`), which the tests and
benchmarks count S3 requests from. Nothing here is used in production.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import waitress
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

# Enough for a worker's concurrent jobs plus the tests' own calls; each waits on I/O mostly.
THREADS = 16

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def with_access_log(app: WsgiApp) -> WsgiApp:
    """`app`, printing one werkzeug-style access line per request once its status is known."""

    def logged(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING", "")
        target = environ.get("PATH_INFO", "") + (f"?{query}" if query else "")

        def start(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            stamp = time.strftime("%d/%b/%Y %H:%M:%S")
            line = f"{environ.get('REMOTE_ADDR', '-')} - - [{stamp}] "
            line += f'"{environ["REQUEST_METHOD"]} {target} HTTP/1.1" {status.split()[0]} -'
            print(line, flush=True)
            return start_response(status, headers, *rest)

        return app(environ, start)

    return logged


def main(argv: list[str]) -> None:
    host, port = argv[0], int(argv[1])
    # moto builds presigned and redirect addresses from this.
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    waitress.serve(
        with_access_log(app),
        host=host,
        port=port,
        threads=THREADS,
        # A file PUT or GET may be large; waitress's default 1 GiB body cap is raised to S3's
        # 5 GiB single-PUT limit.
        max_request_body_size=5 * 1024**3,
        _quiet=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])

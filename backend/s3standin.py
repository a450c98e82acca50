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
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import waitress
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

# Enough for a worker's concurrent jobs plus the tests' own calls; each waits on I/O mostly.
THREADS = 16
BUFFER_IN_MEMORY = 256 * 1024 * 1024

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def as_werkzeug_serves(app: WsgiApp) -> WsgiApp:
    """`app` given the request as werkzeug's server gives it, with one access line per request
    written once its status is known.

    moto reads an object key from the undecoded path in `RAW_URI` (werkzeug's name) and
    otherwise decodes `PATH_INFO` a second time, which turned `a%41b` into `aAb` and `x%2Fy`
    into `x/y`; waitress calls it `REQUEST_URI`. Lines are written whole under a lock: sixteen
    threads printing at once ran requests together on one line.
    """
    lock = threading.Lock()

    def served(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ.setdefault("RAW_URI", environ.get("REQUEST_URI", ""))
        target = environ["RAW_URI"] or environ.get("PATH_INFO", "")

        def start(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            stamp = time.strftime("%d/%b/%Y %H:%M:%S")
            line = f"{environ.get('REMOTE_ADDR', '-')} - - [{stamp}] "
            line += f'"{environ["REQUEST_METHOD"]} {target} HTTP/1.1" {status.split()[0]} -\n'
            with lock:
                sys.stdout.write(line)
                sys.stdout.flush()
            return start_response(status, headers, *rest)

        return app(environ, start)

    return served


def main(argv: list[str]) -> None:
    host, port = argv[0], int(argv[1])
    # moto builds presigned and redirect addresses from this.
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    waitress.serve(
        as_werkzeug_serves(app),
        host=host,
        port=port,
        threads=THREADS,
        # A file PUT or GET may be large; waitress's default 1 GiB body cap is raised to S3's
        # 5 GiB single-PUT limit.
        max_request_body_size=5 * 1024**3,
        # Bodies in memory up to this size, as moto holds objects anyway: waitress's default
        # spills past 512 KiB (in) and 1 MiB (out) to temporary files, and while the disk was
        # busy writing back a 2 GB seed, a 50 MiB GET sent nothing for over 4 s.
        inbuf_overflow=BUFFER_IN_MEMORY,
        outbuf_overflow=BUFFER_IN_MEMORY,
        outbuf_high_watermark=BUFFER_IN_MEMORY,
        _quiet=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])

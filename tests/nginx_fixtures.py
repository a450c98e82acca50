"""Debian's nginx in front of test processes, with the project's own config.

`nginx/longhaul.conf.template` is rendered the way the nginx image renders it (envsubst over
`LONGHAUL_*` only) and included from a small main config that keeps every path inside a temp
dir, so the test nginx needs no system state and leaves none behind.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from backend import devstack

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "nginx" / "longhaul.conf.template"
STATIC_ROOT = ROOT / "frontend" / "static"
NGINX = "/usr/sbin/nginx"

# What the deployed config uses (docker-compose.yml sets the same), minus addresses and paths.
PRODUCTION_TIMEOUTS = {
    "LONGHAUL_API_READ_TIMEOUT": "30s",
    "LONGHAUL_STREAM_READ_TIMEOUT": "1h",
}

_VARIABLE = re.compile(r"\$\{(LONGHAUL_[A-Z0-9_]+)\}")
_ACCESS_LINE = re.compile(
    r'^(?P<client>\S+) \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\d{3}) \d+ '
    r"rt=(?P<rt>\S+) upstream=(?P<upstream>\S+) ut=\S+ rid=(?P<rid>\S*)$"
)


def template_variables(template: str | None = None) -> set[str]:
    """The `LONGHAUL_*` names the template expects."""
    return set(_VARIABLE.findall(TEMPLATE.read_text() if template is None else template))


def render(values: Mapping[str, str], template: str | None = None) -> str:
    """envsubst as the nginx image runs it with NGINX_ENVSUBST_FILTER=^LONGHAUL_."""
    text = TEMPLATE.read_text() if template is None else template
    missing = sorted(template_variables(text) - set(values))
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return _VARIABLE.sub(lambda match: values[match.group(1)], text)


def main_config(prefix: Path, site: Path) -> str:
    """The main nginx.conf around the site file: what the image's own nginx.conf provides."""
    temp = {name: prefix / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(parents=True, exist_ok=True)
    # As root, workers would drop to `nobody`, who cannot read pytest's private temp dirs.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
daemon off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 512; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 65;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {site};
}}
"""


@dataclass(frozen=True)
class AccessEntry:
    client: str
    method: str
    path: str
    status: int
    request_time: float
    upstream: str
    request_id: str


@dataclass
class Nginx:
    process: devstack.Process
    url: str
    prefix: Path

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    def access_entries(self) -> list[AccessEntry]:
        """Parsed lines of the access log (written when each request ends)."""
        entries = []
        text = self.access_log.read_text() if self.access_log.exists() else ""
        for line in text.splitlines():
            match = _ACCESS_LINE.match(line)
            assert match is not None, f"unexpected access log line: {line!r}"
            method, _, rest = match["request"].partition(" ")
            entries.append(
                AccessEntry(
                    client=match["client"],
                    method=method,
                    path=rest.rsplit(" ", 1)[0],
                    status=int(match["status"]),
                    request_time=float(match["rt"]),
                    upstream=match["upstream"],
                    request_id=match["rid"],
                )
            )
        return entries

    def stop(self) -> None:
        self.process.stop()


def upstream_servers(urls: list[str]) -> str:
    """`server host:port;` lines for API processes given by their base URLs."""
    return " ".join(f"server {url.split('://', 1)[1]};" for url in urls)


def start_nginx(prefix: Path, api_urls: list[str], **overrides: str) -> Nginx:
    """nginx on a free loopback port in front of `api_urls`, from the project's template.

    `overrides` replace template values, e.g. LONGHAUL_API_READ_TIMEOUT="2s".
    """
    prefix.mkdir(parents=True, exist_ok=True)
    port = devstack.free_port()
    values = {
        **PRODUCTION_TIMEOUTS,
        "LONGHAUL_LISTEN": f"127.0.0.1:{port}",
        "LONGHAUL_API_SERVERS": upstream_servers(api_urls),
        "LONGHAUL_STATIC_ROOT": str(STATIC_ROOT),
        "LONGHAUL_ACCESS_LOG": str(prefix / "access.log"),
        **overrides,
    }
    site = prefix / "longhaul.conf"
    site.write_text(render(values))
    config = prefix / "nginx.conf"
    config.write_text(main_config(prefix, site))
    argv = [NGINX, "-e", str(prefix / "error.log"), "-p", str(prefix), "-c", str(config)]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, check=False)
    if checked.returncode != 0:
        raise RuntimeError(f"nginx rejected the rendered config:\n{checked.stderr}")
    log = (prefix / "nginx.out").open("ab")
    popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    process = devstack.Process("nginx", popen, f"http://127.0.0.1:{port}", prefix / "error.log")

    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True

    devstack.wait_until(listening, 15, "nginx", process)
    return Nginx(process=process, url=process.url, prefix=prefix)


class SlowUpstream:
    """A bare HTTP server that holds every request `hold` seconds before answering.

    It stands in for an API call that legitimately takes long, so the proxy's timeout can be
    shown without adding a slow route to the app. Paths under /v1/download/subscribe/ answer
    as an event stream, everything else as JSON.
    """

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.paths: list[str] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aenter__(self) -> SlowUpstream:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            self.paths.append(path)
            # Holding the request is the point: this is the slow call under test.
            await asyncio.sleep(self.hold)
            if path.startswith("/v1/download/subscribe/"):
                body, kind = b'event: completed\ndata: {"held": true}\n\n', b"text/event-stream"
            else:
                body, kind = b'{"held": true}', b"application/json"
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: "
                + kind
                + b"\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\nconnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # nginx gave up on us, which is what the 504 test expects
        finally:
            writer.close()

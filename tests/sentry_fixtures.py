"""A real local stand-in for Sentry: an HTTP server on a free loopback port that takes what
the SDK sends (`POST /api/<project>/envelope/`) and keeps every envelope, decompressed.

Envelope format (https://develop.sentry.dev/sdk/envelopes/): a JSON header line, then items,
each a JSON item header line and a payload of `length` bytes (or up to the next newline when
the header has no length). The SDK compresses the body (Content-Encoding gzip, or br when
the Brotli module is installed).
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

PUBLIC_KEY = "publickey"
PROJECT = "1"
_ENVELOPE_PATH = re.compile(r"^/api/(?P<project>[^/]+)/envelope/$")


@dataclass
class Envelope:
    headers: dict[str, str]  # the HTTP request's, lower-cased names
    body: bytes  # decompressed: exactly what the SDK serialised
    header: dict[str, Any]
    items: list[tuple[dict[str, Any], bytes]]


def parse_envelope(body: bytes) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]:
    """The envelope header and its (item header, payload) pairs; ValueError if malformed."""
    first, _, rest = body.partition(b"\n")
    header = json.loads(first)
    items: list[tuple[dict[str, Any], bytes]] = []
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        item_header = json.loads(line)
        if "length" in item_header:
            length = int(item_header["length"])
            payload, rest = rest[:length], rest[length:]
            if len(payload) != length:
                raise ValueError(f"item of {length} bytes cut short")
            rest = rest.removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((item_header, payload))
    return header, items


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # only there when the SDK could have chosen it

        return bytes(brotli.decompress(body))
    raise ValueError(f"unknown Content-Encoding {encoding!r}")


@dataclass
class SentryReceiver:
    port: int
    envelopes: list[Envelope] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def dsn(self) -> str:
        return f"http://{PUBLIC_KEY}@127.0.0.1:{self.port}/{PROJECT}"

    def items(self, kind: str) -> list[dict[str, Any]]:
        """The payloads of every item of this type received (`event`, `transaction`, ...)."""
        with self._lock:
            envelopes = list(self.envelopes)
        return [
            json.loads(payload)
            for envelope in envelopes
            for item_header, payload in envelope.items
            if item_header.get("type") == kind
        ]

    def events(self) -> list[dict[str, Any]]:
        """Every error event received (not transactions, sessions or client reports)."""
        return self.items("event")

    def raw(self) -> bytes:
        """All envelopes as the SDK serialised them, one after another."""
        with self._lock:
            return b"\n".join(envelope.body for envelope in self.envelopes)

    def clear(self) -> None:
        with self._lock:
            self.envelopes.clear()
            self.refused.clear()

    def _accept(self, envelope: Envelope) -> None:
        with self._lock:
            self.envelopes.append(envelope)


def _handler(receiver: SentryReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            match = _ENVELOPE_PATH.match(self.path)
            auth = self.headers.get("X-Sentry-Auth", "")
            if (
                match is None
                or match["project"] != PROJECT
                or f"sentry_key={PUBLIC_KEY}" not in auth
            ):
                receiver.refused.append(f"{self.path} {auth}")
                self._answer(404, {"detail": "unknown project or key"})
                return
            try:
                data = _decompress(body, self.headers.get("Content-Encoding", "").strip().lower())
                header, items = parse_envelope(data)
            except (ValueError, OSError, ImportError) as exc:
                receiver.refused.append(f"{self.path}: {exc}")
                self._answer(400, {"detail": str(exc)})
                return
            headers = {name.lower(): value for name, value in self.headers.items()}
            receiver._accept(Envelope(headers, data, header, items))
            self._answer(200, {"id": header.get("event_id")})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads what arrived, not the access lines

    return Handler


@pytest.fixture(name="sentry_receiver")
def sentry_receiver_fixture() -> Iterator[SentryReceiver]:
    """A Sentry stand-in on a free loopback port, for this test alone."""
    receiver = SentryReceiver(port=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

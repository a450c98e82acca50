"""The HTTP transport of the client: one request with retries, typed answers, the SSE stream.

Async, with httpx.AsyncClient; the synchronous `Client` runs the same code on an event loop
of its own (library.py), so there is one implementation of every behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec
from httpx_sse import EventSource, aconnect_sse

from backend.client.checks import check_job_id
from backend.client.errors import ApiError, Unreachable

T = TypeVar("T")

USER_AGENT = "longhaul-client/0.2"
# Answers worth waiting for: the rate limit and a dependency that is briefly away.
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
MAX_RETRY_WAIT = 10.0


class Transport:
    """The API at `base_url`. Retries 429/5xx answers (honouring Retry-After) and dropped
    connections, `attempts` tries in all.

    Errors surface as ApiError (an answer with an error body) or Unreachable (no answer).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        stream_idle_timeout: float = 60.0,
        attempts: int = 4,
    ) -> None:
        headers = {"User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self.attempts = attempts
        self.stream_idle_timeout = stream_idle_timeout
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, kind: type[T], **kwargs: Any) -> T:
        """The answer to one request, decoded as `kind`."""
        return decode(await self.request(method, path, **kwargs), kind)

    @asynccontextmanager
    async def events(self, path: str, last_event_id: str | None) -> AsyncIterator[EventSource]:
        """The SSE stream at `path`, resuming after `last_event_id`; errors raise ApiError."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        # Pings arrive every 15 s by default; silence much longer than that is a dead stream.
        timeout = httpx.Timeout(self.http.timeout.connect, read=self.stream_idle_timeout)
        try:
            async with aconnect_sse(
                self.http, "GET", path, headers=headers, timeout=timeout
            ) as source:
                if source.response.status_code != 200:
                    await source.response.aread()
                    raise api_error(source.response)
                yield source
        except httpx.TimeoutException as exc:
            raise Unreachable(f"{self.base_url}: event stream went silent ({exc})") from exc

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self.attempts:
                    raise Unreachable(f"cannot reach {self.base_url}: {_describe(exc)}") from exc
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), MAX_RETRY_WAIT))
                continue
            if response.status_code in RETRYABLE_STATUS and attempt < self.attempts:
                await asyncio.sleep(_retry_after(response, attempt))
                continue
            if response.status_code >= 400:
                raise api_error(response)
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")


def decode(response: httpx.Response, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(response.content, type=kind)
    except msgspec.DecodeError as exc:
        raise ApiError(response.status_code, f"unexpected answer from the API: {exc}") from exc


def api_error(response: httpx.Response) -> ApiError:
    """The ApiError of an error answer: its status and the body's `detail` sentence."""
    detail = response.reason_phrase or "error"
    body: Any = None
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            detail = body["detail"]
    except ValueError:
        text = response.text.strip()
        if text:
            detail = text[:200]
    extra = body.get("extra") if isinstance(body, dict) else None
    return ApiError(response.status_code, detail, extra)


def _retry_after(response: httpx.Response, attempt: int) -> float:
    try:
        wait = float(response.headers.get("Retry-After", ""))
    except ValueError:
        wait = 0.5 * 2 ** (attempt - 1)
    return max(0.0, min(wait, MAX_RETRY_WAIT))


def _describe(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__


def job_path(template: str, job_id: str) -> str:
    """`template` with `{}` replaced by the job id, checked and percent-encoded as one path
    segment (RFC 3986 section 3.3), so no id can name another route or add a query.
    Raises InvalidArgument for an id that is not 32 lowercase hex characters."""
    return template.format(quote(check_job_id(job_id), safe=""))


def status_path(job_id: str) -> str:
    return job_path("/v1/download/status/{}", job_id)


def events_path(job_id: str) -> str:
    return job_path("/v1/download/subscribe/{}", job_id)

"""A small synchronous client of the JSON API, speaking the same Structs as the server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import msgspec
from httpx_sse import EventSource, connect_sse

from backend.client.errors import ApiError, Unreachable
from backend.models import CatalogueFile, CataloguePage, JobStatus

T = TypeVar("T")

USER_AGENT = "longhaul-cli/0.1"
# Answers worth waiting for: the rate limit and a dependency that is briefly away.
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
MAX_RETRY_WAIT = 10.0


class Api:
    """The API at `base_url`. Retries 429/5xx answers (honouring Retry-After) a few times.

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
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def files(self, page_size: int = 500) -> list[CatalogueFile]:
        """The whole catalogue, following `next_cursor` page by page."""
        found: list[CatalogueFile] = []
        params: dict[str, Any] = {"limit": page_size}
        while True:
            response = self._request("GET", "/v1/files", params=params)
            page = self._decode(response, CataloguePage)
            found.extend(page.items)
            if page.next_cursor is None:
                return found
            params = {"limit": page_size, "cursor": page.next_cursor}

    def start(self, file_ids: list[int], idempotency_key: str | None = None) -> JobStatus:
        """Start a job. Always sends an Idempotency-Key, so a retried POST never makes two."""
        key = idempotency_key or uuid.uuid4().hex
        response = self._request(
            "POST",
            "/v1/download/async",
            json={"file_ids": file_ids},
            headers={"Idempotency-Key": key},
        )
        return self._decode(response, JobStatus)

    def status(self, job_id: str) -> JobStatus:
        return self._decode(self._request("GET", f"/v1/download/status/{job_id}"), JobStatus)

    def cancel(self, job_id: str) -> JobStatus:
        return self._decode(self._request("DELETE", f"/v1/download/{job_id}"), JobStatus)

    @contextmanager
    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[EventSource]:
        """The job's SSE stream, resuming after `last_event_id`; error answers raise ApiError."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        # Pings arrive every 15 s by default; silence much longer than that is a dead stream.
        timeout = httpx.Timeout(self.http.timeout.connect, read=self.stream_idle_timeout)
        try:
            with connect_sse(
                self.http,
                "GET",
                f"/v1/download/subscribe/{job_id}",
                headers=headers,
                timeout=timeout,
            ) as source:
                if source.response.status_code != 200:
                    source.response.read()
                    raise _api_error(source.response)
                yield source
        except httpx.TimeoutException as exc:
            raise Unreachable(f"{self.base_url}: event stream went silent ({exc})") from exc

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self.attempts:
                    raise Unreachable(f"cannot reach {self.base_url}: {_describe(exc)}") from exc
                time.sleep(min(0.5 * 2 ** (attempt - 1), MAX_RETRY_WAIT))
                continue
            if response.status_code in RETRYABLE_STATUS and attempt < self.attempts:
                time.sleep(_retry_after(response, attempt))
                continue
            if response.status_code >= 400:
                raise _api_error(response)
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def _decode(response: httpx.Response, kind: type[T]) -> T:
        try:
            return msgspec.json.decode(response.content, type=kind)
        except msgspec.DecodeError as exc:
            raise ApiError(response.status_code, f"unexpected answer from the API: {exc}") from exc


def _api_error(response: httpx.Response) -> ApiError:
    detail = response.reason_phrase or "error"
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            detail = body["detail"]
    except ValueError:
        text = response.text.strip()
        if text:
            detail = text[:200]
    return ApiError(response.status_code, detail)


def _retry_after(response: httpx.Response, attempt: int) -> float:
    try:
        wait = float(response.headers.get("Retry-After", ""))
    except ValueError:
        wait = 0.5 * 2 ** (attempt - 1)
    return max(0.0, min(wait, MAX_RETRY_WAIT))


def _describe(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__

"""How every handler that takes a JSON body reads it: only when it says it is JSON, and safely.

Litestar reads a `data` body with `Request.json()`, so the app's request class is the one
place both rules apply to every JSON endpoint:

- The body must be typed `application/json` (a charset is fine, so is `application/*+json`).
  The API is exempt from CSRF tokens because a cross-site page cannot send such a body without
  a CORS preflight; an untyped or text/plain body needs none, so it is refused with a 415.
- msgspec decodes nested arrays and objects recursively and raises RecursionError at
  Python's recursion limit, which Litestar would answer with a 500; it is the client's body,
  so it is a 400 that says so.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException, HTTPException, SerializationException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

EXPECTED = "application/json"


def is_json_type(content_type: str | None) -> bool:
    """Whether a Content-Type header value names JSON (application/json or application/*+json)."""
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media_type.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


class JsonRequest(Request[Any, Any, Any]):
    """The app's request class: `json()` refuses non-JSON types and over-deep nesting."""

    async def json(self) -> Any:
        content_type = self.headers.get("content-type")
        if not is_json_type(content_type):
            got = "none" if content_type is None else repr(content_type.split(";")[0].strip())
            raise HTTPException(
                status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail=f"Content-Type must be {EXPECTED}, got {got}",
            )
        try:
            return await super().json()
        except RecursionError as exc:
            raise ClientException(detail="body: JSON is nested too deeply to decode") from exc
        except SerializationException as exc:
            # msgspec's own words ("Input data was truncated"), said of the body.
            reason = str(exc).removeprefix("JSON is malformed: ")
            raise ClientException(detail=f"body: JSON is malformed: {reason}") from exc

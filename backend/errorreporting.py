"""Error reports to Sentry, scrubbed of secrets; off unless SENTRY_DSN is set.

What is reported, once each:
- API: a request the app answers with 500, i.e. an exception no handler in api/errors.py
  claims. Sentry's Litestar integration captures it; `expected` (the errors the API answers
  on purpose: every 4xx, and the 503 while Redis or S3 is away) are dropped, and so is every
  HTTPException but a 500. Tags: request_id, trace_id (when tracing is on).
- Worker: every failed job attempt, by the runner through `report_attempt`: a transient error
  (level warning while another attempt follows, error on the last one: tag final_attempt), a
  timeout, an unexpected exception, a job given up after too many interrupted attempts. Not a
  kind's verdict on its input (JobFailed: e.g. none of the files exist; like a 4xx, any client
  can cause it), a cancel, or a lease handed back. Tags: job_id, attempt, job_kind, trace_id
  (the job's: the trace of the request that started it).
- Any other ERROR log line with its exception (uvicorn's "Exception in ASGI application", an
  asyncio task's lost exception). Lower levels are breadcrumbs only.

One failure, one event: the runner turns every error into arq's Retry or a recorded failure
before arq sees it (and the arq integration treats Retry as control flow), and where a failure
is both captured and logged (api/errors.py, the runner) the capture comes first and the log
line's copy of the same exception is dropped (`_seen_before`).

No secrets leave the process (`scrub`): no request bodies, no cookies or auth headers
(send_default_pii off), no local variables of stack frames (a Settings or a token could be
there); and every string of the event is cleaned of bearer tokens, JWTs, signed-URL and
SigV4 parameters (X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token, Signature=,
Credential=, token=), and the configured secrets (S3 secret key, JWT_SECRET, SECRET_KEY).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

from backend import tracing
from backend.logs import context_fields
from backend.settings import Settings

FILTERED = "[Filtered]"

# Keys whose whole value is dropped, wherever they appear (headers, data, breadcrumbs).
_SENSITIVE_KEY = re.compile(
    r"authorization|cookie|csrf|secret|passw|token|signature|credential|api[-_]?key|session",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(bearer|basic)\s+[^\s,;\"']+", re.IGNORECASE)
# A JWS compact token: base64url of '{"...' (the header), then the payload and signature.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
# Presigned-URL query parameters (SigV4 and V2) and SigV4 Authorization header fields.
_SIGNED_PARAM = re.compile(
    r"((?:^|[?&;,\s])(?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature"
    r"|Credential|AWSAccessKeyId|access_token|token)=)[^&#\s,;\"']*",
    re.IGNORECASE,
)
# Set on an exception once an event carries it (see _seen_before).
_REPORTED = "_longhaul_error_reported"
# Configured secrets shorter than this are not searched for: they would match ordinary words.
_MIN_SECRET_LENGTH = 8


def scrub(event: Any, secrets: tuple[str, ...] = ()) -> Any:
    """`event` (any JSON-like value) with secrets replaced by "[Filtered]"; a new value.

    Values under sensitive keys go whole; strings lose bearer tokens, JWTs, signature and
    credential parameters, and every literal in `secrets` of at least 8 characters.
    """
    if isinstance(event, Mapping):
        return {
            key: FILTERED
            if isinstance(key, str) and _SENSITIVE_KEY.search(key) and value not in (None, "")
            else scrub(value, secrets)
            for key, value in event.items()
        }
    if isinstance(event, list | tuple):
        return [scrub(item, secrets) for item in event]
    if isinstance(event, str):
        return _scrub_text(event, secrets)
    return event


def _scrub_text(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if len(secret) >= _MIN_SECRET_LENGTH:
            text = text.replace(secret, FILTERED)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {FILTERED}", text)
    text = _JWT.sub(FILTERED, text)
    return _SIGNED_PARAM.sub(lambda m: m.group(1) + FILTERED, text)


def _seen_before(exc: BaseException | None) -> bool:
    """Whether `exc` was already sent; marks it sent.

    Sentry's dedupe integration remembers the last exception per context, but Litestar runs
    the integration's capture in a worker thread, so the error log line that follows in the
    request's own context would go out again. A mark on the exception itself holds across.
    """
    if exc is None:
        return False
    if getattr(exc, _REPORTED, False):
        return True
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _REPORTED, True)
    return False


def _without_bodies(event: dict[str, Any]) -> dict[str, Any]:
    # Litestar's integration attaches the request body whatever max_request_body_size says;
    # cookies go too, should a later option let them in.
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
    return event


def configure(
    settings: Settings, service: str, expected: tuple[type[BaseException], ...] = ()
) -> bool:
    """Start reporting for this process when SENTRY_DSN is set; returns whether it is on.

    Call before the Litestar app is built (the integration hooks its constructor).
    `expected` are errors this process answers on purpose: never reported.
    """
    if not settings.sentry_dsn:
        return False
    # Imported here: a process without a DSN never loads the SDK or patches anything.
    import sentry_sdk
    from sentry_sdk.integrations.arq import ArqIntegration
    from sentry_sdk.integrations.litestar import LitestarIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    secrets = tuple(
        value
        for value in (settings.s3_secret_access_key, settings.jwt_secret, settings.secret_key)
        if value
    )

    def before_send(event: Any, hint: dict[str, Any]) -> Any:
        exc = (hint.get("exc_info") or (None, None, None))[1]
        # A cancellation is how asyncio stops work (a worker or API shutting down mid-task).
        if isinstance(exc, (asyncio.CancelledError, *expected)) or _seen_before(exc):
            return None
        if _is_shutdown_notice(event):
            return None
        tags = event.setdefault("tags", {})
        for name, value in context_fields().items():
            tags.setdefault(name, value)
        return scrub(_without_bodies(event), secrets)

    def _is_shutdown_notice(event: Any) -> bool:
        # uvicorn's own line when it cuts connections still open at the end of its graceful
        # shutdown: open event streams always are, and a rollout is not an error.
        message = str((event.get("logentry") or {}).get("message") or "")
        return "timeout graceful shutdown exceeded" in message

    def before_send_transaction(event: Any, _hint: dict[str, Any]) -> Any:
        return scrub(event, secrets)

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment or None,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        # Only what is listed: no client instrumentation of Redis, S3 or httpx calls.
        auto_enabling_integrations=False,
        integrations=[
            LitestarIntegration(failed_request_status_codes={500}),
            ArqIntegration(),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ],
        before_send=before_send,
        before_send_transaction=before_send_transaction,
    )
    sentry_sdk.set_tag("service", service)
    return True


def _active() -> bool:
    import sentry_sdk

    return sentry_sdk.get_client().is_active()


@contextlib.contextmanager
def job_attempt(
    job_id: str, attempt: int, kind: str, trace_context: Mapping[str, str]
) -> Iterator[None]:
    """Events captured inside are tagged with the job, the attempt number and its kind, and
    the job's trace id (from its stored W3C context; else the current span's, when tracing is
    on). Nothing when reporting is off."""
    if not _active():
        yield
        return
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.set_tag("job_id", job_id)
        scope.set_tag("attempt", str(attempt))
        scope.set_tag("job_kind", kind)
        trace_id = tracing.trace_id_of(trace_context)
        if trace_id is not None:
            scope.set_tag("trace_id", trace_id)
        yield


def report_attempt(exc: BaseException, *, final: bool) -> None:
    """One event for one failed attempt: level error when it ended the job, else warning."""
    if not _active():
        return
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.set_level("error" if final else "warning")
        scope.set_tag("final_attempt", "true" if final else "false")
        sentry_sdk.capture_exception(exc)


def flush(timeout: float = 2.0) -> None:
    """Send what is still queued, waiting at most `timeout` seconds; nothing when off.

    For the API's shutdown: uvicorn ends on SIGTERM by raising the signal again once it has
    stopped, so the SDK's own flush at exit never runs.
    """
    if _active():
        import sentry_sdk

        sentry_sdk.flush(timeout)

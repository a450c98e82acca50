"""A webhook delivery as the outbox keeps it, and as a job's status shows it.

Plain msgspec and the standard library (models.py and the command-line client import it).
"""

from __future__ import annotations

import enum
from urllib.parse import urlsplit, urlunsplit

from msgspec import Struct


class DeliveryState(enum.StrEnum):
    """`pending`: not yet accepted, another attempt is due at `next_attempt_at`;
    `delivered`: the receiver answered 2xx; `failed`: given up (the receiver answered 410
    Gone, the URL became unsafe, or WEBHOOK_RETRY_FOR_SECONDS ran out)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(Struct, kw_only=True):
    """One message (one terminal event of one job) to one callback URL, with its attempts.

    Written first by the job store's save script in the same step as the event (so no ending
    goes unannounced), then only by the worker delivering it. Times are epoch seconds.
    """

    webhook_id: str
    job_id: str
    event: str
    url: str
    # The event's data as the job store emitted it (JSON text); `completed` gets a fresh
    # download_url at each attempt.
    data: str
    created_at: float
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    last_attempt_at: float | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: float | None = None
    delivered_at: float | None = None


class WebhookDeliveryStatus(Struct, kw_only=True):
    """A delivery as GET /v1/download/status/{job_id} shows it (`webhook_deliveries`)."""

    webhook_id: str
    event: str
    url: str
    state: DeliveryState
    attempts: int
    created_at: float
    last_attempt_at: float | None = None
    # The receiver's HTTP status of the last attempt; None when it got no answer.
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: float | None = None
    delivered_at: float | None = None


def redacted_url(url: str) -> str:
    """`url` with its path, query values and fragment hidden: callback URLs carry tokens in
    any of them, and a job's status is read by more people than whoever configured it.

    `https://hooks.example.com/t/SECRET?token=x#f` -> `https://hooks.example.com/…?token=…`
    """
    parts = urlsplit(url)
    names = [pair.split("=", 1)[0] for pair in parts.query.split("&") if pair]
    path = "/…" if parts.path.strip("/") else parts.path
    query = "&".join(f"{name}=…" for name in names)
    return urlunsplit(parts._replace(path=path, query=query, fragment=""))


def public_view(delivery: WebhookDelivery) -> WebhookDeliveryStatus:
    return WebhookDeliveryStatus(
        webhook_id=delivery.webhook_id,
        event=delivery.event,
        url=redacted_url(delivery.url),
        state=delivery.state,
        attempts=delivery.attempts,
        created_at=delivery.created_at,
        last_attempt_at=delivery.last_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        next_attempt_at=delivery.next_attempt_at,
        delivered_at=delivery.delivered_at,
    )

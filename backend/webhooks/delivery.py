"""One webhook attempt: POST a claimed delivery signed, and record its outcome (sender.py
claims the due ones and runs attempts side by side).

Outcomes, as Standard Webhooks advises: a 2xx answer is delivered; `410 Gone` means the
receiver wants no more and the delivery stops; any other answer, a timeout or a connection
error is retried with exponential backoff (1 s, 2 s, 4 s, … at most MAX_BACKOFF_SECONDS) until
WEBHOOK_RETRY_FOR_SECONDS after the event, then given up. The exchange (connect, send, read the
answer) ends after WEBHOOK_TIMEOUT_SECONDS in total however slowly the receiver answers, and at
most _ERROR_BODY_BYTES of an error's body are read, so a hostile receiver costs one bounded
attempt, never a stuck task or the worker's memory. Redirects are not followed (a 3xx
could point anywhere, past the SSRF guard). Every attempt resolves the host again, checks
every address and connects to a checked one (ssrf.py), so DNS rebinding gains nothing.
The body is built at each attempt, so a `completed` link is always freshly presigned; the
`webhook-id` stays the same, so receivers can drop repeats (delivery is at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec

from backend.downloads import download_url
from backend.jobevents import JobEventName
from backend.metrics.worker import webhook_attempted
from backend.models import JobState
from backend.services import Services
from backend.webhooks import signing
from backend.webhooks.callbacks import allow_list
from backend.webhooks.outbox import Outbox
from backend.webhooks.records import DeliveryState, WebhookDelivery
from backend.webhooks.ssrf import IPAddress, UnsafeCallback, connect_addresses, parse_callback_url

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 600.0
# A receiver's answer is read for its status; of an error's body this much is kept, and no more
# bytes are read than these characters can take in UTF-8 (a 500 MiB body stays on the wire).
_ERROR_BODY_CHARS = 200
_ERROR_BODY_BYTES = _ERROR_BODY_CHARS * 4
USER_AGENT = "Longhaul-Webhooks/1"

_STATE_OF_EVENT = {
    JobEventName.COMPLETED: JobState.READY,
    JobEventName.FAILED: JobState.FAILED,
    JobEventName.CANCELLED: JobState.CANCELLED,
    JobEventName.EXPIRED: JobState.EXPIRED,
}


def backoff_for(attempts: int) -> float:
    """Seconds to wait after failed attempt number `attempts` (1-based): 1, 2, 4, … ≤ 600."""
    return min(2.0 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)


class Outcome(msgspec.Struct, frozen=True):
    """One attempt's result: the receiver's status code, or the error that prevented one."""

    status_code: int | None = None
    error: str | None = None
    # True when no later attempt can succeed (410, or a URL the guard now refuses).
    final: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class _Answer:
    """How far a receiver's answer has come: its status once the head is in, then the start
    of an error's body. An attempt cut off at its time limit still reports what it got."""

    status_code: int | None = None
    body: bytearray = field(default_factory=bytearray)

    def outcome(self, cut_off_after: float | None = None) -> Outcome:
        status = self.status_code
        if status is None:
            raise ValueError("no answer yet")
        if 200 <= status < 300:
            return Outcome(status_code=status)
        if status == 410:
            return Outcome(
                status_code=status,
                error="410 Gone: the receiver wants no more deliveries",
                final=True,
            )
        text = self.body.decode(errors="replace")[:_ERROR_BODY_CHARS]
        note = f" (the answer was cut off after {cut_off_after:g} s)" if cut_off_after else ""
        return Outcome(status_code=status, error=f"HTTP {status}: {text}{note}")


_METRIC_OUTCOMES = {
    DeliveryState.DELIVERED: "delivered",
    DeliveryState.PENDING: "retrying",
    DeliveryState.FAILED: "abandoned",
}


def apply(delivery: WebhookDelivery, outcome: Outcome, now: float, retry_for: float) -> None:
    """Record `outcome` of the attempt made at `now` on `delivery`, and decide what is next."""
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.last_status_code = outcome.status_code
    delivery.last_error = outcome.error
    delivery.next_attempt_at = None
    if outcome.delivered:
        delivery.state = DeliveryState.DELIVERED
        delivery.delivered_at = now
        return
    due = now + backoff_for(delivery.attempts)
    if outcome.final or due > delivery.created_at + retry_for:
        delivery.state = DeliveryState.FAILED
        if not outcome.final:
            delivery.last_error = (
                f"gave up after {delivery.attempts} attempts in {now - delivery.created_at:.0f} s "
                f"(WEBHOOK_RETRY_FOR_SECONDS={retry_for:g}); last: {outcome.error}"
            )
        return
    delivery.state = DeliveryState.PENDING
    delivery.next_attempt_at = due


async def payload(services: Services, delivery: WebhookDelivery) -> str:
    """The body, per the Standard Webhooks payload structure: `{"type", "timestamp", "data"}`.

    `data` is the event's data as the job's stream carries it, plus `job_id`, `status` and
    `status_url`; a `completed` event's `download_url` is presigned now (None once the archive
    has expired).
    """
    data: dict[str, Any] = msgspec.json.decode(delivery.data)
    if delivery.event == JobEventName.COMPLETED:
        record = await services.store.get(delivery.job_id)
        ready = record is not None and record.status is JobState.READY and record.archive_key
        data["download_url"] = await download_url(services, record) if ready and record else None
    body = {
        "type": f"job.{delivery.event}",
        "timestamp": datetime.fromtimestamp(delivery.created_at, tz=UTC).isoformat(),
        "data": {
            "job_id": delivery.job_id,
            "status": _STATE_OF_EVENT[JobEventName(delivery.event)].value,
            "status_url": f"/v1/download/status/{delivery.job_id}",
            **data,
        },
    }
    return msgspec.json.encode(body).decode()


def pinned(url: str, address: IPAddress) -> tuple[str, str]:
    """`url` aimed at `address` (a checked one), and the Host header naming the real host."""
    parts = parse_callback_url(url)
    host = f"[{address}]" if address.version == 6 else str(address)
    port = f":{parts.port}" if parts.port else ""
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=host + port, fragment="")), netloc


async def send(services: Services, client: httpx.AsyncClient, delivery: WebhookDelivery) -> Outcome:
    """One attempt: check the URL's addresses again, sign the body, POST it to a checked one.

    The exchange ends after WEBHOOK_TIMEOUT_SECONDS in total (asyncio.timeout around all of
    it): httpx's timeouts bound each read, not their sum, so a receiver sending its answer a
    byte a second would otherwise hold the attempt for ever. Only the answer's head is waited
    for, and of an error's body at most _ERROR_BODY_BYTES are read (raw: no content-coding is
    asked for, so nothing is inflated); the connection is then closed.
    """
    settings = services.settings
    try:
        addresses = await connect_addresses(
            delivery.url, allow_list(settings.webhook_allowed_hosts)
        )
    except UnsafeCallback as exc:
        # Only a failed lookup may be passing; a refused address is refused for good.
        return Outcome(error=f"callback_url {exc}", final="does not resolve" not in str(exc))
    if not settings.webhook_secret:
        return Outcome(error="WEBHOOK_SECRET is not set on this worker; nothing can be signed")
    try:
        body = await payload(services, delivery)
    except Exception as exc:  # storage or Redis away while presigning: try again later
        return Outcome(error=f"could not build the payload: {type(exc).__name__}: {exc}")
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        # Error bodies are read raw and cut short: a compressed one would be unreadable.
        "accept-encoding": "identity",
        **signing.signed_headers(settings.webhook_secret, delivery.webhook_id, body),
    }
    limit = settings.webhook_timeout_seconds
    answer = _Answer()
    try:
        async with asyncio.timeout(limit):
            return await _exchange(client, delivery, addresses, body.encode(), headers, answer)
    except TimeoutError:
        if answer.status_code is None:
            return Outcome(error=f"no answer in {limit:g} s (WEBHOOK_TIMEOUT_SECONDS)")
        return answer.outcome(cut_off_after=limit)


async def _exchange(
    client: httpx.AsyncClient,
    delivery: WebhookDelivery,
    addresses: list[IPAddress],
    content: bytes,
    headers: dict[str, str],
    answer: _Answer,
) -> Outcome:
    """POST `content` to the first of `addresses` that takes a connection, filling `answer`."""
    hostname = urlsplit(delivery.url).hostname or ""
    error = "no address"
    # Like a browser's fallback between A and AAAA records: the next address if one refuses.
    for address in addresses[:4]:
        target, host_header = pinned(delivery.url, address)
        try:
            async with client.stream(
                "POST",
                target,
                content=content,
                headers={**headers, "host": host_header},
                # The certificate is checked against the real name, not the address.
                extensions={"sni_hostname": hostname},
            ) as response:
                answer.status_code = response.status_code
                if not 200 <= response.status_code < 300 and response.status_code != 410:
                    await _read_start(response, answer.body)
            return answer.outcome()
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            error = f"could not connect to {address}: {exc or type(exc).__name__}"
            continue
        except httpx.TimeoutException:
            raise TimeoutError from None  # send() reports it as its own limit's
        except httpx.HTTPError as exc:
            if answer.status_code is not None:  # the body broke off: the status still counts
                return answer.outcome()
            return Outcome(error=f"{type(exc).__name__}: {exc}")
    return Outcome(error=error)


async def _read_start(response: httpx.Response, into: bytearray) -> None:
    """Read the first _ERROR_BODY_BYTES of `response`'s body into `into`, and no more."""
    async for chunk in response.aiter_raw():
        into += chunk[: _ERROR_BODY_BYTES - len(into)]
        if len(into) >= _ERROR_BODY_BYTES:
            return


async def deliver(
    services: Services, outbox: Outbox, client: httpx.AsyncClient, job_id: str, event: str
) -> None:
    """Make one attempt at the claimed delivery (job_id, event) and record what came of it."""
    delivery = await outbox.get(job_id, event)
    if delivery is None:
        await outbox.drop(job_id, event)
        return
    if delivery.state is not DeliveryState.PENDING:
        # Done already (a claim that outlived a slow attempt); make sure it leaves the outbox.
        delivery.next_attempt_at = None
        await outbox.record(delivery)
        return
    outcome = await send(services, client, delivery)
    apply(delivery, outcome, time.time(), services.settings.webhook_retry_for_seconds)
    await outbox.record(delivery)
    webhook_attempted(_METRIC_OUTCOMES[delivery.state])
    logger.info(
        "webhook %s for job %s attempt %d: %s",
        delivery.webhook_id,
        job_id,
        delivery.attempts,
        delivery.state.value if outcome.delivered else (outcome.status_code or outcome.error),
    )


def client_for(services: Services) -> httpx.AsyncClient:
    """The sender's HTTP client: no redirects, no proxies from the environment, time limits.

    Each attempt's total limit is send()'s; connecting to one address gets half of it, so a
    silent first address leaves time to try the next.
    """
    limit = services.settings.webhook_timeout_seconds
    return httpx.AsyncClient(
        timeout=httpx.Timeout(limit, connect=limit / 2),
        follow_redirects=False,
        trust_env=False,
    )

"""Webhook signing (checked with the Standard Webhooks reference library), retry policy and
the redaction of callback URLs in a job's status."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from backend.settings import SettingsError, load_settings
from backend.webhooks.delivery import Outcome, apply, backoff_for
from backend.webhooks.records import DeliveryState, WebhookDelivery, redacted_url
from backend.webhooks.signing import SecretError, check_secret, signed_headers

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def test_signed_headers_verify_with_the_reference_library() -> None:
    body = '{"type":"job.completed","data":{"job_id":"abc"}}'
    headers = signed_headers(SECRET, "msg_abc_completed", body)
    assert headers["webhook-id"] == "msg_abc_completed"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body, headers) == {
        "type": "job.completed",
        "data": {"job_id": "abc"},
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("abc", "abd"), headers)
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    # An old timestamp (a replay) is refused by receivers; ours is now.
    stale = signed_headers(SECRET, "msg_abc_completed", body, now=time.time() - 3600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(body, stale)


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("s3cr3t", "must start with 'whsec_'"),
        ("whsec_not base64!", "base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes, got 5"),
    ],
)
def test_bad_secrets_are_refused(secret: str, says: str) -> None:
    with pytest.raises(SecretError, match=says):
        check_secret(secret)
    with pytest.raises(SettingsError, match="WEBHOOK_SECRET"):
        load_settings({"WEBHOOK_SECRET": secret})


def test_settings_read_the_webhook_variables() -> None:
    settings = load_settings(
        {
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "WEBHOOK_RETRY_FOR_SECONDS": "30",
            "WEBHOOK_TIMEOUT_SECONDS": "2.5",
        }
    )
    assert settings.webhook_secret == SECRET
    assert settings.webhook_allowed_hosts == "127.0.0.1,localhost"
    assert (settings.webhook_retry_for_seconds, settings.webhook_timeout_seconds) == (30, 2.5)
    with pytest.raises(SettingsError, match="WEBHOOK_ALLOWED_HOSTS"):
        load_settings({"WEBHOOK_ALLOWED_HOSTS": "http://x/"})


def delivery(created_at: float = 1000.0) -> WebhookDelivery:
    return WebhookDelivery(
        webhook_id="msg_j_failed",
        job_id="j",
        event="failed",
        url="https://hooks.example/x",
        data="{}",
        created_at=created_at,
    )


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_for(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff_for(30) == 600


def test_a_2xx_answer_delivers() -> None:
    d = delivery()
    apply(d, Outcome(status_code=204), now=1000.5, retry_for=3600)
    assert (d.state, d.attempts, d.delivered_at, d.next_attempt_at) == (
        DeliveryState.DELIVERED,
        1,
        1000.5,
        None,
    )


def test_other_answers_retry_with_backoff_until_the_time_is_up() -> None:
    d = delivery()
    apply(d, Outcome(status_code=500, error="HTTP 500: oops"), now=1000.0, retry_for=10)
    assert (d.state, d.next_attempt_at, d.last_status_code) == (DeliveryState.PENDING, 1001, 500)
    apply(d, Outcome(error="could not connect"), now=1001.0, retry_for=10)
    assert (d.state, d.next_attempt_at, d.last_status_code) == (DeliveryState.PENDING, 1003, None)
    apply(d, Outcome(error="could not connect"), now=1003.0, retry_for=10)
    assert d.next_attempt_at == 1007
    # The next wait (8 s) would end past created_at + 10 s: given up, saying why.
    apply(d, Outcome(error="could not connect"), now=1007.0, retry_for=10)
    assert d.state is DeliveryState.FAILED and d.next_attempt_at is None
    assert d.last_error is not None and d.last_error.startswith("gave up after 4 attempts")


def test_410_gone_stops_at_once() -> None:
    d = delivery()
    apply(d, Outcome(status_code=410, error="410 Gone", final=True), now=1000.0, retry_for=3600)
    assert (d.state, d.attempts, d.next_attempt_at) == (DeliveryState.FAILED, 1, None)


def test_query_values_are_hidden_in_the_public_url() -> None:
    assert redacted_url("https://h.example/x?token=s3cr3t&a=1") == "https://h.example/…?token=…&a=…"
    assert redacted_url("https://h.example/hook/SECRET;p=s3cr3t#frag") == "https://h.example/…"
    assert redacted_url("https://h.example:8443/") == "https://h.example:8443/"
    assert redacted_url("https://h.example") == "https://h.example"

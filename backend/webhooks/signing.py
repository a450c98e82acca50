"""Signing per the Standard Webhooks specification (standardwebhooks.com, spec v1.0.0).

Every delivery carries three headers: `webhook-id` (the message id, the same on every retry,
so a receiver can drop duplicates), `webhook-timestamp` (integer seconds since the epoch; a
receiver refuses ones more than 5 minutes off, against replays) and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` keyed with the secret's bytes). The
HMAC is the published `standardwebhooks` library's, so our signatures are what its `verify`
and every other implementation of the spec accept.
"""

from __future__ import annotations

import base64
import binascii
import time
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
# The spec: "secrets SHOULD be between 24 bytes and 64 bytes".
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64


class SecretError(ValueError):
    """A signing secret that is not `whsec_` + base64 of 24 to 64 bytes."""


def check_secret(secret: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret; SecretError says what is wrong with it."""
    if not secret.startswith(SECRET_PREFIX):
        raise SecretError(f"must start with {SECRET_PREFIX!r} (the Standard Webhooks format)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"must be {SECRET_PREFIX!r} followed by base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise SecretError(
            f"must encode {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, got {len(key)}"
        )
    return key


def signed_headers(
    secret: str, webhook_id: str, body: str, now: float | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for `body` (the exact text that will be sent)."""
    stamp = datetime.fromtimestamp(int(time.time() if now is None else now), tz=UTC)
    signature = Webhook(secret).sign(msg_id=webhook_id, timestamp=stamp, data=body)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
    }

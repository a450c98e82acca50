"""Who owns a job: the browser's signed cookie, else the shared public owner.

The cookie holds a random owner id and an HMAC of it keyed by SECRET_KEY, so it cannot be
forged or guessed. API clients without a cookie are the "public" owner; their job ids are
unguessable (128 random bits), which is what keeps their jobs private.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

OWNER_COOKIE = "longhaul_owner"
PUBLIC_OWNER = "public"


def _signature(owner_id: str, secret_key: str) -> str:
    return hmac.new(secret_key.encode(), owner_id.encode(), hashlib.sha256).hexdigest()[:32]


def new_owner_cookie(secret_key: str) -> tuple[str, str]:
    """A fresh (owner id, cookie value) pair."""
    owner_id = secrets.token_hex(16)
    return owner_id, f"{owner_id}.{_signature(owner_id, secret_key)}"


def owner_from_cookie(value: str | None, secret_key: str) -> str | None:
    """The owner id in a cookie value, or None when it is absent or its signature is wrong."""
    if not value or "." not in value:
        return None
    owner_id, _, signature = value.partition(".")
    if len(owner_id) != 32 or not hmac.compare_digest(signature, _signature(owner_id, secret_key)):
        return None
    return owner_id


def may_read(job_owner: str, requester: str) -> bool:
    """A job is visible to its owner; public jobs to anyone who holds the id."""
    return job_owner in (PUBLIC_OWNER, requester)

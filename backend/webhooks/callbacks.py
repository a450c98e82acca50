"""The API's check of a job's `callback_url`, before the job is created."""

from __future__ import annotations

from functools import lru_cache

from backend.settings import Settings
from backend.webhooks.ssrf import (
    AllowList,
    Resolver,
    connect_addresses,
    parse_allowed_hosts,
    system_resolver,
)


class WebhooksOff(ValueError):
    """This server signs no webhooks (WEBHOOK_SECRET is unset), so it accepts no callback."""


@lru_cache(maxsize=8)
def allow_list(value: str) -> AllowList:
    """WEBHOOK_ALLOWED_HOSTS parsed (validated when settings load)."""
    return parse_allowed_hosts(value)


async def check_callback_url(
    settings: Settings, url: str, resolve: Resolver = system_resolver
) -> None:
    """Refuse a callback this server cannot sign or must not reach.

    WebhooksOff without WEBHOOK_SECRET (refused rather than sent unsigned: a receiver could
    not tell our POST from a forged one); ssrf.UnsafeCallback for a URL the SSRF guard
    refuses. The worker checks the address again when it delivers.
    """
    if not settings.webhook_secret:
        raise WebhooksOff("webhooks are off on this server (WEBHOOK_SECRET is not set)")
    await connect_addresses(url, allow_list(settings.webhook_allowed_hosts), resolve)

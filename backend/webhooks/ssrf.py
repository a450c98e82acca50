"""The SSRF guard of callback URLs: which URLs a webhook may be sent to, and where.

A callback URL is a request, made by our workers from inside our network, to an address a
client chose: without a guard it reaches Redis on loopback, an admin page on 10.x, or a cloud's
metadata service at 169.254.169.254 (the OWASP SSRF Prevention Cheat Sheet's first examples).
So the URL must be http(s) with no credentials, and EVERY address its host resolves to must be
globally routable; an operator lists exceptions in WEBHOOK_ALLOWED_HOSTS (tests and
on-premises receivers). Names are resolved again at delivery time and the request is sent to
an address checked then (`connect_addresses`), so a name that later resolves elsewhere (DNS
rebinding) reaches nothing it should not.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> every address the host resolves to.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 5.0

# RFC 6598 shared address space (carrier-grade NAT): not is_private, not global either.
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# RFC 6052 NAT64: the IPv4 address is in the last 32 bits and a NAT64 gateway reaches it.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeCallback(ValueError):
    """A callback URL the guard refuses; the message says which rule it breaks."""


@dataclass(frozen=True, slots=True)
class AllowList:
    """WEBHOOK_ALLOWED_HOSTS parsed: host names (any address they resolve to is allowed) and
    addresses or networks (allowed whatever name led to them)."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def parse_allowed_hosts(value: str) -> AllowList:
    """`"127.0.0.1, localhost, 10.0.0.0/8, ::1"` as an AllowList; ValueError for a bad entry."""
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            if "/" in entry or not all(c.isalnum() or c in "-._" for c in entry):
                raise ValueError(f"{entry!r} is neither a host name nor an address") from None
            names.add(entry.lower().rstrip("."))
    return AllowList(frozenset(names), tuple(networks))


def forbidden_reason(address: IPAddress) -> str | None:
    """Why a request must not go to `address`, or None when it is globally routable.

    IPv4-mapped (`::ffff:127.0.0.1`), 6to4, Teredo and NAT64 addresses are judged by the IPv4
    address they carry, since that is where the packets end up.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return forbidden_reason(embedded)
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services live)"
    if address.is_multicast:
        return "a multicast address"
    if address in _CGNAT:
        return "a carrier-grade NAT address (RFC 6598)"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved address"
    return None


def parse_callback_url(url: str) -> SplitResult:
    """The URL's parts if its form is acceptable: http or https, a host, no user:password,
    at most MAX_URL_LENGTH characters. UnsafeCallback says what is wrong."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeCallback(f"must be at most {MAX_URL_LENGTH} characters, got {len(url)}")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise UnsafeCallback("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeCallback(f"is not a valid URL ({exc})") from None
    if parts.scheme not in {"http", "https"}:
        got = f"{parts.scheme}:" if parts.scheme else repr(url[:64])
        raise UnsafeCallback(f"must be an http:// or https:// URL, got {got}")
    if not parts.hostname:
        raise UnsafeCallback("must name a host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeCallback("must not carry credentials (user:password@); put a token in the path")
    if port == 0:
        raise UnsafeCallback("port 0 cannot be reached")
    return parts


def default_port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every A and AAAA address of `host` (an IP literal resolves to itself), in the order the
    system's resolver gives them; OSError when it does not resolve."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # Strip an IPv6 zone ("fe80::1%eth0"): the address alone decides.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def connect_addresses(
    url: str, allowed: AllowList, resolve: Resolver = system_resolver
) -> list[IPAddress]:
    """The addresses a request to `url` may connect to: all of its host's, each checked.

    UnsafeCallback when the URL's form is wrong, its host does not resolve, or ANY address is
    forbidden (one bad address among good ones is how rebinding attacks hide), unless the host
    name or that address is on the operator's allow-list.
    """
    parts = parse_callback_url(url)
    host = parts.hostname or ""
    try:
        addresses = await resolve(host, default_port(parts))
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise UnsafeCallback(f"host {host!r} does not resolve ({exc})") from None
    if not addresses:
        raise UnsafeCallback(f"host {host!r} does not resolve")
    if allowed.allows_name(host):
        return addresses
    for address in addresses:
        reason = forbidden_reason(address)
        if reason is not None and not allowed.allows_address(address):
            what = (
                f"address {address}"
                if host == str(address)
                else f"host {host!r} resolves to {address}, which"
            )
            raise UnsafeCallback(
                f"{what} is {reason}; callbacks go to public addresses only "
                "(an operator can allow it in WEBHOOK_ALLOWED_HOSTS)"
            )
    return addresses

"""The SSRF guard of callback URLs: forms, every forbidden kind of address, the allow-list."""

from __future__ import annotations

import ipaddress

import pytest

from backend.webhooks.ssrf import (
    AllowList,
    IPAddress,
    UnsafeCallback,
    connect_addresses,
    forbidden_reason,
    parse_allowed_hosts,
    parse_callback_url,
)

NOBODY = AllowList()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),  # RFC 4193 unique local
        ("169.254.169.254", "link-local"),  # AWS, GCP and Azure metadata
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "private"),  # TEST-NET-1 documentation range
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused_with_their_kind(address: str, kind: str) -> None:
    reason = forbidden_reason(ipaddress.ip_address(address))
    assert reason is not None and kind in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::6810:85e5"])
def test_public_addresses_pass(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "spaces"),
        ("hooks.example.com/path", "http:// or https://"),
        ("ftp://hooks.example.com/x", "got ftp:"),
        ("file:///etc/passwd", "got file:"),
        ("javascript:alert(1)", "got javascript:"),
        ("http:///path-only", "must name a host"),
        ("https://user:pw@hooks.example.com/", "credentials"),
        ("https://token@hooks.example.com/", "credentials"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("https://hooks.example.com:0/", "port 0"),
        ("https://hooks.example.com/\r\nX-Injected: 1", "control characters"),
        ("https://hooks.example.com/" + "a" * 2048, "at most 2048"),
    ],
)
def test_bad_forms_are_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(UnsafeCallback, match=says):
        parse_callback_url(url)


def test_an_ordinary_url_keeps_its_parts() -> None:
    parts = parse_callback_url("https://hooks.example.com:8443/longhaul?token=a")
    assert (parts.hostname, parts.port, parts.path) == ("hooks.example.com", 8443, "/longhaul")


def resolver_of(*addresses: str):  # type: ignore[no-untyped-def]
    """A resolver standing in for DNS: the test chooses what the name resolves to."""

    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in addresses]

    return resolve


async def test_loopback_is_refused_through_the_real_resolver() -> None:
    with pytest.raises(UnsafeCallback, match=r"127.0.0.1 is a loopback address"):
        await connect_addresses("http://127.0.0.1:8080/hook", NOBODY)
    with pytest.raises(UnsafeCallback, match=r"'localhost' resolves to .* loopback"):
        await connect_addresses("http://localhost:8080/hook", NOBODY)
    # Odd spellings of an IPv4 address resolve to the same place and are refused too.
    with pytest.raises(UnsafeCallback, match="loopback"):
        await connect_addresses("http://2130706433/hook", NOBODY)
    with pytest.raises(UnsafeCallback, match="loopback"):
        await connect_addresses("http://[::ffff:7f00:1]/hook", NOBODY)


async def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    resolve = resolver_of("93.184.216.34", "169.254.169.254")
    with pytest.raises(UnsafeCallback, match=r"169.254.169.254.*link-local"):
        await connect_addresses("https://rebind.example/hook", NOBODY, resolve)


async def test_a_public_name_passes_with_all_its_addresses() -> None:
    resolve = resolver_of("93.184.216.34", "2606:2800:220:1::1")
    addresses = await connect_addresses("https://hooks.example/x", NOBODY, resolve)
    assert [str(a) for a in addresses] == ["93.184.216.34", "2606:2800:220:1::1"]


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    async def nxdomain(host: str, port: int) -> list[IPAddress]:
        raise OSError("Name or service not known")

    with pytest.raises(UnsafeCallback, match="does not resolve"):
        await connect_addresses("https://nowhere.invalid/x", NOBODY, nxdomain)


async def test_the_operator_allow_list_admits_names_addresses_and_networks() -> None:
    allowed = parse_allowed_hosts("localhost, 127.0.0.1, 10.0.0.0/8, [::1]")
    assert await connect_addresses("http://localhost:9/x", allowed)
    assert await connect_addresses("http://127.0.0.1:9/x", allowed)
    assert await connect_addresses("http://[::1]:9/x", allowed)
    assert await connect_addresses("http://internal.corp/x", allowed, resolver_of("10.2.3.4"))
    # Only what is listed: another private address stays refused.
    with pytest.raises(UnsafeCallback, match=r"192.168.0.5"):
        await connect_addresses("http://other.corp/x", allowed, resolver_of("192.168.0.5"))
    with pytest.raises(UnsafeCallback, match=r"169.254.169.254"):
        await connect_addresses("http://169.254.169.254/latest/meta-data/", allowed)


def test_a_bad_allow_list_entry_is_refused() -> None:
    with pytest.raises(ValueError, match="neither a host name nor an address"):
        parse_allowed_hosts("localhost, http://x/")


def test_a_request_is_aimed_at_the_checked_address_under_the_real_host_name() -> None:
    from backend.webhooks.delivery import pinned

    v4 = pinned("https://hooks.example:8443/x?y=1#frag", ipaddress.ip_address("93.184.216.34"))
    assert v4 == ("https://93.184.216.34:8443/x?y=1", "hooks.example:8443")
    v6 = pinned("http://hooks.example/x", ipaddress.ip_address("2606:2800:220:1::1"))
    assert v6 == ("http://[2606:2800:220:1::1]/x", "hooks.example")

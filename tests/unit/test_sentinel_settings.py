"""REDIS_SENTINELS and friends: parsing, refusals by name, and what the clients are built with.

Reaching a real master through a real sentinel, and a failover, are in tests/test_sentinel.py.
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.sentinel import SentinelConnectionPool

from backend import redisconn
from backend.settings import SettingsError, load_settings


def test_sentinel_is_off_by_default_and_clients_use_redis_url() -> None:
    settings = load_settings({"REDIS_URL": "redis://cache.internal:6380/2"})
    assert settings.sentinel_addresses == []
    assert settings.redis_sentinel_master == "longhaul"
    client = redisconn.connect(settings, Redis)
    assert not isinstance(client.connection_pool, SentinelConnectionPool)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.internal", 6380, 2)


def test_sentinels_parse_into_host_port_pairs_ipv6_included() -> None:
    settings = load_settings({"REDIS_SENTINELS": " sentinel-1:26379, 10.0.0.7:26380,[::1]:26381 ,"})
    assert settings.sentinel_addresses == [
        ("sentinel-1", 26379),
        ("10.0.0.7", 26380),
        ("::1", 26381),
    ]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"REDIS_SENTINELS": "sentinel-1"}, "REDIS_SENTINELS entry 'sentinel-1'"),
        ({"REDIS_SENTINELS": "a:26379,b:port"}, "REDIS_SENTINELS entry 'b:port'"),
        ({"REDIS_SENTINELS": ":26379"}, "REDIS_SENTINELS entry ':26379'"),
        ({"REDIS_SENTINELS": "a:0"}, "port in 1-65535"),
        ({"REDIS_SENTINELS": "a:65536"}, "port in 1-65535"),
        ({"REDIS_SENTINELS": "a:26379", "REDIS_SENTINEL_MASTER": " "}, "REDIS_SENTINEL_MASTER"),
        (
            {"REDIS_SENTINELS": "a:26379", "REDIS_URL": "unix:///run/redis.sock"},
            "REDIS_URL must be redis:// or rediss:// when REDIS_SENTINELS is set",
        ),
        ({"REDIS_URL": "http://redis:6379"}, "REDIS_URL='http://redis:6379'"),
    ],
)
def test_unusable_redis_settings_are_refused_by_name(env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=says.replace("(", r"\(").replace(")", r"\)")):
        load_settings(env)


def test_with_sentinels_the_url_gives_db_user_password_and_tls_but_not_the_address() -> None:
    settings = load_settings(
        {
            "REDIS_URL": "rediss://app:s3cret@ignored-host:1/3",
            "REDIS_SENTINELS": "sentinel-1:26379,sentinel-2:26379",
            "REDIS_SENTINEL_MASTER": "jobs",
            "REDIS_SENTINEL_PASSWORD": "sentinel-pass",
        }
    )
    client = redisconn.connect(settings, Redis, socket_timeout=5)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "jobs"
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "app", "s3cret")
    assert kwargs["socket_timeout"] == 5
    assert "host" not in kwargs
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    sentinels = pool.sentinel_manager.sentinels
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ] == [("sentinel-1", 26379), ("sentinel-2", 26379)]
    # The sentinels' own password, not the master's, and a short timeout for a dead one.
    assert {s.connection_pool.connection_kwargs["password"] for s in sentinels} == {"sentinel-pass"}
    assert sentinels[0].connection_pool.connection_kwargs["socket_connect_timeout"] == 1.0

"""The one settings object, read from the environment.

Names follow the original service where it had them (`S3_*`, `REDIS_URL`); everything else is
prefixed plainly. Settings are plain data: behaviour lives in the functions that take them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    # Object storage. S3_ENDPOINT is what the API and workers reach; S3_PUBLIC_ENDPOINT is what
    # browsers reach, and presigned URLs are signed for it (the host is part of the signature).
    s3_endpoint: str = "http://127.0.0.1:9000"
    s3_public_endpoint: str = ""
    s3_access_key_id: str = "longhaul"
    s3_secret_access_key: str = "longhaul-secret"
    s3_region: str = "us-east-1"
    s3_bucket_name: str = "downloads"
    s3_source_bucket: str = "catalogue"
    # Every S3 call waits at most this long to connect, and this long for each read of an
    # answer (an idle timeout, so a long object read is fine while bytes keep coming).
    s3_connect_timeout_seconds: float = 2.0
    s3_read_timeout_seconds: float = 4.0

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Redis Sentinel (failover): comma-separated host:port of the sentinels; "" reaches
    # REDIS_URL directly. With sentinels, every client asks them for the master of
    # REDIS_SENTINEL_MASTER, and REDIS_URL gives only its db, user, password and TLS (rediss).
    redis_sentinels: str = ""
    redis_sentinel_master: str = "longhaul"
    # The sentinels' own password (`requirepass` in sentinel.conf), if they have one.
    redis_sentinel_password: str = ""

    presign_ttl_seconds: int = 3600
    max_files_per_job: int = 1000
    worker_concurrency: int = 5
    job_timeout_seconds: int = 600
    # A running attempt holds its job under a lease it renews every third of this; a worker
    # that dies loses the lease within this many seconds and another worker takes the job.
    job_lease_seconds: float = 10.0
    max_retries: int = 3
    retry_backoff_seconds: tuple[float, ...] = (1.0, 2.0, 4.0)
    # Simulates slow sources (bytes per second per job); 0 turns it off.
    throttle_bytes_per_second: int = 0
    # Multipart part size; S3 requires at least 5 MiB for every part but the last.
    archive_part_size: int = 8 * 1024 * 1024
    job_record_ttl_seconds: int = 7 * 24 * 3600
    sse_ping_seconds: float = 15.0
    sse_poll_fallback_seconds: float = 2.0

    # How long a finished archive is kept before the sweeper deletes it (status `expired`).
    archive_ttl_seconds: int = 24 * 3600
    # Workers rebuild the catalogue index (catalogue_index.py) from a full listing of the
    # source bucket this often, so a file added or deleted shows within about 1.5 times this.
    catalogue_refresh_seconds: float = 30.0
    # Per client (token, else IP through the trusted proxy), shared by all API processes.
    rate_limit_per_minute: int = 600
    # Catalogue searches per client per minute whose name text no one searched lately (each
    # is a scan of every name in Redis); repeats, paging, size bounds and sorts are free.
    catalogue_searches_per_minute: int = 30
    max_active_jobs_per_client: int = 20
    max_streams_per_client: int = 20
    # API bearer tokens: HS256 JWTs signed with this secret; empty turns tokens off.
    jwt_secret: str = ""
    # When true, API requests need a token or the browser's cookie; else anonymous
    # clients share the "public" owner and rely on unguessable job ids.
    api_auth_required: bool = False
    # Comma-separated origins allowed to call the API from other sites ("" = none).
    cors_allow_origins: str = ""
    # Webhooks (backend/webhooks/): the Standard Webhooks signing secret, `whsec_<base64>`;
    # empty turns webhooks off and a `callback_url` is refused, since an unsigned callback
    # could not be told apart from a forged one.
    webhook_secret: str = ""
    # Comma-separated host names, IP addresses or networks (CIDR) that callbacks may reach
    # even though they are loopback, private or link-local (the SSRF guard's operator list).
    webhook_allowed_hosts: str = ""
    # A delivery is retried with exponential backoff for at most this long after its event.
    webhook_retry_for_seconds: int = 3600
    # One delivery attempt's time limit in total (connect, send, and read the answer).
    webhook_timeout_seconds: float = 10.0
    # Error reports to Sentry (errorreporting.py), off while the DSN is empty. Traces are
    # OpenTelemetry's (tracing.py), so Sentry gets none unless a sample rate asks for them.
    sentry_dsn: str = ""
    sentry_environment: str = ""
    sentry_traces_sample_rate: float = 0.0

    host: str = "127.0.0.1"
    port: int = 8000
    # API processes sharing PORT (uvicorn's process manager). They share nothing but Redis and
    # S3, so one per core is the way to use every core; `python -m backend api --workers N`
    # overrides it.
    api_processes: int = 1
    secret_key: str = "change-me-in-production"
    log_level: str = "INFO"
    queue_name: str = "longhaul:queue"
    key_prefix: str = "longhaul"
    # The worker's Prometheus endpoint (`/metrics` on every interface); 0 turns it off. The API
    # serves its own on its port.
    metrics_port: int = 9100

    @property
    def public_endpoint(self) -> str:
        return self.s3_public_endpoint or self.s3_endpoint

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The sentinels as (host, port) pairs; empty when Sentinel is off."""
        return parse_sentinels(self.redis_sentinels)

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def backoff_for(self, attempt: int) -> float:
        """Delay before the retry that follows failed attempt number `attempt` (1-based)."""
        index = min(max(attempt, 1), len(self.retry_backoff_seconds)) - 1
        return self.retry_backoff_seconds[index]

    def replace(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


# Environment variable name -> settings field. Kept explicit so docs, docker-compose and the
# tests that parse it can check names against one list.
ENVIRONMENT_NAMES: dict[str, str] = {
    "S3_ENDPOINT": "s3_endpoint",
    "S3_PUBLIC_ENDPOINT": "s3_public_endpoint",
    "S3_ACCESS_KEY_ID": "s3_access_key_id",
    "S3_SECRET_ACCESS_KEY": "s3_secret_access_key",
    "S3_REGION": "s3_region",
    "S3_BUCKET_NAME": "s3_bucket_name",
    "S3_SOURCE_BUCKET": "s3_source_bucket",
    "S3_CONNECT_TIMEOUT_SECONDS": "s3_connect_timeout_seconds",
    "S3_READ_TIMEOUT_SECONDS": "s3_read_timeout_seconds",
    "REDIS_URL": "redis_url",
    "REDIS_SENTINELS": "redis_sentinels",
    "REDIS_SENTINEL_MASTER": "redis_sentinel_master",
    "REDIS_SENTINEL_PASSWORD": "redis_sentinel_password",
    "PRESIGN_TTL_SECONDS": "presign_ttl_seconds",
    "MAX_FILES_PER_JOB": "max_files_per_job",
    "WORKER_CONCURRENCY": "worker_concurrency",
    "JOB_TIMEOUT_SECONDS": "job_timeout_seconds",
    "JOB_LEASE_SECONDS": "job_lease_seconds",
    "MAX_RETRIES": "max_retries",
    "RETRY_BACKOFF_SECONDS": "retry_backoff_seconds",
    "THROTTLE_BYTES_PER_SECOND": "throttle_bytes_per_second",
    "ARCHIVE_PART_SIZE": "archive_part_size",
    "JOB_RECORD_TTL_SECONDS": "job_record_ttl_seconds",
    "SSE_PING_SECONDS": "sse_ping_seconds",
    "SSE_POLL_FALLBACK_SECONDS": "sse_poll_fallback_seconds",
    "ARCHIVE_TTL_SECONDS": "archive_ttl_seconds",
    "CATALOGUE_REFRESH_SECONDS": "catalogue_refresh_seconds",
    "RATE_LIMIT_PER_MINUTE": "rate_limit_per_minute",
    "CATALOGUE_SEARCHES_PER_MINUTE": "catalogue_searches_per_minute",
    "MAX_ACTIVE_JOBS_PER_CLIENT": "max_active_jobs_per_client",
    "MAX_STREAMS_PER_CLIENT": "max_streams_per_client",
    "JWT_SECRET": "jwt_secret",
    "API_AUTH_REQUIRED": "api_auth_required",
    "CORS_ALLOW_ORIGINS": "cors_allow_origins",
    "WEBHOOK_SECRET": "webhook_secret",
    "WEBHOOK_ALLOWED_HOSTS": "webhook_allowed_hosts",
    "WEBHOOK_RETRY_FOR_SECONDS": "webhook_retry_for_seconds",
    "WEBHOOK_TIMEOUT_SECONDS": "webhook_timeout_seconds",
    "SENTRY_DSN": "sentry_dsn",
    "SENTRY_ENVIRONMENT": "sentry_environment",
    "SENTRY_TRACES_SAMPLE_RATE": "sentry_traces_sample_rate",
    "HOST": "host",
    "PORT": "port",
    "API_PROCESSES": "api_processes",
    "SECRET_KEY": "secret_key",
    "LOG_LEVEL": "log_level",
    "QUEUE_NAME": "queue_name",
    "KEY_PREFIX": "key_prefix",
    "METRICS_PORT": "metrics_port",
}


def _convert(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a valid {type(default).__name__}") from exc
    return raw


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment (or the given mapping), validating each value."""
    env = os.environ if environ is None else environ
    defaults = Settings()
    values: dict[str, Any] = {}
    for env_name, field_name in ENVIRONMENT_NAMES.items():
        if env_name in env:
            values[field_name] = _convert(env_name, env[env_name], getattr(defaults, field_name))
    settings = defaults.replace(**values)
    _validate(settings)
    return settings


def parse_sentinels(raw: str) -> list[tuple[str, int]]:
    """REDIS_SENTINELS (`host:port,host:port`, IPv6 as `[::1]:26379`) as (host, port) pairs.

    Raises SettingsError naming the entry that is not a host and a port in 1-65535.
    """
    addresses = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(
                f"REDIS_SENTINELS entry {entry!r} must be host:port with a port in 1-65535 "
                "(e.g. sentinel-1:26379,sentinel-2:26379)"
            )
        addresses.append((host, int(port)))
    return addresses


def _validate_redis(settings: Settings) -> None:
    scheme = urlsplit(settings.redis_url).scheme
    if scheme not in {"redis", "rediss", "unix"}:
        raise SettingsError(
            f"REDIS_URL={settings.redis_url!r} must be a redis://, rediss:// or unix:// URL"
        )
    if not settings.sentinel_addresses:
        return
    if scheme == "unix":
        raise SettingsError(
            "REDIS_URL must be redis:// or rediss:// when REDIS_SENTINELS is set: "
            "the sentinels name the master's host and port"
        )
    if not settings.redis_sentinel_master.strip():
        raise SettingsError("REDIS_SENTINEL_MASTER must name the master the sentinels monitor")


def _validate(settings: Settings) -> None:
    _validate_redis(settings)
    for name, url in (
        ("S3_ENDPOINT", settings.s3_endpoint),
        ("S3_PUBLIC_ENDPOINT", settings.public_endpoint),
    ):
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise SettingsError(f"{name}={url!r} must be an http:// or https:// URL")
    if settings.max_files_per_job < 1:
        raise SettingsError("MAX_FILES_PER_JOB must be at least 1")
    if settings.api_processes < 1:
        raise SettingsError("API_PROCESSES must be at least 1")
    if settings.worker_concurrency < 1:
        raise SettingsError("WORKER_CONCURRENCY must be at least 1")
    if settings.job_lease_seconds < 1:
        raise SettingsError("JOB_LEASE_SECONDS must be at least 1")
    if settings.catalogue_refresh_seconds < 1:
        raise SettingsError("CATALOGUE_REFRESH_SECONDS must be at least 1")
    if settings.catalogue_searches_per_minute < 1:
        raise SettingsError("CATALOGUE_SEARCHES_PER_MINUTE must be at least 1")
    if settings.s3_connect_timeout_seconds <= 0 or settings.s3_read_timeout_seconds <= 0:
        raise SettingsError("S3_CONNECT_TIMEOUT_SECONDS and S3_READ_TIMEOUT_SECONDS must be > 0")
    if not settings.retry_backoff_seconds:
        raise SettingsError("RETRY_BACKOFF_SECONDS needs at least one delay")
    if not 0 <= settings.metrics_port <= 65535:
        raise SettingsError("METRICS_PORT must be a TCP port (1-65535), or 0 for none")
    if settings.archive_part_size < 5 * 1024 * 1024:
        raise SettingsError("ARCHIVE_PART_SIZE must be at least 5 MiB (an S3 rule)")
    if settings.webhook_retry_for_seconds < 0 or settings.webhook_timeout_seconds <= 0:
        raise SettingsError("WEBHOOK_RETRY_FOR_SECONDS must be >= 0, WEBHOOK_TIMEOUT_SECONDS > 0")
    if settings.webhook_secret:
        # Imported here: the settings module stays free of the webhooks package at import.
        from backend.webhooks.signing import SecretError, check_secret

        try:
            check_secret(settings.webhook_secret)
        except SecretError as exc:
            raise SettingsError(f"WEBHOOK_SECRET: {exc}") from exc
    if settings.webhook_allowed_hosts:
        from backend.webhooks.ssrf import parse_allowed_hosts

        try:
            parse_allowed_hosts(settings.webhook_allowed_hosts)
        except ValueError as exc:
            raise SettingsError(f"WEBHOOK_ALLOWED_HOSTS: {exc}") from exc
    if not 0 <= settings.sentry_traces_sample_rate <= 1:
        raise SettingsError("SENTRY_TRACES_SAMPLE_RATE must be between 0 and 1")
    if settings.sentry_dsn:
        # Not echoed: a DSN carries the project's key.
        dsn = urlsplit(settings.sentry_dsn)
        if dsn.scheme not in {"http", "https"} or not dsn.username or not dsn.path.strip("/"):
            raise SettingsError(
                "SENTRY_DSN must look like https://<public key>@<host>/<project id>"
            )

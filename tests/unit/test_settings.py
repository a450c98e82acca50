"""Settings from the environment: names, conversions, and refusals of unusable values."""

from __future__ import annotations

import pytest

from backend.settings import ENVIRONMENT_NAMES, Settings, SettingsError, load_settings


def test_defaults_match_the_documented_service() -> None:
    settings = load_settings({})
    assert settings.s3_bucket_name == "downloads"
    assert settings.presign_ttl_seconds == 3600
    assert settings.max_files_per_job == 1000
    assert settings.worker_concurrency == 5
    assert settings.max_retries == 3
    assert settings.retry_backoff_seconds == (1.0, 2.0, 4.0)
    assert settings.public_endpoint == settings.s3_endpoint


def test_environment_overrides_convert_types() -> None:
    settings = load_settings(
        {
            "S3_ENDPOINT": "https://s3.example.com",
            "S3_PUBLIC_ENDPOINT": "https://files.example.com",
            "WORKER_CONCURRENCY": "9",
            "RETRY_BACKOFF_SECONDS": "0.5, 1,3",
            "SSE_PING_SECONDS": "2.5",
        }
    )
    assert settings.worker_concurrency == 9
    assert settings.retry_backoff_seconds == (0.5, 1.0, 3.0)
    assert settings.sse_ping_seconds == 2.5
    assert settings.public_endpoint == "https://files.example.com"


def test_backoff_follows_the_attempt_and_holds_at_the_last_delay() -> None:
    settings = Settings()
    assert [settings.backoff_for(n) for n in (1, 2, 3, 4, 9)] == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert settings.max_attempts == 4


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("WORKER_CONCURRENCY", "five", "WORKER_CONCURRENCY"),
        ("WORKER_CONCURRENCY", "0", "WORKER_CONCURRENCY"),
        ("S3_ENDPOINT", "minio:9000", "S3_ENDPOINT"),
        ("ARCHIVE_PART_SIZE", "1024", "5 MiB"),
        ("RETRY_BACKOFF_SECONDS", "soon", "RETRY_BACKOFF_SECONDS"),
        ("MAX_FILES_PER_JOB", "0", "MAX_FILES_PER_JOB"),
        ("API_PROCESSES", "0", "API_PROCESSES"),
        ("METRICS_PORT", "70000", "METRICS_PORT"),
        ("METRICS_PORT", "-1", "METRICS_PORT"),
    ],
)
def test_unusable_values_are_refused_by_name(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        load_settings({name: value})


def test_every_environment_name_maps_to_a_field() -> None:
    fields = set(Settings.__dataclass_fields__)
    assert set(ENVIRONMENT_NAMES.values()) <= fields

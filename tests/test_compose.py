"""docker-compose.yml, checked by reading it: Docker cannot run here, so the file must be right.

Services, ports, health checks, start order, persistence, and every environment variable the
app reads against the one settings object.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.settings import ENVIRONMENT_NAMES, load_settings
from tests.nginx_fixtures import NGINX, main_config, render, template_variables

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_SERVICES = ("api", "worker")
# Read by the processes but not settings: uvicorn's trusted proxies and OpenTelemetry's own.
EXTRA_NAMES = {"FORWARDED_ALLOW_IPS"}
_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def interpolate(value: object) -> str:
    """Compose's `${NAME:-default}` with nothing set in the shell: the default."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: environment should be a mapping"
    return {name: interpolate(value) for name, value in env.items()}


def depends_on(service: str) -> dict[str, str]:
    raw = SERVICES[service].get("depends_on", {})
    assert isinstance(raw, dict), f"{service}: depends_on should name conditions"
    return {name: spec["condition"] for name, spec in raw.items()}


def test_the_whole_system_is_there() -> None:
    assert set(SERVICES) >= {"nginx", "api", "worker", "redis", "minio", "minio-init", "jaeger"}
    assert SERVICES["minio-init"]["image"].startswith("minio/mc")
    assert SERVICES["api"]["command"] == ["python", "-m", "backend", "api"]
    assert SERVICES["worker"]["command"] == ["python", "-m", "backend", "worker"]


def test_only_nginx_serves_the_app_on_port_80_and_api_and_worker_can_be_scaled() -> None:
    assert SERVICES["nginx"]["ports"] == ["80:80"]
    for name in APP_SERVICES:
        service = SERVICES[name]
        assert service["build"] == "."
        # A fixed name or host port would stop `--scale` from starting a second copy.
        assert "container_name" not in service
        assert "ports" not in service
    assert "8000" in SERVICES["api"]["expose"]
    assert "16686:16686" in SERVICES["jaeger"]["ports"]


@pytest.mark.parametrize("name", ["nginx", "api", "worker", "redis", "minio", "jaeger"])
def test_long_running_services_have_health_checks(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert check["test"][0] == "CMD"
    assert len(check["test"]) > 1
    assert {"interval", "timeout", "retries"} <= set(check)


def test_start_order_waits_for_health_and_for_the_buckets() -> None:
    for name in APP_SERVICES:
        assert depends_on(name) == {
            "redis": "service_healthy",
            "minio-init": "service_completed_successfully",
            "jaeger": "service_started",
        }
    assert depends_on("minio-init") == {"minio": "service_healthy"}
    assert depends_on("nginx") == {"api": "service_healthy"}
    assert depends_on("seed") == {"minio-init": "service_completed_successfully"}
    assert SERVICES["minio-init"]["restart"] == "no"


def test_redis_persists_with_aof_on_a_volume() -> None:
    command = SERVICES["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in SERVICES["redis"]["volumes"])
    assert "redis-data" in COMPOSE["volumes"]


def test_app_environment_names_are_settings_or_otel_and_load_cleanly() -> None:
    for name in (*APP_SERVICES, "seed"):
        env = environment(name)
        unknown = {
            key
            for key in env
            if key not in ENVIRONMENT_NAMES
            and key not in EXTRA_NAMES
            and not key.startswith("OTEL_")
        }
        assert not unknown, f"{name} sets names nothing reads: {sorted(unknown)}"
        settings = load_settings(env)
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.s3_endpoint == "http://minio:9000"
        assert settings.public_endpoint == "http://localhost:9000"


def test_buckets_and_credentials_agree_between_minio_and_the_app() -> None:
    app = load_settings(environment("api"))
    minio = environment("minio")
    assert (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]) == (
        app.s3_access_key_id,
        app.s3_secret_access_key,
    )
    init = " ".join(SERVICES["minio-init"]["entrypoint"])
    assert f"longhaul/{app.s3_source_bucket}" in init
    assert f"longhaul/{app.s3_bucket_name}" in init
    assert "--ignore-existing" in init
    assert "9000:9000" in SERVICES["minio"]["ports"]


def test_the_api_trusts_forwarded_headers_from_nginx_alone() -> None:
    nginx_address = SERVICES["nginx"]["networks"]["default"]["ipv4_address"]
    assert environment("api")["FORWARDED_ALLOW_IPS"] == nginx_address
    subnet = COMPOSE["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert nginx_address.rsplit(".", 1)[0] == subnet.split("/")[0].rsplit(".", 1)[0]
    assert environment("api")["HOST"] == "0.0.0.0"
    assert environment("api")["PORT"] == "8000"


def test_nginx_renders_the_projects_template_with_every_variable_set() -> None:
    nginx = SERVICES["nginx"]
    env = environment("nginx")
    assert (
        "./nginx/longhaul.conf.template:/etc/nginx/templates/default.conf.template:ro"
        in nginx["volumes"]
    )
    # envsubst must leave nginx's own $variables alone.
    assert env["NGINX_ENVSUBST_FILTER"] == "^LONGHAUL_"
    assert template_variables() <= set(env)
    assert f"./frontend/static:{env['LONGHAUL_STATIC_ROOT']}:ro" in nginx["volumes"]
    assert env["LONGHAUL_API_SERVERS"] == "server api:8000;"
    assert env["LONGHAUL_API_READ_TIMEOUT"] == "30s"
    assert env["LONGHAUL_STREAM_READ_TIMEOUT"] == "1h"


def test_traces_go_to_jaeger_over_otlp_http() -> None:
    for name in APP_SERVICES:
        env = environment(name)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert env["OTEL_SERVICE_NAME"] == f"longhaul-{name}"
    assert environment("jaeger")["COLLECTOR_OTLP_ENABLED"] == "true"


def test_the_worker_health_check_is_a_real_command() -> None:
    test = SERVICES["worker"]["healthcheck"]["test"]
    assert test[1:4] == ["python", "-m", "backend.ops"]
    from backend.ops import main

    assert main(["nonsense"]) == 2  # the command exists and checks its argument


def test_the_image_runs_the_backend_and_ships_the_frontend() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY backend ./backend" in dockerfile
    assert "COPY frontend ./frontend" in dockerfile
    assert 'CMD ["python", "-m", "backend", "api"]' in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)
    assert "backend" not in ignored
    assert "frontend" not in ignored


def test_the_config_compose_renders_passes_nginx_t(tmp_path: Path) -> None:
    values = environment("nginx")
    # Only what cannot exist here: the compose service name and the image's paths.
    values["LONGHAUL_API_SERVERS"] = "server 127.0.0.1:8000;"
    values["LONGHAUL_ACCESS_LOG"] = str(tmp_path / "access.log")
    values["LONGHAUL_STATIC_ROOT"] = str(ROOT / "frontend" / "static")
    site = tmp_path / "default.conf"
    site.write_text(render(values))
    config = tmp_path / "nginx.conf"
    config.write_text(main_config(tmp_path, site))
    checked = subprocess.run(
        [NGINX, "-t", "-e", str(tmp_path / "error.log"), "-p", str(tmp_path), "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "listen 80;" in site.read_text()


def test_the_sentinel_profile_adds_a_replica_and_a_sentinel_the_app_can_point_at() -> None:
    for name in ("redis-replica", "redis-sentinel"):
        assert SERVICES[name]["profiles"] == ["sentinel"]
        assert SERVICES[name]["healthcheck"]["test"][0] == "CMD"
    # Plain `docker compose up` is unchanged: nothing else is behind a profile.
    profiled = {name for name, service in SERVICES.items() if "profiles" in service}
    assert profiled == {"redis-replica", "redis-sentinel"}
    replica = SERVICES["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    assert "redis-replica-data" in COMPOSE["volumes"]

    env = environment("api")
    assert load_settings(env).sentinel_addresses == []  # off unless asked for
    settings = load_settings({**env, "REDIS_SENTINELS": "redis-sentinel:26379"})
    assert settings.sentinel_addresses == [("redis-sentinel", 26379)]
    sentinel = SERVICES["redis-sentinel"]["command"][0]
    assert f"'sentinel monitor {settings.redis_sentinel_master} redis 6379 1'" in sentinel
    assert "'port 26379'" in sentinel
    assert "exec redis-server /data/sentinel.conf --sentinel" in sentinel
    # The README's command names the same sentinel.
    readme = (ROOT / "README.md").read_text()
    assert "REDIS_SENTINELS=redis-sentinel:26379 docker compose --profile sentinel up" in readme

"""deploy/k8s, checked by reading it: no cluster runs here, so the manifests must be right.

The kustomization and its files, every manifest against the Kubernetes schemas, every
environment variable against the one settings object, probes against the real app's routes,
grace periods against how the processes stop, labels against selectors, and the autoscaler's
metrics against the agreed metric names.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from backend import devstack, routes
from backend.devstack import free_port
from backend.settings import ENVIRONMENT_NAMES, Settings, load_settings
from tests.helpers import eventually, start, wait_for_status
from tests.nginx_fixtures import TEMPLATE
from tests.stack import seed_stack

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATION: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
# The Kubernetes release the manifests are validated against (kubernetes-validate's schemas).
KUBERNETES_VERSION = "1.30.0"
# Custom resources: no schema ships with kubernetes-validate; checked field by field below.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}
# Read by the processes but not settings: uvicorn's trusted proxies and OpenTelemetry's own.
EXTRA_NAMES = {"FORWARDED_ALLOW_IPS"}

# The worker's metrics endpoint and the metric names agreed with the metrics work (METRICS.md
# in the design notes). Once backend has its own list of metric names, import it here instead.
WORKER_METRICS_PORT = 9100
METRICS_PATH = "/metrics"
METRIC_NAMES = frozenset(
    {
        "longhaul_http_requests_total",
        "longhaul_http_request_duration_seconds",
        "longhaul_sse_streams",
        "longhaul_jobs_submitted_total",
        "longhaul_job_attempts_total",
        "longhaul_job_retries_total",
        "longhaul_jobs_ended_total",
        "longhaul_job_build_duration_seconds",
        "longhaul_job_request_to_ready_seconds",
        "longhaul_archive_bytes_total",
        "longhaul_queue_depth",
        "longhaul_queue_oldest_job_age_seconds",
        "longhaul_workers_live",
        "longhaul_webhook_deliveries_total",
    }
)

# How long each step of a stopping process may take at worst; the sources of these bounds.
S3_ABORT_EXTRA_SECONDS = 1.0  # S3Store.abort_upload: S3_READ_TIMEOUT_SECONDS + 1
LEASE_KEEPER_EXTRA_SECONDS = 1.0  # Lease.held waits for its keeper a third of a lease + 1
REDIS_SOCKET_TIMEOUT_SECONDS = 5.0  # Services.open: socket_timeout of every Redis command
REDIS_CALLS_WHILE_STOPPING = 2  # the lease's release, then arq's bookkeeping of the job


def manifests() -> list[dict[str, Any]]:
    documents = []
    for name in KUSTOMIZATION["resources"]:
        documents += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]
    return documents


MANIFESTS = manifests()


def resource(kind: str, name: str) -> dict[str, Any]:
    found = [m for m in MANIFESTS if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [m for m in MANIFESTS if m["kind"] == kind]


def container(deployment: str) -> dict[str, Any]:
    (only,) = resource("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return only


def environment(deployment: str) -> dict[str, str]:
    """Every variable the container gets: its ConfigMaps and Secrets, then its own `env`."""
    spec = container(deployment)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env |= resource("ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            env |= resource("Secret", source["secretRef"]["name"])["stringData"]
    env |= {item["name"]: item["value"] for item in spec.get("env", [])}
    return env


def settings_of(deployment: str) -> Settings:
    return load_settings(environment(deployment))


def seconds(duration: str) -> int:
    """An nginx duration (`30s`, `1h`) in seconds."""
    value, unit = re.fullmatch(r"(\d+)([smh]?)", duration).groups()  # type: ignore[union-attr]
    return int(value) * {"": 1, "s": 1, "m": 60, "h": 3600}[unit]


def probes(deployment: str) -> Iterator[tuple[str, dict[str, Any]]]:
    spec = container(deployment)
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in spec:
            yield kind, spec[kind]


def named_port(deployment: str, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    return ports[name]


def selects(selector: dict[str, str], deployment: str) -> bool:
    labels = resource("Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
    return selector.items() <= labels.items()


# The kustomization


def test_the_kustomization_lists_every_manifest_and_nothing_else() -> None:
    listed = KUSTOMIZATION["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk
    assert KUSTOMIZATION["namespace"] == resource("Namespace", "longhaul")["metadata"]["name"]
    assert {m["kind"] for m in MANIFESTS} >= {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ScaledObject",
        "Ingress",
    }


def test_kubectl_builds_the_kustomization_into_exactly_these_resources() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the resources list is checked above")
    built = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    rendered = [d for d in yaml.safe_load_all(built.stdout) if d is not None]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted(
        (m["kind"], m["metadata"]["name"]) for m in MANIFESTS
    )
    for document in rendered:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "longhaul", document["metadata"]


@pytest.mark.parametrize(
    "manifest", MANIFESTS, ids=lambda m: f"{m['kind']}/{m['metadata']['name']}"
)
def test_every_manifest_is_valid_against_the_kubernetes_schema(manifest: dict[str, Any]) -> None:
    if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_KINDS:
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        return
    # strict: a misspelt or misplaced field is an error, not silently dropped by the server.
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


# Settings and commands


@pytest.mark.parametrize("deployment", ["longhaul-api", "longhaul-worker"])
def test_environment_names_are_settings_or_otel_and_load_cleanly(deployment: str) -> None:
    env = environment(deployment)
    unknown = {
        name
        for name in env
        if name not in ENVIRONMENT_NAMES
        and name not in EXTRA_NAMES
        and not name.startswith("OTEL_")
    }
    assert not unknown, f"{deployment} sets names nothing reads: {sorted(unknown)}"
    settings = load_settings(env)
    assert settings.throttle_bytes_per_second == 0  # production speed, not the demo's
    assert env["OTEL_SERVICE_NAME"] == deployment


def test_the_config_map_and_secret_hold_only_settings_and_no_real_secret() -> None:
    data = resource("ConfigMap", "longhaul-settings")["data"]
    secret = resource("Secret", "longhaul-secrets")["stringData"]
    for name in (*data, *secret):
        assert name in ENVIRONMENT_NAMES or name.startswith("OTEL_"), name
    assert not set(data) & set(secret)
    for name in ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "SECRET_KEY"):
        assert secret[name].startswith("REPLACE_ME"), f"{name} must be a placeholder"
        assert name not in data
    # Credentials may sit in the URL.
    assert "REDIS_URL" in secret and "REDIS_URL" not in data
    assert data["S3_PUBLIC_ENDPOINT"].startswith("https://")


def test_containers_run_the_same_commands_as_compose_and_the_image() -> None:
    for deployment, service in (("longhaul-api", "api"), ("longhaul-worker", "worker")):
        command = container(deployment)["command"]
        assert command == ["python", "-m", "backend", service]
        assert command == COMPOSE["services"][service]["command"]
        assert container(deployment)["image"] == KUSTOMIZATION["images"][0]["name"]
    assert "USER longhaul" in (ROOT / "Dockerfile").read_text()


def test_the_api_listens_where_the_service_and_ingress_send_traffic() -> None:
    settings = settings_of("longhaul-api")
    assert settings.host == "0.0.0.0"
    assert settings.port == named_port("longhaul-api", "http")
    service = resource("Service", "longhaul-api")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for ingress in of_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == "longhaul-api"
                assert backend["port"]["name"] in port_names


# Probes


def test_api_probes_ask_real_routes_that_are_never_rate_limited() -> None:
    for kind, probe in probes("longhaul-api"):
        assert probe["httpGet"]["port"] == "http", kind
        group = routes.group_of(probe["httpGet"]["path"])
        # A probe answered 429 would take the pod out for nothing.
        assert group in routes.UNLIMITED_GROUPS, (kind, group)
    kinds = dict(probes("longhaul-api"))
    assert kinds["startupProbe"]["httpGet"]["path"] == routes.HEALTH_PATH
    # /health gives up on a dependency after 2 s; the probe must wait for that answer.
    assert kinds["startupProbe"]["timeoutSeconds"] > 2


async def test_api_probe_paths_answer_200_from_the_real_app(app_client: httpx.AsyncClient) -> None:
    for kind, probe in probes("longhaul-api"):
        response = await app_client.get(probe["httpGet"]["path"])
        assert response.status_code == 200, (kind, response.status_code, response.text[:200])


async def test_readiness_and_liveness_hold_while_redis_and_s3_are_down(
    stack_env: dict[str, str],
) -> None:
    """The app's own answer to an outage (503 + Retry-After) needs pods that stay in the
    Service and are not restarted; only the startup probe asks about the dependencies."""
    from litestar.testing import AsyncTestClient

    from backend.app import create_app

    nowhere = {
        **stack_env,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "S3_ENDPOINT": f"http://127.0.0.1:{free_port()}",
    }
    app = create_app(load_settings(nowhere))
    async with AsyncTestClient(app=app, raise_server_exceptions=False) as client:
        kinds = dict(probes("longhaul-api"))
        for kind in ("readinessProbe", "livenessProbe"):
            response = await client.get(kinds[kind]["httpGet"]["path"])
            assert response.status_code == 200, kind
        health = await client.get(kinds["startupProbe"]["httpGet"]["path"])
        assert health.status_code == 503
        assert health.json()["checks"] == {"api": "ok", "redis": "error", "storage": "error"}


def test_worker_probes_ask_its_metrics_endpoint() -> None:
    env = environment("longhaul-worker")
    # Unset means the default port; 0 would turn the endpoint (and so the probes) off.
    assert "METRICS_PORT" not in env or int(env["METRICS_PORT"]) == WORKER_METRICS_PORT
    assert named_port("longhaul-worker", "metrics") == WORKER_METRICS_PORT
    kinds = dict(probes("longhaul-worker"))
    assert set(kinds) == {"startupProbe", "livenessProbe"}  # no traffic, so no readiness
    for probe in kinds.values():
        assert probe["httpGet"] == {"path": METRICS_PATH, "port": "metrics"}
    service = resource("Service", "longhaul-worker-metrics")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


@pytest.mark.slow
async def test_compose_worker_check_fails_a_live_worker_while_redis_is_away(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    """Why `python -m backend.ops worker-alive` is no liveness probe: during a Redis outage it
    fails for a worker that is alive and outlives the outage by itself (worker.serve)."""
    from backend.ops import worker_alive_here

    port = free_port()
    redis = devstack.start_redis(tmp_path / "own-redis", port)
    env = {**isolated_env, "REDIS_URL": redis.url}
    settings = load_settings(env)

    async def alive() -> bool:
        return await asyncio.to_thread(worker_alive_here, settings)

    worker = devstack.start_worker(env, tmp_path)
    try:
        await eventually(alive, bool, 30)
        redis.stop()
        assert not await alive()
        await asyncio.sleep(2)
        assert worker.alive()
        redis = devstack.start_redis(tmp_path / "own-redis", port)
        await eventually(alive, bool, 30)  # the same process, back without a restart
        assert worker.alive()
    finally:
        worker.stop()
        redis.stop()
    for _, probe in probes("longhaul-worker"):
        assert "exec" not in probe


# Stopping


def worker_stop_bound(settings: Settings) -> float:
    """Worst case from SIGTERM to exit, each dependency as slow as its timeout allows.

    Running attempts are cancelled side by side, so this is one attempt's worst stop: its
    upload abort, its lease keeper, and the Redis calls that hand the job back.
    """
    return (
        settings.s3_read_timeout_seconds
        + S3_ABORT_EXTRA_SECONDS
        + settings.job_lease_seconds / 3
        + LEASE_KEEPER_EXTRA_SECONDS
        + REDIS_CALLS_WHILE_STOPPING * REDIS_SOCKET_TIMEOUT_SECONDS
    )


def test_workers_get_time_to_hand_their_jobs_back() -> None:
    settings = settings_of("longhaul-worker")
    grace = resource("Deployment", "longhaul-worker")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert grace >= worker_stop_bound(settings)
    from backend.worker import create_worker

    worker = create_worker(settings)
    # arq's own handler: SIGTERM cancels the attempts, which hand their jobs back.
    assert worker._handle_signals


# Timeouts that bound a stopping worker, as the pods get them.
STOP_SETTINGS = (
    "S3_CONNECT_TIMEOUT_SECONDS",
    "S3_READ_TIMEOUT_SECONDS",
    "JOB_LEASE_SECONDS",
    "WORKER_CONCURRENCY",
)


@pytest.mark.slow
async def test_a_worker_sigtermed_with_s3_frozen_mid_upload_exits_within_its_grace(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    """The worst case the grace period is for: every running attempt's upload abort meets a
    frozen S3 and waits out its bound. The jobs still go back to the queue and finish."""
    pod = environment("longhaul-worker")
    grace = resource("Deployment", "longhaul-worker")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    s3 = devstack.start_s3(tmp_path / "own-s3")
    env = {
        **isolated_env,
        **{name: pod[name] for name in STOP_SETTINGS},
        "S3_ENDPOINT": s3.url,
        "THROTTLE_BYTES_PER_SECOND": str(2 * 1024 * 1024),
    }
    part_size = load_settings(env).archive_part_size
    await seed_stack(env)
    api = devstack.start_api(env, tmp_path)
    leaving = devstack.start_worker(env, tmp_path, name="leaving")
    staying = None
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            # ~10.7 MiB each: a multipart upload exists once the first 8 MiB part is cut.
            jobs = [(await start(client, [8, 2, 4, 3]))["job_id"] for _ in range(3)]
            for job_id in jobs:
                await eventually(
                    lambda job_id=job_id: status_of(client, job_id),
                    lambda body: (
                        body["status"] == "processing" and body["bytes_processed"] > part_size
                    ),
                    30,
                )
            s3.popen.send_signal(signal.SIGSTOP)
            signalled_at = time.monotonic()
            leaving.popen.send_signal(signal.SIGTERM)
            try:
                leaving.popen.wait(grace + 10)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the worker did not exit:\n{leaving.log_tail()}")
            took = time.monotonic() - signalled_at
            print(f"\nSIGTERM, S3 frozen, 3 uploads open -> worker exited: {took:.1f} s")
            assert took < grace
            assert took <= worker_stop_bound(load_settings(env)) + 3  # the derivation holds
            s3.popen.send_signal(signal.SIGCONT)
            staying = devstack.start_worker(env, tmp_path, name="staying")
            for job_id in jobs:
                status = await wait_for_status(client, job_id, {"ready", "failed"}, 120)
                assert status["status"] == "ready", status
    finally:
        s3.popen.send_signal(signal.SIGCONT)
        for process in (staying, leaving, api, s3):
            if process is not None:
                process.stop()


async def status_of(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(f"/v1/download/status/{job_id}")).json()
    return body


def test_the_sweeper_runs_once_per_minute_however_many_workers_run() -> None:
    from backend.worker import create_worker

    worker = create_worker(settings_of("longhaul-worker"))
    sweeps = [job for job in worker.cron_jobs if job.name == "sweep_expired"]
    assert len(sweeps) == 1
    # arq queues a unique cron job under one id per run time: one sweep per minute in all.
    assert sweeps[0].unique
    scaler = resource("ScaledObject", "longhaul-worker")["spec"]
    assert scaler["minReplicaCount"] >= 1  # no workers, no sweeps


def test_api_pods_stop_after_the_ingress_forgets_them_and_within_their_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import backend.__main__ as server

    captured: dict[str, Any] = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **options: captured.update(options))
    monkeypatch.setattr(server, "configure_logging", lambda level: None)
    monkeypatch.setattr(server.tracing, "configure", lambda name: False)
    for name, value in environment("longhaul-api").items():
        monkeypatch.setenv(name, value)
    server.run_api()  # what `python -m backend api` hands uvicorn, with the pod's env
    assert (captured["host"], captured["port"]) == ("0.0.0.0", 8000)
    assert captured["forwarded_allow_ips"] == environment("longhaul-api")["FORWARDED_ALLOW_IPS"]

    spec = resource("Deployment", "longhaul-api")["spec"]["template"]["spec"]
    sleep = container("longhaul-api")["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    # preStop, then uvicorn's wait for open requests, then the lifespan's Redis and S3 closes.
    needed = int(sleep[1]) + captured["timeout_graceful_shutdown"] + REDIS_SOCKET_TIMEOUT_SECONDS
    assert spec["terminationGracePeriodSeconds"] >= needed


# Labels and selectors


def test_each_deployment_selects_its_own_pods_and_only_them() -> None:
    deployments = [d["metadata"]["name"] for d in of_kind("Deployment")]
    assert sorted(deployments) == ["longhaul-api", "longhaul-worker"]
    for name in deployments:
        spec = resource("Deployment", name)["spec"]
        # The autoscalers own the count; a `replicas` here would reset it on every apply.
        assert "replicas" not in spec
        assert selects(spec["selector"]["matchLabels"], name)
        others = [d for d in deployments if d != name]
        assert not any(selects(spec["selector"]["matchLabels"], d) for d in others)
        for constraint in spec["template"]["spec"].get("topologySpreadConstraints", []):
            assert constraint["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]


@pytest.mark.parametrize(
    ("kind", "name", "deployment"),
    [
        ("Service", "longhaul-api", "longhaul-api"),
        ("Service", "longhaul-worker-metrics", "longhaul-worker"),
        ("PodDisruptionBudget", "longhaul-api", "longhaul-api"),
        ("PodDisruptionBudget", "longhaul-worker", "longhaul-worker"),
    ],
)
def test_services_and_budgets_select_exactly_one_deployments_pods(
    kind: str, name: str, deployment: str
) -> None:
    spec = resource(kind, name)["spec"]
    selector = spec["selector"] if kind == "Service" else spec["selector"]["matchLabels"]
    assert [
        d["metadata"]["name"]
        for d in of_kind("Deployment")
        if selects(selector, d["metadata"]["name"])
    ] == [deployment]
    if kind == "PodDisruptionBudget":
        # Never minAvailable: with one pod left it would block every node drain.
        assert spec == {"maxUnavailable": 1, "selector": spec["selector"]}


# Autoscaling


def test_the_api_scales_on_cpu_and_never_below_two() -> None:
    spec = resource("HorizontalPodAutoscaler", "longhaul-api")["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "longhaul-api",
    }
    assert spec["minReplicas"] >= 2
    (metric,) = spec["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # Utilization is of the request: without one the HPA cannot compute it.
    assert "cpu" in container("longhaul-api")["resources"]["requests"]


def test_workers_scale_on_queue_metrics_that_exist() -> None:
    spec = resource("ScaledObject", "longhaul-worker")["spec"]
    assert spec["scaleTargetRef"]["name"] == "longhaul-worker"
    assert spec["scaleTargetRef"]["kind"] == "Deployment"
    assert spec["minReplicaCount"] >= 1
    assert spec["maxReplicaCount"] > spec["minReplicaCount"]
    queried = set()
    for trigger in spec["triggers"]:
        assert trigger["type"] == "prometheus"
        query = trigger["metadata"]["query"]
        names = set(re.findall(r"\blonghaul_[a-z_]+", query))
        assert names, query
        assert names <= METRIC_NAMES, f"unknown metrics in {query!r}: {names - METRIC_NAMES}"
        # Every worker exports the same queue gauges: a sum would count the queue once per worker.
        assert query.startswith("max("), query
        float(trigger["metadata"]["threshold"])
        queried |= names
    assert queried == {"longhaul_queue_depth", "longhaul_queue_oldest_job_age_seconds"}


# Ingress


def nginx_stream_location() -> re.Pattern[str]:
    (pattern,) = re.findall(r"location ~ (\S+) \{", TEMPLATE.read_text())
    return re.compile(pattern)


def ingress_for(path: str) -> str:
    """Which Ingress serves `path`: the longest matching path wins, Exact before Prefix."""
    candidates = []
    for ingress in of_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for entry in rule["http"]["paths"]:
                wanted, kind = entry["path"], entry["pathType"]
                if kind == "Exact" and path == wanted:
                    candidates.append((1, len(wanted), ingress["metadata"]["name"]))
                prefix = wanted.rstrip("/")
                if kind == "Prefix" and (
                    not prefix or path == prefix or path.startswith(prefix + "/")
                ):
                    candidates.append((0, len(wanted), ingress["metadata"]["name"]))
    return max(candidates)[2]


@pytest.mark.parametrize(
    ("path", "ingress"),
    [
        ("/v1/download/subscribe/0b3c0a6e-0ad0-4d9a-8a36-0a0a0a0a0a0a", "longhaul-streams"),
        ("/events", "longhaul-streams"),
        ("/events/x", "longhaul"),
        ("/v1/download/async", "longhaul"),
        ("/v1/download/status/x", "longhaul"),
        ("/", "longhaul"),
        ("/static/app.css", "longhaul"),
        ("/ops", "longhaul-ops"),
        ("/ops/stats", "longhaul-ops"),
        ("/opsx", "longhaul"),
    ],
)
def test_streams_and_only_streams_go_through_the_unbuffered_ingress(
    path: str, ingress: str
) -> None:
    streams = ingress == "longhaul-streams"
    assert bool(nginx_stream_location().match(path)) is streams  # the nginx config agrees
    assert ingress_for(path) == ingress
    assert (routes.group_of(path) is routes.RouteGroup.OPS) is (ingress == "longhaul-ops")


def test_the_operator_page_is_reachable_only_from_listed_addresses() -> None:
    annotations = resource("Ingress", "longhaul-ops")["metadata"]["annotations"]
    ranges = annotations["nginx.ingress.kubernetes.io/whitelist-source-range"].split(",")
    assert ranges and all(ipaddress.ip_network(r.strip()).num_addresses < 2**32 for r in ranges)


def test_every_stream_route_of_the_app_is_a_stream_location() -> None:
    from backend.app import create_app

    app = create_app(load_settings({}))
    stream_paths = {
        route.path
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        if nginx_stream_location().match(re.sub(r"\{[^}]+\}", "x", route.path))
        and "GET" in (handler.http_methods or ())
    }
    assert stream_paths == {"/v1/download/subscribe/{job_id:str}", "/events"}


async def test_a_job_stream_through_the_streams_ingress_is_an_event_stream(
    app_client: httpx.AsyncClient,
) -> None:
    job_id = (await start(app_client, [1]))["job_id"]
    try:
        path = f"/v1/download/subscribe/{job_id}"
        assert ingress_for(path) == "longhaul-streams"
        response = await app_client.head(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        # nginx, the ingress controller included, honours this as well as the annotation.
        assert response.headers["x-accel-buffering"] == "no"
    finally:
        await app_client.delete(f"/v1/download/{job_id}")


def test_ingress_timeouts_and_buffering_mirror_the_nginx_config() -> None:
    nginx = COMPOSE["services"]["nginx"]["environment"]
    template = TEMPLATE.read_text()
    streams = resource("Ingress", "longhaul-streams")["metadata"]["annotations"]
    rest = resource("Ingress", "longhaul")["metadata"]["annotations"]
    ops = resource("Ingress", "longhaul-ops")["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert streams[prefix + "proxy-buffering"] == "off"
    assert prefix + "proxy-buffering" not in rest
    for given, variable in (
        (streams, "LONGHAUL_STREAM_READ_TIMEOUT"),
        (rest, "LONGHAUL_API_READ_TIMEOUT"),
        (ops, "LONGHAUL_API_READ_TIMEOUT"),
    ):
        wanted = seconds(nginx[variable])
        assert int(given[prefix + "proxy-read-timeout"]) == wanted
        assert int(given[prefix + "proxy-send-timeout"]) == wanted
        assert f"proxy_connect_timeout {given[prefix + 'proxy-connect-timeout']}s;" in template
        assert f"client_max_body_size {given[prefix + 'proxy-body-size']};" in template
    # A ping per SSE_PING_SECONDS keeps a stream well inside its read timeout.
    assert settings_of("longhaul-api").sse_ping_seconds < int(
        streams[prefix + "proxy-read-timeout"]
    )
    hosts = {rule["host"] for i in of_kind("Ingress") for rule in i["spec"]["rules"]}
    assert len(hosts) == 1

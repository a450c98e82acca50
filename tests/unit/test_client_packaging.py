"""The `longhaul` client installs and runs without the server's dependencies.

`pip install longhaul` brings the client (msgspec, httpx, httpx-sse); `longhaul[server]` adds
Litestar, arq, Redis, miniopy, stream-zip and OpenTelemetry. The client shares the wire types
of backend/models.py, which need msgspec alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = {
    "litestar",
    "arq",
    "redis",
    "miniopy_async",
    "stream_zip",
    "opentelemetry",
    "uvicorn",
    "jwt",
    "jinja2",
    "aiohttp",
}


def _name(requirement: str) -> str:
    for stop in "[<>=!~; ":
        requirement = requirement.split(stop, 1)[0]
    return requirement.lower()


def test_the_base_install_is_the_client_and_the_server_is_an_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {_name(r) for r in project["dependencies"]}
    server = {_name(r) for r in project["optional-dependencies"]["server"]}
    assert base == {"msgspec", "httpx", "httpx-sse"}
    assert {"litestar", "arq", "redis", "miniopy-async", "stream-zip", "uvicorn"} <= server
    assert "longhaul[server]" in project["optional-dependencies"]["dev"]
    assert project["scripts"]["longhaul"] == "backend.client.cli:main"


def test_the_client_library_and_command_import_and_run_without_any_server_module() -> None:
    probe = """
import asyncio, contextlib, json, sys
from backend.client import ApiError, AsyncClient, Client, JobFailed
from backend.client.cli import main
with Client("http://127.0.0.1:9", token="t") as client:
    pass
asyncio.run(AsyncClient("http://127.0.0.1:9").aclose())
with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):
    main(["--help"])
for command in ("download", "status", "cancel", "files", "retry", "jobs"):
    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):
        main([command, "--help"])
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "backend" in loaded and "httpx" in loaded
    assert not loaded & SERVER_ONLY, sorted(loaded & SERVER_ONLY)


def test_the_server_command_without_the_server_extra_says_what_to_install() -> None:
    # Imports of server-only packages fail as they would in a client-only install.
    probe = f"""
import importlib.abc, runpy, sys
class ClientOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(SERVER_ONLY)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, ClientOnly())
sys.argv = ["longhaul-server", "api"]
runpy.run_module("backend", run_name="__main__")
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "pip install 'longhaul[server]'" in done.stderr
    assert "Traceback" not in done.stderr

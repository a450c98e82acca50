"""The README's API examples (curl, httpx, httpx-sse) run as written against a real stack."""

from __future__ import annotations

import asyncio
import re
import sys
import zipfile
from pathlib import Path

import pytest

from backend.seed import DEMO_FILES, seed_demo
from backend.settings import load_settings
from backend.storage import Storage
from tests.cli_fixtures import (
    CliStack,
    cli_stack_fixture,  # noqa: F401 (provides the `cli_stack` fixture)
)

README = Path(__file__).resolve().parent.parent / "README.md"
# What `make run` listens on, as the README's examples spell it.
README_BASE = "http://127.0.0.1:8000"
# The examples ask for the two smallest demo files.
EXAMPLE_FILES = tuple(f for f in DEMO_FILES if f.file_id in {10009, 10012})


def examples() -> list[tuple[str, str]]:
    """(language, code) of each block under "### Examples: curl, httpx, httpx-sse"."""
    text = README.read_text()
    start = text.index("### Examples: curl, httpx, httpx-sse")
    section = text[start : text.index("\n## ", start)]
    return re.findall(r"```(sh|python)\n(.*?)```", section, re.S)


@pytest.fixture(scope="module")
async def demo_stack(cli_stack: CliStack) -> CliStack:
    storage = Storage(load_settings(cli_stack.env))
    await storage.open()
    try:
        await seed_demo(storage, EXAMPLE_FILES)
    finally:
        await storage.close()
    return cli_stack


def test_readme_has_curl_httpx_and_httpx_sse_examples() -> None:
    found = examples()
    assert [language for language, _ in found] == ["sh", "python", "python"]
    assert "curl" in found[0][1]
    assert "httpx.Client" in found[1][1]
    assert "connect_sse" in found[2][1]
    assert all(README_BASE in code for _, code in found)


@pytest.mark.parametrize("index", range(3), ids=["curl", "httpx-polling", "httpx-sse"])
async def test_readme_example_runs(demo_stack: CliStack, tmp_path: Path, index: int) -> None:
    language, code = examples()[index]
    # The examples talk to the API straight, as with `make run`; no proxy faults here.
    script = code.replace(README_BASE, demo_stack.direct_url)
    argv = ["bash", "-euo", "pipefail", "-c", script]
    if language == "python":
        argv = [sys.executable, "-c", script]
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    output = out.decode()
    if index == 0:
        assert "event: completed" in output
    elif index == 2:
        assert "completed {" in output
        assert "/archives/" in output.splitlines()[-1]
    if index in (0, 1):
        with zipfile.ZipFile(tmp_path / "longhaul.zip") as archive:
            assert archive.testzip() is None
            assert sorted(archive.namelist()) == sorted(f.name for f in EXAMPLE_FILES)

"""The README's API examples (curl, httpx, httpx-sse, listing and retrying, the Python library)
run as written against a real stack."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import zipfile
from pathlib import Path

import jwt
import pytest

from backend.seed import DEMO_FILES, seed_demo
from backend.services import Services
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


def examples(heading: str = "### Examples: curl, httpx, httpx-sse") -> list[tuple[str, str]]:
    """(language, code) of each block under `heading`, up to the next `##` or `###` heading."""
    text = README.read_text()
    start = text.index(heading)
    end = re.compile(r"\n#{2,3} ").search(text, start + len(heading))
    section = text[start : end.start() if end else len(text)]
    return re.findall(r"```(sh|python)\n(.*?)```", section, re.S)


LISTING = "### Examples: listing and trying again"
LIBRARY = "## Python library"
CATALOGUE = "### Examples: the catalogue a page at a time, missing files, a shared archive"


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


async def run_example(
    stack: CliStack, language: str, code: str, cwd: Path, token: str | None = None
) -> str:
    """Run a README block against `stack`'s API as written; its stdout."""
    script = code.replace(README_BASE, stack.direct_url)
    argv = ["bash", "-euo", "pipefail", "-c", script]
    if language == "python":
        argv = [sys.executable, "-c", script]
    env = dict(os.environ)
    if token is not None:
        env["LONGHAUL_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, err.decode()
    return out.decode()


def token_of(stack: CliStack, subject: str) -> str:
    return jwt.encode({"sub": subject}, stack.env["JWT_SECRET"], algorithm="HS256")


def test_readme_has_listing_and_library_examples() -> None:
    assert [language for language, _ in examples(LISTING)] == ["sh"]
    library = examples(LIBRARY)
    assert [language for language, _ in library] == ["python", "python"]
    assert "from backend.client import ApiError, Client" in library[0][1]
    assert "AsyncClient" in library[1][1]
    assert all(README_BASE in code for _, code in examples(LISTING) + library)


async def test_readme_listing_example_runs(demo_stack: CliStack, tmp_path: Path) -> None:
    [(language, code)] = examples(LISTING)
    token = token_of(demo_stack, f"readme-{tmp_path.name}")
    output = await run_example(demo_stack, language, code, tmp_path, token)
    assert '"retry_of":"' in output
    pages = [line for line in output.splitlines() if line.startswith('{"jobs":')]
    assert pages, output
    assert all('"status":"failed"' in page for page in pages)
    assert pages[-1].endswith('"next_cursor":null}')


@pytest.mark.parametrize("index", range(2), ids=["sync", "async"])
async def test_readme_library_example_runs(
    demo_stack: CliStack, tmp_path: Path, index: int
) -> None:
    language, code = examples(LIBRARY)[index]
    token = token_of(demo_stack, f"readme-lib-{index}-{tmp_path.name}")
    output = await run_example(demo_stack, language, code, tmp_path, token)
    with zipfile.ZipFile(tmp_path / "longhaul.zip") as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == sorted(f.name for f in EXAMPLE_FILES)
    if index == 0:
        assert "ready 100" in output
        assert "409 job" in output and "only failed, cancelled or expired" in output


async def test_readme_catalogue_missing_and_reuse_examples_run(
    demo_stack: CliStack, tmp_path: Path
) -> None:
    [(shell, paging), (python, reuse)] = examples(CATALOGUE)
    assert (shell, python) == ("sh", "python")
    # The demo files were added after this stack's index was first built: index them now,
    # as the workers' next refresh would.
    services = await Services.open(load_settings(demo_stack.env))
    try:
        await services.catalogue.refresh()
    finally:
        await services.close()
    output = await run_example(demo_stack, shell, paging, tmp_path)
    pages = [line for line in output.splitlines() if line.startswith('{"items":')]
    # One file a page, by name, every file once; then the search.
    names = [re.findall(r'"name":"([^"]+)"', page) for page in pages]
    walked = [name for page in names[:-1] for name in page]
    assert all(len(page) == 1 for page in names[:-1])
    ids = [i for page in pages[:-1] for i in re.findall(r'"file_id":(\d+)', page)]
    assert walked == sorted(walked, key=str.lower) and len(set(ids)) == len(ids) == len(walked)
    assert {"logo.svg", "meeting-notes.md"} <= set(walked)
    assert names[-1] == ["meeting-notes.md"]
    assert "ready [{'file_id': 999999, 'name': '', 'reason': 'not_found'}] None" in output
    assert "failed [{'file_id': 999999" in output and "asked to fail" in output

    output = await run_example(demo_stack, python, reuse, tmp_path)
    first, second, etag = output.splitlines()[-3:]
    assert first.split()[1] != second.split()[1]
    assert etag == "1 304"

"""Archive file names: typed by the person or derived from the files, always safe to save."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from backend.archivenames import (
    NAME_MAX_CHARS,
    archive_filename,
    card_filename,
    filename_of,
    name_problem,
)
from backend.downloads import InvalidInput, download_url, start_job
from backend.models import CatalogueFile, JobRecord, JobState, SkippedFile
from backend.services import Services
from tests.helpers import wait_for_status

JOB = "3f2b8c1e9d7a4b6c8e0f1a2b3c4d5e6f"


def test_a_derived_name_is_the_first_stem_and_how_many_more() -> None:
    assert archive_filename(JOB, None, "board-minutes.pdf", 3) == "board-minutes-and-2-more.zip"
    assert archive_filename(JOB, None, "board-minutes.pdf", 2) == "board-minutes-and-1-more.zip"
    assert archive_filename(JOB, None, "board-minutes.pdf", 1) == "board-minutes.zip"
    # Whitespace becomes "-"; a leading dot is no extension, and would hide the saved file.
    assert archive_filename(JOB, None, "délta  résumé.pdf", 4) == "délta-résumé-and-3-more.zip"
    assert archive_filename(JOB, None, ".bashrc", 1) == "bashrc.zip"


def test_a_derived_name_is_cut_and_cleaned_like_a_zip_entry() -> None:
    long = archive_filename(JOB, None, "x" * 300 + ".txt", 2)
    assert long == "x" * 60 + "-and-1-more.zip"
    # Windows device names and forbidden characters are made safe by entrynames.
    assert archive_filename(JOB, None, "CON.txt", 1) == "_CON.zip"
    assert archive_filename(JOB, None, 'a:b?"c.txt', 1) == "a_b__c.zip"


def test_without_any_usable_name_the_job_id_names_the_archive() -> None:
    assert archive_filename(JOB, None, None, 3) == "longhaul-3f2b8c1e.zip"
    assert archive_filename(JOB, None, "....", 1) == "longhaul-3f2b8c1e.zip"


def test_a_typed_name_wins_and_gets_zip_once() -> None:
    assert archive_filename(JOB, "Q3 board minutes", "alpha.txt", 3) == "Q3 board minutes.zip"
    assert archive_filename(JOB, "  report.ZIP ", None, 1) == "report.zip"
    assert archive_filename(JOB, "photos: june", None, 1) == "photos_ june.zip"
    assert archive_filename(JOB, ".hidden", None, 1) == "hidden.zip"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "must not be empty or only spaces"),
        ("   ", "must not be empty or only spaces"),
        ("x" * (NAME_MAX_CHARS + 1), "must be at most 100 characters, got 101"),
        ("../etc/passwd", 'must not contain "/" or "\\"'),
        ("a\\b", 'must not contain "/" or "\\"'),
        ("tab\there", "must not contain control characters"),
        ("bidi\u202eevil", "must not contain control characters"),
    ],
)
def test_a_bad_name_is_refused_with_its_reason(value: str, problem: str) -> None:
    assert name_problem(value) == problem


def test_a_good_name_passes() -> None:
    assert name_problem("Q3 board minutes") is None
    assert name_problem("é" * NAME_MAX_CHARS) is None


def test_the_card_names_the_file_from_the_included_files() -> None:
    names = {1: CatalogueFile(1, "alpha.txt", 5), 3: CatalogueFile(3, "charlie.csv", 5)}
    record = JobRecord(job_id=JOB, owner="o", file_ids=[1, 3, 9])
    assert card_filename(record, names) == "alpha-and-2-more.zip"
    # A file found missing is not in the archive, so not in its name or count.
    record.skipped = [SkippedFile(file_id=1, name="alpha.txt", reason="not_found")]
    assert card_filename(record, names) == "charlie-and-1-more.zip"
    record.name = "Mine"
    assert card_filename(record, names) == "Mine.zip"


async def test_start_job_refuses_a_bad_name_naming_the_field(services: Services) -> None:
    with pytest.raises(InvalidInput) as caught:
        await start_job(services, [1], "alice", name="a/b")
    assert caught.value.field == "name"


async def test_the_link_saves_the_archive_under_the_derived_name(services: Services) -> None:
    record = JobRecord(
        job_id=JOB,
        owner="o",
        file_ids=[4, 1, 3],
        status=JobState.READY,
        archive_key=f"archives/{JOB}.zip",
    )
    assert await filename_of(services, record) == "délta-résumé-and-2-more.zip"
    url = await download_url(services, record)
    disposition = parse_qs(urlsplit(url).query)["response-content-disposition"][0]
    assert "filename*=UTF-8''" in disposition
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == "délta-résumé-and-2-more.zip"


async def test_the_api_stores_a_typed_name_and_the_link_uses_it(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/download/async", json={"file_ids": [1, 3], "name": "Q3 board minutes"}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["name"] == "Q3 board minutes"
    status = await wait_for_status(http, job["job_id"], {"ready"})
    assert status["name"] == "Q3 board minutes"
    query = parse_qs(urlsplit(status["download_url"]).query)
    assert 'filename="Q3 board minutes.zip"' in query["response-content-disposition"][0]


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("", "name: Expected `str` of length >= 1"),
        ("x" * 101, "name: Expected `str` of length <= 100"),
        ("a/b", 'name: must not contain "/" or "\\"'),
        ("a\u0000b", "name: must not contain control characters"),
        (7, "name: Expected `str | null`, got `int`"),
    ],
)
async def test_the_api_refuses_a_bad_name_with_a_400_naming_it(
    app_client: httpx.AsyncClient, name: object, detail: str
) -> None:
    response = await app_client.post("/v1/download/async", json={"file_ids": [1], "name": name})
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == detail

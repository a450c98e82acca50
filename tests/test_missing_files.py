"""Issue 13 item 1 and issue 14 item 6: files that are gone before or while a job reads them.

Real worker, Redis and S3 server: the job says which files it left out and why, its counts
agree with the ZIP, progress never goes back, `on_missing: "fail"` fails naming the files,
and people read words where the storage server wrote request ids.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import jinja2

from backend import devstack
from backend.downloads import start_job
from backend.models import JobRecord, JobState, SkippedFile, SkipReason
from backend.pages.views import job_title, job_view
from backend.services import Services
from backend.settings import Settings
from backend.storage import catalogue_key
from tests.helpers import eventually, run_worker_until_idle, zip_digests
from tests.stack import CATALOGUE_BY_ID

TEMPLATES = Path(__file__).resolve().parent.parent / "frontend" / "templates"
S3_DUMP = (
    "object storage at 127.0.0.1:9000 refused to read '9202/invoices-q3.zip': S3 operation "
    "failed; code: SlowDown, message: Please reduce your request rate., resource: "
    "/catalogue/9202/invoices-q3.zip, request_id: 17A3F0C2D, host_id: dd9025bab4ad464b"
)
BIG = 2 * 1024 * 1024
SMALL = 100 * 1024


async def archive_of(services: Services, record: JobRecord) -> bytes:
    assert record.archive_key is not None
    bucket = services.storage.results_bucket
    return b"".join([c async for c in services.storage.read(record.archive_key, bucket=bucket)])


async def seed_pair(services: Services) -> None:
    await services.storage.put_source(9201, "big.bin", b"b" * BIG)
    await services.storage.put_source(9202, "invoices-q3.zip", b"i" * SMALL)


async def run_deleting_mid_job(
    services: Services, settings: Settings, job_id: str, refresh_index: bool = False
) -> None:
    """Run the worker slowly; once it is reading the first file, delete the second (and, if
    asked, rebuild the catalogue index at once, so it no longer lists it either)."""
    worker = asyncio.create_task(
        run_worker_until_idle(settings.replace(throttle_bytes_per_second=BIG))
    )

    async def reading() -> JobRecord | None:
        return await services.store.get(job_id)

    await eventually(reading, lambda r: r is not None and r.bytes_processed > 0)
    await services.storage.store.delete(
        services.storage.source_bucket, catalogue_key(9202, "invoices-q3.zip")
    )
    if refresh_index:
        await services.catalogue.refresh()
    await worker


async def test_a_file_gone_before_packing_is_named_and_the_counts_agree_with_the_zip(
    services: Services, settings: Settings
) -> None:
    record = await start_job(services, [3, 999_999], "public")
    await run_worker_until_idle(settings)
    done = await services.store.get(record.job_id)
    assert done is not None and done.status is JobState.READY, done
    assert done.skipped == [SkippedFile(file_id=999_999, reason=SkipReason.NOT_FOUND)]
    assert (done.total_files, done.bytes_total) == (1, len(CATALOGUE_BY_ID[3].data))
    assert zip_digests(await archive_of(services, done)) == {
        CATALOGUE_BY_ID[3].name: CATALOGUE_BY_ID[3].sha256
    }
    completed = json.loads((await services.store.events_after(record.job_id))[-1].data)
    assert completed["skipped"] == [{"file_id": 999_999, "name": "", "reason": "not_found"}]
    assert completed["total_files"] == 1


async def test_a_file_deleted_mid_job_is_left_out_without_a_retry_or_a_step_back(
    services: Services, settings: Settings
) -> None:
    await seed_pair(services)
    record = await start_job(services, [9201, 9202], "public")
    await run_deleting_mid_job(services, settings, record.job_id)

    done = await services.store.get(record.job_id)
    assert done is not None and done.status is JobState.READY, done
    assert done.attempt == 1
    assert done.skipped == [
        SkippedFile(file_id=9202, name="invoices-q3.zip", reason=SkipReason.NOT_FOUND)
    ]
    assert (done.total_files, done.bytes_total, done.skipped_file_ids) == (1, BIG, [9202])
    assert set(zip_digests(await archive_of(services, done))) == {"big.bin"}
    events = await services.store.events_after(record.job_id)
    assert "retrying" not in [e.event for e in events]
    shown = [json.loads(e.data) for e in events if e.event == "progress"]
    for field in ("progress", "bytes_processed", "processed_files"):
        values = [p[field] for p in shown]
        assert values == sorted(values), (field, values)
    completed = json.loads(events[-1].data)
    assert events[-1].event == "completed"
    assert completed["skipped"] == [
        {"file_id": 9202, "name": "invoices-q3.zip", "reason": "not_found"}
    ]


async def test_a_file_deleted_mid_job_is_named_after_the_index_dropped_it_too(
    services: Services, settings: Settings
) -> None:
    await seed_pair(services)
    await services.catalogue.refresh()
    record = await start_job(services, [9201, 9202], "public")
    await run_deleting_mid_job(services, settings, record.job_id, refresh_index=True)

    done = await services.store.get(record.job_id)
    assert done is not None and done.status is JobState.READY, done
    assert done.skipped == [
        SkippedFile(file_id=9202, name="invoices-q3.zip", reason=SkipReason.NOT_FOUND)
    ]
    assert set(zip_digests(await archive_of(services, done))) == {"big.bin"}


async def test_on_missing_fail_fails_naming_the_file_deleted_mid_job(
    services: Services, settings: Settings
) -> None:
    await seed_pair(services)
    record = await start_job(services, [9201, 9202], "public", on_missing="fail")
    await run_deleting_mid_job(services, settings, record.job_id)

    done = await services.store.get(record.job_id)
    assert done is not None and done.status is JobState.FAILED
    assert done.error is not None
    assert "1 file could not be included: invoices-q3.zip (no longer available)" in done.error
    assert "request_id" not in done.error
    assert done.error_detail is not None and "9202/invoices-q3.zip" in done.error_detail
    assert await services.storage.results.pending_uploads_under("archives/") == []


async def test_on_missing_fail_fails_at_once_for_an_id_not_in_the_catalogue(
    services: Services, settings: Settings
) -> None:
    record = await start_job(services, [3, 999_999], "public", on_missing="fail")
    await run_worker_until_idle(settings)
    done = await services.store.get(record.job_id)
    assert done is not None and done.status is JobState.FAILED
    assert done.attempt == 1
    assert done.error == (
        "1 file could not be included: file 999999 (no longer available); the request asked to fail"
    )


async def test_on_missing_is_validated_and_kept_on_the_status(api_server: devstack.Process) -> None:
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30) as http:
        bad = await http.post("/v1/download/async", json={"file_ids": [1], "on_missing": "maybe"})
        assert bad.status_code == 400
        assert bad.json()["detail"].startswith("on_missing: ")
        good = await http.post("/v1/download/async", json={"file_ids": [1], "on_missing": "fail"})
        assert good.status_code == 202, good.text
        assert good.json()["on_missing"] == "fail"


def render_live(record: JobRecord, oob: bool = False) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.Undefined
    )
    template = environment.get_template("partials/job_live.html")
    return template.render(job=job_view(record), oob=oob)


def test_the_card_names_skipped_files_in_words_and_its_heading_counts_the_zip() -> None:
    record = JobRecord(
        job_id="a" * 32,
        owner="public",
        file_ids=[1, 9202],
        status=JobState.READY,
        total_files=1,
        bytes_total=len(CATALOGUE_BY_ID[1].data),
        processed_files=1,
        progress=100,
        archive_key="archives/x.zip",
        skipped=[SkippedFile(file_id=9202, name="invoices-q3.zip", reason=SkipReason.NOT_FOUND)],
    )
    html = render_live(record, oob=True)
    assert 'data-testid="job-skipped"' in html
    assert "1 file could not be included: invoices-q3.zip (no longer available)" in html
    assert "1 of 1 files" in html
    assert f'id="job-detail-{record.job_id}" hx-swap-oob="true">1 file · 200 KB<' in html
    assert "hx-swap-oob" not in render_live(record)
    names = {1: type("Row", (), {"name": "alpha.txt", "size": 200 * 1024})()}
    title = job_title(record, names)  # type: ignore[arg-type]
    assert (title.text, title.detail) == ("alpha.txt", "1 file · 200 KB")


def test_the_card_never_shows_a_storage_servers_request_ids() -> None:
    retrying = JobRecord(
        job_id="b" * 32,
        owner="public",
        file_ids=[1],
        status=JobState.PROCESSING,
        attempt=2,
        last_error=S3_DUMP,
    )
    failed = JobRecord(
        job_id="c" * 32,
        owner="public",
        file_ids=[1],
        status=JobState.FAILED,
        attempt=4,
        error=S3_DUMP,
    )
    for record in (retrying, failed):
        html = render_live(record)
        assert "Please reduce your request rate." in html
        for dump in ("request_id", "host_id", "17A3F0C2D", "resource:", "S3 operation failed"):
            assert dump not in html

"""A build trusts the catalogue index's versions and proves them with `If-Match` (issue 16 item 4).

With an index, a job's files are taken as the index saw them (key, size, ETag): no HEAD, no
listing. Each read carries `If-Match` on the indexed ETag, so a file overwritten, renamed or
deleted since the index was built makes its read fail (412, 404) and the job resolves its
files again with a HEAD each, never packing a version it did not ask for. Real arq workers,
Redis and the S3 server; the workers reach S3 through a recording proxy.
"""

from __future__ import annotations

import hashlib
from urllib.parse import unquote

import pytest

from backend.downloads import download_url, start_job
from backend.models import JobRecord, JobState
from backend.reuse import BUILT, REUSED, registry_for
from backend.services import Services
from backend.settings import Settings
from tests.cli_fixtures import Exchange, FaultyProxy
from tests.helpers import fetch, run_worker_until_idle, zip_digests
from tests.stack import CATALOGUE_BY_ID


@pytest.fixture
async def indexed(services: Services) -> Services:
    """The seeded catalogue, indexed as a worker's refresh would."""
    await services.catalogue.refresh()
    return services


def requests_of(proxy: FaultyProxy, settings: Settings) -> list[tuple[str, str]]:
    """(method, bucket) of every object request the proxy passed, in order (a worker's
    start-up checks of its buckets are left out)."""
    buckets = {settings.s3_source_bucket: "source", settings.s3_bucket_name: "results"}
    found = []
    for exchange in proxy.exchanges:
        bucket, _, key = exchange.target.split("?")[0].lstrip("/").partition("/")
        if key:
            found.append((exchange.method, buckets.get(bucket, bucket)))
    return found


def source_reads(proxy: FaultyProxy, settings: Settings) -> list[Exchange]:
    prefix = f"/{settings.s3_source_bucket}/"
    return [e for e in proxy.exchanges if e.method == "GET" and e.target.startswith(prefix)]


async def finished(services: Services, job_id: str) -> JobRecord:
    record = await services.store.get(job_id)
    assert record is not None and record.status is JobState.READY, record
    return record


async def contents(services: Services, record: JobRecord) -> dict[str, str]:
    return zip_digests(await fetch(await download_url(services, record)))


async def built_and_reused(services: Services) -> tuple[int, int]:
    stats = await registry_for(services.redis, services.settings).stats()
    return stats.get(BUILT, 0), stats.get(REUSED, 0)


async def test_a_build_from_the_index_is_one_get_per_file_and_one_put(
    indexed: Services, recorded: Settings, s3_proxy: FaultyProxy
) -> None:
    record = await start_job(indexed, [1, 5], "public")
    await run_worker_until_idle(recorded)
    done = await finished(indexed, record.job_id)

    assert sorted(requests_of(s3_proxy, recorded)) == [
        ("GET", "source"),
        ("GET", "source"),
        ("PUT", "results"),
    ]
    listed = {f.key: f.etag for f in await indexed.storage.catalogue()}
    for read in source_reads(s3_proxy, recorded):
        key = unquote(read.target.split("?")[0].split("/", 2)[2])
        assert read.headers["if-match"] == f'"{listed[key]}"'
    assert (done.total_files, done.bytes_total) == (2, 200 * 1024 + 10)
    assert await contents(indexed, done) == {
        CATALOGUE_BY_ID[i].name: CATALOGUE_BY_ID[i].sha256 for i in (1, 5)
    }


async def test_a_file_overwritten_since_the_index_is_packed_as_it_is_now(
    indexed: Services, recorded: Settings, s3_proxy: FaultyProxy
) -> None:
    new = b"rewritten after the index was built"
    await indexed.storage.put_source(3, CATALOGUE_BY_ID[3].name, new)
    record = await start_job(indexed, [3], "public")
    await run_worker_until_idle(recorded)
    done = await finished(indexed, record.job_id)

    # The indexed version's read was refused (412), then a HEAD found the new one.
    statuses = [e.status_code for e in source_reads(s3_proxy, recorded)]
    assert statuses == [412, 200]
    assert ("HEAD", "source") in requests_of(s3_proxy, recorded)
    assert done.bytes_total == len(new) and done.skipped == []
    assert await contents(indexed, done) == {
        CATALOGUE_BY_ID[3].name: hashlib.sha256(new).hexdigest()
    }


async def test_a_file_renamed_since_the_index_is_found_under_its_new_name(
    indexed: Services, recorded: Settings
) -> None:
    storage = indexed.storage
    await storage.store.delete(storage.source_bucket, f"5/{CATALOGUE_BY_ID[5].name}")
    await storage.put_source(5, "echo-renamed.log", CATALOGUE_BY_ID[5].data)
    record = await start_job(indexed, [5], "public")
    await run_worker_until_idle(recorded)
    done = await finished(indexed, record.job_id)

    assert done.skipped == [] and done.total_files == 1
    assert await contents(indexed, done) == {"echo-renamed.log": CATALOGUE_BY_ID[5].sha256}


async def test_an_archive_of_the_indexed_version_is_not_handed_out_once_the_file_changed(
    indexed: Services, recorded: Settings
) -> None:
    first = await start_job(indexed, [4], "public")
    await run_worker_until_idle(recorded)
    original = await finished(indexed, first.job_id)

    # The index still names the old version, whose archive exists.
    new = b"a new edition"
    await indexed.storage.put_source(4, CATALOGUE_BY_ID[4].name, new)
    second = await start_job(indexed, [4], "public")
    await run_worker_until_idle(recorded)
    rebuilt = await finished(indexed, second.job_id)

    assert rebuilt.archive_key != original.archive_key
    assert await built_and_reused(indexed) == (2, 0)
    assert await contents(indexed, rebuilt) == {
        CATALOGUE_BY_ID[4].name: hashlib.sha256(new).hexdigest()
    }

    # Unchanged since: a third request reuses the new archive after one HEAD of the file.
    third = await start_job(indexed, [4], "public")
    await run_worker_until_idle(recorded)
    reused = await finished(indexed, third.job_id)
    assert reused.archive_key == rebuilt.archive_key
    assert await built_and_reused(indexed) == (2, 1)

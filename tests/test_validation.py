"""Bad requests: each gets the right 4xx and a JSON message naming the problem. Never a 5xx."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx
import pytest

from tests.helpers import start, wait_for_status

JSON = {"content-type": "application/json"}
ASYNC = "/v1/download/async"
UNKNOWN_JOB = "0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class Bad:
    name: str
    method: str
    path: str
    status: int
    says: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))


def body(value: object) -> bytes:
    return json.dumps(value).encode()


CASES = [
    Bad("empty body", "POST", ASYNC, 400, "body", b""),
    Bad("not json", "POST", ASYNC, 400, "malformed", b"file_ids=1"),
    Bad("truncated json", "POST", ASYNC, 400, "truncated", b'{"file_ids": [1,'),
    Bad("json array instead of object", "POST", ASYNC, 400, "object", body([1, 2])),
    Bad("json string", "POST", ASYNC, 400, "object", body("1,2")),
    Bad("missing file_ids", "POST", ASYNC, 400, "file_ids", body({})),
    Bad("misspelt field", "POST", ASYNC, 400, "file_id", body({"file_id": [1]})),
    Bad(
        "unknown extra field",
        "POST",
        ASYNC,
        400,
        "unknown field",
        body({"file_ids": [1], "zip": True}),
    ),
    Bad("null file_ids", "POST", ASYNC, 400, "file_ids", body({"file_ids": None})),
    Bad("file_ids not a list", "POST", ASYNC, 400, "file_ids", body({"file_ids": 1})),
    Bad("empty list", "POST", ASYNC, 400, "file_ids", body({"file_ids": []})),
    Bad("string id", "POST", ASYNC, 400, "file_ids[1]", body({"file_ids": [1, "2"]})),
    Bad("float id", "POST", ASYNC, 400, "file_ids[0]", body({"file_ids": [1.5]})),
    Bad("bool id", "POST", ASYNC, 400, "file_ids[0]", body({"file_ids": [True]})),
    Bad("null id", "POST", ASYNC, 400, "file_ids[0]", body({"file_ids": [None]})),
    Bad("nested list id", "POST", ASYNC, 400, "file_ids[0]", body({"file_ids": [[1]]})),
    Bad("zero id", "POST", ASYNC, 400, ">= 1", body({"file_ids": [0]})),
    Bad("negative id", "POST", ASYNC, 400, ">= 1", body({"file_ids": [-7]})),
    Bad("huge id", "POST", ASYNC, 400, "file_ids[0]", body({"file_ids": [10**30]})),
    Bad("duplicate ids", "POST", ASYNC, 400, "duplicate ids [2]", body({"file_ids": [2, 1, 2]})),
    Bad(
        "too many ids", "POST", ASYNC, 400, "at most 1000", body({"file_ids": list(range(1, 1002))})
    ),
    Bad("invalid utf-8", "POST", ASYNC, 400, "malformed", b'{"file_ids": [1], "\xff": 1}'),
    Bad(
        "body over the limit",
        "POST",
        ASYNC,
        413,
        "too large",
        b'{"file_ids": [' + b" " * 70_000 + b"1]}",
    ),
    Bad(
        "text/plain",
        "POST",
        ASYNC,
        415,
        "application/json",
        body({"file_ids": [1]}),
        {"content-type": "text/plain"},
    ),
    Bad(
        "form encoded",
        "POST",
        ASYNC,
        415,
        "application/json",
        b"file_ids=1",
        {"content-type": "application/x-www-form-urlencoded"},
    ),
    Bad(
        "xml",
        "POST",
        ASYNC,
        415,
        "application/json",
        b"<ids/>",
        {"content-type": "application/xml"},
    ),
    Bad("GET on the POST route", "GET", ASYNC, 405, "not allowed"),
    Bad("PUT on the POST route", "PUT", ASYNC, 405, "not allowed", body({"file_ids": [1]})),
    Bad(
        "POST on status", "POST", f"/v1/download/status/{UNKNOWN_JOB}", 405, "not allowed", body({})
    ),
    Bad("unknown job status", "GET", f"/v1/download/status/{UNKNOWN_JOB}", 404, "no job"),
    Bad("malformed job id", "GET", "/v1/download/status/not-a-job-id", 404, "no job"),
    Bad("path traversal", "GET", "/v1/download/status/..%2f..%2fetc", 404, "no route"),
    Bad("uppercase job id", "GET", f"/v1/download/status/{UNKNOWN_JOB.upper()}", 404, "no job"),
    Bad("too long job id", "GET", f"/v1/download/status/{UNKNOWN_JOB}00", 404, "no job"),
    Bad("unknown job events", "GET", f"/v1/download/subscribe/{UNKNOWN_JOB}", 404, "no job"),
    Bad("cancel unknown job", "DELETE", f"/v1/download/{UNKNOWN_JOB}", 404, "no job"),
    Bad("unknown route", "GET", "/v1/nothing-here", 404, "no route"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_bad_request_gets_a_clear_4xx(app_client: httpx.AsyncClient, case: Bad) -> None:
    response = await app_client.request(
        case.method, case.path, content=case.body, headers=case.headers
    )
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert payload["status_code"] == case.status
    assert case.says in payload["detail"], payload


@pytest.mark.parametrize(
    "last_event_id", ["yesterday", "1-2-3", "-1", "abc-0", "1 -0", "9" * 30 + "-0"]
)
async def test_malformed_last_event_id_is_400(
    app_client: httpx.AsyncClient, last_event_id: str
) -> None:
    created = await start(app_client, [5])
    response = await app_client.get(
        f"/v1/download/subscribe/{created['job_id']}", headers={"Last-Event-ID": last_event_id}
    )
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["detail"]


async def test_cancelling_a_finished_job_is_409(http: httpx.AsyncClient) -> None:
    created = await start(http, [5])
    await wait_for_status(http, created["job_id"], {"ready"})
    response = await http.delete(f"/v1/download/{created['job_id']}")
    assert response.status_code == 409
    assert "already ready" in response.json()["detail"]

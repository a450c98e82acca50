"""The OpenAPI schema the API serves documents every route, error and event, with examples
that are true: they validate against their own schemas, as do the events a real job sends."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import jwt
import pytest

from backend.app import create_app
from backend.jobevents import JOB_EVENTS
from backend.settings import load_settings
from tests.helpers import collect_events, start

JSON_API = {
    ("get", "/v1/files"),
    ("post", "/v1/download/async"),
    ("get", "/v1/download/status/{job_id}"),
    ("get", "/v1/download/subscribe/{job_id}"),
    ("delete", "/v1/download/{job_id}"),
    ("post", "/v1/download/{job_id}/retry"),
    ("get", "/v1/downloads"),
    ("get", "/health"),
}
ERRORS_OF = {
    ("get", "/v1/files"): {429, 503},
    ("post", "/v1/download/async"): {400, 401, 413, 415, 422, 429, 503},
    ("get", "/v1/download/status/{job_id}"): {401, 404, 429, 503},
    ("get", "/v1/download/subscribe/{job_id}"): {400, 401, 404, 429, 503},
    ("delete", "/v1/download/{job_id}"): {401, 404, 409, 429, 503},
    ("post", "/v1/download/{job_id}/retry"): {400, 401, 404, 409, 422, 429, 503},
    ("get", "/v1/downloads"): {400, 401, 429, 503},
    ("get", "/health"): {503},
}
SUCCESS_OF = {
    ("get", "/v1/files"): "200",
    ("post", "/v1/download/async"): "202",
    ("get", "/v1/download/status/{job_id}"): "200",
    ("get", "/v1/download/subscribe/{job_id}"): "200",
    ("delete", "/v1/download/{job_id}"): "200",
    ("post", "/v1/download/{job_id}/retry"): "202",
    ("get", "/v1/downloads"): "200",
    ("get", "/health"): "200",
}


@pytest.fixture
async def schema(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/docs/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def operations(schema: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }


def validate(value: Any, node: dict[str, Any], schema: dict[str, Any]) -> None:
    """Validate against a node of the document, resolving its `#/components/...` refs."""
    jsonschema.validate(value, {**node, "components": schema["components"]})


def event_data_schema(schema: dict[str, Any], event: str) -> dict[str, Any]:
    """The documented schema of `event`'s data, from the stream's frame schema."""
    data = schema["components"]["schemas"]["EventFrame"]["properties"]["data"]
    assert data["type"] == "string"
    assert data["contentMediaType"] == "application/json"
    by_title = {kind["title"]: kind for kind in data["contentSchema"]["anyOf"]}
    found: dict[str, Any] = by_title[JOB_EVENTS[event].__name__]
    return found


def frames(stream: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) of each event in a text/event-stream body; comments skipped."""
    found = []
    for block in stream.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if "data" in fields:
            found.append((fields["id"], fields["event"], json.loads(fields["data"])))
    return found


async def test_every_json_route_is_documented(schema: dict[str, Any]) -> None:
    documented = set(operations(schema))
    assert documented >= JSON_API
    # And no route of the app's JSON API is left out of the schema.
    app = create_app(load_settings({}))
    served = {
        (method.lower(), route.path.replace("{job_id:str}", "{job_id}"))
        for route in app.routes
        if route.path.startswith("/v1/") or route.path == "/health"
        for method in getattr(route, "http_methods", ())
        if method not in {"HEAD", "OPTIONS"}
    }
    assert served <= documented
    for key in JSON_API:
        assert operations(schema)[key].get("summary"), key


async def test_every_error_is_documented_with_a_true_example(schema: dict[str, Any]) -> None:
    ops = operations(schema)
    for key, codes in ERRORS_OF.items():
        responses = ops[key]["responses"]
        assert {int(code) for code in responses if int(code) >= 400} >= codes, key
        for code in codes:
            content = responses[str(code)]["content"]["application/json"]
            examples = [example["value"] for example in content["examples"].values()]
            assert examples, (key, code)
            for example in examples:
                validate(example, content["schema"], schema)
                if key != ("get", "/health"):
                    assert example["status_code"] == code
                    assert example["detail"]


async def test_every_success_answer_has_examples_that_fit_its_schema(
    schema: dict[str, Any],
) -> None:
    ops = operations(schema)
    for key, code in SUCCESS_OF.items():
        if key == ("get", "/v1/download/subscribe/{job_id}"):
            continue  # an event stream; the next test reads its examples
        content = ops[key]["responses"][code]["content"]["application/json"]
        assert content["examples"], key
        for example in content["examples"].values():
            validate(example["value"], content["schema"], schema)
    status_examples = ops[("get", "/v1/download/status/{job_id}")]["responses"]["200"]
    states = {
        e["value"]["status"]
        for e in status_examples["content"]["application/json"]["examples"].values()
    }
    assert states == {"queued", "processing", "ready", "failed", "cancelled"}
    body = ops[("post", "/v1/download/async")]["requestBody"]["content"]["application/json"]
    request_schema = schema["components"]["schemas"]["DownloadRequest"]
    assert body["schema"] == {"$ref": "#/components/schemas/DownloadRequest"}
    for example in request_schema["properties"]["file_ids"]["examples"]:
        validate({"file_ids": example}, request_schema, schema)


async def test_event_stream_documents_every_event_name_with_examples(
    schema: dict[str, Any],
) -> None:
    subscribe = operations(schema)[("get", "/v1/download/subscribe/{job_id}")]
    stream = subscribe["responses"]["200"]["content"]["text/event-stream"]
    frame = schema["components"]["schemas"]["EventFrame"]
    assert stream["schema"] == {"$ref": "#/components/schemas/EventFrame"}
    assert set(frame["properties"]["event"]["enum"]) == set(JOB_EVENTS)
    description = subscribe["responses"]["200"]["description"]
    for name, struct in JOB_EVENTS.items():
        assert f"| `{name}` | `{struct.__name__}` |" in description
        assert event_data_schema(schema, name)["properties"]
    assert "Last-Event-ID" in json.dumps(subscribe["parameters"])
    ended = subscribe["responses"]["204"]
    assert "EventSource" in ended["description"] and "content" not in ended

    shown = set()
    for example in stream["examples"].values():
        assert example["value"].startswith(": stream open\nretry: 2000\n\n")
        for event_id, event, data in frames(example["value"]):
            assert event_id.partition("-")[0].isdigit()
            validate(data, event_data_schema(schema, event), schema)
            shown.add(event)
    assert shown >= {"progress", "retrying", "completed", "failed", "cancelled"}


async def test_events_of_real_jobs_fit_their_documented_schemas(
    http: httpx.AsyncClient, schema: dict[str, Any]
) -> None:
    ready = await start(http, [1, 5])
    failed = await start(http, [999_999])
    events = await collect_events(http, ready["job_id"]) + await collect_events(
        http, failed["job_id"]
    )
    assert {e.event for e in events} >= {"progress", "completed", "failed"}
    for event in events:
        documented = event_data_schema(schema, event.event)
        validate(event.data, documented, schema)
        # Documented field by field: nothing the server sends is missing from the schema.
        assert set(event.data) <= set(documented["properties"]), event


async def test_list_and_retry_document_their_parameters_and_true_examples(
    http: httpx.AsyncClient, schema: dict[str, Any]
) -> None:
    ops = operations(schema)
    listing = ops[("get", "/v1/downloads")]
    params = {p["name"]: p for p in listing["parameters"]}
    assert {"status", "limit", "cursor"} <= set(params)
    assert all(params[name]["description"] for name in ("status", "limit", "cursor"))
    assert 'rel="next"' in listing["responses"]["200"]["description"]
    bad = listing["responses"]["400"]["content"]["application/json"]["examples"]
    assert [e["value"]["extra"][0]["key"] for e in bad.values()] == ["status"]
    # The documented 400 is the sentence the server says.
    token = jwt.encode({"sub": "docs-reader"}, "test-jwt-secret-of-at-least-32-bytes")
    said = await http.get("/v1/downloads?status=done", headers={"Authorization": f"Bearer {token}"})
    assert said.json() == next(iter(bad.values()))["value"]
    anonymous = await http.get("/v1/downloads")
    documented_401 = listing["responses"]["401"]["content"]["application/json"]["examples"]
    assert anonymous.json() in [e["value"] for e in documented_401.values()]
    retry = ops[("post", "/v1/download/{job_id}/retry")]
    examples = retry["responses"]["202"]["content"]["application/json"]["examples"]
    assert all(e["value"]["retry_of"] for e in examples.values())
    assert "Idempotency-Key" in json.dumps(retry["parameters"])

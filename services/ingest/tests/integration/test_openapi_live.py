"""The published contract: property-based tests (schemathesis) against /openapi.json with valid tokens
find no 5xx and no response the schema does not describe; every operation documents its statuses;
/metrics speaks Prometheus.

Schemathesis's lazy pytest loader (``from_fixture``) breaks on pytest 9 (it reads a private node
attribute that is gone), so each operation's strategy is drawn with Hypothesis directly.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from leaderboard.testkit.testing import System

OPERATIONS = [
    ("GET", "/api/v1/catalog", "player"),
    ("POST", "/api/v1/actions", "player"),
    ("POST", "/api/v1/score/update", "player"),
    ("POST", "/api/v1/events", "service"),
    ("POST", "/score", "service"),
    ("POST", "/api/v1/admin/actions/{action_id}/void", "admin"),
    ("POST", "/api/v1/admin/users/{user_id}/void", "admin"),
    ("POST", "/api/v1/admin/users/{user_id}/restore", "admin"),
    ("POST", "/api/v1/admin/users/{user_id}/rename", "admin"),
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="session")
def api_schema(open_system: System) -> Any:
    return schemathesis.openapi.from_url(f"{open_system.ingest_url}/openapi.json")


def test_the_schema_lists_every_operation(api_schema: Any) -> None:
    listed = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert listed == {(m, p) for m, p, _ in OPERATIONS}


# The catalog takes no parameters and no body: nothing to make invalid, so no negative run.
RUNS = [
    pytest.param(m, p, r, mode, id=f"{m} {p} {mode}")
    for m, p, r in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (p == "/api/v1/catalog" and mode == GenerationMode.NEGATIVE)
]


@pytest.mark.parametrize(("method", "path", "role", "mode"), RUNS)
def test_no_5xx_and_every_response_matches_the_schema(
    api_schema: Any, open_system: System, method: str, path: str, role: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    token = open_system.token(role=role)  # type: ignore[arg-type]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=open_system.ingest_url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
        )

    check()


def test_every_operation_documents_its_status_codes(api_schema: Any) -> None:
    raw = api_schema.raw_schema
    writes = {"401", "403", "413", "422", "429", "503"}
    expected = {
        ("get", "/api/v1/catalog"): {"200", "413"},
        ("post", "/api/v1/actions"): {"201"} | writes,
        ("post", "/api/v1/score/update"): {"200", "202", "404", "409", "410"} | writes,
        ("post", "/api/v1/events"): {"202"} | writes,
        ("post", "/score"): {"202"} | writes,
    }
    for (method, path), codes in expected.items():
        responses = raw["paths"][path][method]["responses"]
        assert codes <= set(responses), (method, path, sorted(codes - set(responses)))
        for code in ("429", "503"):
            if code in responses:
                assert "Retry-After" in responses[code]["headers"], (path, code)
        for code, spec in responses.items():
            assert spec.get("description"), (path, code)
            if code.startswith(("4", "5")):
                ref = spec["content"]["application/json"]["schema"]["$ref"]
                assert ref.rsplit("/", 1)[-1] in ("ErrorModel", "TicketUsedError"), (path, code, ref)


async def test_metrics_are_prometheus_text_and_count_what_happens(open_rig: Any) -> None:
    def value(text: str, name: str) -> float:
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    before = (await open_rig.http.get("/metrics")).text
    svc = open_rig.service()
    accepted = await open_rig.service_event(str(uuid.uuid4()), 3)
    assert accepted.status_code == 202
    refused = await open_rig.http.post("/api/v1/events", json={"events": []}, headers=svc.headers)
    assert refused.status_code == 422
    response = await open_rig.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    assert "# TYPE ingest_events_accepted_total counter" in after
    assert value(after, 'ingest_events_accepted_total{source="service"}') == (
        value(before, 'ingest_events_accepted_total{source="service"}') + 1
    )
    assert value(after, 'ingest_refused_total{code="invalid"}') >= (
        value(before, 'ingest_refused_total{code="invalid"}') + 1
    )
    assert "ingest_publish_seconds_bucket" in after

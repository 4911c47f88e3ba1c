"""The error map, once for every domain refusal: what a client receives (status, code, headers, body
in the error shape, X-Request-ID) and what the audit trail records, through the real app's handlers."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.exceptions import HTTPException

from leaderboard.ingest import errors as e
from leaderboard.ingest.entrypoints.errors import ANSWERS

# (refusal, status, code, headers it must carry, extra body fields)
CASES: list[tuple[e.DomainError, int, str, dict[str, str], dict[str, Any]]] = [
    (e.UnknownActionType("teleport"), 422, "unknown_action_type", {}, {}),
    (e.Invalid("timestamp", "field 'timestamp' is in the future"), 422, "invalid", {}, {}),
    (e.TooFast(2), 422, "too_fast", {}, {}),
    (e.TicketNotFound(), 404, "not_found", {}, {}),
    (e.DevModeOff("/api/v1/dev/token"), 404, "not_found", {}, {}),
    (e.TicketForbidden(), 403, "forbidden", {}, {}),
    (e.RoleRefused("a service token is required"), 403, "forbidden", {}, {}),
    (e.TicketUsed("evt-1"), 409, "ticket_used", {}, {"eventId": "evt-1"}),
    (e.TicketExpired(), 410, "ticket_expired", {}, {}),
    (e.CapReached(120), 429, "cap_reached", {"Retry-After": "120"}, {}),
    (
        e.RateLimited("too many requests; slow down", {"Retry-After": "3", "RateLimit-Remaining": "0"}),
        429,
        "rate_limited",
        {"Retry-After": "3", "RateLimit-Remaining": "0"},
        {},
    ),
    (e.LogUnavailable("timed out"), 503, "unavailable", {"Retry-After": "9"}, {}),
    (e.StoreUnavailable(), 503, "unavailable", {"Retry-After": "9"}, {}),
    (e.UnknownTicketOutcome("???"), 503, "unavailable", {"Retry-After": "1"}, {}),
]


def all_refusals(base: type[e.DomainError] = e.DomainError) -> set[type[e.DomainError]]:
    found: set[type[e.DomainError]] = set()
    for sub in base.__subclasses__():
        found |= {sub} | all_refusals(sub)
    return found


async def test_every_refusal_has_one_answer_and_one_case() -> None:
    cased = [type(c[0]) for c in CASES]
    assert len(cased) == len(set(cased))
    assert set(cased) == all_refusals() == set(ANSWERS)


@pytest.mark.parametrize(
    ("refusal", "status", "code", "headers", "extra"), CASES, ids=[type(c[0]).__name__ for c in CASES]
)
async def test_each_refusal_is_answered_and_audited(
    make_harness: Any,
    refusal: e.DomainError,
    status: int,
    code: str,
    headers: dict[str, str],
    extra: dict[str, Any],
) -> None:
    h = make_harness(retry_after_s=9)

    async def refuse() -> None:
        raise refusal

    h.app.add_api_route("/refuse", refuse, methods=["POST"])
    r = await h.client.post("/refuse", headers={"X-Request-ID": "rid-42"})
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"status": "error", "error": str(refusal), "code": code, **extra}
    assert {k: r.headers.get(k) for k in headers} == headers
    if status != 429 and status != 503:
        assert "retry-after" not in r.headers
    assert r.headers["x-request-id"] == "rid-42"
    [audit] = h.publisher.audits
    assert (audit.reason, audit.request_id, audit.path, audit.client_ip) == (
        code,
        "rid-42",
        "/refuse",
        "127.0.0.1",
    )
    expected_detail = "ticket store unavailable" if isinstance(refusal, e.StoreUnavailable) else str(refusal)
    assert audit.detail == expected_detail


async def test_a_redis_failure_anywhere_is_the_store_refusal(make_harness: Any) -> None:
    h = make_harness(retry_after_s=9)

    async def redis_down() -> None:
        raise RedisConnectionError("connection refused")

    h.app.add_api_route("/redis", redis_down, methods=["POST"])
    r = await h.client.post("/redis")
    assert (r.status_code, r.json()["code"], r.headers["retry-after"]) == (503, "unavailable", "9")
    assert "nothing was recorded" in r.json()["error"]
    assert [a.detail for a in h.publisher.audits] == ["ticket store unavailable"]


async def test_fastapis_400_for_an_undecodable_body_is_invalid(make_harness: Any) -> None:
    h = make_harness()

    async def undecodable() -> None:
        raise HTTPException(400, "There was an error parsing the body")

    h.app.add_api_route("/undecodable", undecodable, methods=["POST"])
    r = await h.client.post("/undecodable")
    assert (r.status_code, r.json()) == (
        422,
        {"status": "error", "error": "request body is not valid UTF-8 JSON", "code": "invalid"},
    )
    assert [a.reason for a in h.publisher.audits] == ["invalid"]
    # Other HTTP errors keep the shared handler's answer.
    assert (await h.client.get("/nowhere")).json()["code"] == "not_found"


async def test_an_audit_that_fails_never_turns_a_refusal_into_a_500(make_harness: Any) -> None:
    h = make_harness()

    def broken(event: Any) -> None:
        raise RuntimeError("audit topic gone")

    h.publisher.audit = broken

    async def refuse() -> None:
        raise e.TicketExpired()

    h.app.add_api_route("/refuse", refuse, methods=["POST"])
    assert (await h.client.post("/refuse")).status_code == 410

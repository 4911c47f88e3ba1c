"""Ingest's dependencies and route handlers through the real app: who may call what, which rate limits
a request is charged to, how a use case's result becomes the answer, the dev token and readiness.

The use cases and the limiter's Redis script are recording stand-ins (see conftest.py); the same
routes run end to end against Kafka and Redis in tests/integration."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
from redis.exceptions import ConnectionError as RedisConnectionError

from leaderboard.common.auth import TokenVerifier
from leaderboard.common.catalog import Catalog
from leaderboard.ingest.bootstrap import readiness
from leaderboard.ingest.entrypoints.deps import limits_for
from leaderboard.ingest.errors import TicketExpired
from leaderboard.ingest.service import BatchResult, Completed, Ticket

IP = "127.0.0.1"
ACTION = str(uuid.uuid4())


async def test_a_player_starts_an_action_within_user_and_ip_limits(harness: Any) -> None:
    at = datetime(2026, 3, 1, 12, 0, 5, 123000, tzinfo=UTC)
    harness.service.results["start_action"] = Ticket(uuid.UUID(ACTION), "quest", 50, at, at)
    sub = str(uuid.uuid4())
    r = await harness.client.post(
        "/api/v1/actions", json={"actionType": "quest"}, headers=harness.auth(sub=sub)
    )
    assert r.status_code == 201, r.text
    assert r.json() == {
        "actionId": ACTION,
        "actionType": "quest",
        "points": 50,
        "expiresAt": "2026-03-01T12:00:05.123Z",
        "notBefore": "2026-03-01T12:00:05.123Z",
    }
    assert r.headers["ratelimit-remaining"] == "5"
    assert harness.limiter.calls == [[f"user:{sub}", f"ip:{IP}"]]
    [(name, (who, action_type), _)] = harness.service.calls
    assert (name, who.sub, who.role, action_type) == ("start_action", sub, "player", "quest")


async def test_a_missing_or_bad_token_is_401_and_charged_to_the_ip(harness: Any) -> None:
    r = await harness.client.post("/api/v1/actions", json={"actionType": "quest"})
    assert (r.status_code, r.json()) == (
        401,
        {"status": "error", "error": "missing bearer token", "code": "unauthorized"},
    )
    assert r.headers["www-authenticate"] == "Bearer"
    bad = await harness.client.post(
        "/api/v1/actions", json={"actionType": "quest"}, headers={"Authorization": "Bearer x.y.z"}
    )
    assert (bad.status_code, bad.json()["code"]) == (401, "unauthorized")
    assert bad.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert harness.limiter.calls == [[f"ip:{IP}"], [f"ip:{IP}"]]
    assert [a.reason for a in harness.publisher.audits] == ["unauthorized", "unauthorized"]
    assert harness.service.calls == []


async def test_failed_authentications_past_the_ip_limit_are_429(harness: Any) -> None:
    harness.limiter.allowed = False
    r = await harness.client.post("/api/v1/events", json={"events": []})
    assert (r.status_code, r.json()["code"], r.headers["retry-after"]) == (429, "rate_limited", "7")


async def test_roles_are_gated_per_path(harness: Any) -> None:
    as_service = await harness.client.post(
        "/api/v1/actions", json={"actionType": "quest"}, headers=harness.auth("service")
    )
    assert (as_service.status_code, as_service.json()["code"]) == (403, "forbidden")
    assert "player tokens" in as_service.json()["error"]
    as_player = await harness.client.post("/api/v1/events", json={"events": []}, headers=harness.auth())
    assert (as_player.status_code, as_player.json()["code"]) == (403, "forbidden")
    assert harness.limiter.calls == []  # refused before any limit is charged


async def test_a_spent_rate_limit_is_429_with_its_headers(harness: Any) -> None:
    harness.limiter.allowed = False
    r = await harness.client.post("/api/v1/actions", json={"actionType": "quest"}, headers=harness.auth())
    assert (r.status_code, r.json()["code"]) == (429, "rate_limited")
    assert (r.headers["retry-after"], r.headers["ratelimit-remaining"]) == ("7", "0")
    assert harness.service.calls == []


async def test_the_limiter_store_down_is_503(harness: Any) -> None:
    harness.limiter.fail_with = RedisConnectionError("down")
    r = await harness.client.post("/api/v1/actions", json={"actionType": "quest"}, headers=harness.auth())
    assert (r.status_code, r.json()["code"]) == (503, "unavailable")
    assert r.headers["retry-after"] == str(harness.settings.retry_after_s)


def test_limits_services_per_subject_and_players_per_user_and_ip(harness: Any) -> None:
    ports = harness.app.state.ports
    verifier = TokenVerifier(harness.settings)
    service = verifier.verify(harness.token("service", sub=ACTION))
    admin = verifier.verify(harness.token("admin", sub=ACTION))
    player = verifier.verify(harness.token("player", sub=ACTION))
    s = harness.settings
    assert [(x.key, x.per_minute, x.burst) for x in limits_for(service, IP, ports)] == [
        (f"svc:{ACTION}", s.rate_service_per_min, s.rate_service_burst)
    ]
    assert [x.key for x in limits_for(admin, IP, ports)] == [f"svc:{ACTION}"]
    assert [(x.key, x.burst) for x in limits_for(player, IP, ports)] == [
        (f"user:{ACTION}", s.rate_player_burst),
        (f"ip:{IP}", s.rate_ip_burst),
    ]


async def test_completing_answers_202_or_200_with_the_new_score(harness: Any) -> None:
    sub = str(uuid.uuid4())
    event_id = uuid.uuid4()
    harness.service.results["complete_action"] = Completed(sub, uuid.UUID(ACTION), event_id, None)
    body = {"actionId": ACTION, "timestamp": 1772366400}
    headers = {**harness.auth(sub=sub), "X-Request-ID": "rid-9"}
    r = await harness.client.post("/api/v1/score/update", json=body, headers=headers)
    assert (r.status_code, r.json()) == (
        202,
        {"status": "success", "userId": sub, "actionId": ACTION, "eventId": str(event_id)},
    )
    harness.service.results["complete_action"] = Completed(sub, uuid.UUID(ACTION), event_id, 120)
    waited = await harness.client.post("/api/v1/score/update?wait=true", json=body, headers=headers)
    assert (waited.status_code, waited.json()["newScore"]) == (200, 120)
    calls = [args[1:] for name, args, _ in harness.service.calls]
    assert calls == [
        (uuid.UUID(ACTION), 1772366400, "rid-9", False),
        (uuid.UUID(ACTION), 1772366400, "rid-9", True),
    ]


async def test_a_use_case_refusal_reaches_the_client_through_the_map(harness: Any) -> None:
    harness.service.results["complete_action"] = TicketExpired()
    r = await harness.client.post(
        "/api/v1/score/update", json={"actionId": ACTION, "timestamp": 1}, headers=harness.auth()
    )
    assert (r.status_code, r.json()["code"]) == (410, "ticket_expired")


async def test_a_service_batch_is_handed_over_as_parsed(harness: Any) -> None:
    harness.service.results["submit_events"] = BatchResult(accepted=1, duplicates=1)
    event = {"actionId": ACTION, "userId": ACTION, "actionType": "quest", "occurredAt": 1, "points": 3}
    r = await harness.client.post(
        "/api/v1/events",
        json={"events": [event, event]},
        headers={**harness.auth("service"), "X-Request-ID": "b1"},
    )
    assert (r.status_code, r.json()) == (202, {"accepted": 1, "duplicates": 1})
    [(_, (who, events, rid), _)] = harness.service.calls
    assert (who.role, rid, [e.points for e in events]) == ("service", "b1", [3, 3])
    assert harness.limiter.calls == [[f"svc:{who.sub}"]]


async def test_seed_004_score_maps_to_the_legacy_use_case(harness: Any) -> None:
    given = uuid.uuid4()
    harness.service.results["submit_legacy"] = (given, BatchResult(accepted=0, duplicates=1))
    user = str(uuid.uuid4())
    r = await harness.client.post(
        "/score", json={"userId": user, "increment": 4, "username": "Zoë"}, headers=harness.auth("service")
    )
    assert (r.status_code, r.json()) == (
        202,
        {"status": "success", "userId": user, "actionId": str(given), "accepted": 0, "duplicates": 1},
    )
    [(_, _, kwargs)] = harness.service.calls
    assert {k: kwargs[k] for k in ("user_id", "increment", "action_id", "action_type", "username")} == {
        "user_id": uuid.UUID(user),
        "increment": 4,
        "action_id": None,
        "action_type": None,
        "username": "Zoë",
    }


async def test_the_catalog_lists_every_action_type(harness: Any) -> None:
    r = await harness.client.get("/api/v1/catalog")
    assert r.status_code == 200
    assert r.json() == {"actions": Catalog.load(None).public()}


async def test_the_dev_token_is_a_fresh_demo_players(harness: Any) -> None:
    r = await harness.client.post("/api/v1/dev/token")
    assert r.status_code == 200, r.text
    body = r.json()
    who = TokenVerifier(harness.settings).verify(body["token"])
    assert (who.sub, who.role, who.name) == (body["userId"], "player", body["username"])
    assert (
        jwt.decode(body["token"], options={"verify_signature": False})["exp"]
        - jwt.decode(body["token"], options={"verify_signature": False})["iat"]
        == 3600
    )
    assert harness.limiter.calls == [[f"devtoken:{IP}"]]
    harness.limiter.allowed = False
    limited = await harness.client.post("/api/v1/dev/token")
    assert (limited.status_code, limited.json()["error"]) == (429, "too many demo players from this address")


async def test_the_dev_token_does_not_exist_outside_dev_mode(make_harness: Any) -> None:
    h = make_harness(dev_mode=False)
    r = await h.client.post("/api/v1/dev/token")
    assert (r.status_code, r.json()) == (
        404,
        {"status": "error", "error": "no route for POST /api/v1/dev/token", "code": "not_found"},
    )
    assert h.limiter.calls == []
    assert "/api/v1/dev/token" not in h.app.openapi()["paths"]


async def test_readiness_before_the_lifespan_is_not_ready() -> None:
    assert await readiness(None) == {"redis": "error: not started", "kafka": "error: not started"}

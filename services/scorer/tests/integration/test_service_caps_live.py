"""The service path has caps by default (issue 8): a game backend's batch of 30 ``boss_defeated`` for
one player (catalog per_hour 10) applies 10 and quarantines 20, audited and listed by the admin
endpoint; LEADERBOARD_SERVICE_CAPS=off applies all. The admin endpoint answers refusals in the
error shape with X-Request-ID and parses ``limit`` strictly."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import httpx

from leaderboard.common.events import SecurityEvent, iso_ms, now_ms
from leaderboard.testkit.testing import System

if TYPE_CHECKING:  # pytest imports conftest itself (importlib mode); mypy knows it by path
    from services.scorer.tests.integration.conftest import Kit

SERVICE_ENV = {"LEADERBOARD_RATE_SERVICE_PER_MIN": "100000", "LEADERBOARD_RATE_SERVICE_BURST": "10000"}


def bosses(user: uuid.UUID, n: int) -> list[dict[str, Any]]:
    return [
        {
            "actionId": str(uuid.uuid4()),
            "userId": str(user),
            "username": "boss-hunter",
            "actionType": "boss_defeated",
            "occurredAt": iso_ms(now_ms()),
            "points": 200,
        }
        for _ in range(n)
    ]


async def send(system: System, events: list[dict[str, Any]]) -> None:
    token = system.token(str(uuid.uuid4()), role="service", name="caps-test-backend")
    async with httpx.AsyncClient(base_url=system.ingest_url, timeout=30) as ingest:
        reply = await ingest.post(
            "/api/v1/events", json={"events": events}, headers={"Authorization": f"Bearer {token}"}
        )
    assert reply.status_code == 202 and reply.json()["accepted"] == len(events), reply.text


async def score_on_board(system: System, user: uuid.UUID) -> int | None:
    async with httpx.AsyncClient(base_url=system.broadcaster_url, timeout=10) as http:
        body = (await http.get("/api/v1/leaderboard", params={"limit": 100})).json()
    return {e["userId"]: e["score"] for e in body.get("leaderboard", [])}.get(str(user))


async def test_a_service_flood_for_one_player_is_capped_by_the_catalog(kit: Kit) -> None:
    system = kit.start(only=("ingest", "broadcaster", "scorer"), **SERVICE_ENV)
    hunter = uuid.uuid4()
    sent = bosses(hunter, 30)
    await send(system, sent)

    async def settled() -> bool:
        return await kit.applied_count() == 10 and await score_on_board(system, hunter) == 10 * 200

    await kit.eventually(settled, 30, "10 boss_defeated applied and on the board")
    url = system.specs["scorer"].health_url.replace("/readyz", "/api/v1/admin/quarantine")
    admin = {"Authorization": f"Bearer {system.token(str(uuid.uuid4()), role='admin')}"}
    async with httpx.AsyncClient(timeout=10) as http:
        listed = await http.get(url, headers=admin, params={"userId": str(hunter), "limit": "100"})
    assert listed.status_code == 200, listed.text
    held = listed.json()["quarantined"]
    assert len(held) == 20 and {e["actionId"] for e in held} <= {e["actionId"] for e in sent}
    assert all("over 10 boss_defeated per 3600s" in e["reason"] and e["source"] == "service" for e in held)

    audit: list[SecurityEvent] = []

    async def audited() -> bool:
        raw = [json.loads(r) for r in await kit.read_topic(kit.topics.audit, 3)]
        audit[:] = [SecurityEvent.model_validate(a) for a in raw if a.get("kind") == "action_quarantined"]
        return len(audit) == 20

    await kit.eventually(audited, 30, "20 audit events")
    assert {e.detail["actionId"] for e in audit} == {e["actionId"] for e in held}
    assert await kit.pg_board() == [(str(hunter), 10 * 200)]

    # A trusted backend: the derived caps off, the same flood applies whole.
    system.supervisor.stop("scorer")
    system.restart("scorer", env={"LEADERBOARD_SERVICE_CAPS": "off"})
    trusted = uuid.uuid4()
    await send(system, bosses(trusted, 30))

    async def all_applied() -> bool:
        return await score_on_board(system, trusted) == 30 * 200

    await kit.eventually(all_applied, 30, "all 30 applied with LEADERBOARD_SERVICE_CAPS=off")
    assert await kit.applied_count() == 10 + 30


async def test_admin_refusals_are_in_the_error_shape_with_a_request_id(kit: Kit) -> None:
    system = kit.start()
    url = system.specs["scorer"].health_url.replace("/readyz", "/api/v1/admin/quarantine")
    admin = {"Authorization": f"Bearer {system.token(str(uuid.uuid4()), role='admin')}"}
    async with httpx.AsyncClient(timeout=10) as http:
        for limit in ["0", "1001", "abc", "\u00b2", "\u0663", "+5", " 5", "5_0", "9" * 5000]:
            bad = await http.get(url, headers={**admin, "X-Request-ID": "trace-42"}, params={"limit": limit})
            assert bad.status_code == 422, (limit[:20], bad.text)
            assert bad.json()["status"] == "error" and bad.json()["code"] == "invalid"
            assert "'limit'" in bad.json()["error"], bad.json()
            assert bad.headers["X-Request-ID"] == "trace-42"
        anonymous = await http.get(url)
        assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthorized"
        assert anonymous.headers.get("X-Request-ID")
        bad_user = await http.get(url, headers=admin, params={"userId": "nope"})
        assert bad_user.status_code == 422 and "'userId'" in bad_user.json()["error"]
        assert bad_user.headers.get("X-Request-ID")
        ok = await http.get(url, headers=admin, params={"limit": "5"})
        assert ok.status_code == 200 and ok.json() == {"quarantined": []} and ok.headers.get("X-Request-ID")

"""The game-backend side (POST /api/v1/events, POST /score) and the odds and ends of the player API,
through HTTP against the running ingest, with what reached Kafka read back from the log."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from leaderboard.common.events import iso_ms, now_ms


def event(user: str, **changes: Any) -> dict[str, Any]:
    e = {
        "actionId": str(uuid.uuid4()),
        "userId": user,
        "actionType": "trial",
        "occurredAt": iso_ms(now_ms()),
    }
    e.update(changes)
    return {k: v for k, v in e.items() if v is not None}


async def logged(rig: Any, action_ids: set[str]) -> list[dict[str, Any]]:
    # The log also holds admins' corrections (the OpenAPI test fuzzes those routes), some without an actionId.
    return [e for e in await rig.read_topic(rig.topics.actions) if e.get("actionId") in action_ids]


async def test_a_batch_of_1000_is_accepted_whole_and_1001_refused(open_rig: Any) -> None:
    rig, svc = open_rig, open_rig.service()
    users = [str(uuid.uuid4()) for _ in range(50)]
    batch = [event(users[i % 50], points=(i % 100) + 1, username=f"user {i % 50}") for i in range(1000)]
    r = await rig.http.post("/api/v1/events", json={"events": batch}, headers=svc.headers)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 1000, "duplicates": 0}
    log = await logged(rig, {e["actionId"] for e in batch})
    assert len(log) == 1000
    sent = {e["actionId"]: e for e in batch}
    for record in log:
        original = sent[record["actionId"]]
        assert record["points"] == original["points"] and record["userId"] == original["userId"]
        assert record["source"] == "service" and record["key"] == original["userId"].encode()
        assert record["username"] == original["username"]

    too_many = [event(users[0]) for _ in range(1001)]
    r = await rig.http.post("/api/v1/events", json={"events": too_many}, headers=svc.headers)
    assert r.status_code == 422 and r.json()["code"] == "invalid" and "1000" in r.json()["error"]
    assert await logged(rig, {e["actionId"] for e in too_many}) == []


async def test_one_bad_event_refuses_the_batch_naming_its_index(open_rig: Any) -> None:
    rig, svc = open_rig, open_rig.service()
    user = str(uuid.uuid4())
    cases = {
        "points above maxPoints": event(user, points=101),
        "unknown type": event(user, actionType="teleport"),
        "far future": event(user, occurredAt=int(time.time()) + 86400),
        "naive time": event(user, occurredAt="2026-01-01T00:00:00"),
    }
    for why, bad in cases.items():
        batch = [event(user), event(user), event(user), bad, event(user)]
        r = await rig.http.post("/api/v1/events", json={"events": batch}, headers=svc.headers)
        assert r.status_code == 422, (why, r.text)
        assert r.json()["code"] == "invalid" and "events[3]" in r.json()["error"], (why, r.json())
        assert await logged(rig, {e["actionId"] for e in batch}) == [], why
    # Schema errors (an unknown field, a malformed id) name the index too.
    batch = [event(user), event(user, bonus=5)]
    r = await rig.http.post("/api/v1/events", json={"events": batch}, headers=svc.headers)
    assert r.status_code == 422 and "events.1.bonus" in r.json()["error"], r.text


async def test_duplicates_are_reported_within_and_across_requests(open_rig: Any) -> None:
    rig, svc = open_rig, open_rig.service()
    user = str(uuid.uuid4())
    a, b = event(user), event(user)
    r = await rig.http.post("/api/v1/events", json={"events": [a, b, a]}, headers=svc.headers)
    assert r.json() == {"accepted": 2, "duplicates": 1}, r.text
    c = event(user)
    r = await rig.http.post("/api/v1/events", json={"events": [b, c]}, headers=svc.headers)
    assert r.json() == {"accepted": 1, "duplicates": 1}, r.text
    log = await logged(rig, {a["actionId"], b["actionId"], c["actionId"]})
    assert sorted(e["actionId"] for e in log) == sorted([a["actionId"], b["actionId"], c["actionId"]])


async def test_points_default_to_the_catalog_and_score_takes_an_increment(open_rig: Any) -> None:
    rig, svc = open_rig, open_rig.service()
    user = str(uuid.uuid4())
    plain = event(user)
    r = await rig.http.post("/api/v1/events", json={"events": [plain]}, headers=svc.headers)
    assert r.status_code == 202
    action_id = str(uuid.uuid4())
    r = await rig.http.post(
        "/score", json={"userId": user, "increment": 42, "actionId": action_id}, headers=svc.headers
    )
    assert r.status_code == 202, r.text
    assert r.json() == {
        "status": "success",
        "userId": user,
        "actionId": action_id,
        "accepted": 1,
        "duplicates": 0,
    }
    again = await rig.http.post(
        "/score", json={"userId": user, "increment": 42, "actionId": action_id}, headers=svc.headers
    )
    assert again.status_code == 202 and again.json()["duplicates"] == 1
    over = await rig.http.post("/score", json={"userId": user, "increment": 101}, headers=svc.headers)
    assert over.status_code == 422 and "increment" in over.json()["error"]
    points = {e["actionId"]: e["points"] for e in await logged(rig, {plain["actionId"], action_id})}
    assert points == {plain["actionId"]: 7, action_id: 42}  # 7: the catalog's points for `trial`


async def test_catalog_lists_the_configured_actions(open_rig: Any) -> None:
    r = await open_rig.http.get("/api/v1/catalog")
    assert r.status_code == 200
    actions = {a["actionType"]: a for a in r.json()["actions"]}
    assert set(actions) == {"trial", "capped", "brief"}
    assert actions["capped"] == {
        "actionType": "capped",
        "points": 3,
        "maxPoints": 3,
        "minSeconds": 1.0,
        "perHour": 2,
        "ttlSeconds": 600,
    }


async def test_start_refuses_unknown_types_and_the_ticket_names_its_window(open_rig: Any) -> None:
    rig = open_rig
    player = rig.player()
    r = await rig.http.post("/api/v1/actions", json={"actionType": "teleport"}, headers=player.headers)
    assert r.status_code == 422 and r.json()["code"] == "unknown_action_type"
    ticket = await rig.start(player)
    assert ticket["actionType"] == "trial" and ticket["points"] == 7
    uuid.UUID(ticket["actionId"])
    assert ticket["expiresAt"].endswith("Z") and ticket["notBefore"] < ticket["expiresAt"]


async def test_completion_timestamp_must_be_sane(open_rig: Any) -> None:
    rig = open_rig
    player = rig.player()
    ticket = await rig.start(player)
    await asyncio.sleep(1.4)
    for bad in (int(time.time()) + 3600, "yesterday", "2026-01-01T00:00:00", int(time.time()) - 86400):
        r = await rig.http.post(
            "/api/v1/score/update",
            json={"actionId": ticket["actionId"], "timestamp": bad},
            headers=player.headers,
        )
        assert r.status_code == 422 and r.json()["code"] == "invalid", (bad, r.text)
        assert "timestamp" in r.json()["error"]
    # None of those burned the ticket; an ISO-8601 time completes it.
    r = await rig.http.post(
        "/api/v1/score/update",
        json={"actionId": ticket["actionId"], "timestamp": iso_ms(now_ms())},
        headers=player.headers,
    )
    assert r.status_code == 202, r.text


async def test_wait_true_without_a_scorer_returns_202_after_the_bounded_wait(open_rig: Any) -> None:
    rig = open_rig  # ingest alone: nothing will apply the event
    player = rig.player()
    ticket = await rig.start(player)
    await asyncio.sleep(1.4)
    r = await rig.complete(player.token, ticket["actionId"], wait=True)
    assert r.status_code == 202, r.text
    assert "newScore" not in r.json() and r.json()["status"] == "success"


async def test_errors_never_leak_internals(open_rig: Any) -> None:
    rig = open_rig
    player = rig.player()
    answers = [
        await rig.http.post(
            "/api/v1/actions",
            content=b"{not json",
            headers={**player.headers, "Content-Type": "application/json"},
        ),
        await rig.http.post(
            "/api/v1/actions",
            content=b"\xff\xfe",
            headers={**player.headers, "Content-Type": "application/json"},
        ),
        await rig.http.post("/api/v1/actions", json=[1, 2], headers=player.headers),
        await rig.http.get("/nope"),
        await rig.http.post("/api/v1/dev/token"),
    ]
    for r in answers:
        body = r.json()
        assert body["status"] == "error" and body["code"] and body["error"], r.text
        assert "Traceback" not in r.text and 'File "' not in r.text
    assert [r.status_code for r in answers] == [422, 422, 422, 404, 404]


async def test_behind_a_trusted_proxy_the_client_ip_comes_from_x_forwarded_for(open_rig: Any) -> None:
    rig = open_rig  # trusts 127.0.0.1 as a proxy (the battery's system trusts nobody, and checks that)
    request_id = f"xff-{uuid.uuid4().hex[:8]}"
    r = await rig.http.post(
        "/api/v1/actions",
        json={"actionType": "trial"},
        headers={"X-Forwarded-For": "192.0.2.1, 198.51.100.7", "X-Request-ID": request_id},
    )
    assert r.status_code == 401
    record = await rig.read_until(rig.topics.audit, requestId=request_id)
    # The right-most hop that is not a trusted proxy: the left-most is whatever the client wrote.
    assert record["clientIp"] == "198.51.100.7" and record["reason"] == "unauthorized"


async def test_cors_allows_only_the_configured_origins(open_rig: Any) -> None:
    rig = open_rig
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = await rig.http.options("/api/v1/actions", headers={"Origin": "https://game.example", **preflight})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://game.example"
    evil = await rig.http.options("/api/v1/actions", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in evil.headers
    limited = await rig.http.post(
        "/api/v1/actions", json={"actionType": "trial"}, headers={"Origin": "https://game.example"}
    )
    assert limited.status_code == 401  # CORS headers ride on errors too, so browsers can read them
    assert limited.headers["access-control-allow-origin"] == "https://game.example"


async def test_roles_decide_the_routes(open_rig: Any) -> None:
    rig = open_rig
    service = rig.service()
    r = await rig.http.post("/api/v1/actions", json={"actionType": "trial"}, headers=service.headers)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"  # tickets are for players
    admin = rig.system.token(role="admin")
    r = await rig.http.post(
        "/api/v1/events",
        json={"events": [event(str(uuid.uuid4()))]},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert r.status_code == 202 and r.json()["accepted"] == 1
    for claims in (
        rig.claims(str(uuid.uuid4()), role="root"),
        rig.claims("not-a-uuid"),
        rig.claims(str(uuid.uuid4()), exp=int(time.time()) + 10 * 86400),  # past the maximum lifetime
    ):
        r = await rig.http.post(
            "/api/v1/events",
            json={"events": [event(str(uuid.uuid4()))]},
            headers={"Authorization": f"Bearer {rig.sign(rig.header(), claims)}"},
        )
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", claims


async def test_metadata_reaches_the_log_and_bad_metadata_is_refused_naming_it(open_rig: Any) -> None:
    rig, svc = open_rig, open_rig.service()
    user = str(uuid.uuid4())
    meta = {"map": "Dust", "lap": 3, "ghost": None, "splits": [31.2, 29.8], "car": {"id": "r8"}}
    good = event(user, metadata=meta)
    r = await rig.http.post("/api/v1/events", json={"events": [good]}, headers=svc.headers)
    assert r.status_code == 202, r.text
    for bad, why in (
        ({"map": "a" * 1100}, "1024 bytes"),
        ({"map": "nul\u0000"}, "metadata"),
        ([1, 2], "metadata"),
        ("text", "metadata"),
    ):
        refused = await rig.http.post(
            "/api/v1/events", json={"events": [event(user, metadata=bad)]}, headers=svc.headers
        )
        assert refused.status_code == 422, (bad, refused.text)
        body = refused.json()
        assert body["code"] == "invalid" and "metadata" in body["error"] and why in body["error"], body
    (logged_event,) = await logged(rig, {good["actionId"]})
    assert logged_event["metadata"] == meta

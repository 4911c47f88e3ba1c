"""Through running broadcaster processes: it becomes ready on a namespace whose topics nobody created
yet; a settings mistake exits 2 with the message and no traceback; a refused CORS preflight is in the
error shape with X-Request-ID; reads of the top are served from the top the hub holds, with the same
ETag and 304 rules, while deeper pages are read from Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from leaderboard.testkit.processes import free_port
from leaderboard.testkit.services import ServiceSpec, Supervisor, leaderboard_cmd
from leaderboard.testkit.testing import Namespace


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
def fresh_ns(base_env: dict[str, str]) -> Iterator[Namespace]:
    ns = Namespace.create(base_env)  # no ensure_topics: nothing has created its topics
    yield ns
    ns.drop()


def test_ready_within_seconds_on_a_namespace_without_topics(fresh_ns: Namespace, tmp_path: Path) -> None:
    supervisor = Supervisor()
    port = free_port()
    started = time.monotonic()
    supervisor.start(
        ServiceSpec(
            "fresh",
            leaderboard_cmd("broadcaster", "--port", str(port)),
            fresh_ns.env,
            f"http://127.0.0.1:{port}/readyz",
            tmp_path / "fresh.log",
        )
    )
    try:
        supervisor.wait_ready("fresh", timeout=30)  # was: not ready until aiokafka's 5-minute refresh
        assert time.monotonic() - started < 30
        checks = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()["checks"]
        assert checks["changes"] == "ok"
    finally:
        supervisor.stop_all()


def test_a_settings_mistake_exits_2_with_the_message_only(base_env: dict[str, str]) -> None:
    env = {k: v for k, v in {**os.environ, **base_env}.items() if k != "LEADERBOARD_WS_ALLOWED_ORIGINS"}
    env["LEADERBOARD_DEV_MODE"] = "false"
    done = subprocess.run(
        leaderboard_cmd("broadcaster", "--port", "1"), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "LEADERBOARD_WS_ALLOWED_ORIGINS must be set outside dev mode" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_refused_cors_preflight_is_a_403_in_the_error_shape(broadcasters: Any) -> None:
    url = broadcasters.start("cors", LEADERBOARD_CORS_ORIGINS='["https://game.example"]')
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        preflight = {"Access-Control-Request-Method": "GET"}
        ok = await client.options(
            "/api/v1/leaderboard", headers={"Origin": "https://game.example", **preflight}
        )
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://game.example"
        refused = await client.options(
            "/api/v1/leaderboard", headers={"Origin": "https://evil.example", **preflight}
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["status"] == "error" and refused.json()["code"] == "forbidden"
        assert refused.headers["x-request-id"]
        # An allowed cross-origin read still carries CORS headers (the hot path leaves it to CORS).
        read = await client.get("/api/v1/leaderboard", headers={"Origin": "https://game.example"})
        assert (
            read.status_code == 200 and read.headers["access-control-allow-origin"] == "https://game.example"
        )
        assert "ETag" in read.headers["access-control-expose-headers"]


async def test_top_reads_come_from_the_hub_with_the_versions_etag(broadcasters: Any, changes: Any) -> None:
    url = broadcasters.start("hot")
    producer = changes()
    version = await producer.publish(3)
    top = producer.tops[version]
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def current() -> bool:
            r = await client.get("/api/v1/leaderboard")
            return bool(r.json()["version"] == version)

        # Nothing is in Redis (no scorer here): only the hub's state can answer this version.
        await eventually(current, 30)
        r = await client.get("/api/v1/leaderboard", params={"limit": 5, "page": 2})
        etag = f'W/"{producer.epoch}.{version}"'
        assert r.status_code == 200 and r.headers["etag"] == etag and r.headers["x-request-id"]
        assert r.json() == {
            "leaderboard": top[5:10],
            "page": 2,
            "limit": 5,
            "sort": "DESC",
            "version": version,
            "epoch": producer.epoch,
            "total": 0,
        }
        same = await client.get("/api/v1/leaderboard", headers={"If-None-Match": etag})
        assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
        scores = await client.get("/scores")
        seed_004 = [{k: e[k] for k in ("rank", "userId", "username", "score")} for e in top]  # its 4 fields
        assert scores.json() == seed_004 and scores.headers["etag"] == etag
        # A new version moves the ETag: a client holding the old one gets the new body.
        newer = await producer.publish()

        async def moved() -> bool:
            r = await client.get("/api/v1/leaderboard", headers={"If-None-Match": etag})
            return r.status_code == 200 and r.json()["version"] == newer

        await eventually(moved, 30)
        # Below the top N, and anything not plainly valid, is the route's: Redis holds no board here.
        deep = await client.get("/api/v1/leaderboard", params={"page": 2})
        assert deep.status_code == 200 and deep.json()["version"] == 0 and deep.json()["leaderboard"] == []
        bad = await client.get("/api/v1/leaderboard", params={"page": "²"})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid"
        unknown = await client.get("/api/v1/leaderboard", params={"board": f"b{uuid.uuid4().hex[:8]}"})
        assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
        spec = (await client.get("/openapi.json")).json()
        assert "/api/v1/leaderboard" in spec["paths"] and "/scores" in spec["paths"]

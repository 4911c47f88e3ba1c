"""Two broadcaster instances behind one (imaginary) load balancer: each follows the whole change topic,
so clients on either see every change the scorer publishes. Through the real path: ingest -> Kafka ->
scorer -> changes topic -> both broadcasters -> WebSocket clients. Also checks the live metrics."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from leaderboard.testkit.processes import free_port
from leaderboard.testkit.services import ServiceSpec, leaderboard_cmd
from leaderboard.testkit.testing import Namespace, System


@pytest.fixture(scope="module")
def pair(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, str]]:
    """A whole system plus a second broadcaster, started the way `leaderboard broadcaster` runs."""
    ns = Namespace.create(base_env)
    # No reconciliation with Redis during the test: every change must come through the topic.
    sys_ = System(
        ns, tmp_path_factory.mktemp("pair-logs"), extra_env={"LEADERBOARD_RECONCILE_INTERVAL_S": "3600"}
    )
    try:
        sys_.start()
        port = free_port()
        spec = ServiceSpec(
            "broadcaster-2",
            leaderboard_cmd("broadcaster", "--port", str(port)),
            sys_.env,
            f"http://127.0.0.1:{port}/readyz",
            sys_.log_dir / "broadcaster-2.log",
        )
        sys_.specs[spec.name] = spec
        sys_.supervisor.start(spec)
        sys_.supervisor.wait_ready(spec.name)
        yield sys_, f"http://127.0.0.1:{port}"
    finally:
        sys_.stop()
        ns.drop()


def metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def read_metrics(url: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as client:
        return metrics((await client.get(f"{url}/metrics")).text)


async def test_both_instances_deliver_every_change(pair: tuple[System, str]) -> None:
    system, second = pair
    urls = [system.broadcaster_url, second]
    before = [await read_metrics(u) for u in urls]
    clients: list[ClientConnection] = []
    for u in urls:
        for _ in range(3):
            clients.append(await websockets.connect(u.replace("http://", "ws://") + "/ws/leaderboard"))
    frames: list[list[dict[str, Any]]] = [[] for _ in clients]

    async def collect(i: int, ws: ClientConnection) -> None:
        async for raw in ws:
            frames[i].append(json.loads(raw))

    readers = [asyncio.create_task(collect(i, ws)) for i, ws in enumerate(clients)]
    during = [await read_metrics(u) for u in urls]
    for b, d in zip(before, during, strict=True):
        assert d['broadcaster_clients{transport="ws"}'] == b.get('broadcaster_clients{transport="ws"}', 0) + 3

    service = system.token(role="service", sub=str(uuid.uuid4()))
    users = [str(uuid.uuid4()) for _ in range(5)]
    try:
        async with httpx.AsyncClient(
            base_url=system.ingest_url, timeout=30, headers={"Authorization": f"Bearer {service}"}
        ) as ingest:
            for i, user in enumerate(users):  # each one a new leader: each one a change of the top
                event = {
                    "actionId": str(uuid.uuid4()),
                    "userId": user,
                    "username": f"Leader {i}",
                    "actionType": "quest",
                    "occurredAt": datetime.now(UTC).isoformat(),
                    "points": 100 + 50 * i,
                }
                r = await ingest.post("/api/v1/events", json={"events": [event]})
                assert r.status_code == 202, r.text
                for _ in range(600):  # the change reaches every client on both instances
                    if all(f and f[-1]["top"] and f[-1]["top"][0]["userId"] == user for f in frames):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"change {i} did not reach every client: {[len(f) for f in frames]}")
    finally:
        for ws in clients:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)

    for f in frames:
        versions = [x["version"] for x in f]
        assert versions == sorted(set(versions))
        leaders = [x["top"][0]["userId"] for x in f if x["top"]]
        assert all(u in leaders for u in users)  # every change, on every client of both instances
    assert {f[-1]["version"] for f in frames} == {frames[0][-1]["version"]}

    after = [await read_metrics(u) for u in urls]
    for b, a in zip(before, after, strict=True):
        sent = a["broadcaster_messages_sent_total"] - b.get("broadcaster_messages_sent_total", 0)
        assert sent >= 3 * len(users)
        fanned = a["broadcaster_fanout_seconds_count"] - b.get("broadcaster_fanout_seconds_count", 0)
        # Every live change is timed; the snapshots the clients joined with are not fan-out.
        assert 3 * len(users) <= fanned <= sent
        assert "broadcaster_coalesced_total" in a and "broadcaster_dropped_total" in a

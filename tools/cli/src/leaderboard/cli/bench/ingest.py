"""Ingest: requests/s and p50/p99 for the player path (ticket start + completion) and the service
batch path (POST /api/v1/events), beside a plain FastAPI endpoint that only verifies the JWT,
served by uvicorn in its own process and loaded by the same generator with the same bodies.

The scenarios run in interleaved rounds (player, plain, batch, plain-batch, then again), so slow
drift on a shared machine spreads over all of them instead of favouring one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from typing import Any

import httpx

from leaderboard.cli.bench.common import BENCH_TYPE, Context, start_extra
from leaderboard.cli.bench.loadgen import Hit, LoadResult, Step, run_load, timed_post
from leaderboard.cli.testing import System
from leaderboard.common.events import iso_ms, now_ms

log = logging.getLogger(__name__)
OK = {"start": 201, "complete": 202, "events": 202, "plain": 200, "plain_batch": 200}


def _batch_body(users: list[str], size: int) -> bytes:
    occurred = iso_ms(now_ms())
    events = [
        {
            "actionId": str(uuid.uuid4()),
            "userId": random.choice(users),
            "actionType": BENCH_TYPE,
            "occurredAt": occurred,
            "points": random.randint(1, 100),
        }
        for _ in range(size)
    ]
    return json.dumps({"events": events}, separators=(",", ":")).encode()


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    ns = ctx.namespace()
    system = System(ns, ctx.log_dir("ingest"))
    try:
        system.start(only=["ingest"])
        plain_port = start_extra(
            system.supervisor,
            "plain",
            "leaderboard.cli.bench.plain_app",
            [],
            system.env,
            ctx.log_dir("ingest"),
        )
        players = [system.token(str(uuid.uuid4()), "player", name=f"bench-{i}") for i in range(sizes.players)]
        service = system.token(str(uuid.uuid4()), "service", name="bench-backend")
        users = [str(uuid.uuid4()) for _ in range(5_000)]
        return asyncio.run(
            _measure(ctx, system.ingest_url, f"http://127.0.0.1:{plain_port}", players, service, users)
        )
    finally:
        system.stop()
        ns.drop()


async def _measure(
    ctx: Context, ingest_url: str, plain_url: str, players: list[str], service: str, users: list[str]
) -> dict[str, Any]:
    sizes = ctx.sizes
    json_headers = {"Content-Type": "application/json"}
    start_body = json.dumps({"actionType": BENCH_TYPE}).encode()

    async def player_step(client: httpx.AsyncClient, worker: int) -> list[Hit]:
        headers = {**json_headers, "Authorization": f"Bearer {players[worker % len(players)]}"}
        started, response = await timed_post(
            client, "start", "/api/v1/actions", content=start_body, headers=headers
        )
        if response.status_code != 201:
            return [started]
        body = json.dumps({"actionId": response.json()["actionId"], "timestamp": int(time.time())})
        completed, _ = await timed_post(
            client, "complete", "/api/v1/score/update", content=body.encode(), headers=headers
        )
        return [started, completed]

    service_headers = {**json_headers, "Authorization": f"Bearer {service}"}

    async def batch_step(client: httpx.AsyncClient, worker: int) -> list[Hit]:
        body = _batch_body(users, sizes.batch_events)
        hit, _ = await timed_post(
            client,
            "events",
            "/api/v1/events",
            content=body,
            headers=service_headers,
            units=sizes.batch_events,
        )
        return [hit]

    async def plain_step(client: httpx.AsyncClient, worker: int) -> list[Hit]:
        headers = {**json_headers, "Authorization": f"Bearer {players[worker % len(players)]}"}
        hit, _ = await timed_post(client, "plain", "/verify", content=start_body, headers=headers)
        return [hit]

    async def plain_batch_step(client: httpx.AsyncClient, worker: int) -> list[Hit]:
        body = _batch_body(users, sizes.batch_events)
        hit, _ = await timed_post(
            client, "plain_batch", "/verify", content=body, headers=service_headers, units=sizes.batch_events
        )
        return [hit]

    scenarios: list[tuple[str, str, Step]] = [
        ("player", ingest_url, player_step),
        ("plain", plain_url, plain_step),
        ("batch", ingest_url, batch_step),
        ("plain_batch", plain_url, plain_batch_step),
    ]
    results = {name: LoadResult() for name, _, _ in scenarios}
    for round_ in range(sizes.rounds):
        for name, url, step in scenarios:
            log.info("ingest round %d: %s", round_ + 1, name)
            results[name].merge(
                await run_load(
                    url,
                    step,
                    concurrency=sizes.concurrency,
                    duration_s=sizes.duration_s / sizes.rounds,
                    warmup_s=sizes.warmup_s,
                )
            )
    reports = {name: r.report(OK) for name, r in results.items()}
    return {
        "load_generator": "python httpx, closed loop (wrk not used)",
        "concurrency": sizes.concurrency,
        "seconds_per_scenario": sizes.duration_s,
        "rounds": sizes.rounds,
        "batch_events_per_request": sizes.batch_events,
        "player_tokens": len(players),
        "player_path": reports["player"],
        "batch_path": reports["batch"],
        "baseline_jwt_only": reports["plain"],
        "baseline_jwt_only_batch_body": reports["plain_batch"],
    }

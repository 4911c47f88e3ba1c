"""End-to-end latency: a player completes an action (ticket start, then completion) and we time
until a WebSocket client, connected all along, receives a frame whose top holds the new score.

Naive baseline, measured on the same completions: a client polling GET /api/v1/leaderboard every
100 ms (free-running, so its phase is random against the completions) until the new score shows.
Two references per sample: the completion request being sent (``post``) and its 202 arriving
(``accepted``); the second can be slightly negative when the frame beats the HTTP answer.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

import httpx
import websockets

from leaderboard.cli.bench.common import BENCH_POINTS, BENCH_TYPE, Context
from leaderboard.cli.bench.stats import summarize
from leaderboard.cli.testing import System, running_system


def run(ctx: Context) -> dict[str, Any]:
    with running_system(ctx.namespace(), ctx.log_dir("e2e")) as system:
        user = str(uuid.uuid4())
        token = system.token(user, "player", name="bench-e2e")
        return asyncio.run(_measure(ctx, system, user, token))


def _score_of(top: list[dict[str, Any]], user: str) -> int | None:
    for entry in top:
        if entry.get("userId") == user:
            return int(entry["score"])
    return None


async def _measure(ctx: Context, system: System, user: str, token: str) -> dict[str, Any]:
    sizes = ctx.sizes
    expected = 0
    seen_ws: dict[int, float] = {}
    seen_poll: dict[int, float] = {}
    headers = {"Authorization": f"Bearer {token}"}

    async def on_ws(ws: Any) -> None:
        async for raw in ws:
            now = time.perf_counter()
            score = _score_of(json.loads(raw).get("top", []), user)
            if score is not None:
                for s in range(BENCH_POINTS, score + 1, BENCH_POINTS):
                    seen_ws.setdefault(s, now)

    async def poll(reads: httpx.AsyncClient) -> None:
        while True:
            tick = time.perf_counter()
            try:
                r = await reads.get("/api/v1/leaderboard", params={"limit": 10})
                now = time.perf_counter()
                if r.status_code == 200:
                    score = _score_of(r.json()["leaderboard"], user)
                    if score is not None:
                        for s in range(BENCH_POINTS, score + 1, BENCH_POINTS):
                            seen_poll.setdefault(s, now)
            except httpx.HTTPError:
                pass
            await asyncio.sleep(max(0.0, sizes.poll_interval_s - (time.perf_counter() - tick)))

    post_ws: list[float] = []
    acc_ws: list[float] = []
    post_poll: list[float] = []
    acc_poll: list[float] = []
    misses = 0
    async with (
        websockets.connect(system.ws_url, open_timeout=30, compression=None) as ws,
        httpx.AsyncClient(base_url=system.ingest_url, timeout=30) as ingest,
        httpx.AsyncClient(base_url=system.broadcaster_url, timeout=30) as reads,
    ):
        tasks = [asyncio.create_task(on_ws(ws)), asyncio.create_task(poll(reads))]
        try:
            warmup = 3
            for i in range(sizes.samples + warmup):
                started = await ingest.post(
                    "/api/v1/actions", json={"actionType": BENCH_TYPE}, headers=headers
                )
                started.raise_for_status()
                body = {"actionId": started.json()["actionId"], "timestamp": int(time.time())}
                t_post = time.perf_counter()
                done = await ingest.post("/api/v1/score/update", json=body, headers=headers)
                t_acc = time.perf_counter()
                done.raise_for_status()
                expected += BENCH_POINTS
                deadline = t_post + 15
                while (
                    expected not in seen_ws or expected not in seen_poll
                ) and time.perf_counter() < deadline:
                    await asyncio.sleep(0.002)
                if expected not in seen_ws or expected not in seen_poll:
                    misses += 1
                    continue
                if i >= warmup:
                    post_ws.append(seen_ws[expected] - t_post)
                    acc_ws.append(seen_ws[expected] - t_acc)
                    post_poll.append(seen_poll[expected] - t_post)
                    acc_poll.append(seen_poll[expected] - t_acc)
                # Let the poller's phase drift against the next completion.
                await asyncio.sleep(random.uniform(0.02, 0.12))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "samples": len(post_ws),
        "misses": misses,
        "poll_interval_ms": sizes.poll_interval_s * 1000,
        "websocket": {
            "post_to_frame_ms": summarize(post_ws, 1000),
            "accepted_to_frame_ms": summarize(acc_ws, 1000),
        },
        "baseline_polling": {
            "post_to_seen_ms": summarize(post_poll, 1000),
            "accepted_to_seen_ms": summarize(acc_poll, 1000),
        },
    }

"""End to end: from a write's 2xx to the WebSocket frame that shows it, under an open-loop load of
100, 500 and 2,000 events/s, beside the naive design's polling WebSocket (Redis every 100 ms).

Load: k6 at a constant arrival rate, one event per request (project: ``POST /api/v1/events`` with
a service token, 1 point to a user from a pool; naive: ``POST /score`` likewise). Markers: meanwhile
a Python client sends, one at a time, an event worth ``MARKER_POINTS`` for a user of its own (which
keeps it first on the board), stamps the 2xx, and a WebSocket client connected all along stamps the
first frame whose top holds the marker user's new score; the next marker follows after a random
pause of up to ``marker_interval_s`` (the poll interval), so markers fall at random phases of the
poller and batches. The markers ride on top of the load (about 10-20/s, 130-300 per run); the figure
per run is p50/p99 of its markers, a marker whose frame came before its 2xx counting 0
(``frame_before_2xx``; ``send_to_frame_ms`` times from the request being sent instead).
``load.achieved_per_s`` says whether the rate was held. Each run has a system of its own (:func:`run`).
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

from leaderboard.cli.bench import k6
from leaderboard.cli.bench.common import BENCH_TYPE, Context, quiet_gc, start_extra
from leaderboard.cli.bench.figures import figure
from leaderboard.cli.bench.stats import summarize
from leaderboard.common.events import iso_ms, now_ms
from leaderboard.common.kafka import ensure_topics
from leaderboard.testkit.testing import System, running_system

MARKER_POINTS = 1000  # the bench type's max_points
POOL = 1_000
NAIVE = "naive design, WebSocket polling Redis every 100 ms"


def run(ctx: Context) -> dict[str, Any]:
    """Each run in a system of its own (fresh database, Redis prefix and topics, fresh services):
    the runs are repetitions of one experiment. On one system they were not: the embedded broker's
    CPU per fetch grows with the topic's length (at 500 events/s it went from 0.3 to 0.6 of a core
    over three runs), so every later run measured an older log, not the design."""
    sizes = ctx.sizes
    results: dict[int, dict[str, list[dict[str, Any]]]] = {
        r: {"project": [], "naive": []} for r in sizes.e2e_rates
    }
    samples: dict[str, dict[str, list[float]]] = {}
    for round_ in range(sizes.runs):
        ns = ctx.namespace()
        log_dir = ctx.log_dir(f"e2e/run-{round_ + 1}")
        try:
            # The topics first: the broadcaster is ready only once its change feed follows the topic.
            asyncio.run(ensure_topics(ns.settings()))
            with running_system(ns, log_dir) as system:
                port = start_extra(
                    system.supervisor,
                    "naive",
                    "leaderboard.cli.bench.naive_app",
                    ["--poll-interval", str(sizes.poll_interval_s)],
                    system.env,
                    log_dir,
                )
                measured = _measure(ctx, system, port, round_)
        finally:
            ns.drop()
        for rate, name, out in measured:
            results[rate][name].append(out)
            kept = out.pop("samples_ms")
            if round_ == 0:  # the distributions drawn in the plot: the first run's
                samples.setdefault(str(rate), {})["project" if name == "project" else "baseline"] = kept
    return _summarise(ctx, results, samples)


class Contender:
    def __init__(self, name: str, write_url: str, ws_url: str, token: str, pids: dict[str, int]) -> None:
        self.name, self.write_url, self.ws_url, self.token, self.pids = name, write_url, ws_url, token, pids

    def marker(self, user: str) -> tuple[str, dict[str, Any]]:
        if self.name == "naive":
            return "/score", {"userId": user, "points": MARKER_POINTS}
        event = {
            "actionId": str(uuid.uuid4()),
            "userId": user,
            "actionType": BENCH_TYPE,
            "occurredAt": iso_ms(now_ms()),
            "points": MARKER_POINTS,
        }
        return "/api/v1/events", {"events": [event]}

    def load_env(self, rate: int, duration_s: float, users_file: str) -> dict[str, str]:
        common = {"RATE": str(rate), "DURATION": f"{duration_s}s", "USERS": users_file, "POINTS": "1"}
        if self.name == "naive":
            return {**common, "BODY": "naive", "TARGET": "/score", "EXPECT": "200"}
        return {**common, "BODY": "events", "TARGET": "/api/v1/events", "BATCH": "1", "EXPECT": "202"}


def _measure(
    ctx: Context, system: System, naive_port: int, round_: int
) -> list[tuple[int, str, dict[str, Any]]]:
    """One run on ``system``: every rate, the project and then the naive design, as (rate, name, result)."""
    sizes = ctx.sizes
    work = ctx.work / "k6-e2e"
    work.mkdir(parents=True, exist_ok=True)
    users_file = work / "users.json"
    users_file.write_text(json.dumps([str(uuid.uuid4()) for _ in range(POOL)]))
    service = system.token(str(uuid.uuid4()), "service", name="bench-e2e")
    sup = system.supervisor
    contenders = [
        Contender(
            "project",
            system.ingest_url,
            system.ws_url,
            service,
            {n: sup.running[n].proc.pid for n in ("ingest", "scorer", "broadcaster")},
        ),
        Contender(
            "naive",
            f"http://127.0.0.1:{naive_port}",
            f"ws://127.0.0.1:{naive_port}/ws",
            service,
            {"naive": sup.running["naive"].proc.pid},
        ),
    ]
    measured = []
    for rate in sizes.e2e_rates:
        for c in contenders:
            with quiet_gc():  # the markers' stamps are not paused by this process's collector
                out = asyncio.run(_one(ctx, c, rate, str(users_file), f"{c.name}-{rate}-{round_}", work))
            measured.append((rate, c.name, out))
    return measured


def _summarise(
    ctx: Context,
    results: dict[int, dict[str, list[dict[str, Any]]]],
    samples: dict[str, dict[str, list[float]]],
) -> dict[str, Any]:
    sizes = ctx.sizes
    figures: list[dict[str, Any]] = []
    for rate in sizes.e2e_rates:
        mine, theirs = results[rate]["project"], results[rate]["naive"]
        for q in ("p50", "p99"):
            figures.append(
                figure(
                    f"e2e_{q}_ms_at_{rate}",
                    f"end to end {q}, 2xx to frame, at {rate:,} events/s",
                    "ms",
                    "lower",
                    [r["latency_ms"][q] for r in mine],
                    [r["latency_ms"][q] for r in theirs],
                    NAIVE,
                )
            )
    flagged = sorted(
        {
            f"{c}@{rate}"
            for rate, by in results.items()
            for c, rs in by.items()
            for r in rs
            if r["load"]["headroom"]["generator_bottleneck"]
        }
    )
    worst = max(
        (r["load"]["headroom"] for by in results.values() for rs in by.values() for r in rs),
        key=lambda h: h["generator_cores"],
        default=None,
    )
    return {
        "rates": sizes.e2e_rates,
        "duration_s": sizes.e2e_duration_s,
        "runs": sizes.runs,
        "marker_points": MARKER_POINTS,
        "figures": figures,
        "by_rate": {str(r): v for r, v in results.items()},
        "samples_ms": samples,
        "headroom": {"bottleneck_in": flagged, "max_generator": worst},
    }


def _score_of(top: list[dict[str, Any]], user: str) -> int | None:
    for entry in top:
        if entry.get("userId") == user:
            return int(entry["score"])
    return None


async def _one(
    ctx: Context, c: Contender, rate: int, users_file: str, name: str, work: Any
) -> dict[str, Any]:
    sizes = ctx.sizes
    user = str(uuid.uuid4())
    seen: dict[int, float] = {}
    changed = asyncio.Event()

    async def watch(ws: Any) -> None:
        async for raw in ws:
            now = time.perf_counter()
            score = _score_of(json.loads(raw).get("top", []), user)
            if score is not None and score not in seen:
                seen[score] = now
                changed.set()

    latencies: list[float] = []
    from_send: list[float] = []
    misses = 0
    headers = {"Authorization": f"Bearer {c.token}"}
    async with (
        websockets.connect(c.ws_url, open_timeout=30, compression=None) as ws,
        httpx.AsyncClient(base_url=c.write_url, timeout=30, headers=headers) as client,
    ):
        watcher = asyncio.create_task(watch(ws))
        load = asyncio.create_task(
            asyncio.to_thread(
                k6.run,
                mode="rate",
                base=c.write_url,
                work=work,
                name=name,
                tokens=[c.token],
                system=c.pids,
                env={"ACTION_TYPE": BENCH_TYPE, **c.load_env(rate, sizes.e2e_duration_s, users_file)},
                timeout_s=sizes.e2e_duration_s + 300,
            )
        )
        expected = 0
        try:
            await asyncio.sleep(min(0.5, sizes.e2e_duration_s / 4))  # let the load ramp up first
            while not load.done():
                path, body = c.marker(user)
                t_send = time.perf_counter()
                response = await client.post(path, json=body)
                t_ok = time.perf_counter()
                if response.status_code // 100 != 2:
                    misses += 1
                    continue
                expected += MARKER_POINTS
                deadline = t_ok + 10
                while not any(s >= expected for s in seen) and time.perf_counter() < deadline:
                    changed.clear()
                    try:
                        await asyncio.wait_for(changed.wait(), max(0.0, deadline - time.perf_counter()))
                    except TimeoutError:
                        break
                arrivals = [t for s, t in seen.items() if s >= expected]
                if arrivals:
                    # A frame can beat the 2xx (an overloaded server answers late): then the client
                    # sees the change as soon as it has its answer, a delay of 0.
                    latencies.append(max(0.0, min(arrivals) - t_ok))
                    from_send.append(min(arrivals) - t_send)
                else:
                    misses += 1
                await asyncio.sleep(random.uniform(0, sizes.marker_interval_s))
            result = await load
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            if not load.done():
                await asyncio.gather(load, return_exceptions=True)
    return {
        "rate": rate,
        "latency_ms": summarize(latencies, 1000),
        "send_to_frame_ms": summarize(from_send, 1000),
        "frame_before_2xx": sum(1 for x in latencies if x == 0.0),
        "misses": misses,
        "samples_ms": [x * 1000 for x in latencies],
        "load": {**result.as_dict(), "achieved_per_s": result.rate},
    }

"""HTTP: completions, service batches and reads, each beside the naive design (``naive_app``), all
loaded by k6 in the same run, in interleaved rounds (project, naive, next figure...) so that drift on
a shared machine spreads over both.

Per round:
- tickets: k6 starts ``tickets`` actions (``POST /api/v1/actions``) with the player tokens; each
  ticket is then completed once, by the next k6 run (``POST /api/v1/score/update``, shared
  iterations over the list: distinct, valid, single-use). Naive: ``POST /score`` for the same
  players, closed loop for ``duration_s``.
- batches: ``POST /api/v1/events`` with ``batch_events`` events per request (service token, users
  from a pool), closed loop; naive: ``POST /score`` one event per request over the same pool.
- reads (after the scorer caught up, so its work does not overlap): ``GET /api/v1/leaderboard?limit=10``
  and ``?page=50&limit=10`` on the broadcaster; naive: ``GET /leaderboard`` (``ZREVRANGE``) likewise.

The whole system runs (ingest, scorer, broadcaster) as it would in use; the CPU compared with k6's is
that of the three services for the project and of the naive app for the baseline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

import asyncpg
from redis.asyncio import Redis

from leaderboard.cli.bench import k6
from leaderboard.cli.bench.common import BENCH_POINTS, BENCH_TYPE, Context, start_extra
from leaderboard.cli.bench.figures import figure
from leaderboard.common.kafka import ensure_topics
from leaderboard.common.ranking import BoardKeys
from leaderboard.testkit.testing import System

log = logging.getLogger(__name__)
NAIVE = "naive design (one FastAPI process: JWT, ZINCRBY, Postgres upsert)"


def run(ctx: Context) -> dict[str, Any]:
    ns = ctx.namespace()
    system = System(ns, ctx.log_dir("http"))
    try:
        # The topics first: the broadcaster is ready only once its change feed follows the topic.
        asyncio.run(ensure_topics(ns.settings()))
        system.start()
        naive_port = start_extra(
            system.supervisor, "naive", "leaderboard.cli.bench.naive_app", [], system.env, ctx.log_dir("http")
        )
        return _measure(ctx, system, f"http://127.0.0.1:{naive_port}")
    finally:
        system.stop()
        ns.drop()


def _pids(system: System, names: list[str]) -> dict[str, int]:
    return {n: system.supervisor.running[n].proc.pid for n in names}


def _measure(ctx: Context, system: System, naive_url: str) -> dict[str, Any]:
    sizes = ctx.sizes
    work = ctx.work / "k6-http"
    work.mkdir(parents=True, exist_ok=True)
    subs = [str(uuid.uuid4()) for _ in range(sizes.players)]
    players = [system.token(s, "player", name=f"bench-{i}") for i, s in enumerate(subs)]
    service = [system.token(str(uuid.uuid4()), "service", name="bench-backend")]
    users = [str(uuid.uuid4()) for _ in range(sizes.users)]
    (work / "users.json").write_text(json.dumps(users))
    (work / "subs.json").write_text(json.dumps(subs))
    project_pids = _pids(system, ["ingest", "scorer", "broadcaster"])
    naive_pids = _pids(system, ["naive"])
    duration = f"{sizes.duration_s}s"
    max_duration = f"{max(60, sizes.tickets // 50)}s"
    closed = {"VUS": str(sizes.vus), "DURATION": duration}
    runs: dict[str, list[dict[str, Any]]] = {}
    accepted = 0

    def go(
        name: str, mode: str, base: str, tokens: list[str], system_pids: dict[str, int], **env: str
    ) -> k6.K6Run:
        r = k6.run(
            mode=mode,
            base=base,
            work=work,
            name=f"{name}-{len(runs.get(name, []))}",
            tokens=tokens,
            system=system_pids,
            env={"ACTION_TYPE": BENCH_TYPE, **env},
            timeout_s=sizes.duration_s + 600,
        )
        runs.setdefault(name, []).append(r.as_dict())
        log.info("%s: %.0f ok/s, %s", name, r.rate, r.headroom["verdict"])
        return r

    for round_ in range(sizes.runs):
        log.info("http round %d", round_ + 1)
        made = go(
            "tickets",
            "tickets",
            system.ingest_url,
            players,
            project_pids,
            EXPECT="201",
            VUS=str(sizes.vus),
            ITERATIONS=str(sizes.tickets),
            MAX_DURATION=max_duration,
        )
        tickets = k6.ticket_lines(made.log)
        if not tickets:
            raise RuntimeError("no ticket could be started")
        ticket_file = work / f"tickets-{round_}.json"
        ticket_file.write_text(json.dumps(tickets))
        done = go(
            "complete",
            "complete",
            system.ingest_url,
            players,
            project_pids,
            EXPECT="202",
            VUS=str(sizes.vus),
            TICKETS=str(ticket_file),
            MAX_DURATION=max_duration,
        )
        accepted += done.ok
        go(
            "naive_complete",
            "post",
            naive_url,
            players,
            naive_pids,
            BODY="naive",
            TARGET="/score",
            USERS=str(work / "subs.json"),
            POINTS=str(BENCH_POINTS),
            **closed,
        )
        batch = go(
            "batch",
            "post",
            system.ingest_url,
            service,
            project_pids,
            EXPECT="202",
            BODY="events",
            TARGET="/api/v1/events",
            BATCH=str(sizes.batch_events),
            USERS=str(work / "users.json"),
            **closed,
        )
        sent = batch.ok * sizes.batch_events
        if batch.accepted != sent or batch.duplicates:
            raise RuntimeError(
                f"service batches: ingest accepted {batch.accepted} of the {sent} events sent"
                f" ({batch.duplicates} duplicates): every event must carry a new actionId"
            )
        accepted += sent
        go(
            "naive_per_request",
            "post",
            naive_url,
            service,
            naive_pids,
            BODY="naive",
            TARGET="/score",
            USERS=str(work / "users.json"),
            **closed,
        )

    caught_up = asyncio.run(_settle(system, accepted, timeout_s=300))
    asyncio.run(_fill_naive(system, users))
    for _ in range(sizes.runs):
        for name, base, path, pids in (
            ("top10", system.broadcaster_url, "/api/v1/leaderboard?limit=10", project_pids),
            ("naive_top10", naive_url, "/leaderboard?limit=10", naive_pids),
            ("page50", system.broadcaster_url, "/api/v1/leaderboard?page=50&limit=10", project_pids),
            ("naive_page50", naive_url, "/leaderboard?page=50&limit=10", naive_pids),
        ):
            go(name, "get", base, players, pids, TARGET=path, **closed)

    def rates(name: str, units: int = 1) -> list[float | None]:
        return [r["ok_per_s"] * units for r in runs[name]]

    def lat(name: str, q: str) -> list[float | None]:
        return [r["ok_ms"].get(q) for r in runs[name]]

    figures = [
        figure(
            "completions_per_s",
            "completions/s (distinct valid tickets)",
            "req/s",
            "higher",
            rates("complete"),
            rates("naive_complete"),
            NAIVE,
        ),
        figure(
            "completion_p50_ms",
            "completion p50",
            "ms",
            "lower",
            lat("complete", "p50"),
            lat("naive_complete", "p50"),
            NAIVE,
        ),
        figure(
            "completion_p99_ms",
            "completion p99",
            "ms",
            "lower",
            lat("complete", "p99"),
            lat("naive_complete", "p99"),
            NAIVE,
        ),
        figure(
            "batch_events_per_s",
            f"service batch events/s ({sizes.batch_events} per request)",
            "events/s",
            "higher",
            rates("batch", sizes.batch_events),
            rates("naive_per_request"),
            "naive design, one event per request",
        ),
        figure(
            "top10_reads_per_s",
            "top-10 reads/s",
            "req/s",
            "higher",
            rates("top10"),
            rates("naive_top10"),
            "naive ZREVRANGE 0 9",
        ),
        figure(
            "top10_p99_ms",
            "top-10 read p99",
            "ms",
            "lower",
            lat("top10", "p99"),
            lat("naive_top10", "p99"),
            "naive ZREVRANGE 0 9",
        ),
        figure(
            "page50_reads_per_s",
            "page 50 reads/s",
            "req/s",
            "higher",
            rates("page50"),
            rates("naive_page50"),
            "naive ZREVRANGE 490 499",
        ),
    ]
    return {
        "load_generator": f"{k6.version()} ({k6.binary()})",
        "auth": "EdDSA tokens from the dev key, verified by both (the naive app with pyjwt on every request)",
        "vus": sizes.vus,
        "duration_s": sizes.duration_s,
        "tickets_per_run": sizes.tickets,
        "runs": sizes.runs,
        "scorer_caught_up": caught_up,
        "figures": figures,
        "k6_runs": runs,
        "headroom": _headroom_summary(runs),
    }


def _headroom_summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    worst = max(
        (r["headroom"] for rs in runs.values() for r in rs), key=lambda h: h["generator_cores"], default=None
    )
    flagged = sorted({name for name, rs in runs.items() for r in rs if r["headroom"]["generator_bottleneck"]})
    return {"bottleneck_in": flagged, "max_generator": worst}


async def _fill_naive(system: System, users: list[str]) -> None:
    """Every pool user on the naive board too (ZADD NX, score 1 where absent), so both boards are
    as deep as each other for page 50."""
    from leaderboard.cli.bench.naive_app import board_key

    redis = Redis.from_url(system.env["LEADERBOARD_REDIS_URL"])
    try:
        await redis.zadd(board_key(system.ns.settings()), dict.fromkeys(users, 1), nx=True)
    finally:
        await redis.aclose()


async def _settle(system: System, accepted: int, timeout_s: float) -> dict[str, Any]:
    """Wait until the scorer applied what was accepted (or ``timeout_s``), so the read runs do not
    share the CPU with a catching-up scorer; the boards then hold every pool user."""
    env = system.env
    conn = await asyncpg.connect(env["LEADERBOARD_POSTGRES_DSN"])
    redis = Redis.from_url(env["LEADERBOARD_REDIS_URL"])
    rank = BoardKeys(env["LEADERBOARD_REDIS_PREFIX"], "global").rank
    t0 = time.monotonic()
    applied = 0
    try:
        while time.monotonic() - t0 < timeout_s:
            try:
                applied = int(await conn.fetchval("SELECT count(*) FROM actions"))
            except asyncpg.UndefinedTableError:
                applied = 0
            if applied >= accepted:
                break
            await asyncio.sleep(0.2)
        on_board = int(await redis.zcard(rank))
    finally:
        await conn.close()
        await redis.aclose()
    return {
        "accepted": accepted,
        "applied": applied,
        "users_on_board": on_board,
        "waited_s": time.monotonic() - t0,
    }

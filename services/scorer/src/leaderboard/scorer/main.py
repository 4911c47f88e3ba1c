"""``leaderboard scorer`` (or ``python -m leaderboard.scorer``): run one Faust worker of the scorer
group; see ``entrypoints.worker``."""

from __future__ import annotations

import asyncio

import faust
import mode.loop

from leaderboard.common.kafka import ensure_topics
from leaderboard.common.logs import setup_logging
from leaderboard.common.settings import load_settings
from leaderboard.scorer.entrypoints.worker import build_app
from leaderboard.scorer.settings import ScorerSettings


def run(web_port: int | None = None) -> None:
    settings = load_settings(ScorerSettings, "scorer")
    if web_port is not None:
        settings.scorer_web_port = web_port
    setup_logging(settings.log_level, "scorer")
    # uvloop, as uvicorn runs ingest and the broadcaster: issue 12's profile of the scorer at 500
    # events/s had asyncio's own selector transport writes (Kafka fetches, Postgres, Redis) at a
    # fifth of its busy time. Before any loop exists: Faust's consumer thread makes its own loop too.
    mode.loop.use("uvloop")
    asyncio.run(ensure_topics(settings))
    app = build_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()

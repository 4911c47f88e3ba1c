"""``leaderboard ingest``: serve the ingest API with uvicorn."""

from __future__ import annotations

import uvicorn

from leaderboard.common.logs import setup_logging
from leaderboard.common.settings import load_settings
from leaderboard.ingest.app import create_app
from leaderboard.ingest.settings import IngestSettings


def run(port: int | None = None) -> None:
    settings = load_settings(IngestSettings, "ingest")
    if port is not None:
        settings.port = port
    setup_logging(settings.log_level, "ingest")
    uvicorn.run(create_app(settings), **settings.uvicorn_options(settings.port), timeout_graceful_shutdown=5)

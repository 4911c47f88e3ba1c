"""``leaderboard broadcaster``: serve reads and live updates with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from leaderboard.broadcaster.app import create_app
from leaderboard.broadcaster.entrypoints.ws import LiveSocketProtocol
from leaderboard.broadcaster.settings import BroadcasterSettings
from leaderboard.common.logs import setup_logging
from leaderboard.common.settings import load_settings


class _RefusalNoise(logging.Filter):
    """uvicorn's sans-I/O WebSocket protocol logs an error after every handshake the app refuses with
    an HTTP answer (403 origin, 429 per-IP cap), although the answer was sent; keep that out of the
    error log. Everything else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("ASGI callable returned without completing handshake")


def run(port: int | None = None) -> None:
    settings = load_settings(BroadcasterSettings, "broadcaster")
    if port is not None:
        settings.port = port
    setup_logging(settings.log_level, "broadcaster")
    logging.getLogger("uvicorn.error").addFilter(_RefusalNoise())
    uvicorn.run(
        create_app(settings),
        **settings.uvicorn_options(settings.port),
        # uvicorn's websockets-sansio protocol, lean per connection (issue 12's fan-out profile: it
        # drops the handshake's headers after the answer and holds no asyncio.Queue per socket).
        ws=LiveSocketProtocol,
        ws_per_message_deflate=False,
        ws_max_size=4096,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        timeout_graceful_shutdown=3,
        backlog=4096,
    )

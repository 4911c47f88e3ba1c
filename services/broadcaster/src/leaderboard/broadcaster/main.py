"""``leaderboard broadcaster``: serve reads and live updates with uvicorn."""

from __future__ import annotations

import uvicorn

from leaderboard.broadcaster.app import create_app
from leaderboard.broadcaster.settings import BroadcasterSettings
from leaderboard.common.logs import setup_logging


def run(port: int | None = None) -> None:
    settings = BroadcasterSettings()
    if port is not None:
        settings.port = port
    setup_logging(settings.log_level, "broadcaster")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        ws="websockets",
        ws_per_message_deflate=False,
        ws_max_size=4096,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        ssl_certfile=str(settings.tls_certfile) if settings.tls_certfile else None,
        ssl_keyfile=str(settings.tls_keyfile) if settings.tls_keyfile else None,
        timeout_graceful_shutdown=3,
        backlog=4096,
    )

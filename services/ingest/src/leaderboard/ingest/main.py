"""``leaderboard ingest``: serve the ingest API with uvicorn."""

from __future__ import annotations

import uvicorn

from leaderboard.common.logs import setup_logging
from leaderboard.ingest.app import create_app
from leaderboard.ingest.settings import IngestSettings


def run(port: int | None = None) -> None:
    settings = IngestSettings()
    if port is not None:
        settings.port = port
    setup_logging(settings.log_level, "ingest")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # uvicorn would otherwise rewrite the client address from X-Forwarded-For for any peer in
        # FORWARDED_ALLOW_IPS (127.0.0.1 by default), behind our back: the client IP is decided only
        # by ClientIpResolver and the `trusted_proxies` setting.
        proxy_headers=False,
        ssl_certfile=str(settings.tls_certfile) if settings.tls_certfile else None,
        ssl_keyfile=str(settings.tls_keyfile) if settings.tls_keyfile else None,
        timeout_graceful_shutdown=5,
    )

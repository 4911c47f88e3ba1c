"""Ingest: the write side. Authenticates completed actions and writes them to Kafka.

Run it with ``leaderboard ingest`` (or ``python -m leaderboard.ingest``); settings come from
``LEADERBOARD_*`` variables (see ``IngestSettings``). This module only wires: the lifespan enters
``bootstrap``, then middleware, the error map and one router per resource.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from leaderboard.common.heap import freeze_startup_heap
from leaderboard.common.web import RequestIdMiddleware, add_cors, add_ops_routes
from leaderboard.ingest.bootstrap import bootstrap, load_catalog, readiness
from leaderboard.ingest.entrypoints import errors
from leaderboard.ingest.entrypoints.hot import HotWrites
from leaderboard.ingest.entrypoints.middleware import BufferedBodyLimit
from leaderboard.ingest.entrypoints.routes import actions, admin, catalog, dev, events
from leaderboard.ingest.settings import IngestSettings


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with bootstrap(app.state.settings, app.state.catalog) as ports:
        app.state.ports = ports
        freeze_startup_heap()
        yield


def add_middleware(app: FastAPI, settings: IngestSettings) -> None:
    """Outermost first: request id (so that every refusal below carries it), then CORS (so that even a
    413 carries its headers), then the body's limit and encoding, then the hot write path (``hot``)."""
    app.add_middleware(HotWrites)
    app.add_middleware(
        BufferedBodyLimit,
        limit=settings.max_body_bytes,
        on_refused=errors.audit_scope(413, "too_large"),
        on_invalid=errors.audit_scope(422, "invalid"),
    )
    add_cors(
        app,
        list(settings.cors_origins) + (settings.dev_origins if settings.dev_mode else []),
        methods=["GET", "POST"],
        headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose=["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "X-Request-ID"],
    )
    app.add_middleware(RequestIdMiddleware)


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    app = FastAPI(
        title="Leaderboard ingest",
        version="1.0.0",
        description="Authenticated write API: action tickets, completions and game-backend events.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.catalog = settings, load_catalog(settings)
    errors.install(app)
    add_middleware(app, settings)
    for resource in (catalog, actions, events, admin):
        app.include_router(resource.router)
    app.include_router(dev.router, include_in_schema=settings.dev_mode)

    async def ready() -> dict[str, str]:
        return await readiness(getattr(app.state, "ports", None))

    add_ops_routes(app, ready)
    return app

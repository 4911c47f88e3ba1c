"""The broadcaster's HTTP app: REST reads from Redis and live push (WebSocket, SSE) of board changes.

Run it with ``leaderboard broadcaster``; settings come from ``LEADERBOARD_*`` (``BroadcasterSettings``).
Instances are stateless and independent: each follows the whole change topic, so any number can
sit behind a load balancer. This module only wires: the lifespan enters ``bootstrap`` and hooks the
drain to SIGTERM, then middleware, the error map and one router per resource; WebSocket handshakes
go to the live endpoint ahead of all of it (:class:`BroadcasterApp`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from leaderboard.broadcaster.bootstrap import Ports, bootstrap
from leaderboard.broadcaster.entrypoints import errors
from leaderboard.broadcaster.entrypoints.hot import TopReads
from leaderboard.broadcaster.entrypoints.routes import boards, history, live, page, reads, stream
from leaderboard.broadcaster.settings import BroadcasterSettings
from leaderboard.common.heap import freeze_startup_heap
from leaderboard.common.web import RequestIdMiddleware, add_cors, add_ops_routes, install_error_handlers


async def readiness(p: Ports) -> dict[str, str]:
    """``/readyz``: Redis answers, the change feed follows the topic, and the instance is not draining
    (a load balancer stops sending new clients as soon as SIGTERM arrives)."""
    checks = {"redis": "ok", "changes": "ok" if p.feed.ready.is_set() else "starting"}
    try:
        await asyncio.wait_for(p.redis.ping(), 2)
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    if p.drain.draining:
        checks["shutdown"] = "draining"
    return checks


def lifespan(settings: BroadcasterSettings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Enter ``bootstrap`` for the app's life; the drain holds SIGTERM meanwhile."""

    @contextlib.asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with bootstrap(settings) as ports:
            app.state.ports = ports
            unhook = ports.drain.hook_sigterm(ports.live_clients)
            freeze_startup_heap()
            try:
                yield
            finally:
                unhook()

    return run


class BroadcasterApp(FastAPI):
    """FastAPI with the live WebSocket in front (issue 12): every ``websocket`` scope goes straight to
    ``routes.live.endpoint``, a raw ASGI app, past the middleware and FastAPI's routing, which a
    connection would otherwise hold for its whole life (see ``routes/live.py``). HTTP (and the
    lifespan) goes through FastAPI as before; ``live.router`` stays included, so the app's routes
    still list the socket."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope["app"] = self  # where the endpoint finds the ports, as Starlette would set it
            await live.endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: BroadcasterSettings | None = None) -> FastAPI:
    settings = settings or BroadcasterSettings()
    app = BroadcasterApp(
        title="Leaderboard broadcaster",
        version="1.0.0",
        lifespan=lifespan(settings),
        description="Board reads and live updates (WebSocket /ws/leaderboard, SSE).",
        # FastAPI's own OpenTelemetry hooks look up the providers on every request; the broadcaster's
        # figures are its Prometheus metrics, so they are off (the read path's profile showed them).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    errors.install(app)
    app.add_middleware(TopReads)  # innermost of ours: CORS and the request id still apply
    # CORS before the request id: added later is outermost, so refused preflights carry X-Request-ID.
    add_cors(
        app,
        settings.cors_origins,
        methods=["GET"],
        headers=["Authorization", "If-None-Match"],
        expose=["ETag", "X-Request-ID"],
    )
    app.add_middleware(RequestIdMiddleware)
    for router in (reads.router, history.router, boards.router, stream.router, page.router, live.router):
        app.include_router(router)
    add_ops_routes(app, lambda: readiness(app.state.ports))
    return app

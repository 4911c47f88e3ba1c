"""Broadcaster: the read side. REST reads from Redis and live push (WebSocket, SSE) of board changes.

Run it with ``leaderboard broadcaster``; settings come from ``LEADERBOARD_*`` (``BroadcasterSettings``).
Instances are stateless and independent: each follows the whole change topic, so any number can
sit behind a load balancer.
"""

import asyncio
import contextlib
import json
import logging
from collections import Counter as Tally
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator
from pydantic_core import PydanticCustomError

from leaderboard.broadcaster.adapters.changes import ChangeFeed
from leaderboard.broadcaster.adapters.reads import BoardReader, Meta, Page
from leaderboard.broadcaster.hub import BoardState, Client, Hub
from leaderboard.broadcaster.settings import BroadcasterSettings
from leaderboard.common.auth import AuthError, Principal, TokenVerifier
from leaderboard.common.params import BadNumber, parse_count, parse_optional_count
from leaderboard.common.redis import redis_client
from leaderboard.common.topics import Topics
from leaderboard.common.web import (
    ApiError,
    ClientIpResolver,
    RequestIdMiddleware,
    add_ops_routes,
    error_response,
    install_error_handlers,
)

log = logging.getLogger(__name__)
bearer = HTTPBearer(auto_error=False)
BOARD_PATTERN = r"^[a-z0-9][a-z0-9_.:-]{0,63}$"
Board = Annotated[
    str, Query(pattern=BOARD_PATTERN, description="Board name; `global` is the all-time board.")
]
EPOCH_MAX = 64  # epochs are short ids (12 hex digits); anything longer is not one of ours


def counted(field: str, minimum: int = 0, maximum: int = 10**18 - 1) -> BeforeValidator:
    """An integer query parameter read by ``leaderboard.common.params.parse_count`` (ASCII digits,
    bounded), not by ``int()``: 5,000 digits or a Unicode digit is a 422 naming the field."""

    def check(raw: object) -> object:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw  # a declared default
        try:
            return parse_count(
                raw if isinstance(raw, str | bytes) else None, field, minimum=minimum, maximum=maximum
            )
        except BadNumber as exc:
            reason = str(exc).removeprefix(f"field '{field}': ")
            raise PydanticCustomError("invalid_number", reason) from None

    return BeforeValidator(check)


Epoch = Annotated[str | None, Query(max_length=EPOCH_MAX, description="The epoch of the version in `since`.")]


class Entry(BaseModel):
    rank: int
    userId: str
    username: str
    score: int


class LeaderboardPage(BaseModel):
    leaderboard: list[Entry]
    page: int
    limit: int
    sort: Literal["DESC", "ASC"]
    version: int
    epoch: str
    total: int


class UserRank(Entry):
    neighbours: list[Entry]


class ErrorModel(BaseModel):
    status: Literal["error"] = "error"
    error: str
    code: str


@dataclass
class Ports:
    settings: BroadcasterSettings
    reader: BoardReader
    hub: Hub
    feed: ChangeFeed
    verifier: TokenVerifier | None


def create_app(settings: BroadcasterSettings | None = None) -> FastAPI:
    settings = settings or BroadcasterSettings()
    topics = Topics(settings.topic_prefix)
    client_ip = ClientIpResolver(settings.trusted_proxies)
    per_ip: Tally[str] = Tally()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with redis_client(settings) as redis:
            reader = BoardReader(redis, settings.redis_prefix)
            hub = Hub(settings.history_size, settings.send_timeout_s)
            feed = ChangeFeed(
                settings, topics.changes, settings.boards, hub, reader, settings.reconcile_interval_s
            )
            try:
                verifier: TokenVerifier | None = TokenVerifier(settings)
            except RuntimeError as exc:
                if settings.read_requires_token:
                    raise
                log.warning("GET /api/v1/leaderboard/me disabled: %s", exc)
                verifier = None
            app.state.ports = Ports(settings, reader, hub, feed, verifier)
            app.state.redis = redis
            feed.start()
            try:
                yield
            finally:
                await feed.stop()

    app = FastAPI(
        title="Leaderboard broadcaster",
        version="1.0.0",
        lifespan=lifespan,
        description="Board reads and live updates (WebSocket /ws/leaderboard, SSE).",
    )
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET"],
            allow_headers=["Authorization", "If-None-Match"],
            expose_headers=["ETag"],
        )
    app.add_middleware(RequestIdMiddleware)

    def ports(request: Request) -> Ports:
        p: Ports = request.app.state.ports
        return p

    P = Annotated[Ports, Depends(ports)]

    def authenticate(p: Ports, creds: HTTPAuthorizationCredentials | None) -> Principal:
        if p.verifier is None:
            raise ApiError(503, "unavailable", "token verification is not configured", {"Retry-After": "60"})
        if creds is None:
            raise ApiError(401, "unauthorized", "missing bearer token", {"WWW-Authenticate": "Bearer"})
        try:
            return p.verifier.verify(creds.credentials)
        except AuthError as exc:
            raise ApiError(401, "unauthorized", str(exc), {"WWW-Authenticate": "Bearer"}) from exc

    async def reader_gate(
        p: P, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> None:
        if p.settings.read_requires_token:
            authenticate(p, creds)

    Gate = Annotated[None, Depends(reader_gate)]

    def unknown_board(board: str) -> ApiError:
        return ApiError(404, "not_found", f"no board named '{board}' (yet)")

    def etag_for(meta: Meta, within_top: bool) -> str:
        # Pages inside the top N change exactly when the version does; deeper pages on any change (rev).
        return (
            f'W/"{meta.epoch}.{meta.version}"'
            if within_top
            else f'W/"{meta.epoch}.{meta.version}.{meta.rev}"'
        )

    def not_modified(if_none_match: str | None, etag: str) -> bool:
        if not if_none_match:
            return False
        tags = {t.strip() for t in if_none_match.split(",")}
        return "*" in tags or etag in tags or etag.removeprefix("W/") in tags

    errors: dict[int | str, dict[str, Any]] = {c: {"model": ErrorModel} for c in (401, 404, 422)}

    @app.get(
        "/api/v1/leaderboard",
        response_model=LeaderboardPage,
        responses={304: {"description": "Not modified"}, **errors},
        tags=["reads"],
    )
    async def leaderboard(
        p: P,
        _: Gate,
        board: Board = "global",
        page: Annotated[int, counted("page", 1, 1_000_000), Query(ge=1, le=1_000_000)] = 1,
        limit: Annotated[int, counted("limit", 1, 100), Query(ge=1, le=100)] = 10,
        sort: Annotated[str, Query(pattern="^(?i)(asc|desc)$")] = "DESC",
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        """A page of the board in seed 000's shape; ranks are absolute, ties in the scorer's order."""
        descending = sort.upper() == "DESC"
        result = await p.reader.page(board, (page - 1) * limit, limit, descending)
        if result is None:
            if board not in p.settings.boards:
                raise unknown_board(board)
            result = Page(Meta("", 0, 0, []), 0, [])  # a configured board nobody has scored on yet
        within_top = descending and page * limit <= p.settings.board_top_n
        etag = etag_for(result.meta, within_top)
        headers = {"ETag": etag, "Cache-Control": "public, max-age=1"}
        if not_modified(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        body = {
            "leaderboard": result.entries,
            "page": page,
            "limit": limit,
            "sort": "DESC" if descending else "ASC",
            "version": result.meta.version,
            "epoch": result.meta.epoch,
            "total": result.total,
        }
        return JSONResponse(body, headers=headers)

    @app.get("/scores", response_model=list[Entry], tags=["reads"], responses={304: {}})
    async def scores(p: P, _: Gate, if_none_match: Annotated[str | None, Header()] = None) -> Response:
        """Seed 004's alias: the top 10 of the global board as a JSON array."""
        result = await p.reader.page("global", 0, 10, True)
        if result is None:
            return JSONResponse([])
        etag = etag_for(result.meta, p.settings.board_top_n >= 10)
        headers = {"ETag": etag, "Cache-Control": "public, max-age=1"}
        if not_modified(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        return JSONResponse(result.entries, headers=headers)

    async def user_rank(p: Ports, board: str, user_id: str, around: int) -> dict[str, Any]:
        for _ in range(3):  # the user's entry can move between the reads; try again
            found = await p.reader.around(board, user_id, around)
            if found is not None:
                _meta, me, neighbours = found
                return {**me, "neighbours": neighbours}
            if await p.reader.meta(board) is None:
                raise unknown_board(board)
            if await p.reader.redis.hget(p.reader.keys(board).members, user_id) is None:
                break
        raise ApiError(404, "not_found", f"user {user_id} has no score on board '{board}'")

    @app.get("/api/v1/leaderboard/me", response_model=UserRank, tags=["reads"], responses=errors)
    async def me(
        p: P,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        board: Board = "global",
        around: Annotated[int, counted("around", 0, 50), Query(ge=0, le=50)] = 5,
    ) -> dict[str, Any]:
        """The caller's own rank (from the token's sub) and neighbours."""
        who = authenticate(p, creds)
        return await user_rank(p, board, who.sub, around)

    @app.get("/api/v1/leaderboard/users/{user_id}", response_model=UserRank, tags=["reads"], responses=errors)
    async def user(
        p: P,
        _: Gate,
        user_id: Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{36}$")],
        board: Board = "global",
        around: Annotated[int, counted("around", 0, 50), Query(ge=0, le=50)] = 5,
    ) -> dict[str, Any]:
        """A user's rank and score with ``around`` neighbours either side."""
        return await user_rank(p, board, user_id.lower(), around)

    @app.get(
        "/api/v1/leaderboard/stream", tags=["live"], responses={200: {"content": {"text/event-stream": {}}}}
    )
    async def stream(
        request: Request,
        p: P,
        _: Gate,
        board: Board = "global",
        epoch: Epoch = None,
        since: Annotated[int | None, counted("since"), Query(ge=0)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Server-Sent Events: `snapshot` then `update`; `id` is the version (Last-Event-ID resumes)."""
        if board not in p.settings.boards:
            raise unknown_board(board)
        if sum(len(c) for c in p.hub.clients.values()) >= p.settings.max_sse_clients:
            raise ApiError(503, "unavailable", "too many live clients on this instance", {"Retry-After": "5"})
        if since is None and last_event_id is not None:
            try:
                since = parse_count(last_event_id, "Last-Event-ID")
            except BadNumber as exc:
                raise ApiError(422, "invalid", "header " + str(exc).removeprefix("field ")) from None
            # EventSource resends only the id, so assume the epoch we follow. Had the board been rebuilt
            # meanwhile, the frames still carry the whole top: the client lands on the current state.
            cur = p.hub.current(board)
            epoch = epoch or (cur.epoch if cur else None)
        await catch_up(p, board, epoch, since)
        outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=1)

        async def send(text: str, state: BoardState, kind: str) -> None:
            await outbox.put(f"event: {kind}\nid: {state.version}\ndata: {text}\n\n")

        client = Client(p.hub, board, send, "sse")

        async def events() -> AsyncIterator[str]:
            p.hub.attach(client, epoch, since)
            writer = asyncio.create_task(client.run())
            try:
                yield "retry: 2000\n\n"
                while not client.closed.is_set():
                    try:
                        yield await asyncio.wait_for(outbox.get(), p.settings.sse_keepalive_s)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
            finally:
                p.hub.detach(client)
                writer.cancel()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def catch_up(p: Ports, board: str, epoch: str | None, since: int | None) -> None:
        """A client resuming from a version this instance has not seen yet (it came from a faster
        replica) must not be handed an older state: take the newer one from Redis first. Likewise
        when this instance holds no state of the board yet (it started before the scorer built the
        board, and the announcement went out before it was listening): the client's first frame is
        then the board as Redis has it, rather than the empty placeholder."""
        cur = p.hub.current(board)
        if cur is not None:
            if since is None or epoch is None:
                return
            if cur.epoch == epoch and since <= cur.version:
                return
        try:
            await asyncio.wait_for(p.feed.refresh(board), 2)
        except Exception as exc:
            log.warning("could not catch up with Redis for a resuming client: %s", exc)

    def origin_allowed(origin: str | None, host: str | None) -> bool:
        """Browsers always send Origin; other clients may not, and cross-site hijacking needs a browser.
        The page this instance serves is always allowed (same origin). Unset (dev mode only, the
        settings refuse it elsewhere): any origin."""
        allowed = settings.ws_allowed_origins
        if allowed is None or origin is None or "*" in allowed:
            return True
        same = host is not None and origin in (f"http://{host}", f"https://{host}")
        return same or origin in allowed

    async def refuse(websocket: WebSocket, status: int, code: str, message: str, **headers: str) -> None:
        """Refuse the handshake with an HTTP answer in the usual error shape (ASGI denial response),
        with the request id as on every HTTP answer (RequestIdMiddleware only sees http.* messages)."""
        request_id = websocket.scope.get("state", {}).get("request_id")
        if request_id:
            headers = {**headers, "X-Request-ID": request_id}
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(error_response(status, code, message, headers or None))
        else:  # servers without the extension answer 403
            await websocket.close(code=1008, reason=message[:120])

    @app.websocket("/ws/leaderboard")
    async def live(
        websocket: WebSocket, board: str = "global", since: str | None = None, epoch: str | None = None
    ) -> None:
        """Snapshot, then updates with strictly increasing versions. ``since``/``epoch`` resume."""
        p: Ports = websocket.app.state.ports
        if not origin_allowed(websocket.headers.get("origin"), websocket.headers.get("host")):
            await refuse(websocket, 403, "forbidden", "origin not allowed")
            return
        if p.settings.read_requires_token:
            # Browsers cannot set headers on a WebSocket: the token may also come as ?token=.
            header = websocket.headers.get("authorization", "")
            token = websocket.query_params.get("token") or header.removeprefix("Bearer ").strip()
            try:
                if p.verifier is None:
                    raise AuthError("token verification is not configured")
                if not token:
                    raise AuthError("missing bearer token")
                p.verifier.verify(token)
            except AuthError as exc:
                await refuse(websocket, 401, "unauthorized", str(exc))
                return
        if board not in p.settings.boards:
            shown = board if len(board) <= 64 else board[:64] + "…"
            await refuse(websocket, 404, "not_found", f"no board named '{shown}'")
            return
        # Parsed before the handshake is accepted, so a bad value gets an HTTP answer, never a drop.
        try:
            resume = parse_optional_count(since, "since")
        except BadNumber as exc:
            await refuse(websocket, 422, "invalid", str(exc))
            return
        if epoch is not None and len(epoch) > EPOCH_MAX:
            await refuse(websocket, 422, "invalid", f"field 'epoch': at most {EPOCH_MAX} characters")
            return
        ip = client_ip(
            websocket.client.host if websocket.client else None, websocket.headers.get("x-forwarded-for")
        )
        if p.settings.ws_max_per_ip and per_ip[ip] >= p.settings.ws_max_per_ip:
            message = "too many connections from this address"
            await refuse(websocket, 429, "rate_limited", message, **{"Retry-After": "5"})
            return
        per_ip[ip] += 1
        try:
            await websocket.accept()
            await catch_up(p, board, epoch, resume)

            async def send(text: str, state: BoardState, kind: str) -> None:
                await websocket.send_text(text)

            client = Client(p.hub, board, send, "ws")
            p.hub.attach(client, epoch, resume)
            writer = asyncio.create_task(client.run())
            reader = asyncio.create_task(_listen(websocket, p.settings.ws_idle_timeout_s))
            try:
                await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                p.hub.detach(client)
                for task in (writer, reader):
                    task.cancel()
                results = await asyncio.gather(writer, reader, return_exceptions=True)
                idle = results[1] is True
                with contextlib.suppress(Exception):
                    # Bounded: a stuck peer cannot take the close handshake hostage.
                    await asyncio.wait_for(
                        websocket.close(
                            code=1001 if client.closed.is_set() and not idle else 1000,
                            reason="idle timeout" if idle else "",
                        ),
                        2,
                    )
        finally:
            per_ip[ip] -= 1
            if per_ip[ip] <= 0:
                del per_ip[ip]

    @app.websocket("/{path:path}")
    async def no_such_socket(websocket: WebSocket, path: str) -> None:
        """Any other WebSocket path: a 404 in the error shape rather than the server's bare 403."""
        await refuse(websocket, 404, "not_found", "no WebSocket endpoint here; use /ws/leaderboard")

    page_html = resources.files("leaderboard.broadcaster").joinpath("static/index.html").read_text()

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        html = page_html.replace("__INGEST_URL__", json.dumps(settings.ingest_public_url)).replace(
            "__DEV_MODE__", "true" if settings.dev_mode else "false"
        )
        return HTMLResponse(
            html,
            headers={
                "Cache-Control": "no-cache",
                "Content-Security-Policy": "default-src 'self'; "
                f"connect-src 'self' ws: wss: {settings.ingest_public_url}; "
                "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'",
            },
        )

    async def ready() -> dict[str, str]:
        checks = {"redis": "ok", "changes": "ok" if app.state.ports.feed.ready.is_set() else "starting"}
        try:
            await asyncio.wait_for(app.state.redis.ping(), 2)
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        return checks

    add_ops_routes(app, ready)
    return app


async def _listen(websocket: WebSocket, idle_timeout: float) -> bool:
    """Read what the client sends, so that a close or a dead peer is noticed, and answer the page's
    heartbeat (``{"type": "ping"}`` -> ``{"type": "pong"}``: browsers cannot see protocol pongs, so
    this is how the page tells a live socket from a half-open one). True when idle too long."""
    while True:
        try:
            if idle_timeout > 0:
                message = await asyncio.wait_for(websocket.receive(), idle_timeout)
            else:
                message = await websocket.receive()
        except TimeoutError:
            return True
        except (WebSocketDisconnect, RuntimeError):
            return False
        if message["type"] == "websocket.disconnect":
            return False
        if message.get("text") and '"ping"' in message["text"]:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.send_text('{"type":"pong"}'), 5)

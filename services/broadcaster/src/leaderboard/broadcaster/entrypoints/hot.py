"""The hot read path: ``GET /api/v1/leaderboard`` for a page inside the top N (and seed 004's
``/scores``) answered from the top the hub already holds, as bytes encoded once per board version.

Pages below the top N (or ascending) are read from Redis as the route reads them (one script round
trip, ``BoardReader.page``), and answered here too, without FastAPI's routing and dependency solver.

Why: the top is what nearly every client reads, and the hub holds it in memory for the live clients
anyway. Through FastAPI, each such read cost two Redis round trips, a pydantic model per entry, the
dependency solver (two of its dependencies in the thread pool) and a JSON encoding; the profile under
k6 had those at most of the request's CPU. Here a read is a dictionary lookup and one ``send``.

A pure ASGI middleware (no ``BaseHTTPMiddleware``), inside :class:`RequestIdMiddleware` (so answers
carry X-Request-ID) and CORS. It answers only what it can answer exactly as the routes in
``routes/reads.py`` would; everything else goes on to FastAPI unchanged: another path or method, a
query that is not plainly valid (the routes give the 422), a board without meta in Redis (the route
answers it empty or 404), ``read_requires_token``, a cross-origin request when
CORS is configured. The routes stay registered, so ``/openapi.json`` documents these reads as before.

Same answer as the routes: the body of ``LeaderboardPage`` (``total`` is the board's ZCARD, read
once per version and at most once a second: the ``Cache-Control: max-age=1`` the answer carries
already lets a client hold it that long), the weak ETag ``W/"epoch.version"`` and ``If-None-Match``
answered 304 without a body.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from leaderboard.broadcaster.entrypoints.deps import BOARD_PATTERN
from leaderboard.broadcaster.entrypoints.routes.reads import etag_for, not_modified
from leaderboard.broadcaster.hub import BoardState
from leaderboard.common.boardkeys import DEFAULT_BOARD, BoardKeys
from leaderboard.common.params import BadNumber, parse_count

if TYPE_CHECKING:
    from leaderboard.broadcaster.bootstrap import Ports

PAGE_PATH, SCORES_PATH = "/api/v1/leaderboard", "/scores"
TOTAL_TTL_S = 1.0  # how long a page's ``total`` (ZCARD) is reused within one version
_BOARD = re.compile(BOARD_PATTERN)
_PLAIN = re.compile(r"^[A-Za-z0-9_.:=&-]*$")  # nothing percent-encoded: anything else goes to FastAPI
_KEYS = frozenset({"board", "page", "limit", "sort"})


@dataclass(frozen=True)
class Query:
    board: str = DEFAULT_BOARD
    page: int = 1
    limit: int = 10
    descending: bool = True


def parse_query(raw: bytes) -> Query | None:
    """The page query when every parameter is plainly valid, else None (FastAPI answers it)."""
    text = raw.decode("latin-1")
    if not _PLAIN.match(text):
        return None
    found: dict[str, str] = {}
    for part in text.split("&") if text else ():
        key, eq, value = part.partition("=")
        if not eq or key not in _KEYS or key in found:
            return None
        found[key] = value
    board = found.get("board", DEFAULT_BOARD)
    sort = found.get("sort", "DESC").upper()
    if not _BOARD.match(board) or sort not in ("ASC", "DESC"):
        return None
    try:
        page = parse_count(found.get("page", "1"), "page", minimum=1, maximum=1_000_000)
        limit = parse_count(found.get("limit", "10"), "limit", minimum=1, maximum=100)
    except BadNumber:
        return None
    return Query(board, page, limit, sort == "DESC")


@dataclass(frozen=True)
class Encoded:
    """One answer, encoded once: the state it was built from, when, its ETag and its body."""

    state: BoardState | None  # None: read from Redis, not cached
    made: float
    etag: str
    body: bytes


def encode(body: Any) -> bytes:
    """As ``JSONResponse`` renders it, so both paths answer the same bytes."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


class TopReads:
    """The middleware (see the module docstring). The cache holds one answer per (path, board,
    page, limit) in the top N: a few dozen entries, replaced when the board's version moves."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._cache: dict[tuple[str, str, int, int], Encoded] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path != PAGE_PATH and path != SCORES_PATH:
            await self.app(scope, receive, send)
            return
        answer = await self._answer(scope, path)
        if answer is None:
            await self.app(scope, receive, send)
            return
        await self._send(scope, send, answer)

    async def _answer(self, scope: Scope, path: str) -> Encoded | None:
        app = scope.get("app")  # the Starlette app this middleware sits in (it holds the ports)
        p: Ports | None = getattr(app.state, "ports", None) if app is not None else None
        if p is None or p.settings.read_requires_token:
            return None
        if p.settings.cors_origins and _header(scope, b"origin") is not None:
            return None  # CORS decides what a cross-origin answer carries
        if path == SCORES_PATH:
            if scope["query_string"] or p.settings.board_top_n < 10:
                return None
            q = Query()
        else:
            found = parse_query(scope["query_string"])
            if found is None:
                return None
            q = found
        within_top = q.descending and q.page * q.limit <= p.settings.board_top_n
        state = p.hub.current(q.board) if q.board in p.settings.boards else None
        if state is None or not within_top:
            return None if path == SCORES_PATH else await self._from_redis(p, q, within_top)
        key = (path, q.board, q.page, q.limit)
        cached = self._cache.get(key)
        now = time.monotonic()
        if (
            cached is not None
            and cached.state is state
            and (path == SCORES_PATH or now - cached.made < TOTAL_TTL_S)
        ):
            return cached
        made = await self._encode(p, path, q, state, now)
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[key] = made
        return made

    async def _encode(self, p: Ports, path: str, q: Query, state: BoardState, now: float) -> Encoded:
        etag = f'W/"{state.epoch}.{state.version}"'
        start = (q.page - 1) * q.limit
        entries = state.top[start : start + q.limit]
        if path == SCORES_PATH:
            return Encoded(state, now, etag, encode(entries))
        total = int(await p.redis.zcard(BoardKeys(p.settings.redis_prefix, q.board).rank))
        body = {
            "leaderboard": entries,
            "page": q.page,
            "limit": q.limit,
            "sort": "DESC",
            "version": state.version,
            "epoch": state.epoch,
            "total": total,
        }
        return Encoded(state, now, etag, encode(body))

    @staticmethod
    async def _from_redis(p: Ports, q: Query, within_top: bool) -> Encoded | None:
        """A page the hub does not hold, read as the route reads it (one script round trip), minus
        FastAPI's routing and dependencies. A board without meta goes on to the route (empty or 404)."""
        offset = (q.page - 1) * q.limit
        result = await p.reader.page(q.board, offset, q.limit, q.descending)
        if result is None:
            return None
        body = {
            "leaderboard": result.entries,
            "page": q.page,
            "limit": q.limit,
            "sort": "DESC" if q.descending else "ASC",
            "version": result.meta.version,
            "epoch": result.meta.epoch,
            "total": result.total,
        }
        now = time.monotonic()
        return Encoded(None, now, etag_for(result.meta, within_top), encode(body))

    @staticmethod
    async def _send(scope: Scope, send: Send, answer: Encoded) -> None:
        headers = [(b"etag", answer.etag.encode()), (b"cache-control", b"public, max-age=1")]
        inm = _header(scope, b"if-none-match")
        if inm is not None and not_modified(inm.decode("latin-1"), answer.etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers += [
            (b"content-length", str(len(answer.body)).encode()),
            (b"content-type", b"application/json"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            value_: bytes = value
            return value_
    return None

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
CORS is configured, a ``period=`` (past periods are the route's). The routes stay registered, so
``/openapi.json`` documents these reads as before.

Windowed boards (issue 10): the hub holds the state of the period the change feed follows; it is
served only while that is the board's current period (``ChangeFeed.period_of``), so the moment a
period rolls over, and until the scorer's new epoch arrives, pages go to Redis for the new period
instead of serving the old one. The top's entries get their metadata from Postgres once per state
(``service.with_metadata``); ``/scores`` keeps seed 004's four fields.

Deep pages (issue 12): a page below the top N is kept, encoded, under the (epoch, rev) of the board
it was read from (``rev`` rises on every write to the board, a rebuild starts a new epoch), and a read
first asks Redis for the board's (epoch, rev) alone (one HMGET): unchanged, the kept bytes are the
answer; changed, the page is read as before and kept under the state the read itself returned. The
profile of page-50 reads under k6 had the page script's reply parsing, the shared-rank and metadata
pass and the JSON encoding at about half the request; an HMGET costs a fraction of that. A board under
live writes changes rev with every scorer batch, so there a kept page serves the reads between two
batches, and a read after a change pays the HMGET on top (one small round trip). A page built while
metadata was being skipped (Postgres not answering) is not kept.

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

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from leaderboard.broadcaster import service
from leaderboard.broadcaster.adapters.reads import Meta, Page
from leaderboard.broadcaster.domain import Resolved
from leaderboard.broadcaster.entrypoints.deps import BOARD_PATTERN
from leaderboard.broadcaster.entrypoints.routes.reads import (
    SCORES_FIELDS,
    etag_for,
    not_modified,
    page_body,
    page_etag,
)
from leaderboard.broadcaster.errors import DomainError
from leaderboard.broadcaster.hub import BoardState
from leaderboard.common.boardkeys import DEFAULT_BOARD, BoardKeys
from leaderboard.common.params import BadNumber, parse_count

if TYPE_CHECKING:
    from leaderboard.broadcaster.bootstrap import Ports

PAGE_PATH, SCORES_PATH = "/api/v1/leaderboard", "/scores"
TOTAL_TTL_S = 1.0  # how long a page's ``total`` (ZCARD) is reused within one version
DEEP_PAGES = 256  # deep pages kept (each at most ``limit`` 100 entries); all dropped when full
DEEP_READS = Counter(
    "broadcaster_deep_page_reads", "Reads of pages below the top N, by where the answer came from", ["source"]
)
_KEPT, _READ = DEEP_READS.labels("kept"), DEEP_READS.labels("redis")
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
        self._tops: dict[str, tuple[BoardState, list[dict[str, Any]]]] = {}  # board -> top with metadata
        # (board, period, page, limit, descending) -> (epoch, rev) of the board it was read from, answer
        self._deep: dict[tuple[str, str, int, int, bool], tuple[tuple[str, int], Encoded]] = {}

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
        current = self._current(p, q.board)
        state = current[1] if current is not None else None
        if current is None or state is None or not within_top:
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
        made = await self._encode(p, path, q, current[0], state, now)
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[key] = made
        return made

    @staticmethod
    def _current(p: Ports, board: str) -> tuple[Resolved, BoardState | None] | None:
        """The board's current period and the hub's state of it (None: not that period's state)."""
        if board not in p.settings.boards:
            return None
        try:
            r = p.periods.resolve(board)
        except DomainError:
            return None  # the route answers it
        state = p.hub.current(board)
        if state is not None and r.windowed and p.feed.period_of(state) != r.period.id:
            state = None  # the hub still holds the period before (the rollover's epoch is on its way)
        return r, state

    async def _top(self, p: Ports, r: Resolved, state: BoardState) -> list[dict[str, Any]]:
        """The state's top with its entries' metadata, fetched once per state."""
        held = self._tops.get(state.board)
        if held is not None and held[0] is state:
            return held[1]
        top = await service.with_metadata(p, state.board, r.period.id, state.top)
        self._tops[state.board] = (state, top)
        return top

    async def _encode(
        self, p: Ports, path: str, q: Query, r: Resolved, state: BoardState, now: float
    ) -> Encoded:
        meta = Meta(state.epoch, state.version, 0, [])
        etag = etag_for(meta, True, r.period.id if r.windowed else None)
        start = (q.page - 1) * q.limit
        if path == SCORES_PATH:
            entries = [{k: e[k] for k in SCORES_FIELDS} for e in state.top[start : start + q.limit]]
            return Encoded(state, now, etag, encode(entries))
        entries = (await self._top(p, r, state))[start : start + q.limit]
        total = int(await p.redis.zcard(BoardKeys.of(p.settings.redis_prefix, q.board, r.period.id).rank))
        body = page_body(r, Page(meta, total, entries), q.page, q.limit, True)
        return Encoded(state, now, etag, encode(body))

    async def _from_redis(self, p: Ports, q: Query, within_top: bool) -> Encoded | None:
        """A page the hub does not hold, read as the route reads it (``service.board_page``), minus
        FastAPI's routing and dependencies; a page below the top N is kept per board state (see the
        module). A refusal goes on to the route, which answers it."""
        key: tuple[str, str, int, int, bool] | None = None
        if not within_top:
            try:
                r = p.periods.resolve(q.board)
            except DomainError:
                return None
            if r.kept:
                key = (q.board, r.period.id, q.page, q.limit, q.descending)
                kept = self._deep.get(key)
                if kept is not None and kept[0] == await p.reader.state(q.board, r.period.id):
                    _KEPT.inc()
                    return kept[1]
        try:
            r, result = await service.board_page(p, q.board, q.page, q.limit, q.descending)
        except DomainError:
            return None
        body = page_body(r, result, q.page, q.limit, q.descending)
        made = Encoded(None, time.monotonic(), page_etag(r, result, within_top, body), encode(body))
        if not within_top:
            _READ.inc()
        if (
            key is not None
            and key[1] == r.period.id
            and result.meta.epoch  # read from Redis (not the empty board, not the archive)
            and not result.archived
            and service.metadata_complete()
        ):
            if len(self._deep) >= DEEP_PAGES:
                self._deep.clear()
            self._deep[key] = ((result.meta.epoch, result.meta.rev), made)
        return made

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

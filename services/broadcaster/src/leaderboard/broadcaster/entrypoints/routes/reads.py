"""Board reads over REST: a page of a board, seed 004's ``/scores``, a user's rank, the caller's own,
and the ranks of a list of users. Every read takes ``board`` and, for a windowed board, ``period``
(absent: the current one); answers about a windowed board carry ``period`` and ``resetsAt``.

Pages are cacheable: a weak ETag names the board's epoch and version (and, below the top N, its
``rev``, which moves on every change), so ``If-None-Match`` answers 304 without a body. Windowed
boards put the period in front (an empty period has no epoch of its own yet). A period read from
Postgres has no live version: its ETag is a digest of the answer.

``at=TIME`` (issue 11): the board as it stood at a past moment, folded from Postgres's record of the
log (``service.board_at``), in the same page shape plus ``at``; its ETag is a digest too. The hot path
(``entrypoints/hot.py``) never answers a query with ``at``: it comes here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from leaderboard.broadcaster import service
from leaderboard.broadcaster.adapters.reads import Meta, Page
from leaderboard.broadcaster.domain import Resolved, iso_ms, parse_at, parse_users
from leaderboard.broadcaster.entrypoints.deps import (
    Around,
    At,
    BearerDoc,
    Board,
    Gate,
    Limit,
    PageNo,
    PeriodId,
    PortsDep,
    UsersList,
    principal,
)
from leaderboard.broadcaster.entrypoints.schemas import ERRORS, LeaderboardPage, Ranks, ScoresEntry, UserRank
from leaderboard.common.boardkeys import DEFAULT_BOARD

router = APIRouter(tags=["reads"])
IfNoneMatch = Annotated[str | None, Header()]
SCORES_FIELDS = ("rank", "userId", "username", "score")  # seed 004's entries, exactly


def etag_for(meta: Meta, within_top: bool, period: str | None = None) -> str:
    """Pages inside the top N change exactly when the version does; deeper pages on any change (rev).
    ``period``: a windowed board's period, in front."""
    head = f"{period}." if period is not None else ""
    if within_top:
        return f'W/"{head}{meta.epoch}.{meta.version}"'
    return f'W/"{head}{meta.epoch}.{meta.version}.{meta.rev}"'


def digest_etag(body: Any) -> str:
    text = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return f'W/"a.{hashlib.sha256(text).hexdigest()[:24]}"'


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110's weak comparison: any listed tag (with or without ``W/``) or ``*`` matches."""
    if not if_none_match:
        return False
    tags = {t.strip() for t in if_none_match.split(",")}
    return "*" in tags or etag in tags or etag.removeprefix("W/") in tags


def cached(body: Any, etag: str | None, if_none_match: str | None) -> Response:
    """``body`` with its ETag (a digest of it when None) and ``If-None-Match`` answered 304."""
    etag = etag if etag is not None else digest_etag(body)
    headers = {"ETag": etag, "Cache-Control": "public, max-age=1"}
    if not_modified(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(body, headers=headers)


def period_fields(r: Resolved) -> dict[str, Any]:
    """``period`` and ``resetsAt`` for a windowed board; nothing for an all-time one (seed shapes)."""
    if not r.windowed:
        return {}
    return {"period": r.period.id, "resetsAt": iso_ms(r.period.end)}


def page_body(r: Resolved, result: Page, page: int, limit: int, descending: bool) -> dict[str, Any]:
    """The body of ``GET /api/v1/leaderboard`` (the hot path answers the same)."""
    return {
        "leaderboard": result.entries,
        "page": page,
        "limit": limit,
        "sort": "DESC" if descending else "ASC",
        "version": result.meta.version,
        "epoch": result.meta.epoch,
        "total": result.total,
        **period_fields(r),
    }


def past_body(past: service.PastBoard, page: int, limit: int, descending: bool) -> dict[str, Any]:
    """A page of a board as it stood at a moment: the live page's shape (no live epoch or version:
    ``""`` and 0) plus ``at``."""
    ordered = past.entries if descending else past.entries[::-1]
    start = (page - 1) * limit
    windowed = past.spec.window != "all"
    return {
        "leaderboard": ordered[start : start + limit],
        "page": page,
        "limit": limit,
        "sort": "DESC" if descending else "ASC",
        "version": 0,
        "epoch": "",
        "total": len(past.entries),
        **({"period": past.period.id, "resetsAt": iso_ms(past.period.end)} if windowed else {}),
        "at": iso_ms(past.at),
    }


def page_etag(r: Resolved, result: Page, within_top: bool, body: Any) -> str:
    if result.archived:
        return digest_etag(body)
    return etag_for(result.meta, within_top, r.period.id if r.windowed else None)


@router.get(
    "/api/v1/leaderboard",
    response_model=LeaderboardPage,
    responses={304: {"description": "Not modified"}, **ERRORS},
)
async def leaderboard(
    p: PortsDep,
    _: Gate,
    board: Board = DEFAULT_BOARD,
    page: PageNo = 1,
    limit: Limit = 10,
    sort: Annotated[str, Query(pattern="^(?i)(asc|desc)$")] = "DESC",
    period: PeriodId = None,
    at: At = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """A page of the board in seed 000's shape; ranks are absolute, ties in the scorer's order.
    With ``at``, the board as it stood at that moment (plus ``at``)."""
    descending = sort.upper() == "DESC"
    if at is not None:
        when = parse_at(at, p.periods.clock())
        past = await service.board_at(p, board, when, period)
        return cached(past_body(past, page, limit, descending), None, if_none_match)
    r, result = await service.board_page(p, board, page, limit, descending, period)
    within_top = descending and page * limit <= p.settings.board_top_n
    body = page_body(r, result, page, limit, descending)
    return cached(body, page_etag(r, result, within_top, body), if_none_match)


@router.get("/scores", response_model=list[ScoresEntry], responses={304: {}})
async def scores(p: PortsDep, _: Gate, if_none_match: IfNoneMatch = None) -> Response:
    """Seed 004's alias: the top 10 of the global board as a JSON array."""
    result = await p.reader.page(DEFAULT_BOARD, 0, 10, True)
    if result is None:
        return JSONResponse([])
    entries = [{k: e[k] for k in SCORES_FIELDS} for e in result.entries]
    return cached(entries, etag_for(result.meta, p.settings.board_top_n >= 10), if_none_match)


@router.get("/api/v1/leaderboard/me", response_model=UserRank, responses=ERRORS)
async def me(
    request: Request,
    p: PortsDep,
    _: BearerDoc,
    board: Board = DEFAULT_BOARD,
    around: Around = 5,
    period: PeriodId = None,
) -> Response:
    """The caller's own rank (from the token's sub) and neighbours."""
    # Checked here, not as a dependency: a malformed query is a 422 before any token question.
    who = await principal(request, None)
    r, found = await service.user_rank(p, board, who.sub, around, period)
    return JSONResponse({**found, **period_fields(r)})


@router.get("/api/v1/leaderboard/users/{user_id}", response_model=UserRank, responses=ERRORS)
async def user(
    p: PortsDep,
    _: Gate,
    user_id: Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{36}$")],
    board: Board = DEFAULT_BOARD,
    around: Around = 5,
    period: PeriodId = None,
) -> Response:
    """A user's rank and score with ``around`` neighbours either side."""
    r, found = await service.user_rank(p, board, user_id.lower(), around, period)
    return JSONResponse({**found, **period_fields(r)})


@router.get("/api/v1/leaderboard/ranks", response_model=Ranks, responses=ERRORS)
async def ranks(
    p: PortsDep, _: Gate, users: UsersList, board: Board = DEFAULT_BOARD, period: PeriodId = None
) -> Response:
    """The entries of up to 100 users (friends, a clan) with their ranks on the whole board, in board
    order; the users without an entry are listed under ``missing``."""
    wanted = parse_users(users)
    r, found, missing = await service.ranks(p, board, wanted, period)
    body = {
        "board": board,
        **period_fields(r),
        "epoch": found.meta.epoch,
        "version": found.meta.version,
        "total": found.total,
        "entries": found.entries,
        "missing": missing,
    }
    return JSONResponse(body)

"""Board reads over REST: a page of a board, seed 004's ``/scores``, a user's rank, the caller's own.

Pages are cacheable: a weak ETag names the board's epoch and version (and, below the top N, its
``rev``, which moves on every change), so ``If-None-Match`` answers 304 without a body.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from leaderboard.broadcaster import service
from leaderboard.broadcaster.adapters.reads import Meta
from leaderboard.broadcaster.entrypoints.deps import (
    Around,
    BearerDoc,
    Board,
    Gate,
    Limit,
    PageNo,
    PortsDep,
    principal,
)
from leaderboard.broadcaster.entrypoints.schemas import ERRORS, Entry, LeaderboardPage, UserRank
from leaderboard.common.boardkeys import DEFAULT_BOARD

router = APIRouter(tags=["reads"])
IfNoneMatch = Annotated[str | None, Header()]


def etag_for(meta: Meta, within_top: bool) -> str:
    """Pages inside the top N change exactly when the version does; deeper pages on any change (rev)."""
    if within_top:
        return f'W/"{meta.epoch}.{meta.version}"'
    return f'W/"{meta.epoch}.{meta.version}.{meta.rev}"'


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110's weak comparison: any listed tag (with or without ``W/``) or ``*`` matches."""
    if not if_none_match:
        return False
    tags = {t.strip() for t in if_none_match.split(",")}
    return "*" in tags or etag in tags or etag.removeprefix("W/") in tags


def cached(body: Any, etag: str, if_none_match: str | None) -> Response:
    headers = {"ETag": etag, "Cache-Control": "public, max-age=1"}
    if not_modified(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(body, headers=headers)


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
    if_none_match: IfNoneMatch = None,
) -> Response:
    """A page of the board in seed 000's shape; ranks are absolute, ties in the scorer's order."""
    descending = sort.upper() == "DESC"
    result = await service.board_page(p, board, page, limit, descending)
    within_top = descending and page * limit <= p.settings.board_top_n
    body = {
        "leaderboard": result.entries,
        "page": page,
        "limit": limit,
        "sort": "DESC" if descending else "ASC",
        "version": result.meta.version,
        "epoch": result.meta.epoch,
        "total": result.total,
    }
    return cached(body, etag_for(result.meta, within_top), if_none_match)


@router.get("/scores", response_model=list[Entry], responses={304: {}})
async def scores(p: PortsDep, _: Gate, if_none_match: IfNoneMatch = None) -> Response:
    """Seed 004's alias: the top 10 of the global board as a JSON array."""
    result = await p.reader.page(DEFAULT_BOARD, 0, 10, True)
    if result is None:
        return JSONResponse([])
    return cached(result.entries, etag_for(result.meta, p.settings.board_top_n >= 10), if_none_match)


@router.get("/api/v1/leaderboard/me", response_model=UserRank, responses=ERRORS)
async def me(
    request: Request, p: PortsDep, _: BearerDoc, board: Board = DEFAULT_BOARD, around: Around = 5
) -> dict[str, Any]:
    """The caller's own rank (from the token's sub) and neighbours."""
    # Checked here, not as a dependency: a malformed query is a 422 before any token question.
    who = await principal(request, None)
    return await service.user_rank(p, board, who.sub, around)


@router.get("/api/v1/leaderboard/users/{user_id}", response_model=UserRank, responses=ERRORS)
async def user(
    p: PortsDep,
    _: Gate,
    user_id: Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{36}$")],
    board: Board = DEFAULT_BOARD,
    around: Around = 5,
) -> dict[str, Any]:
    """A user's rank and score with ``around`` neighbours either side."""
    return await service.user_rank(p, board, user_id.lower(), around)

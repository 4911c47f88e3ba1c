"""Provenance (issue 11): ``GET /api/v1/leaderboard/users/{userId}/history?board=B`` lists the events
that make up a user's score on a board's period (the current one unless ``period`` names another):
each action with its points and times, voided ones with who voided them, when and why, in log-time
order (acceptedAt, then actionId), paged by an opaque cursor; and every correction of the user.

Read from Postgres (the scorer's ``actions`` and ``corrections`` tables), public like the other reads
(the reader gate applies). A user with no action on the board gets an empty list, not a 404: user ids
are not secrets, and "nothing yet" is an answer.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse, Response

from leaderboard.broadcaster import service
from leaderboard.broadcaster.domain import decode_cursor, encode_cursor
from leaderboard.broadcaster.entrypoints.deps import Board, CursorText, Gate, Limit, PeriodId, PortsDep
from leaderboard.broadcaster.entrypoints.routes.reads import period_fields
from leaderboard.broadcaster.entrypoints.schemas import ERRORS, History
from leaderboard.common.boardkeys import DEFAULT_BOARD

router = APIRouter(tags=["history"])
UserId = Annotated[
    str, Path(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
]


@router.get("/api/v1/leaderboard/users/{user_id}/history", response_model=History, responses=ERRORS)
async def history(
    p: PortsDep,
    _: Gate,
    user_id: UserId,
    board: Board = DEFAULT_BOARD,
    period: PeriodId = None,
    limit: Limit = 50,
    cursor: CursorText = None,
) -> Response:
    """The user's actions on the board (and period) in log-time order, with cursor paging, and the
    user's corrections."""
    after = decode_cursor(cursor) if cursor is not None else None
    user = user_id.lower()
    r, found = await service.history(p, user, board, period, after, limit)
    body: dict[str, Any] = {
        "userId": user,
        "board": board,
        **period_fields(r),
        "limit": limit,
        "actions": found.actions,
        "corrections": found.corrections,
        "nextCursor": encode_cursor(found.last) if found.last is not None else None,
    }
    return JSONResponse(body)

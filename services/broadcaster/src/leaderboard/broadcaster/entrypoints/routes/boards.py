"""``GET /api/v1/boards``: the boards this instance serves, from the board catalog, each with its rule,
order, window, the action types that feed it, and its current period with ``resetsAt``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from leaderboard.broadcaster.domain import BoardPeriods, iso_ms
from leaderboard.broadcaster.entrypoints.deps import Gate, PortsDep
from leaderboard.broadcaster.entrypoints.schemas import Boards

router = APIRouter(tags=["boards"])


def describe(periods: BoardPeriods) -> list[dict[str, Any]]:
    out = []
    for board in periods.ids:
        spec = periods.spec(board)
        current = periods.current(board)
        out.append(
            {
                "id": spec.id,
                "rule": spec.rule,
                "order": spec.order,
                "window": spec.window,
                "types": sorted(spec.types) if spec.types is not None else None,
                "keep": spec.keep,
                "period": current.id if current is not None else None,
                "startsAt": iso_ms(current.start) if current is not None else None,
                "resetsAt": iso_ms(current.end) if current is not None else None,
            }
        )
    return out


@router.get("/api/v1/boards", response_model=Boards)
async def boards(p: PortsDep, _: Gate) -> JSONResponse:
    """Every board with its rule, order, window, current period and when that period resets."""
    return JSONResponse({"boards": describe(p.periods)}, headers={"Cache-Control": "public, max-age=1"})

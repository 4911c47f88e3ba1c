"""The scorer's use cases besides projecting the log (that is :class:`~leaderboard.scorer.projector.
Projector`): what an operator may ask of a running scorer. They take a verified principal and parsed
parameters, and raise :mod:`leaderboard.scorer.errors` only, so any entrypoint (Faust's web server
today, a CLI later) can drive them."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from leaderboard.common.auth import Principal
from leaderboard.common.params import parse_count
from leaderboard.scorer.adapters import projection
from leaderboard.scorer.bootstrap import Ports
from leaderboard.scorer.errors import Forbidden, Invalid, Unavailable

QUARANTINE_LIMIT = 100
QUARANTINE_MAX = 1000


def require_admin(who: Principal) -> None:
    """Quarantined actions name players and their behaviour: operators only."""
    if who.role != "admin":
        raise Forbidden("the admin role is required", role="admin")


def require_ready(ports: Ports | None) -> Ports:
    """The ports once start-up (migrations, board check, pending announcements) has completed."""
    if ports is None:
        raise Unavailable("the scorer is starting")
    return ports


def quarantine_query(limit: str | None, user_id: str | None) -> tuple[int, UUID | None]:
    """``limit`` (1..1000, default 100) and ``userId`` (a UUID, optional) as a client sends them."""
    try:
        count = parse_count(
            str(QUARANTINE_LIMIT) if limit is None else limit, "limit", minimum=1, maximum=QUARANTINE_MAX
        )
    except ValueError as exc:
        raise Invalid("limit", str(exc)) from None
    try:
        return count, UUID(user_id) if user_id else None
    except ValueError:
        raise Invalid("userId", "field 'userId': must be a UUID") from None


async def quarantined(ports: Ports, *, limit: int, user_id: UUID | None) -> list[dict[str, Any]]:
    """Actions held by velocity caps, newest first (optionally one user's)."""
    async with ports.pool.acquire() as conn:
        return await projection.list_quarantine(conn, limit=limit, user_id=user_id)

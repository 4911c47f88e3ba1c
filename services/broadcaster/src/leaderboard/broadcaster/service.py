"""The broadcaster's use cases: read a page, a user's rank, and bring the hub up to a resuming
client's version. They take the ports and raise domain exceptions (``errors.py``), never HTTP ones.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from leaderboard.broadcaster.adapters.reads import Meta, Page
from leaderboard.broadcaster.errors import UnknownBoard, UserNotRanked

if TYPE_CHECKING:
    from leaderboard.broadcaster.bootstrap import Ports

log = logging.getLogger(__name__)
EMPTY = Page(Meta("", 0, 0, []), 0, [])  # a configured board nobody has scored on yet
CATCH_UP_S = 2.0  # a resuming client waits at most this long for Redis before it gets what we hold


async def board_page(p: Ports, board: str, page: int, limit: int, descending: bool) -> Page:
    """One page; ranks are absolute. A configured board with no score yet is empty, not unknown."""
    result = await p.reader.page(board, (page - 1) * limit, limit, descending)
    if result is None:
        if board not in p.settings.boards:
            raise UnknownBoard(board)
        return EMPTY
    return result


async def user_rank(p: Ports, board: str, user_id: str, around: int) -> dict[str, Any]:
    """The user's entry with ``around`` neighbours either side."""
    for _ in range(3):  # the user's entry can move between the reads; try again
        found = await p.reader.around(board, user_id, around)
        if found is not None:
            _meta, me, neighbours = found
            return {**me, "neighbours": neighbours}
        if await p.reader.meta(board) is None:
            raise UnknownBoard(board)
        if await p.reader.redis.hget(p.reader.keys(board).members, user_id) is None:
            break
    raise UserNotRanked(user_id, board)


async def catch_up(p: Ports, board: str, epoch: str | None, since: int | None) -> None:
    """A client resuming from a version this instance has not seen yet (it came from a faster
    replica, or from an instance that is draining) must not be handed an older state: take the newer
    one from Redis first. Likewise when this instance holds no state of the board yet (it started
    before the scorer built the board, and the announcement went out before it was listening): the
    client's first frame is then the board as Redis has it, rather than the empty placeholder."""
    cur = p.hub.current(board)
    if cur is not None:
        if since is None or epoch is None:
            return
        if cur.epoch == epoch and since <= cur.version:
            return
    try:
        await asyncio.wait_for(p.feed.refresh(board), CATCH_UP_S)
    except Exception as exc:
        log.warning("could not catch up with Redis for a resuming client: %s", exc)

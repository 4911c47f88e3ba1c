"""``leaderboard board --at TIME``: a board as it was at a past moment (issue 11).

Computed from Postgres's record of the log: the ``actions`` table (every applied action, voided ones
kept with ``voided_at``) and the ``corrections`` table (every correction in log order), folded by
:func:`leaderboard.common.history.board_at`, the same rules, windows and tie order as the live board.
Only actions accepted by ``TIME`` (and corrections decided by then) count; names are today's (the
``users`` table). The broadcaster's ``GET /api/v1/leaderboard?at=`` calls the same function.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

import asyncpg

from leaderboard.common.boards import BoardCatalog
from leaderboard.common.events import from_epoch_ms, iso_ms
from leaderboard.common.history import BoardAt, PastAction, PastCorrection, board_at, load_past


async def load(
    conn: asyncpg.Connection, catalog: BoardCatalog, board: str, at: datetime
) -> tuple[list[PastAction], list[PastCorrection]]:
    """The actions that could feed ``board`` accepted by ``at``, and the corrections decided by then."""
    return await load_past(conn, catalog.boards[board], at)


async def board_at_time(
    dsn: str, catalog: BoardCatalog, board: str, at: datetime, schema: str | None = None
) -> tuple[BoardAt, dict[str, str]]:
    """The board at ``at`` and today's names of its users."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'} if schema else None)
    try:
        actions, corrections = await load(conn, catalog, board, at)
        result = board_at(catalog, board, actions, corrections, at)
        users = [e.user_id for e in result.entries]
        rows = await conn.fetch(
            "SELECT user_id::text, username FROM users WHERE user_id::text = ANY($1)", users
        )
    finally:
        await conn.close()
    return result, {r["user_id"]: r["username"] for r in rows}


def render(result: BoardAt, names: dict[str, str], limit: int, fmt: str) -> str:
    """The board as a table, JSON (the REST read's shape: ``leaderboard`` entries) or CSV."""
    entries = result.entries[:limit]
    lines: list[dict[str, Any]] = [
        {
            "rank": e.rank,
            "userId": e.user_id,
            "username": names.get(e.user_id, e.user_id[:8]),
            "score": e.score,
            "reachedAt": iso_ms(from_epoch_ms(e.reached_ms)),
        }
        for e in entries
    ]
    head = {
        "board": result.board,
        "period": result.period,
        "at": iso_ms(result.at),
        "total": len(result.entries),
    }
    if fmt == "json":
        return json.dumps({**head, "leaderboard": lines})
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(
            out, ["rank", "userId", "username", "score", "reachedAt"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(lines)
        return out.getvalue().rstrip("\n")
    text = [f"board {result.board}  period {result.period}  at {head['at']}  players {head['total']}"]
    text += [f"{x['rank']:>4}  {x['username'][:24]:<24} {x['score']:>12}  {x['userId']}" for x in lines]
    return "\n".join(text)


def run_command(board: str, at_text: str, limit: int, fmt: str) -> str:
    """``leaderboard board --at TIME``: parse, compute from the configured Postgres, render."""
    import asyncio

    import click

    from leaderboard.cli.export import parse_time
    from leaderboard.scorer.settings import ScorerSettings

    try:
        at = parse_time(at_text, "--at")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = ScorerSettings()
    catalog = BoardCatalog.load(settings.boards_file)
    if catalog.get(board) is None:
        known = ", ".join(b.id for b in catalog)
        raise click.BadParameter(
            f"no board {board!r} in the board catalog (boards: {known})", param_hint="--board"
        )
    result, names = asyncio.run(
        board_at_time(settings.postgres_dsn, catalog, board, at, settings.postgres_schema)
    )
    return render(result, names, limit, fmt)

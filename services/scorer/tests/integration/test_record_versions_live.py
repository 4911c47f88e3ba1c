"""``projection.record_versions`` against a real, migrated Postgres (issue 12): the announced version of
every board period a batch changed, in one statement, never moving a version back and touching no
other row."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from leaderboard.common.boards import ALL_TIME, BoardCatalog, Period
from leaderboard.scorer.adapters import projection
from leaderboard.scorer.adapters.migrate import migrate
from leaderboard.testkit.testing import Namespace

CATALOG = BoardCatalog.load()


def period(board: str, at: datetime) -> Period:
    found = CATALOG.boards[board].period_at(at)
    assert found is not None
    return found


MONDAY = datetime(2026, 11, 23, 12, tzinfo=UTC)
TUESDAY = datetime(2026, 11, 24, 12, tzinfo=UTC)
# The board periods the test opens, with the epoch each gets.
OPENED = {
    ("global", "all"): ALL_TIME,
    ("best-match", "all"): ALL_TIME,
    ("daily", "2026-11-23"): period("daily", MONDAY),
    ("daily", "2026-11-24"): period("daily", TUESDAY),
    ("weekly", "2026-W48"): period("weekly", MONDAY),
}


@pytest.fixture
async def conn(fresh_namespace: Namespace) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(fresh_namespace.dsn)
    try:
        await migrate(connection)
        for (board, period_id), opened in OPENED.items():
            assert opened.id == period_id
            assert await projection.new_epoch(connection, board, f"epoch-{board}-{period_id}", opened) == 0
        yield connection
    finally:
        await connection.close()


async def rows(conn: asyncpg.Connection) -> dict[tuple[str, str], dict[str, Any]]:
    found = await conn.fetch("SELECT board, period, epoch, version, updated_at FROM boards")
    return {(r["board"], r["period"]): dict(r) for r in found}


def versions(state: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], int]:
    return {key: int(row["version"]) for key, row in state.items()}


async def test_several_board_periods_move_in_one_call_and_the_others_stay(conn: asyncpg.Connection) -> None:
    before = await rows(conn)
    assert versions(before) == dict.fromkeys(OPENED, 0)

    await projection.record_versions(
        conn, [("global", "all", 5), ("daily", "2026-11-23", 3), ("weekly", "2026-W48", 7)]
    )
    after = await rows(conn)
    assert versions(after) == {
        ("global", "all"): 5,
        ("best-match", "all"): 0,
        ("daily", "2026-11-23"): 3,
        ("daily", "2026-11-24"): 0,  # the same board, another period
        ("weekly", "2026-W48"): 7,
    }
    for key in OPENED:
        assert after[key]["epoch"] == before[key]["epoch"]  # only the version moves
        moved = key in {("global", "all"), ("daily", "2026-11-23"), ("weekly", "2026-W48")}
        assert (after[key]["updated_at"] > before[key]["updated_at"]) is moved, key

    assert await projection.board_state(conn, "daily", "2026-11-23") == ("epoch-daily-2026-11-23", 3)


async def test_a_lower_version_never_lowers_the_stored_one(conn: asyncpg.Connection) -> None:
    await projection.record_versions(conn, [("global", "all", 10), ("daily", "2026-11-24", 4)])
    # A late, lower version of one period next to a higher one of another, in the same call.
    await projection.record_versions(
        conn, [("global", "all", 9), ("daily", "2026-11-24", 6), ("best-match", "all", 1)]
    )
    assert versions(await rows(conn)) == {
        ("global", "all"): 10,
        ("best-match", "all"): 1,
        ("daily", "2026-11-23"): 0,
        ("daily", "2026-11-24"): 6,
        ("weekly", "2026-W48"): 0,
    }
    await projection.record_versions(
        conn, [("global", "all", 10), ("daily", "2026-11-24", 1)]
    )  # equal, lower
    assert versions(await rows(conn))[("global", "all")] == 10
    assert versions(await rows(conn))[("daily", "2026-11-24")] == 6
    # A version past what a 32-bit column would hold: the column and the array are bigint.
    await projection.record_versions(conn, [("weekly", "2026-W48", 2**40)])
    assert versions(await rows(conn))[("weekly", "2026-W48")] == 2**40
    # One period named twice in a call: the higher of its versions counts, whatever the order.
    await projection.record_versions(conn, [("global", "all", 30), ("global", "all", 11)])
    await projection.record_versions(conn, [("best-match", "all", 2), ("best-match", "all", 40)])
    assert versions(await rows(conn))[("global", "all")] == 30
    assert versions(await rows(conn))[("best-match", "all")] == 40


async def test_unknown_board_periods_are_left_alone(conn: asyncpg.Connection) -> None:
    await projection.record_versions(conn, [("global", "all", 2)])
    before = await rows(conn)
    await projection.record_versions(
        conn,
        [
            ("no-such-board", "all", 50),
            ("daily", "1999-01-01", 50),  # a period never opened
            ("global", "2026-11-23", 50),  # a known board with a period it does not have
            ("weekly", "2026-W48", 8),  # and one known row in the same call
        ],
    )
    after = await rows(conn)
    assert set(after) == set(OPENED)  # no row was created
    assert versions(after) == {**versions(before), ("weekly", "2026-W48"): 8}
    assert all(after[k] == before[k] for k in OPENED if k != ("weekly", "2026-W48"))

    await projection.record_versions(conn, [])  # nothing announced: a no-op, not an error
    assert await rows(conn) == after

"""The broadcaster's pure board rules (issue 10) on an injected clock: shared ranks, which period a
read names and which announcements the change feed follows, the ``users`` list, and the feed and hot
path following a board's current period."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from leaderboard.broadcaster.adapters.changes import ChangeFeed
from leaderboard.broadcaster.domain import BoardPeriods, parse_users, shared_ranks, with_shared_ranks
from leaderboard.broadcaster.entrypoints.hot import TopReads
from leaderboard.broadcaster.errors import Invalid, UnknownBoard, UnknownPeriod
from leaderboard.common.boards import BoardCatalog
from leaderboard.common.events import BoardChanged, RankedEntry

CATALOG = BoardCatalog.load()


def clock_at(at: datetime) -> Any:
    return lambda: at


def entries(*scores: int, start: int = 1) -> list[dict[str, Any]]:
    return [{"rank": start + i, "score": s} for i, s in enumerate(scores)]


@pytest.mark.parametrize(
    "scores, better, start, expected",
    [
        ((), 0, 1, []),
        ((9, 8, 8, 7), 0, 1, [1, 2, 2, 4]),
        ((5, 5, 5), 0, 1, [1, 1, 1]),
        ((8, 8, 7, 7, 7, 1), 0, 1, [1, 1, 3, 3, 3, 6]),
        # A page deep in the board starting inside a tie: its best score began 3 entries earlier.
        ((8, 8, 7), 2, 4, [3, 3, 6]),
        ((7, 6), 5, 6, [6, 7]),
    ],
)
def test_shared_ranks_are_competition_ranks(
    scores: tuple[int, ...], better: int, start: int, expected: list[int]
) -> None:
    assert shared_ranks(entries(*scores, start=start), better) == expected


def current_id(periods: BoardPeriods, board: str) -> str:
    """The id of the period ``board`` follows now (these boards always have one)."""
    current = periods.current(board)
    assert current is not None
    return current.id


def test_shared_ranks_of_a_reversed_page() -> None:
    page = list(reversed(entries(8, 8, 7, 6, start=4)))  # sort=ASC lists the worst first
    assert shared_ranks(page, 2) == [7, 6, 3, 3]


def test_with_shared_ranks_keeps_the_entry_and_puts_shared_rank_after_rank() -> None:
    out = with_shared_ranks([{"rank": 1, "userId": "a", "score": 3, "metadata": {"x": 1}}])
    assert out == [{"rank": 1, "sharedRank": 1, "userId": "a", "score": 3, "metadata": {"x": 1}}]
    assert list(out[0]) == ["rank", "sharedRank", "userId", "score", "metadata"]


NOV23 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # a Monday


def test_resolve_current_and_past_periods() -> None:
    periods = BoardPeriods(CATALOG, clock=clock_at(NOV23))
    cur = periods.resolve("daily")
    assert (cur.period.id, cur.current, cur.kept, cur.windowed) == ("2026-11-23", True, True, True)
    assert cur.period.end == datetime(2026, 11, 24, tzinfo=UTC)
    assert periods.resolve("daily", "2026-11-23") == cur
    past = periods.resolve("daily", "2026-11-20")
    assert (past.current, past.kept) == (False, True)  # daily keeps 7 past days in Redis
    old = periods.resolve("daily", "2026-11-01")
    assert (old.current, old.kept) == (False, False)  # Postgres only
    assert periods.resolve("weekly").period.id == "2026-W48"
    assert periods.resolve("global", "all").current and not periods.resolve("global").windowed


@pytest.mark.parametrize(
    "board, period, error",
    [
        ("daily", "2026-W48", UnknownPeriod),
        ("daily", "2026-11-31", UnknownPeriod),
        ("daily", "2026-1-05", UnknownPeriod),
        ("daily", "2026-11-24", UnknownPeriod),  # has not started
        ("global", "2026-11-23", UnknownPeriod),
        ("weekly", "2026-11", UnknownPeriod),
        ("monthly", None, UnknownBoard),
    ],
)
def test_unknown_boards_and_periods(board: str, period: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        BoardPeriods(CATALOG, clock=clock_at(NOV23)).resolve(board, period)


def test_the_boards_setting_filters_the_catalog_and_must_name_its_boards() -> None:
    assert BoardPeriods(CATALOG, ["global"]).ids == ["global"]
    with pytest.raises(UnknownBoard):
        BoardPeriods(CATALOG, ["global"]).resolve("daily")
    with pytest.raises(ValueError, match="'nope'"):
        BoardPeriods(CATALOG, ["global", "nope"])


def test_announcements_move_a_board_forward_never_back() -> None:
    now = [datetime(2026, 11, 23, 23, 59, 58, tzinfo=UTC)]
    periods = BoardPeriods(CATALOG, clock=lambda: now[0])
    assert periods.observe("daily", "2026-11-23")
    # The scorer's clock is a little ahead: its rollover is followed at once.
    assert periods.observe("daily", "2026-11-24")
    assert current_id(periods, "daily") == "2026-11-24"
    assert not periods.observe("daily", "2026-11-23")  # a late announcement of the day before
    now[0] += timedelta(seconds=5)
    assert current_id(periods, "daily") == "2026-11-24"
    assert not periods.observe("daily", "2026-W48") and not periods.observe("nope", "all")
    assert periods.observe("global", "all") and not periods.observe("global", "2026-11-24")


def test_the_clock_moves_a_board_at_midnight_without_an_announcement() -> None:
    now = [datetime(2026, 11, 30, 23, 59, 59, 999000, tzinfo=UTC)]  # Monday night
    periods = BoardPeriods(CATALOG, clock=lambda: now[0])
    assert (current_id(periods, "daily"), current_id(periods, "weekly")) == ("2026-11-30", "2026-W49")
    now[0] += timedelta(milliseconds=2)
    assert (current_id(periods, "daily"), current_id(periods, "weekly")) == ("2026-12-01", "2026-W49")


def test_parse_users() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert parse_users(f"{a},{b.upper()},{a}") == [a, b]
    for raw, reason in (
        ("", "comma-separated"),
        (f"{a},,{b}", "comma-separated"),
        (f"{a},nope", "item 1 ('nope') is not a UUID"),
        (f"{a}{a}", "is not a UUID"),
        (",".join(str(uuid.uuid4()) for _ in range(101)), "at most 100 users, not 101"),
    ):
        with pytest.raises(Invalid, match=r"field 'users'") as caught:
            parse_users(raw)
        assert reason in str(caught.value)


def change(board: str, period: str, epoch: str, version: int, scores: list[int]) -> bytes:
    top = [
        RankedEntry(rank=i + 1, user_id=uuid.UUID(int=i + 1), username=f"p{i}", score=s)
        for i, s in enumerate(scores)
    ]
    return BoardChanged(
        board=board, epoch=epoch, version=version, top=top, changed=[], at=NOV23, period=period
    ).to_bytes()


async def test_the_feed_follows_the_current_period_with_shared_ranks(make_ports: Any) -> None:
    p = make_ports()
    now = [datetime(2026, 11, 23, 23, 59, 59, tzinfo=UTC)]
    p.periods.clock = lambda: now[0]
    feed = ChangeFeed(p.settings, "changes", p.settings.boards, p.hub, p.reader, 5.0, p.periods)
    feed._apply(change("daily", "2026-11-23", "e23", 3, [9, 8, 8, 7]))
    state = p.hub.current("daily")
    assert state is not None and [e["sharedRank"] for e in state.top] == [1, 2, 2, 4]
    assert feed.period_of(state) == "2026-11-23"
    feed._apply(change("daily", "2026-11-24", "e24", 1, []))  # the rollover: a new epoch, empty
    assert (p.hub.current("daily").epoch, p.hub.current("daily").top) == ("e24", [])
    feed._apply(change("daily", "2026-11-23", "e23", 4, [10]))  # late: ignored
    feed._apply(change("daily", "2026-11-22", "e22", 9, [10]))
    assert p.hub.current("daily").epoch == "e24"


async def test_the_hot_path_serves_only_the_current_periods_state(make_ports: Any) -> None:
    p = make_ports()
    now = [datetime(2026, 11, 23, 12, tzinfo=UTC)]
    p.periods.clock = lambda: now[0]
    p.feed.periods = p.periods
    p.feed._apply(change("daily", "2026-11-23", "e23", 3, [9, 8, 8, 7]))
    app = FastAPI()
    app.add_middleware(TopReads)
    app.state.ports = p
    routed: list[str] = []

    @app.get("/api/v1/leaderboard")
    async def route() -> dict[str, str]:
        routed.append("route")
        return {"from": "route"}

    async def zcard(key: str) -> int:
        assert key.endswith(":board:daily:2026-11-23:rank")
        return 4

    p.redis.zcard = zcard  # the one Redis call of a hub-served page (the Redis in unit tests is closed)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b.test") as c:
        r = await c.get("/api/v1/leaderboard?board=daily&limit=4")
        body = r.json()
        assert (body["period"], body["resetsAt"], body["total"]) == (
            "2026-11-23",
            "2026-11-24T00:00:00.000Z",
            4,
        )
        assert [e["sharedRank"] for e in body["leaderboard"]] == [1, 2, 2, 4]
        assert r.headers["etag"] == 'W/"2026-11-23.e23.3"' and routed == []
        assert (await c.get("/api/v1/leaderboard?board=daily&period=2026-11-23")).json() == {"from": "route"}
        now[0] = datetime(2026, 11, 24, 0, 0, 1, tzinfo=UTC)  # midnight passed, no new epoch yet
        read: list[str] = []

        async def page(*args: Any, period: str = "all", **kwargs: Any) -> None:
            read.append(period)  # Redis has no meta for the new period yet

        p.reader.page = page
        r = await c.get("/api/v1/leaderboard?board=daily&limit=4")
        body = r.json()
        assert (body["period"], body["leaderboard"], body["version"]) == ("2026-11-24", [], 0)
        assert read == ["2026-11-24"] and routed == ["route"]  # the hub's day before is not served
    assert p.hub.current("daily").epoch == "e23"

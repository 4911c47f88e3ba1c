"""The board catalog and its window maths (issue 10): every boundary with an injected instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from leaderboard.common.boards import ALL, BoardCatalog, BoardSpec, UnknownPeriod, system_clock

MS = timedelta(milliseconds=1)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def board(window: str, **kw: object) -> BoardSpec:
    return BoardSpec.model_validate({"id": f"b-{window}", "window": window, **kw})


def test_the_default_catalog_is_the_issues() -> None:
    c = BoardCatalog.load()
    assert [b.id for b in c] == ["global", "daily", "weekly", "best-match"]
    g, d, w, b = (c.boards[i] for i in ("global", "daily", "weekly", "best-match"))
    assert (g.rule, g.order, g.window, g.types) == ("sum", "desc", "all", None)
    assert (d.rule, d.window, w.rule, w.window) == ("sum", "daily", "sum", "weekly")
    assert (b.rule, b.window, b.types) == ("best", "all", frozenset({"match_won"}))
    fed = c.fed_by("match_won", at(2026, 11, 23, 12))
    assert [(s.id, p.id) for s, p in fed] == [
        ("global", "all"),
        ("daily", "2026-11-23"),
        ("weekly", "2026-W48"),
        ("best-match", "all"),
    ]
    assert [s.id for s, _ in c.fed_by("quest", at(2026, 11, 23))] == ["global", "daily", "weekly"]


def test_daily_rolls_over_at_midnight_utc() -> None:
    d = board("daily")
    midnight = at(2026, 11, 24)
    before, after = d.period_at(midnight - MS), d.period_at(midnight)
    assert before is not None and after is not None
    assert before.id == "2026-11-23" and after.id == "2026-11-24"  # an event just after the boundary
    assert before.resets_at == midnight == after.start
    assert d.period_at(datetime(2026, 11, 24, 1, 0, tzinfo=UTC) + timedelta(hours=-2)) == before
    # another time zone's wall clock is converted: 00:30 in UTC+1 is still 23:30 UTC the day before
    from datetime import timezone

    plus_one = datetime(2026, 11, 24, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert d.period_at(plus_one) == before


def test_weekly_is_the_iso_week_from_monday_across_years() -> None:
    w = board("weekly")
    monday = at(2026, 11, 23)  # a Monday
    assert w.period_at(monday - MS).id == "2026-W47"  # type: ignore[union-attr]
    p = w.period_at(monday)
    assert p is not None and p.id == "2026-W48" and p.start == monday and p.end == at(2026, 11, 30)
    # 2026 has 53 ISO weeks: Thursday 2026-12-31 is in 2026-W53, which runs to Monday 2027-01-04
    w53 = w.period_at(at(2026, 12, 31, 23, 59))
    assert w53 is not None and w53.id == "2026-W53"
    assert (w53.start, w53.end) == (at(2026, 12, 28), at(2027, 1, 4))
    assert w.period_at(at(2027, 1, 3, 23, 59, 59)) == w53  # a Sunday of 2027 still in 2026-W53
    assert w.period_at(at(2027, 1, 4)).id == "2027-W01"  # type: ignore[union-attr]
    # 2025-12-29 (Monday) starts 2026-W01: the ISO year, not the calendar year
    assert w.period_at(at(2025, 12, 29)).id == "2026-W01"  # type: ignore[union-attr]
    assert w.period("2027-W01").start == at(2027, 1, 4)
    with pytest.raises(UnknownPeriod):
        w.period("2027-W53")  # 2027 has 52 weeks
    assert w.next_period(w53) == w.period("2027-W01")


def test_monthly_rolls_over_on_the_first() -> None:
    m = board("monthly")
    assert m.period_at(at(2026, 12, 1) - MS).id == "2026-11"  # type: ignore[union-attr]
    dec = m.period_at(at(2026, 12, 1))
    assert dec is not None and dec.id == "2026-12" and dec.end == at(2027, 1, 1)
    feb = m.period("2028-02")
    assert (feb.start, feb.end) == (at(2028, 2, 1), at(2028, 3, 1))  # a leap year's February
    assert m.period_at(at(2028, 2, 29, 23, 59)) == feb


def test_seasons_have_their_own_ids_and_bounds() -> None:
    s = board(
        "season",
        seasons=[
            {"id": "s2", "start": at(2026, 4, 1), "end": at(2026, 7, 1)},
            {"id": "s1", "start": at(2026, 1, 1), "end": at(2026, 4, 1)},
        ],
        keep=1,
    )
    assert [x.id for x in s.seasons] == ["s1", "s2"]  # kept in time order
    assert s.period_at(at(2025, 12, 31, 23, 59)) is None  # before the first season: no period
    assert s.period_at(at(2026, 1, 1)).id == "s1"  # type: ignore[union-attr]
    assert s.period_at(at(2026, 4, 1) - MS).id == "s1"  # type: ignore[union-attr]
    assert s.period_at(at(2026, 4, 1)).id == "s2"  # type: ignore[union-attr]
    assert s.period_at(at(2026, 7, 1)) is None  # the end is exclusive
    assert s.period("s2").resets_at == at(2026, 7, 1)
    assert s.previous(s.period("s2"), 5) == [s.period("s1")]
    assert s.expires_at(s.period("s1")) is None  # no season after s2: it stays
    assert s.next_period(s.period("s2")) is None
    with pytest.raises(UnknownPeriod):
        s.period("s3")


@pytest.mark.parametrize(
    ("seasons", "message"),
    [
        ([], "seasons are given"),
        ([{"id": "s1", "start": at(2026, 2, 1), "end": at(2026, 1, 1)}], "must end after"),
        (
            [
                {"id": "a", "start": at(2026, 1, 1), "end": at(2026, 3, 1)},
                {"id": "b", "start": at(2026, 2, 1), "end": at(2026, 4, 1)},
            ],
            "overlap",
        ),
        ([{"id": "all", "start": at(2026, 1, 1), "end": at(2026, 2, 1)}], "cannot be called"),
    ],
)
def test_bad_seasons_are_refused(seasons: list[object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        board("season", seasons=seasons)


def test_all_time_has_one_period() -> None:
    g = board("all")
    p = g.period_at(at(1999, 1, 1))
    assert p is not None and p.id == ALL and p.start is None and p.resets_at is None
    assert g.period(ALL) == p and g.previous(p, 3) == [] and g.kept(p, at(2100, 1, 1))
    with pytest.raises(UnknownPeriod):
        g.period("2026-11-23")


@pytest.mark.parametrize(
    ("window", "text"),
    [
        ("daily", "2026-1-5"),
        ("daily", "2026-02-30"),
        ("daily", "2026-W47"),
        ("daily", "all"),
        ("weekly", "2026-W00"),
        ("weekly", "2026-W7"),
        ("monthly", "2026-13"),
        ("monthly", "2026-11-01"),
        ("daily", "../etc"),
    ],
)
def test_period_ids_are_parsed_strictly(window: str, text: str) -> None:
    with pytest.raises(UnknownPeriod):
        board(window).period(text)


def test_previous_periods_and_what_redis_keeps() -> None:
    d = board("daily", keep=2)
    today = d.period("2026-11-23")
    assert [p.id for p in d.previous(today, 3)] == ["2026-11-22", "2026-11-21", "2026-11-20"]
    # 2026-11-23 is current on the 23rd, then one of the 2 kept past days on the 24th and 25th
    assert d.expires_at(today) == at(2026, 11, 26)
    assert d.kept(today, at(2026, 11, 25, 23, 59)) and not d.kept(today, at(2026, 11, 26))
    assert d.queryable(today, at(2026, 11, 23)) and not d.queryable(d.period("2026-11-24"), at(2026, 11, 23))
    assert d.past(today, at(2026, 11, 24)) and not d.past(today, at(2026, 11, 24) - MS)
    w = board("weekly", keep=0)
    assert w.expires_at(w.period("2026-W53")) == at(2027, 1, 4)  # keep 0: gone at its own reset


def test_catalog_files_are_checked() -> None:
    text = '[[boards]]\nid = "laps"\nrule = "best"\norder = "asc"\nwindow = "monthly"\ntypes = ["lap"]\n'
    laps = BoardCatalog.parse(text).boards["laps"]
    assert laps.ascending and laps.feeds("lap") and not laps.feeds("quest")
    for bad in (
        '[[boards]]\nid = "Bad:Id"\n',
        '[[boards]]\nid = "x"\nrule = "max"\n',
        '[[boards]]\nid = "x"\nunknown = 1\n',
        '[[boards]]\nid = "x"\n[[boards]]\nid = "x"\n',
        '[[boards]]\nid = "x"\ntypes = []\n',
        "boards = []\n",
    ):
        with pytest.raises(ValueError):
            BoardCatalog.parse(bad)


def test_the_system_clock_takes_an_offset() -> None:
    ahead = system_clock(3600)()
    assert ahead.tzinfo is not None
    assert timedelta(minutes=59) < ahead - datetime.now(UTC) <= timedelta(hours=1)

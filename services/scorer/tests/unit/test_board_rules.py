"""The board rules in the scorer's domain (issue 10): sum, best and latest, on desc and asc boards,
fed by type and placed in the period of the event's acceptedAt."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from leaderboard.common.boards import BoardCatalog
from leaderboard.common.events import ActionCompleted, epoch_ms
from leaderboard.scorer.domain import Entry, apply_rule, entry_keys, fold_entries

T0 = datetime(2026, 11, 23, 23, 59, 59, 999_000, tzinfo=UTC)
USER = uuid.UUID("00000000-0000-4000-8000-000000000007")
CATALOG = BoardCatalog.parse(
    """
[[boards]]
id = "global"
[[boards]]
id = "daily"
window = "daily"
[[boards]]
id = "best-match"
rule = "best"
types = ["match_won"]
[[boards]]
id = "fastest-lap"
rule = "best"
order = "asc"
types = ["lap"]
[[boards]]
id = "last-lap"
rule = "latest"
order = "asc"
types = ["lap"]
"""
)


def event(points: int, at: datetime = T0, action_type: str = "match_won", **kw: Any) -> ActionCompleted:
    return ActionCompleted(
        event_id=uuid.uuid4(),
        action_id=uuid.uuid4(),
        user_id=USER,
        username="ada",
        action_type=action_type,
        points=points,
        occurred_at=at,
        accepted_at=at,
        source="service",
        request_id="r",
        **kw,
    )


def scores(changed: dict[tuple[str, str, str], Entry]) -> dict[tuple[str, str], int]:
    return {(b, p): e.score for (b, p, _), e in changed.items()}


def test_match_won_30_80_50_is_80_on_best_match_and_the_sum_elsewhere() -> None:
    events = [event(p, T0 - timedelta(hours=1) + timedelta(seconds=i)) for i, p in enumerate((30, 80, 50))]
    changed = fold_entries(CATALOG, events, {})
    assert scores(changed) == {
        ("global", "all"): 160,
        ("daily", "2026-11-23"): 160,
        ("best-match", "all"): 80,
    }
    best = changed[("best-match", "all", str(USER))]
    assert best.reached_ms == epoch_ms(events[1].accepted_at) and best.action_id == events[1].action_id


@pytest.mark.parametrize(
    ("rule", "ascending", "points", "score", "setter"),
    [
        ("sum", False, [30, 80, 50], 160, 2),
        ("sum", True, [30, 80, 50], 160, 2),
        ("best", False, [30, 80, 50], 80, 1),
        ("best", True, [30, 80, 50], 30, 0),
        ("best", False, [80, 80], 80, 0),  # a tie keeps the event that reached it first
        ("best", True, [30, 30], 30, 0),
        ("latest", False, [30, 80, 50], 50, 2),
        ("latest", True, [30, 80, 50], 50, 2),
    ],
)
def test_each_rule_in_each_order(
    rule: Any, ascending: bool, points: list[int], score: int, setter: int
) -> None:
    events = [event(p, T0 + timedelta(seconds=i), metadata={"n": i}) for i, p in enumerate(points)]
    entry: Entry | None = None
    for e in events:
        entry = apply_rule(rule, ascending, entry, e) or entry
    assert entry is not None and entry.score == score
    assert entry.reached_ms == epoch_ms(events[setter].accepted_at)
    assert entry.action_id == events[setter].action_id and entry.metadata == {"n": setter}


def test_best_reports_no_change_when_the_event_is_not_better() -> None:
    held = Entry(80, 1, None, {"keep": True}, version=4)
    assert apply_rule("best", False, held, event(50)) is None
    assert apply_rule("best", True, Entry(30, 1, None, None), event(50)) is None
    better = apply_rule("best", False, held, event(90))
    assert better is not None and better.version == 4  # the store bumps the version when writing


def test_sum_keeps_the_newest_metadata_sent() -> None:
    first = apply_rule("sum", False, None, event(10, metadata={"map": "a"}))
    second = apply_rule("sum", False, first, event(5))
    assert second is not None and second.score == 15 and second.metadata == {"map": "a"}
    third = apply_rule("sum", False, second, event(5, metadata={"map": "b"}))
    assert third is not None and third.metadata == {"map": "b"}


def test_types_choose_the_boards_and_accepted_at_the_period() -> None:
    quest = event(10, action_type="quest")
    assert [k[:2] for k in entry_keys(CATALOG, quest)] == [("global", "all"), ("daily", "2026-11-23")]
    lap = event(61, action_type="lap")
    assert {k[0] for k in entry_keys(CATALOG, lap)} == {"global", "daily", "fastest-lap", "last-lap"}
    # one millisecond later is the next day: an event just after the boundary opens the new period
    late = event(10, T0 + timedelta(milliseconds=1), action_type="quest")
    assert entry_keys(CATALOG, late)[1][:2] == ("daily", "2026-11-24")


def test_a_batch_across_midnight_feeds_two_daily_periods_and_one_global_entry() -> None:
    events = [event(10, T0, "quest"), event(20, T0 + timedelta(seconds=1), "quest")]
    changed = fold_entries(CATALOG, events, {("daily", "2026-11-23", str(USER)): Entry(5, 0, None, None, 3)})
    assert scores(changed) == {
        ("global", "all"): 30,
        ("daily", "2026-11-23"): 15,
        ("daily", "2026-11-24"): 20,
    }
    assert changed[("daily", "2026-11-23", str(USER))].version == 3

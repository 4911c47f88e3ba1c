"""The demo traffic keeps every player within the catalog's per-hour caps."""

from __future__ import annotations

from leaderboard.cli.simulate import HourlyBudget


def test_a_capped_type_stops_at_its_cap_per_player_and_frees_up_after_an_hour() -> None:
    budget = HourlyBudget({"boss_defeated": 2, "quest": 0})
    assert budget.take("a", "boss_defeated", now=0.0)
    assert budget.take("a", "boss_defeated", now=10.0)
    assert not budget.take("a", "boss_defeated", now=20.0)
    assert budget.take("b", "boss_defeated", now=20.0)  # per player
    assert all(budget.take("a", "quest", now=30.0) for _ in range(100))  # 0 = uncapped
    assert budget.take("a", "boss_defeated", now=3600.0)  # the first one left the window
    assert not budget.take("a", "boss_defeated", now=3600.5)

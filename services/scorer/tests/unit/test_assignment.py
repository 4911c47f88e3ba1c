"""The partitions a scorer holds (``assignment``): the gauges follow every assignment and revocation,
and only the actions topic counts (through the running scorer: ``integration/test_assignment_live.py``)."""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client import REGISTRY

from leaderboard.scorer.assignment import Assignment

TOPIC = "unit.leaderboard.actions.v1"


class TP(NamedTuple):
    topic: str
    partition: int


def shown(name: str) -> dict[int, float]:
    """The partitions a gauge of the default registry has a value for."""
    return {
        int(s.labels["partition"]): s.value
        for metric in REGISTRY.collect()
        if metric.name == name
        for s in metric.samples
    }


def tps(*partitions: int, topic: str = TOPIC) -> set[TP]:
    return {TP(topic, p) for p in partitions}


def test_assigned_partitions_are_shown_and_revoked_ones_dropped_with_their_lag() -> None:
    held = Assignment(TOPIC)
    held.assigned(tps(0, 1, 2, 3) | tps(9, topic="other"))
    assert held.held == {0, 1, 2, 3}
    assert shown("scorer_assigned_partitions") == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
    held.observe_lag(1, 5)
    held.observe_lag(3, -2)  # a highwater behind the offset read counts as caught up
    assert shown("scorer_consumer_lag") == {1: 5.0, 3: 0.0}

    held.revoked(tps(1, 2))
    assert shown("scorer_assigned_partitions") == {0: 1.0, 3: 1.0}
    assert shown("scorer_consumer_lag") == {3: 0.0}

    held.assigned(tps(3, 4))  # a new assignment replaces the old one
    assert shown("scorer_assigned_partitions") == {3: 1.0, 4: 1.0}
    assert shown("scorer_consumer_lag") == {3: 0.0}
    held.revoked(tps(3, 4))
    assert shown("scorer_assigned_partitions") == {} and shown("scorer_consumer_lag") == {}

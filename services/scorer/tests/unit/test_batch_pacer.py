"""The scorer's batch pacing (issue 12): no rest under a light load, a rest that fills the next batch
to its target under a heavy one, never longer than the maximum wait."""

from __future__ import annotations

import pytest

from leaderboard.scorer.domain import BatchPacer


def steady(pacer: BatchPacer, per_s: float, batches: int, apply_s: float) -> float:
    """Feed ``batches`` batches of records arriving at ``per_s``/s, each taken after the window and
    applied in ``apply_s``, resting as told; the last rest."""
    now, last, rest = 0.0, 0.0, 0.0
    for _ in range(batches):
        now += pacer.window_s
        pacer.taken(max(1, round(per_s * (now - last))), now)
        last = now
        now += apply_s
        rest = pacer.rest(now)
        now += rest
    return rest


def test_the_first_batch_never_rests() -> None:
    pacer = BatchPacer(0.005, 32, 0.05)
    pacer.taken(2000, 10.0)
    assert pacer.rest(10.01) == 0.0


@pytest.mark.parametrize("per_s", [10, 100, 500, 600])
def test_a_light_load_keeps_the_short_window(per_s: int) -> None:
    """32 records take longer than 50 ms to arrive below 640/s: no rest, batches go at once."""
    assert steady(BatchPacer(0.005, 32, 0.05), per_s, 50, apply_s=0.01) == 0.0


@pytest.mark.parametrize("per_s", [1_000, 2_000])
def test_a_heavy_load_rests_until_the_target_is_due(per_s: int) -> None:
    pacer = BatchPacer(0.005, 32, 0.05)
    rest = steady(pacer, per_s, 80, apply_s=0.005)
    assert rest == pytest.approx(32 / per_s - 0.005 - 0.005, rel=0.1)
    assert 0 < rest <= 0.05
    assert pacer.rate == pytest.approx(per_s, rel=0.1)


def test_a_slow_batch_leaves_nothing_to_rest() -> None:
    """When applying the batch already took as long as the target needs, the next goes at once."""
    pacer = BatchPacer(0.005, 32, 0.05)
    assert steady(pacer, 3_000, 40, apply_s=0.04) == 0.0


def test_a_backlog_is_taken_without_rest() -> None:
    """Catch-up: full batches back to back mean a huge rate, and the target is due at once."""
    pacer = BatchPacer(0.005, 32, 0.05)
    now = 0.0
    for _ in range(20):
        now += 0.2
        pacer.taken(2000, now)
        assert pacer.rest(now + 0.15) == 0.0

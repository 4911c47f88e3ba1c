import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leaderboard.common.ranking import MAX_SCORE, RankKey, decode_top, ranked_entries, sort_key

uuids = st.uuids().map(str)
keys = st.builds(RankKey, st.integers(0, MAX_SCORE), st.integers(0, 10**13 - 1), uuids)


@given(keys)
def test_member_round_trips(key: RankKey) -> None:
    assert RankKey.parse(key.member()) == key


@given(st.lists(keys, min_size=2, max_size=30))
def test_lexicographic_member_order_is_the_board_order(ks: list[RankKey]) -> None:
    by_member = sorted(ks, key=lambda k: k.member())
    by_rule = sorted(ks, key=lambda k: sort_key(k.score, k.reached_ms, k.user_id))
    assert by_member == by_rule


def test_ties_break_by_reached_time_then_user_id() -> None:
    a, b = sorted([str(uuid.uuid4()), str(uuid.uuid4())])
    early_b = RankKey(100, 1_000, b)
    late_a = RankKey(100, 2_000, a)
    same_time_a = RankKey(100, 1_000, a)
    higher = RankKey(101, 9_999, b)
    ordered = sorted([late_a, early_b, same_time_a, higher], key=lambda k: k.member())
    assert ordered == [higher, same_time_a, early_b, late_a]


def test_scores_beyond_a_double_stay_exact() -> None:
    big = 2**62 + 1
    assert RankKey.parse(RankKey(big, 0, str(uuid.uuid4())).member()).score == big
    assert RankKey(big, 0, "x").member() < RankKey(big - 1, 0, "x").member()


@pytest.mark.parametrize("score,reached", [(-1, 0), (MAX_SCORE + 1, 0), (0, -1), (0, 10**13)])
def test_out_of_range_refused(score: int, reached: int) -> None:
    with pytest.raises(ValueError):
        RankKey(score, reached, "u").member()


def test_decode_top_and_entries() -> None:
    users = [str(uuid.uuid4()) for _ in range(3)]
    members = [RankKey(random.randint(0, 1000), 5, u).member() for u in users]
    members.sort()
    flat = []
    for m, name in zip(members, ["a", "b", "c"], strict=True):
        flat += [m, name]
    import json

    pairs = decode_top(json.dumps(flat))
    entries = ranked_entries(pairs)
    assert [e.rank for e in entries] == [1, 2, 3]
    assert [e.username for e in entries] == ["a", "b", "c"]
    assert decode_top("{}") == [] and decode_top(None) == []

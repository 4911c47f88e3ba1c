"""The board key layout owned by ``leaderboard.common.boardkeys``: byte-identical to the keys that
deployments hold today, a period appended only when set, and the offsets Lua gets formatted in."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leaderboard.common import ranking
from leaderboard.common.boardkeys import (
    DEFAULT_BOARD,
    LUA,
    MEMBER_USER_OFFSET,
    BoardKeys,
)
from leaderboard.common.ranking import MAX_SCORE, RankKey


def test_todays_keys_are_byte_identical() -> None:
    k = BoardKeys("lb-test", "global")
    # The literals that the scorer, the broadcaster and the CLI wrote before this module existed.
    assert k.rank == "lb-test:board:global:rank"
    assert k.members == "lb-test:board:global:member"
    assert k.names == "lb-test:board:global:names"
    assert k.meta == "lb-test:board:global:meta"
    assert k.versions == "lb-test:board:global:ver"
    assert k.rebuild_lock == "lb-test:board:global:rebuild-lock"
    assert k.data == (k.rank, k.members, k.names, k.meta, k.versions)


def test_rebuild_keys_are_the_old_aside_names_and_stay_in_the_board() -> None:
    aside = BoardKeys("lb", "global").rebuild_keys("0a1b2c3d")
    # formerly BoardKeys(prefix, f"{board}:rebuild:{token}") and an f-string for its versions
    assert aside.rank == "lb:board:global:rebuild:0a1b2c3d:rank"
    assert aside.members == "lb:board:global:rebuild:0a1b2c3d:member"
    assert aside.names == "lb:board:global:rebuild:0a1b2c3d:names"
    assert aside.versions == "lb:board:global:rebuild:0a1b2c3d:ver"
    with pytest.raises(ValueError):
        aside.rebuild_keys("again")


def test_a_period_is_appended_only_when_set() -> None:
    daily = BoardKeys("lb", "daily", period="2026-11-23")
    assert daily.rank == "lb:board:daily:2026-11-23:rank"
    assert daily.versions == "lb:board:daily:2026-11-23:ver"
    assert daily.rebuild_lock == "lb:board:daily:2026-11-23:rebuild-lock"
    assert daily.rebuild_keys("t").meta == "lb:board:daily:2026-11-23:rebuild:t:meta"
    assert BoardKeys("lb", "daily").rank == "lb:board:daily:rank"
    # two periods of one board never share a key
    assert not set(daily.data) & set(BoardKeys("lb", "daily", period="2026-11-24").data)


def test_defaults_and_the_old_import_path() -> None:
    assert DEFAULT_BOARD == "global" == ranking.GLOBAL_BOARD == ranking.DEFAULT_BOARD
    assert ranking.BoardKeys is BoardKeys


@given(st.integers(0, MAX_SCORE), st.integers(0, 10**13 - 1), st.uuids())
def test_the_lua_offset_finds_the_user_id_in_a_rank_member(score: int, ms: int, user: uuid.UUID) -> None:
    member = RankKey(score, ms, str(user)).member()
    assert member[MEMBER_USER_OFFSET:] == str(user)
    # Lua's string.sub(m, i) is 1-based: the substring from the i-th character on.
    start = LUA["member_user_start"]
    assert member[start - 1 :] == str(user)
    assert start == 35  # the number the scorer's script held before

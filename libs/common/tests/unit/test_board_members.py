"""Rank members of asc boards, the keys of a board's periods, entry metadata and BoardChanged's period
(issue 10)."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import ValidationError

from leaderboard.common.boardkeys import BoardKeys
from leaderboard.common.events import (
    ActionCompleted,
    BoardChanged,
    decode_action,
    decode_board_changed,
    now_ms,
)
from leaderboard.common.ranking import RankKey, ranked_entries, sort_key

U1, U2 = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"


def test_desc_members_are_unchanged_and_asc_members_put_the_lowest_first() -> None:
    desc = RankKey(1234, 1_700_000_000_000, U1)
    assert desc.member() == f"{2**63 - 1 - 1234:019d}:1700000000000:{U1}"  # the global board's bytes
    keys = [
        RankKey(s, t, u, ascending=True) for s, t, u in [(90, 5, U1), (30, 9, U2), (30, 7, U2), (30, 7, U1)]
    ]
    members = sorted(k.member() for k in keys)
    parsed = [RankKey.parse(m, ascending=True) for m in members]
    assert [(k.score, k.reached_ms, k.user_id) for k in parsed] == [
        (30, 7, U1),  # lowest score; then earliest; then smallest userId
        (30, 7, U2),
        (30, 9, U2),
        (90, 5, U1),
    ]
    assert sorted(keys, key=lambda k: sort_key(k.score, k.reached_ms, k.user_id, ascending=True)) == parsed
    assert len({len(m) for m in members}) == 1 and len(members[0]) == len(desc.member())
    entries = ranked_entries([(members[0], "lap-king")], ascending=True)
    assert (entries[0].rank, entries[0].score, entries[0].username) == (1, 30, "lap-king")


def test_each_period_has_its_own_keys_and_all_time_keeps_the_old_ones() -> None:
    assert BoardKeys.of("lb", "global", "all") == BoardKeys("lb", "global")
    assert BoardKeys.of("lb", "global", "all").rank == "lb:board:global:rank"
    daily = BoardKeys.of("lb", "daily", "2026-11-23")
    assert daily.rank == "lb:board:daily:2026-11-23:rank" and daily.meta == "lb:board:daily:2026-11-23:meta"
    assert daily.rebuild_keys("t").rank == "lb:board:daily:2026-11-23:rebuild:t:rank"
    assert BoardKeys("lb", "daily").current_period == "lb:board:daily:current-period"
    assert daily.current_period not in daily.data


def _action(**extra: object) -> ActionCompleted:
    at = now_ms()
    return ActionCompleted(
        event_id=uuid.uuid4(),
        action_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        username="ada",
        action_type="match_won",
        points=30,
        occurred_at=at,
        accepted_at=at,
        source="service",
        request_id="r",
        **extra,
    )


def test_metadata_is_optional_and_left_out_when_absent() -> None:
    plain = _action()
    assert "metadata" not in json.loads(plain.to_bytes())  # events without it encode as before
    assert decode_action(plain.to_bytes()).metadata is None
    rich = _action(
        metadata={"map": "dust", "kills": 12, "replay": {"id": "r-1", "ok": True}, "tags": ["a", None]}
    )
    assert decode_action(rich.to_bytes()) == rich
    assert json.loads(rich.to_bytes())["metadata"]["replay"] == {"id": "r-1", "ok": True}


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"note": "x" * 1100}, "at most 1024 bytes"),
        ({"k": "nul \x00 inside"}, "control character"),
        ({"bad\x00key": 1}, "control character"),
        ({"deep": [{"s": "\ud800"}]}, "surrogate"),
        ({"n": float("nan")}, "finite"),
    ],
)
def test_metadata_is_bounded_and_store_safe(metadata: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _action(metadata=metadata)
    raw = json.loads(_action().to_bytes())
    raw["metadata"] = "not an object"
    with pytest.raises(ValidationError):
        decode_action(json.dumps(raw).encode())


def test_board_changed_carries_its_period_and_older_announcements_are_all_time() -> None:
    change = BoardChanged(
        board="daily", period="2026-11-23", epoch="e", version=1, top=[], changed=[], at=now_ms()
    )
    assert decode_board_changed(change.to_bytes()).period == "2026-11-23"
    older = json.loads(change.to_bytes())
    del older["period"]  # what a scorer before boards wrote
    assert decode_board_changed(json.dumps(older).encode()).period == "all"

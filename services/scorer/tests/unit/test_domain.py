"""The scorer's pure rules: decoding, in-batch dedupe, board diffs, velocity caps, rank-key order."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from leaderboard.common.events import ActionCompleted, RankedEntry, epoch_ms
from leaderboard.common.ranking import MAX_SCORE, RankKey, sort_key
from leaderboard.scorer.domain import (
    Decoded,
    Record,
    ScoreRow,
    TopChange,
    VelocityCap,
    changed_entries,
    decode_batch,
    first_occurrences,
    merge_changes,
    velocity_caps,
    velocity_verdicts,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def action(
    user: uuid.UUID | None = None,
    *,
    points: int = 50,
    action_type: str = "quest",
    at: datetime = T0,
    action_id: uuid.UUID | None = None,
) -> ActionCompleted:
    return ActionCompleted(
        event_id=uuid.uuid4(),
        action_id=action_id or uuid.uuid4(),
        user_id=user or uuid.uuid4(),
        username="Player",
        action_type=action_type,
        points=points,
        occurred_at=at,
        accepted_at=at,
        source="service",
        request_id="r",
    )


def record(event: ActionCompleted, offset: int = 0, key: bytes | None = None) -> Record:
    return Record("t", 0, offset, key if key is not None else str(event.user_id).encode(), event.to_bytes())


def decoded(event: ActionCompleted, offset: int = 0) -> Decoded:
    return Decoded(record(event, offset), event)


# decode_batch ------------------------------------------------------------------------------------


def test_decode_batch_separates_good_from_bad_and_keeps_order() -> None:
    a, b = action(), action()
    records = [
        record(a, 0),
        Record("t", 0, 1, b"k", b"\xff\xfe not json"),
        Record("t", 0, 2, b"k", b"[1, 2]"),
        Record("t", 0, 3, b"k", json.dumps({"schemaVersion": 2}).encode()),
        Record("t", 0, 4, b"k", json.dumps({**json.loads(a.to_bytes()), "points": -5}).encode()),
        Record("t", 0, 5, b"k", json.dumps({**json.loads(a.to_bytes()), "extra": 1}).encode()),
        record(b, 6, key=str(uuid.uuid4()).encode()),  # key is not the event's user
        record(b, 7),
    ]
    good, bad = decode_batch(records)
    assert [d.event for d in good] == [a, b]
    assert [d.record.offset for d in good] == [0, 7]
    assert [r.record.offset for r in bad] == [1, 2, 3, 4, 5, 6]
    assert all(r.error for r in bad)
    assert "schemaVersion" in bad[2].error
    assert "key" in bad[5].error


def test_decode_batch_accepts_a_missing_key() -> None:
    a = action()
    good, bad = decode_batch([Record("t", 0, 0, None, a.to_bytes())])
    assert [d.event for d in good] == [a] and not bad


# first_occurrences -------------------------------------------------------------------------------


def test_first_occurrences_keeps_the_first_in_log_order() -> None:
    same = uuid.uuid4()
    first, second, other = action(action_id=same), action(action_id=same, points=99), action()
    unique, repeats = first_occurrences([decoded(first, 0), decoded(other, 1), decoded(second, 2)])
    assert [d.event for d in unique] == [first, other]
    assert repeats == 1


@given(st.lists(st.integers(0, 5), max_size=30))
def test_first_occurrences_counts(ids: list[int]) -> None:
    pool = [uuid.UUID(int=i + 1) for i in range(6)]
    items = [decoded(action(action_id=pool[i]), n) for n, i in enumerate(ids)]
    unique, repeats = first_occurrences(items)
    assert len(unique) == len(set(ids)) and repeats == len(ids) - len(set(ids))
    assert [d.event.action_id for d in unique] == list(dict.fromkeys(pool[i] for i in ids))


# changed_entries ---------------------------------------------------------------------------------


def entry(rank: int, user: uuid.UUID, score: int, name: str = "n") -> RankedEntry:
    return RankedEntry(rank=rank, user_id=user, username=name, score=score)


def test_changed_entries_reports_moves_score_changes_renames_entries_and_exits() -> None:
    a, b, c, d, e = (uuid.uuid4() for _ in range(5))
    old = [entry(1, a, 100), entry(2, b, 90), entry(3, c, 80), entry(4, e, 70)]
    new = [entry(1, b, 110), entry(2, a, 100), entry(3, c, 80, "renamed"), entry(4, d, 75)]
    changed = changed_entries(old, new)
    assert set(changed) == {a, b, c, d, e}
    assert changed_entries(old, old) == []
    assert changed_entries([], [entry(1, a, 1)]) == [a]


# velocity caps -----------------------------------------------------------------------------------


def test_velocity_caps_from_settings() -> None:
    assert velocity_caps({"quest": (3, 1.5)}) == {"quest": VelocityCap(3, 1500)}


def test_velocity_allows_up_to_the_cap_then_quarantines() -> None:
    user = uuid.uuid4()
    caps = {"quest": VelocityCap(3, 60_000)}
    items = [decoded(action(user, at=T0 + timedelta(seconds=i)), i) for i in range(5)]
    allowed, held = velocity_verdicts(items, {}, caps)
    assert [d.record.offset for d in allowed] == [0, 1, 2]
    assert [q.item.record.offset for q in held] == [3, 4]
    assert "velocity" in held[0].reason and "quest" in held[0].reason


def test_velocity_window_slides_and_quarantined_events_do_not_count() -> None:
    user = uuid.uuid4()
    caps = {"quest": VelocityCap(2, 10_000)}
    times = [0, 1, 2, 10.5, 11, 12]  # seconds
    items = [decoded(action(user, at=T0 + timedelta(seconds=t)), i) for i, t in enumerate(times)]
    allowed, held = velocity_verdicts(items, {}, caps)
    # 0, 1 applied; 2 over; 10.5: window (0.5, 10.5] holds only 1 -> applied; 11: (1, 11] holds
    # 10.5 -> applied (1 is outside: the window is open on the left); 12: holds 10.5 and 11 -> over.
    assert [d.record.offset for d in allowed] == [0, 1, 3, 4]
    assert [q.item.record.offset for q in held] == [2, 5]


def test_velocity_counts_history_per_user_and_type_and_ignores_uncapped_types() -> None:
    user, other = uuid.uuid4(), uuid.uuid4()
    caps = {"quest": VelocityCap(2, 60_000)}
    history = {(str(user), "quest"): [epoch_ms(T0) - 30_000, epoch_ms(T0) - 90_000]}
    items = [
        decoded(action(user, at=T0), 0),  # one in the window from history -> applied (2nd)
        decoded(action(user, at=T0 + timedelta(seconds=1)), 1),  # 3rd -> over
        decoded(action(other, at=T0), 2),  # another user: own budget
        decoded(action(user, action_type="match_won", at=T0), 3),  # uncapped type
    ]
    allowed, held = velocity_verdicts(items, history, caps)
    assert [d.record.offset for d in allowed] == [0, 2, 3]
    assert [q.item.record.offset for q in held] == [1]


def test_velocity_is_deterministic_for_the_same_log() -> None:
    user = uuid.uuid4()
    caps = {"quest": VelocityCap(1, 5_000)}
    items = [decoded(action(user, at=T0 + timedelta(seconds=i)), i) for i in range(12)]
    first = velocity_verdicts(items, {}, caps)
    again = velocity_verdicts(items, {}, caps)
    assert first == again
    assert [d.record.offset for d in first[0]] == [0, 5, 10]


# ranking keys ------------------------------------------------------------------------------------


def test_rank_member_round_trips_and_is_fixed_width() -> None:
    key = RankKey(1234, 1_700_000_000_000, str(uuid.uuid4()))
    assert RankKey.parse(key.member()) == key
    assert len(key.member()) == len(RankKey(MAX_SCORE, 0, key.user_id).member())
    row = ScoreRow(key.user_id, "n", 1234, 1_700_000_000_000, 1)
    assert row.member() == key.member()


users = st.uuids().map(str)
rows = st.lists(
    st.tuples(
        st.integers(0, 5) | st.integers(0, MAX_SCORE), st.integers(0, 3) | st.integers(0, 10**13 - 1), users
    ),
    max_size=40,
)


@given(rows)
def test_lexicographic_member_order_is_the_board_order(entries: list[tuple[int, int, str]]) -> None:
    """Redis sorts equal-score members bytewise; that must equal score desc, reached asc, userId asc
    (which is Postgres' ORDER BY score DESC, reached_at ASC, user_id ASC: uuid order = lowercase hex)."""
    by_member = sorted(entries, key=lambda e: RankKey(*e).member().encode())
    by_rule = sorted(entries, key=lambda e: sort_key(*e))
    assert by_member == by_rule


def test_ties_break_by_reached_time_then_user_id() -> None:
    a, b = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
    keys = [RankKey(10, 5, b), RankKey(10, 5, a), RankKey(10, 4, b), RankKey(11, 9, b)]
    ordered = sorted(keys, key=lambda k: k.member())
    assert ordered == [RankKey(11, 9, b), RankKey(10, 4, b), RankKey(10, 5, a), RankKey(10, 5, b)]


# merge_changes -----------------------------------------------------------------------------------


def test_merge_changes_keeps_an_unsent_change_until_a_newer_one_replaces_it() -> None:
    a, b, c = [("m-a", "A")], [("m-b", "B")], [("m-c", "C")]
    unsent = TopChange("e1", 4, a, b)
    assert merge_changes(None, None) is None
    assert merge_changes(unsent, None) == unsent  # a retried batch whose script saw no change
    assert merge_changes(None, unsent) == unsent
    # Newest top and version, compared with the top readers last heard of.
    assert merge_changes(unsent, TopChange("e1", 5, b, c)) == TopChange("e1", 5, a, c)
    # A new epoch is a fresh board: nothing older to compare with.
    assert merge_changes(unsent, TopChange("e2", 1, [], c)) == TopChange("e2", 1, [], c)


def test_a_batch_is_cut_at_each_correction_in_log_order() -> None:
    """Issue 11: actions before a correction are applied before it, those after it after it."""
    import uuid as _uuid

    from leaderboard.common.events import UserActionsVoided, correction_record, now_ms
    from leaderboard.scorer.domain import Corrected, Decoded, Record, decode_log, segments

    user = _uuid.uuid4()
    void = UserActionsVoided(correction_id=_uuid.uuid4(), user_id=user, reason="r", by="a", at=now_ms())
    key, value = correction_record(void)
    recs = [Record("t", 0, i, key, v) for i, v in enumerate([b"{}", value, value])]
    good, bad = decode_log(recs)
    assert len(bad) == 1 and [type(g) for g in good] == [Corrected, Corrected]
    wrong_key = Record("t", 0, 9, b"someone-else", value)
    assert decode_log([wrong_key])[1][0].error == "record key does not match the event's userId"
    a, b = action(), action()
    items = [Decoded(recs[0], a), Decoded(recs[0], b), good[0], good[1], Decoded(recs[0], a)]
    cut = segments(items)
    assert [len(s) if isinstance(s, list) else "C" for s in cut] == [2, "C", "C", 1]

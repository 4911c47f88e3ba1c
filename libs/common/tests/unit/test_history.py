"""Corrections on the log and boards at a past moment (issue 11): the actions topic's decoder tells
actions and corrections apart (records written before corrections existed decode as they did), and
:func:`board_at` folds the history with the live rules, windows, tie order and corrections."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from pydantic import ValidationError

from leaderboard.common.boards import BoardCatalog
from leaderboard.common.events import (
    ActionCompleted,
    ActionVoided,
    UserActionsRestored,
    UserActionsVoided,
    UserRenamed,
    correction_record,
    decode_action,
    decode_log_event,
)
from leaderboard.common.history import PastAction, PastCorrection, board_at, voided_at

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday
CATALOG = BoardCatalog.load()
A, B, C = (uuid.UUID(int=n) for n in (1, 2, 3))


def action(**over: object) -> ActionCompleted:
    fields: dict[str, object] = {
        "event_id": uuid.uuid4(),
        "action_id": uuid.uuid4(),
        "user_id": A,
        "username": "ada",
        "action_type": "quest",
        "points": 5,
        "occurred_at": T0,
        "accepted_at": T0,
        "source": "service",
        "request_id": "r",
    }
    fields.update(over)
    return ActionCompleted(**fields)


def test_an_action_written_before_corrections_decodes_as_it_did() -> None:
    e = action()
    raw = e.to_bytes()
    assert b"eventType" not in raw  # what ingest writes is byte for byte what it was
    assert decode_log_event(raw) == decode_action(raw) == e
    tagged = json.dumps({**json.loads(raw), "eventType": "ActionCompleted"}).encode()
    assert cast(ActionCompleted, decode_log_event(tagged)).action_id == e.action_id


@pytest.mark.parametrize(
    "correction",
    [
        ActionVoided(
            correction_id=uuid.uuid4(), user_id=A, action_id=uuid.uuid4(), reason="r", by="adm", at=T0
        ),
        UserActionsVoided(correction_id=uuid.uuid4(), user_id=A, reason="cheat", by="adm", at=T0),
        UserActionsRestored(correction_id=uuid.uuid4(), user_id=A, reason="appeal", by="adm", at=T0),
        UserRenamed(
            correction_id=uuid.uuid4(), user_id=A, username="Ada L.", reason="asked", by="adm", at=T0
        ),
    ],
    ids=lambda c: type(c).__name__,
)
def test_corrections_round_trip_keyed_by_user(correction: object) -> None:
    assert isinstance(correction, ActionVoided | UserActionsVoided | UserActionsRestored | UserRenamed)
    key, value = correction_record(correction)
    assert key == str(A).encode()
    assert json.loads(value)["eventType"] == type(correction).__name__
    assert decode_log_event(value) == correction
    with pytest.raises((ValueError, ValidationError)):
        decode_action(value)  # not an action: the old decoder never took one for points


@pytest.mark.parametrize(
    ("patch", "why"),
    [
        ({"eventType": "ScoreDeleted"}, "unknown type"),
        ({"reason": ""}, "empty reason"),
        ({"by": "a\u0000"}, "control character"),
        ({"schemaVersion": 2}, "other version"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_bad_corrections_are_refused(patch: dict[str, object], why: str) -> None:
    _, value = correction_record(
        UserActionsVoided(correction_id=uuid.uuid4(), user_id=A, reason="r", by="a", at=T0)
    )
    with pytest.raises((ValueError, ValidationError)):
        decode_log_event(json.dumps({**json.loads(value), **patch}).encode())


def past(user: uuid.UUID, points: int, at: datetime, kind: str = "quest") -> PastAction:
    return PastAction(uuid.uuid4(), user, kind, points, at)


def scores(result: object) -> list[tuple[str, int]]:
    return [(e.user_id, e.score) for e in result.entries]  # type: ignore[attr-defined]


def test_board_at_counts_only_what_was_accepted_by_then_with_the_live_tie_order() -> None:
    actions = [
        past(B, 30, T0),
        past(A, 30, T0 + timedelta(seconds=1)),
        past(C, 50, T0 + timedelta(seconds=5)),
    ]
    early = board_at(CATALOG, "global", actions, [], T0 + timedelta(seconds=2))
    assert scores(early) == [(str(B), 30), (str(A), 30)]  # equal scores: who reached it first
    assert [e.rank for e in early.entries] == [1, 2]
    assert scores(board_at(CATALOG, "global", actions, [], T0 + timedelta(seconds=5)))[0] == (str(C), 50)


def test_board_at_uses_the_rule_and_the_window_of_the_board() -> None:
    actions = [
        past(A, 30, T0, "match_won"),
        past(A, 80, T0 + timedelta(hours=1), "match_won"),
        past(A, 50, T0 + timedelta(hours=2), "match_won"),
        past(A, 7, T0 + timedelta(days=1), "quest"),  # the next day
    ]
    late = T0 + timedelta(days=1, hours=1)
    assert scores(board_at(CATALOG, "best-match", actions, [], late)) == [(str(A), 80)]
    assert scores(board_at(CATALOG, "global", actions, [], late)) == [(str(A), 167)]
    today = board_at(CATALOG, "daily", actions, [], late)
    assert today.period == "2026-11-24" and scores(today) == [(str(A), 7)]
    monday = board_at(CATALOG, "daily", actions, [], late, period="2026-11-23")
    assert scores(monday) == [(str(A), 160)]


def test_voids_and_restores_count_from_the_moment_they_were_decided() -> None:
    a1, a2, b1 = past(A, 10, T0), past(A, 90, T0 + timedelta(seconds=1), "match_won"), past(B, 20, T0)
    actions = [a1, a2, b1]
    void = PastCorrection("UserActionsVoided", A, T0 + timedelta(minutes=1))
    restore = PastCorrection("UserActionsRestored", A, T0 + timedelta(minutes=2))
    one = PastCorrection("ActionVoided", A, T0 + timedelta(minutes=3), action_id=a2.action_id)
    history = [void, restore, one]
    assert voided_at(actions, history, T0 + timedelta(seconds=30)) == set()
    assert voided_at(actions, history, T0 + timedelta(minutes=1)) == {a1.action_id, a2.action_id}
    assert voided_at(actions, history, T0 + timedelta(minutes=2)) == set()
    assert voided_at(actions, history, None) == {a2.action_id}
    at = T0 + timedelta(minutes=1, seconds=1)
    assert scores(board_at(CATALOG, "global", actions, history, at)) == [(str(B), 20)]
    assert board_at(CATALOG, "best-match", actions, history, at).entries == []
    final = T0 + timedelta(hours=1)
    assert scores(board_at(CATALOG, "global", actions, history, final)) == [(str(B), 20), (str(A), 10)]
    assert board_at(CATALOG, "best-match", actions, history, final).entries == []  # the 90 is voided
    assert scores(board_at(CATALOG, "best-match", actions, history[:2], final)) == [(str(A), 90)]
    # A void covers only the actions accepted by its time: a later action counts.
    later = past(A, 5, T0 + timedelta(minutes=5))
    assert voided_at([*actions, later], [void], None) == {a1.action_id, a2.action_id}

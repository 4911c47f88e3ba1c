"""Pure rules behind "one bad record cannot stop scoring" and the service path's caps: which store
errors a record causes, when the scorer counts as stalled, and the caps derived from the catalog."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from leaderboard.common.catalog import Catalog
from leaderboard.common.events import ActionCompleted
from leaderboard.scorer.adapters.projection import Applied, describe, record_caused
from leaderboard.scorer.domain import (
    CapPolicy,
    Decoded,
    Record,
    ScoreRow,
    VelocityCap,
    catalog_caps,
    velocity_verdicts,
)
from leaderboard.scorer.health import Progress
from leaderboard.scorer.projector import cap_policy
from leaderboard.scorer.settings import ScorerSettings

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def item(
    user: uuid.UUID, offset: int, *, source: str = "service", action_type: str = "boss_defeated"
) -> Decoded:
    at = T0 + timedelta(seconds=offset)
    event = ActionCompleted(
        event_id=uuid.uuid4(),
        action_id=uuid.uuid4(),
        user_id=user,
        username="Player",
        action_type=action_type,
        points=200,
        occurred_at=at,
        accepted_at=at,
        source=source,
        request_id="r",
    )
    return Decoded(Record("t", 0, offset, str(user).encode(), event.to_bytes()), event)


@pytest.mark.parametrize(
    ("exc", "caused"),
    [
        (asyncpg.CheckViolationError("new row violates check constraint"), True),  # 23514
        (asyncpg.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00"), True),
        (asyncpg.NumericValueOutOfRangeError("bigint out of range"), True),  # 22003
        (asyncpg.ProgramLimitExceededError("index row size exceeds maximum"), True),  # 54000
        (asyncpg.DataError("invalid input for query argument $4"), True),  # client-side encoding
        (asyncpg.DeadlockDetectedError("deadlock detected"), False),
        (asyncpg.SerializationError("could not serialize access"), False),
        (asyncpg.AdminShutdownError("terminating connection"), False),
        (asyncpg.UndefinedTableError('relation "users" does not exist'), False),
        (asyncpg.ObjectInUseError("database is being accessed"), False),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), False),
        (OSError("connection refused"), False),
        (TimeoutError(), False),
    ],
)
def test_only_record_caused_store_errors_isolate_a_record(exc: BaseException, caused: bool) -> None:
    assert record_caused(exc) is caused


def test_the_dead_letter_names_the_sqlstate_and_the_store_message() -> None:
    error = describe(asyncpg.CheckViolationError('violates check constraint "no_poison"'))
    assert error.startswith("postgres refused the record (23514 CheckViolationError)")
    assert "no_poison" in error


def test_a_later_transaction_overrides_a_users_state_when_halves_merge() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    first = Applied([ScoreRow(a, "a", 10, 1, 1), ScoreRow(b, "b", 5, 1, 1)], 2)
    then = Applied([ScoreRow(a, "a", 30, 2, 2)], 1)
    merged = first.then(then)
    assert merged.inserted == 3
    assert {r.user_id: r.score for r in merged.rows} == {a: 30, b: 5}


def test_progress_is_ready_when_idle_or_quick_and_stalled_while_failing_or_hung() -> None:
    progress = Progress(stall_after_s=10)
    assert progress.stalled(100.0) is None  # idle
    progress.started(100.0)
    assert progress.stalled(105.0) is None  # a batch at work
    assert "in flight for 11.0s" in (progress.stalled(111.0) or "")  # hung
    progress.failed(112.0, ConnectionError("the database refuses connections"))
    reason = progress.stalled(113.0) or ""
    assert "failed for 1.0s" in reason and "refuses connections" in reason
    progress.done()
    assert progress.stalled(200.0) is None


def test_catalog_caps_cover_every_capped_type_over_one_hour() -> None:
    catalog = Catalog.load(None)
    caps = catalog_caps({t: s.per_hour for t, s in catalog.actions.items()} | {"free": 0})
    assert caps["boss_defeated"] == VelocityCap(10, 3_600_000)
    assert "free" not in caps
    assert set(caps) == {t for t, s in catalog.actions.items() if s.per_hour > 0}


def test_service_caps_hold_service_events_only_and_off_drops_them() -> None:
    policy = cap_policy(ScorerSettings(_env_file=None))
    user = uuid.uuid4()
    service = [item(user, i) for i in range(30)]
    allowed, held = velocity_verdicts(service, {}, policy)
    assert len(allowed) == 10 and len(held) == 20
    assert "over 10 boss_defeated per 3600s" in held[0].reason
    players = [item(user, i, source="player") for i in range(30)]
    assert len(velocity_verdicts(players, {}, policy)[0]) == 30  # ingest paces the player path
    off = cap_policy(ScorerSettings(_env_file=None, service_caps="off"))
    assert not off and len(velocity_verdicts(service, {}, off)[0]) == 30


def test_explicit_caps_still_apply_to_every_source_beside_the_service_caps() -> None:
    policy = CapPolicy(
        {"boss_defeated": VelocityCap(3, 60_000)}, {"boss_defeated": VelocityCap(10, 3_600_000)}
    )
    user = uuid.uuid4()
    assert len(velocity_verdicts([item(user, i) for i in range(30)], {}, policy)[0]) == 3
    players = [item(user, i, source="player") for i in range(30)]
    assert len(velocity_verdicts(players, {}, policy)[0]) == 3


def test_player_events_count_towards_a_later_service_events_cap() -> None:
    policy = CapPolicy({}, {"boss_defeated": VelocityCap(2, 3_600_000)})
    user = uuid.uuid4()
    items = [item(user, 0, source="player"), item(user, 1, source="player"), item(user, 2)]
    allowed, held = velocity_verdicts(items, {}, policy)
    assert [d.record.offset for d in allowed] == [0, 1] and [q.item.record.offset for q in held] == [2]

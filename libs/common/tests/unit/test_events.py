import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from leaderboard.common.events import (
    ActionCompleted,
    DeadLetter,
    decode_action,
    epoch_ms,
    from_epoch_ms,
    iso_ms,
    utc_ms,
)


def action(**overrides: object) -> ActionCompleted:
    fields: dict[str, object] = dict(
        event_id=uuid.uuid4(),
        action_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        username="Ada",
        action_type="quest",
        points=50,
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        accepted_at=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
        source="player",
        request_id="r1",
    )
    fields.update(overrides)
    return ActionCompleted(**fields)  # type: ignore[arg-type]


def test_wire_shape_is_camel_case_with_ms_iso_times() -> None:
    payload = json.loads(action().to_bytes())
    assert payload["schemaVersion"] == 1
    assert payload["occurredAt"] == "2026-01-02T03:04:05.678Z"
    assert {
        "eventId",
        "actionId",
        "userId",
        "username",
        "actionType",
        "points",
        "acceptedAt",
        "source",
        "requestId",
    } <= set(payload)


def test_decode_round_trip_and_upcast_point() -> None:
    e = action()
    assert decode_action(e.to_bytes()) == e
    bad = json.loads(e.to_bytes())
    bad["schemaVersion"] = 99
    with pytest.raises(ValueError):
        decode_action(json.dumps(bad).encode())


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"schemaVersion": 1}', b"\xff\xfe"])
def test_undecodable_input_raises(raw: bytes) -> None:
    with pytest.raises((ValueError, ValidationError)):
        decode_action(raw)


def test_unknown_fields_and_bad_points_refused() -> None:
    data = json.loads(action().to_bytes())
    data["extra"] = 1
    with pytest.raises(ValidationError):
        decode_action(json.dumps(data).encode())
    with pytest.raises(ValidationError):
        action(points=0)


def test_naive_datetimes_refused_and_zones_normalised() -> None:
    with pytest.raises(ValidationError):
        action(occurred_at=datetime(2026, 1, 1))
    e = action(occurred_at=datetime(2026, 1, 1, 5, 0, tzinfo=timezone(timedelta(hours=2))))
    assert e.occurred_at == datetime(2026, 1, 1, 3, 0, tzinfo=UTC)


def test_epoch_ms_is_exact() -> None:
    t = utc_ms(datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC))
    assert epoch_ms(t) % 1000 == 123
    assert from_epoch_ms(epoch_ms(t)) == t
    assert iso_ms(t).endswith(".123Z")


def test_dead_letter_keeps_raw_bytes() -> None:
    letter = DeadLetter.of("t", 1, 2, None, b"\x00\x01", "boom")
    assert json.loads(letter.to_bytes())["rawB64"] == "AAE="

"""The hot path's encoder of ActionCompleted and its event ids, beside the model (issue 12)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from leaderboard.common.events import (
    ActionCompleted,
    action_completed_bytes,
    decode_action,
    iso_ms,
    new_event_ids,
    utc_ms,
)

ODD_NAMES = ["ada", 'quo"te', "back\\slash", "ünïcödé", "emoji 😀", "slash/ and \u2028 sep", "x" * 64]
METADATA: list[dict[str, Any] | None] = [
    None,
    {},
    {"map": "spa", "lap": 3, "best": 81.25, "tags": ["a", "é", None, True, False]},
    {"big": 1e20, "small": 1e-7, "neg": -0.0, "huge": 2**70, "nested": {"k": [{"q": '"\\'}]}},
]


@pytest.mark.parametrize("username", ODD_NAMES)
@pytest.mark.parametrize("metadata", METADATA)
@pytest.mark.parametrize("source", ["player", "service"])
def test_action_completed_bytes_is_the_models_encoding(
    username: str, metadata: dict[str, Any] | None, source: Any
) -> None:
    occurred = utc_ms(datetime(2026, 3, 4, 5, 6, 7, 891_234, tzinfo=timezone(timedelta(hours=2))))
    accepted = utc_ms(datetime.now(UTC))
    ids = [uuid.uuid4() for _ in range(3)]
    model = ActionCompleted(
        event_id=ids[0],
        action_id=ids[1],
        user_id=ids[2],
        username=username,
        action_type="race.win-2",
        points=1_000_000,
        occurred_at=occurred,
        accepted_at=accepted,
        source=source,
        request_id="req-1.A_b",
        metadata=metadata,
    )
    fast = action_completed_bytes(
        event_id=str(ids[0]),
        action_id=str(ids[1]),
        user_id=str(ids[2]),
        username=username,
        action_type="race.win-2",
        points=1_000_000,
        occurred_at=iso_ms(occurred),
        accepted_at=iso_ms(accepted),
        source=source,
        request_id="req-1.A_b",
        metadata=metadata,
    )
    assert fast == model.to_bytes()
    assert decode_action(fast) == model


def test_iso_ms_is_the_same_for_utc_and_other_zones() -> None:
    instant = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert iso_ms(instant) == "2026-12-31T23:59:59.999Z"
    assert iso_ms(instant.astimezone(timezone(timedelta(hours=-5)))) == "2026-12-31T23:59:59.999Z"
    assert iso_ms(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"


def test_new_event_ids_are_distinct_canonical_version_4_uuids() -> None:
    ids = new_event_ids(2000)
    assert len(set(ids)) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert new_event_ids(0) == []

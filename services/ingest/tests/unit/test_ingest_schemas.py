"""Ingest's request bodies: camelCase only, unknown fields refused, numbers strict, strings safe
(moved here from test_ingest_domain.py with the schemas)."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from leaderboard.ingest.entrypoints import schemas as domain


def test_bodies_refuse_unknown_fields_and_snake_case_names() -> None:
    with pytest.raises(ValidationError, match="points"):
        domain.CompleteAction.model_validate({"actionId": str(uuid.uuid4()), "timestamp": 1, "points": 5})
    with pytest.raises(ValidationError):
        domain.CompleteAction.model_validate({"action_id": str(uuid.uuid4()), "timestamp": 1})
    with pytest.raises(ValidationError):  # a bool is not an epoch
        domain.CompleteAction.model_validate({"actionId": str(uuid.uuid4()), "timestamp": True})


def test_request_numbers_are_strict_and_strings_safe() -> None:
    import uuid as _uuid

    import pytest as _pytest
    from pydantic import ValidationError as _ValidationError

    from leaderboard.ingest.entrypoints.schemas import LegacyScore, ServiceEvent

    event = {
        "actionId": str(_uuid.uuid4()),
        "userId": str(_uuid.uuid4()),
        "actionType": "quest",
        "occurredAt": 1_700_000_000,
    }
    assert ServiceEvent.model_validate({**event, "points": 5}).points == 5
    for loose in ("5", 5.0, True):
        with _pytest.raises(_ValidationError):
            ServiceEvent.model_validate({**event, "points": loose})
        with _pytest.raises(_ValidationError):
            LegacyScore.model_validate({"userId": event["userId"], "increment": loose})
    for name in ("a\x00", "a\tb", "\ud800", "x" * 65):
        with _pytest.raises(_ValidationError) as caught:
            ServiceEvent.model_validate({**event, "username": name})
        assert caught.value.errors()[0]["loc"][0] == "username"
    with _pytest.raises(_ValidationError):
        ServiceEvent.model_validate({**event, "occurredAt": "2026-01-01T00:00:00Z" + " " * 60})

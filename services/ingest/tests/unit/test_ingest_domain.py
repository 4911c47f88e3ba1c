"""What ingest decides without I/O: request schemas, client times, the batch rules, catalog loading
and the mapping from a ticket's state to the client's answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from leaderboard.common.catalog import Catalog
from leaderboard.common.web import ApiError
from leaderboard.ingest import domain

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CATALOG = Catalog.load(None)


def service_event(**changes: object) -> dict[str, object]:
    e: dict[str, object] = {
        "actionId": str(uuid.uuid4()),
        "userId": str(uuid.uuid4()),
        "actionType": "quest",
        "occurredAt": "2026-03-01T11:59:00Z",
    }
    e.update(changes)
    return e


def test_bodies_refuse_unknown_fields_and_snake_case_names() -> None:
    with pytest.raises(ValidationError, match="points"):
        domain.CompleteAction.model_validate({"actionId": str(uuid.uuid4()), "timestamp": 1, "points": 5})
    with pytest.raises(ValidationError):
        domain.CompleteAction.model_validate({"action_id": str(uuid.uuid4()), "timestamp": 1})
    with pytest.raises(ValidationError):  # a bool is not an epoch
        domain.CompleteAction.model_validate({"actionId": str(uuid.uuid4()), "timestamp": True})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1772366400, NOW),
        ("2026-03-01T12:00:00Z", NOW),
        ("2026-03-01T13:00:00.123456+01:00", NOW + timedelta(milliseconds=123)),
    ],
)
def test_client_times_are_epoch_seconds_or_iso_with_a_zone(value: int | str, expected: datetime) -> None:
    assert domain.parse_client_time(value, "timestamp") == expected


@pytest.mark.parametrize("value", ["2026-03-01T12:00:00", "yesterday", 10**20])
def test_client_times_without_a_zone_or_unparsable_are_refused(value: int | str) -> None:
    with pytest.raises(ApiError) as err:
        domain.parse_client_time(value, "timestamp")
    assert err.value.status == 422 and "timestamp" in err.value.message


def test_the_time_window() -> None:
    domain.check_window(NOW + timedelta(seconds=299), NOW, 300, "t")
    with pytest.raises(ApiError, match="future"):
        domain.check_window(NOW + timedelta(seconds=301), NOW, 300, "t")
    with pytest.raises(ApiError, match="past"):
        domain.check_window(NOW - timedelta(days=8), NOW, 300, "t")
    # A completion cannot predate its ticket (beyond the skew).
    issued = NOW - timedelta(seconds=30)
    domain.check_window(issued - timedelta(seconds=100), NOW, 300, "t", not_before=issued)
    with pytest.raises(ApiError, match="past"):
        domain.check_window(issued - timedelta(seconds=301), NOW, 300, "t", not_before=issued)


def test_points_come_from_the_catalog_or_lie_within_its_bounds() -> None:
    spec = CATALOG.actions["quest"]
    assert domain.points_for(spec, None) == spec.points
    assert domain.points_for(spec, spec.max_points) == spec.max_points
    with pytest.raises(ValueError, match="points"):
        domain.points_for(spec, spec.max_points + 1)
    with pytest.raises(ApiError) as err:
        domain.spec_for(CATALOG, "teleport")
    assert err.value.code == "unknown_action_type"


def test_a_batch_counts_repeats_and_refuses_whole_naming_indices() -> None:
    a = service_event()
    batch = domain.EventBatch.model_validate({"events": [a, service_event(points=7), a]})
    checked, repeats = domain.check_batch(batch, CATALOG, NOW, 300, 1000)
    assert [c.index for c in checked] == [0, 1] and repeats == 1
    assert checked[0].points == CATALOG.actions["quest"].points and checked[1].points == 7

    bad = domain.EventBatch.model_validate(
        {"events": [service_event(), service_event(actionType="nope"), service_event(points=10**6)]}
    )
    with pytest.raises(ApiError) as err:
        domain.check_batch(bad, CATALOG, NOW, 300, 1000)
    assert err.value.status == 422 and "events[1]" in err.value.message and "events[2]" in err.value.message
    assert "events[0]" not in err.value.message

    with pytest.raises(ApiError, match="at most 2"):
        domain.check_batch(batch, CATALOG, NOW, 300, 2)


@pytest.mark.parametrize(
    ("outcome", "detail", "status", "code"),
    [
        ("not_found", "", 404, "not_found"),
        ("forbidden", "", 403, "forbidden"),
        ("used", "evt-1", 409, "ticket_used"),
        ("expired", "", 410, "ticket_expired"),
        ("too_fast", "1500", 422, "too_fast"),
        ("cap", "120000", 429, "cap_reached"),
        ("???", "", 503, "unavailable"),
    ],
)
def test_ticket_outcomes_map_to_answers(outcome: str, detail: str, status: int, code: str) -> None:
    err = domain.claim_refusal(outcome, detail)
    assert (err.status, err.code) == (status, code)
    if outcome == "used":
        assert err.extra == {"eventId": "evt-1"}
    if outcome == "cap":
        assert err.headers["Retry-After"] == "120"
    if outcome == "too_fast":
        assert "2s" in err.message  # rounded up: never tell a client to retry too early


def test_catalogs_are_validated(tmp_path: Path) -> None:
    assert {"quest", "boss_defeated", "daily_login", "match_won"} <= set(CATALOG.actions)
    path = tmp_path / "c.toml"
    path.write_text("[actions.x]\npoints = 10\nmax_points = 5\nmin_seconds = 1\nper_hour = 1\n")
    with pytest.raises(ValidationError, match="max_points"):
        Catalog.load(path)
    path.write_text("[actions.x]\npoints = 1\nmax_points = 5\nmin_seconds = 1\nper_hour = 1\nbonus = 2\n")
    with pytest.raises(ValidationError, match="bonus"):
        Catalog.load(path)
    path.write_text('[actions."Bad Name"]\npoints = 1\nmax_points = 5\nmin_seconds = 1\nper_hour = 1\n')
    with pytest.raises(ValidationError):
        Catalog.load(path)


def test_request_numbers_are_strict_and_strings_safe() -> None:
    import uuid as _uuid

    import pytest as _pytest
    from pydantic import ValidationError as _ValidationError

    from leaderboard.ingest.domain import LegacyScore, ServiceEvent

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

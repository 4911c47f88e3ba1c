"""What ingest decides without I/O: client times, the batch rules, catalog loading and the mapping
from a ticket's state to the client's answer.

The domain raises refusals (``leaderboard.ingest.errors``); what a client sees of each is the error
map's (``entrypoints.errors.api_error``), so the answers are asserted through it. The request schemas'
own tests are in test_ingest_schemas.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from leaderboard.common.catalog import Catalog
from leaderboard.common.web import ApiError
from leaderboard.ingest import domain
from leaderboard.ingest.entrypoints.errors import api_error
from leaderboard.ingest.entrypoints.schemas import EventBatch
from leaderboard.ingest.errors import DomainError

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


class Refused:
    """``pytest.raises`` for a domain refusal, whose ``value`` is the client's answer to it."""

    def __init__(self, match: str | None = None) -> None:
        self.match = match
        self.value: ApiError

    def __enter__(self) -> Refused:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        assert isinstance(exc, DomainError), f"expected a domain refusal, got {exc!r}"
        self.value = api_error(exc, retry_after_s=5)
        if self.match is not None:
            assert self.match in self.value.message, (self.match, self.value.message)
        return True


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
    with Refused() as err:
        domain.parse_client_time(value, "timestamp")
    assert err.value.status == 422 and "timestamp" in err.value.message


def test_the_time_window() -> None:
    domain.check_window(NOW + timedelta(seconds=299), NOW, 300, "t")
    with Refused(match="future"):
        domain.check_window(NOW + timedelta(seconds=301), NOW, 300, "t")
    with Refused(match="past"):
        domain.check_window(NOW - timedelta(days=8), NOW, 300, "t")
    # A completion cannot predate its ticket (beyond the skew).
    issued = NOW - timedelta(seconds=30)
    domain.check_window(issued - timedelta(seconds=100), NOW, 300, "t", not_before=issued)
    with Refused(match="past"):
        domain.check_window(issued - timedelta(seconds=301), NOW, 300, "t", not_before=issued)


def test_points_come_from_the_catalog_or_lie_within_its_bounds() -> None:
    spec = CATALOG.actions["quest"]
    assert domain.points_for(spec, None) == spec.points
    assert domain.points_for(spec, spec.max_points) == spec.max_points
    with pytest.raises(ValueError, match="points"):
        domain.points_for(spec, spec.max_points + 1)
    with Refused() as err:
        domain.spec_for(CATALOG, "teleport")
    assert err.value.code == "unknown_action_type"


def test_a_batch_counts_repeats_and_refuses_whole_naming_indices() -> None:
    a = service_event()
    batch = EventBatch.model_validate({"events": [a, service_event(points=7), a]})
    checked, repeats = domain.check_batch(batch.events, CATALOG, NOW, 300, 1000)
    assert [c.index for c in checked] == [0, 1] and repeats == 1
    assert checked[0].points == CATALOG.actions["quest"].points and checked[1].points == 7

    bad = EventBatch.model_validate(
        {"events": [service_event(), service_event(actionType="nope"), service_event(points=10**6)]}
    )
    with Refused() as err:
        domain.check_batch(bad.events, CATALOG, NOW, 300, 1000)
    assert err.value.status == 422 and "events[1]" in err.value.message and "events[2]" in err.value.message
    assert "events[0]" not in err.value.message

    with Refused(match="at most 2"):
        domain.check_batch(batch.events, CATALOG, NOW, 300, 2)


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
    err = api_error(domain.claim_refusal(outcome, detail), retry_after_s=5)
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

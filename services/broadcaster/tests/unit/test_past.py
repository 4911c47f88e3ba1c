"""The pure parts of the past reads (issue 11): ``at=`` parsing, the history cursor, and the hot path
leaving ``at=`` queries to the route."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from leaderboard.broadcaster.domain import Cursor, decode_cursor, encode_cursor, parse_at
from leaderboard.broadcaster.entrypoints.hot import parse_query
from leaderboard.broadcaster.errors import Invalid

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("2026-11-23T10:15:30.123Z", datetime(2026, 11, 23, 10, 15, 30, 123000, tzinfo=UTC)),
        ("2026-11-23T11:15:30+01:00", datetime(2026, 11, 23, 10, 15, 30, tzinfo=UTC)),
        ("2026-11-23T10:15:30", datetime(2026, 11, 23, 10, 15, 30, tzinfo=UTC)),
        ("2026-11-23", datetime(2026, 11, 23, tzinfo=UTC)),
        ("1763893530", datetime.fromtimestamp(1763893530, UTC)),
        ("1763893530.5", datetime.fromtimestamp(1763893530.5, UTC)),
    ],
)
def test_at_takes_iso_or_epoch_seconds(raw: str, want: datetime) -> None:
    assert parse_at(raw, NOW) == want


@pytest.mark.parametrize(
    "raw",
    ["", "yesterday", "2026-13-01", "1e9", "-1", "\u0661\u0667" + "0" * 8, "9" * 50, "2026-11-23T12:00:01Z"],
)
def test_bad_or_future_at_is_invalid_naming_the_field(raw: str) -> None:
    with pytest.raises(Invalid) as refused:
        parse_at(raw, NOW)
    assert refused.value.name == "at"


def test_cursor_round_trips_to_the_microsecond() -> None:
    cursor = Cursor(datetime(2026, 11, 23, 10, 15, 30, 123456, tzinfo=UTC), uuid.uuid4())
    text = encode_cursor(cursor)
    assert "=" not in text and decode_cursor(text) == cursor


@pytest.mark.parametrize(
    "raw",
    [
        "not-a-cursor",
        "",
        "é",
        base64.urlsafe_b64encode(b"12:nope").decode(),
        base64.urlsafe_b64encode(b"9" * 19 + b":" + str(uuid.uuid4()).encode()).decode(),
        "A" * 200,
    ],
)
def test_foreign_cursors_are_invalid(raw: str) -> None:
    with pytest.raises(Invalid) as refused:
        decode_cursor(raw)
    assert refused.value.name == "cursor"


def test_the_hot_path_leaves_at_to_the_route() -> None:
    assert parse_query(b"board=global&page=1&limit=10") is not None
    assert parse_query(b"board=global&at=2026-11-23T10:15:30Z") is None
    assert parse_query(b"at=1763893530") is None

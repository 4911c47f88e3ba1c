"""The strict parser for client-supplied numbers."""

from __future__ import annotations

import pytest

from leaderboard.common.params import BadNumber, parse_count, parse_optional_count


@pytest.mark.parametrize(
    "raw, expected", [("0", 0), ("7", 7), ("000123", 123), (b"42", 42), ("9" * 18, 10**18 - 1)]
)
def test_accepts_ascii_digits(raw: str | bytes, expected: int) -> None:
    assert parse_count(raw, "since") == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " 1",
        "1 ",
        "+1",
        "-1",
        "1_000",
        "1.0",
        "1e3",
        "²",
        "٣",
        "\uff11",
        "0x10",
        "9" * 19,
        "1" * 5000,
        "x" * 10_240,
        b"\xff",
    ],
)
def test_refuses_everything_else_naming_the_field(raw: str | bytes) -> None:
    with pytest.raises(BadNumber) as caught:
        parse_count(raw, "Last-Event-ID")
    assert "'Last-Event-ID'" in str(caught.value)
    assert caught.value.field == "Last-Event-ID"


def test_bounds_and_absence() -> None:
    assert parse_count("5", "limit", minimum=1, maximum=5) == 5
    with pytest.raises(BadNumber, match=r"1\.\.5"):
        parse_count("6", "limit", minimum=1, maximum=5)
    with pytest.raises(BadNumber, match="required"):
        parse_count(None, "limit")
    assert parse_optional_count(None, "since") is None
    assert parse_optional_count("3", "since") == 3

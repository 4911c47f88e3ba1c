import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from leaderboard.common.events import (
    ActionCompleted,
    AttemptRejected,
    DeadLetter,
    decode_action,
    decode_board_changed,
    decode_log_event,
    epoch_ms,
    escape_unsafe,
    from_epoch_ms,
    iso_ms,
    unsafe_char,
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
    return ActionCompleted(**fields)


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


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 100_000, b'{"top":' + b"[" * 100_000])
def test_json_nested_past_the_parsers_limit_is_a_value_error(raw: bytes) -> None:
    """``json.loads`` raises RecursionError there: every decoder turns it into the ValueError that
    consumers treat as one refused record (a RecursionError restarted the broadcaster's feed)."""
    for decoder in (decode_action, decode_board_changed, decode_log_event):
        with pytest.raises(ValueError, match="nested too deeply"):
            decoder(raw)


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


@pytest.mark.parametrize(
    "username",
    [
        "nul\x00",
        "tab\t",
        "new\nline",
        "cr\r",
        "esc\x1b",
        "del\x7f",
        "c1\x85",
        "\x9f",
        "lone\ud800",
        "\udfff",
        "a" * 65,
        "",
    ],
)
def test_usernames_the_stores_cannot_hold_are_refused(username: str) -> None:
    with pytest.raises(ValidationError) as caught:
        action(username=username)
    assert caught.value.errors()[0]["loc"] == ("username",)


@pytest.mark.parametrize("username", ["Ada", "Zoë", "李小龍", "🦊 fox", "a" * 64, "O'Brien-Smith (EU)"])
def test_ordinary_usernames_pass(username: str) -> None:
    assert action(username=username).username == username


def test_every_string_of_an_action_is_safe_text() -> None:
    with pytest.raises(ValidationError):
        action(request_id="r\x00")
    with pytest.raises(ValidationError):
        action(request_id="r" * 129)
    with pytest.raises(ValidationError):
        action(action_type="quest\x00")


def test_decode_refuses_escaped_nul_and_surrogates() -> None:
    """A record whose JSON carries ``\\u0000`` or a lone ``\\ud800`` is undecodable (the scorer's DLQ),
    never an event a store would then refuse."""
    payload = json.loads(action().to_bytes())
    for bad in ("\u0000", "\ud800"):
        raw = json.dumps({**payload, "username": f"x{bad}"}).encode()
        assert b"\\u" in raw
        with pytest.raises((ValueError, ValidationError)):
            decode_action(raw)


@pytest.mark.parametrize("loose", ["5", 5.0, True])
def test_numbers_are_strict(loose: object) -> None:
    payload = json.loads(action().to_bytes())
    with pytest.raises(ValidationError):
        decode_action(json.dumps({**payload, "points": loose}).encode())
    assert decode_action(json.dumps({**payload, "points": 5}).encode()).points == 5


@pytest.mark.parametrize("version", ["1", 1.0, True])
def test_schema_version_is_exactly_the_integer_1(version: object) -> None:
    payload = json.loads(action().to_bytes())
    with pytest.raises((ValueError, ValidationError)):
        decode_action(json.dumps({**payload, "schemaVersion": version}).encode())


def test_unsafe_char_and_escape() -> None:
    assert unsafe_char("fine ünïcödé 🦊") is None
    assert unsafe_char("ab\x00") == "a control character (U+0000 at position 2)"
    assert unsafe_char("\ud83d") == "an unpaired surrogate (U+D83D at position 0)"
    assert escape_unsafe("a\x00b\ud800\n") == "a\\u0000b\\ud800\\u000a"
    assert escape_unsafe("x" * 5000, 10) == "x" * 10


def test_audit_events_escape_what_they_report() -> None:
    """An audit record describes refused input; it must not be lost because of that input."""
    rejected = AttemptRejected(
        reason="invalid",
        detail="field 'username' was 'a\x00b\ud800'",
        client_ip="127.0.0.1",
        request_id="r1",
        path="/x\x00",
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert "\x00" not in rejected.detail and "\\u0000" in rejected.detail
    rejected.to_bytes().decode("utf-8")  # encodable
    letter = DeadLetter.of("t", 0, 1, None, b"\x00", "bad \x00 record")
    assert letter.error == "bad \\u0000 record"


def test_every_event_type_decodes_through_the_one_upcaster() -> None:
    from leaderboard.common.events import (
        AttemptRejected,
        BoardChanged,
        RankedEntry,
        decode,
        decode_board_changed,
        now_ms,
    )
    from leaderboard.common.ranking import GLOBAL_BOARD

    change = BoardChanged(
        board=GLOBAL_BOARD,
        epoch="e1",
        version=3,
        top=[RankedEntry(rank=1, user_id=uuid.uuid4(), username="Ada", score=10)],
        changed=[],
        at=now_ms(),
    )
    assert decode_board_changed(change.to_bytes()) == change == decode(change.to_bytes(), BoardChanged)
    audit = AttemptRejected(reason="invalid", client_ip="1.2.3.4", request_id="r", at=now_ms())
    assert decode(audit.to_bytes(), AttemptRejected) == audit
    newer = json.loads(change.to_bytes())
    newer["schemaVersion"] = 2
    with pytest.raises(ValueError, match="unsupported schemaVersion 2 of BoardChanged"):
        decode_board_changed(json.dumps(newer).encode())
    for raw in (b"[]", b"not json", b"\xff\xfe"):
        with pytest.raises(ValueError):
            decode_board_changed(raw)
    loose = json.loads(change.to_bytes())
    loose["version"] = "3"  # strict numbers on this path too
    with pytest.raises(ValidationError):
        decode_board_changed(json.dumps(loose).encode())

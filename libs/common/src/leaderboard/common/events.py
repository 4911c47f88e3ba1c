"""Versioned event schemas carried on Kafka (SPEC section 4).

Events are past tense and carry ``schemaVersion``. Decoding of every event type goes through
:func:`decode` (``decode_action`` and ``decode_board_changed`` are its names for the two types read off
Kafka), and so through :func:`_upcast`, the one place where older versions would be upcast. Times are sent as ISO-8601 UTC with
milliseconds; they are truncated to milliseconds on creation so that what Postgres stores, what
Redis encodes and what the log replays are the same instant.

Every string an event carries is :data:`SafeText` (or a narrower type built on it): no control
character (C0, DEL, C1; tab and newline included, no name needs them), no unpaired surrogate and a
bounded length. Postgres refuses NUL in text and UTF-8 cannot encode a lone surrogate, so such a value
would be accepted by ingest and then refused by a store, stopping the scorer on it: the shared types
refuse it at the door (422 naming the field) and in the scorer's decode (the record goes to the DLQ).
Audit events describe refused input and must never be lost because of it, so their free text is
:data:`AuditText`, which escapes what SafeText would refuse instead. Numbers that can come from outside
are strict: ``"5"``, ``5.0`` and ``true`` are not 5.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

import pydantic_core
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
)
from pydantic.alias_generators import to_camel


def utc_ms(value: datetime) -> datetime:
    """Aware UTC datetime truncated to whole milliseconds."""
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a time zone")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def now_ms() -> datetime:
    return utc_ms(datetime.now(UTC))


def iso_ms(value: datetime) -> str:
    if value.tzinfo is UTC:  # the usual case (every time ingest makes is UTC): no conversion, no search
        return value.isoformat(timespec="milliseconds")[:-6] + "Z"
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


UtcMs = Annotated[
    datetime, AfterValidator(utc_ms), PlainSerializer(iso_ms, return_type=str, when_used="json")
]

# C0 controls (tab, newline and carriage return included), DEL, C1 controls, and surrogates: in a
# Python str a surrogate is always unpaired (a JSON "\ud83d\ude00" pair decodes to one code point).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
MAX_TEXT = 1024


def unsafe_char(value: str) -> str | None:
    """A description of the first character no store can hold faithfully, or None."""
    found = _UNSAFE.search(value)
    if found is None:
        return None
    char = found.group()
    kind = "an unpaired surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return f"{kind} (U+{ord(char):04X} at position {found.start()})"


def _safe_text(value: str) -> str:
    problem = unsafe_char(value)
    if problem is not None:
        raise ValueError(f"must not contain {problem}")
    return value


def escape_unsafe(value: str, limit: int = MAX_TEXT) -> str:
    """``value`` with what SafeText refuses written as ``\\uXXXX``, cut to ``limit`` characters."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)[:limit]


def _escaped(limit: int) -> BeforeValidator:
    return BeforeValidator(lambda value: escape_unsafe(value, limit) if isinstance(value, str) else value)


def _exact_int(value: object) -> object:
    # Literal[1] alone would take True and 1.0 for 1.
    if type(value) is not int:
        raise ValueError("must be an integer")
    return value


# Strings that reach Kafka, Redis and Postgres. Narrower types add their own (smaller) length bound.
SafeText = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_safe_text)]
AuditText = Annotated[str, _escaped(4 * MAX_TEXT)]
# A name read back from our own stores for a board: escaped, never refused, so that one odd row written
# before these checks existed cannot stop the scorer from publishing boards.
DisplayName = Annotated[str, _escaped(64)]
Username = Annotated[SafeText, Field(min_length=1, max_length=64)]
ActionType = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
RequestId = Annotated[SafeText, Field(max_length=128)]
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def is_sane_request_id(given: str) -> bool:
    """True when a caller's X-Request-ID is short and plain enough to go into logs and events as it is
    (else the services make their own, :func:`new_request_id`)."""
    return _REQUEST_ID.fullmatch(given) is not None


def new_request_id() -> str:
    return uuid.uuid4().hex


SchemaVersion = Annotated[Literal[1], BeforeValidator(_exact_int)]
MAX_POINTS = 1_000_000


class Event(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


MAX_METADATA_BYTES = 1024


def _json_value(value: object, where: str) -> None:
    """Refuse what JSON or the stores cannot hold faithfully inside metadata (see SafeText)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings")
            _safe_text(key)
            _json_value(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _json_value(item, f"{where}[{i}]")
    elif isinstance(value, str):
        try:
            _safe_text(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    elif value is not None and not isinstance(value, bool | int | float):
        raise ValueError(f"{where}: not a JSON value")


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    _json_value(value, "metadata")
    try:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise ValueError("metadata: numbers must be finite") from None
    size = len(encoded.encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata must be at most {MAX_METADATA_BYTES} bytes as compact JSON, not {size}")
    return value


# Entry metadata (issue 10): a JSON object a game backend attaches to an event (a replay id, a car, a
# map), kept with the board entry the event set. At most 1 KB as compact UTF-8 JSON; every key and string
# is SafeText (Postgres's jsonb refuses NUL).
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]


class ActionCompleted(Event):
    """A player completed an action (through a ticket) or a game backend reported one.

    ``metadata`` is optional and additive: events without it encode exactly as before (the field is
    left out, not sent as null) and older events decode with None."""

    schema_version: SchemaVersion = 1
    event_id: UUID
    action_id: UUID
    user_id: UUID
    username: Username
    action_type: ActionType
    points: StrictInt = Field(ge=1, le=MAX_POINTS)
    occurred_at: UtcMs
    accepted_at: UtcMs
    source: Literal["player", "service"]
    request_id: RequestId
    metadata: Metadata | None = None
    # The discriminator of the actions topic (issue 11: corrections share it). Left out of the wire
    # when None, so what ingest writes stays byte for byte what it was; a record without it is an
    # ActionCompleted (:func:`decode_log_event`).
    event_type: Literal["ActionCompleted"] | None = None

    def to_bytes(self) -> bytes:
        exclude = {k for k in ("metadata", "event_type") if getattr(self, k) is None}
        return self.model_dump_json(by_alias=True, exclude=exclude or None).encode()


def new_event_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs in their canonical text form: what ``str(uuid.uuid4())`` gives,
    from one read of the OS's randomness rather than ``count`` (and without ``count`` UUID objects)."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # RFC 4122 variant
    out = []
    for i in range(0, 32 * count, 32):
        h = raw[i // 2 : i // 2 + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def action_completed_bytes(
    *,
    event_id: str,
    action_id: str,
    user_id: str,
    username: str,
    action_type: str,
    points: int,
    occurred_at: str,
    accepted_at: str,
    source: Literal["player", "service"],
    request_id: str,
    metadata: dict[str, Any] | None = None,
) -> bytes:
    """The bytes ``ActionCompleted(...).to_bytes()`` gives for these fields, without building (and so
    without validating again) the model: for a hot path whose every field was validated already, by the
    same types (ingest's service batch: the request schema checks ids, username, action type, points and
    metadata with the types of this module, the catalog and the batch rules the points and the time).
    The ids are canonical UUID text (``str(UUID)``), the times :func:`iso_ms` text. Byte for byte the
    model's encoding (field order, escaping, metadata left out when None): a unit test holds the two
    side by side; a field added to :class:`ActionCompleted` must be added here too."""
    tail = "}" if metadata is None else ',"metadata":' + pydantic_core.to_json(metadata).decode() + "}"
    return (
        f'{{"schemaVersion":1,"eventId":"{event_id}","actionId":"{action_id}","userId":"{user_id}",'
        f'"username":{encode_basestring(username)},"actionType":{encode_basestring(action_type)},'
        f'"points":{points},"occurredAt":"{occurred_at}","acceptedAt":"{accepted_at}",'
        f'"source":"{source}","requestId":{encode_basestring(request_id)}{tail}'
    ).encode()


# Corrections (issue 11): an admin's decision, written to ``leaderboard.actions.v1`` keyed by the
# userId, so that it is ordered with that user's actions and a replay of the log reproduces it. A
# correction never deletes: a voided action stays in Postgres (``voided_at``) and on the log.
# ``correctionId`` makes each one idempotent (a redelivered correction applies once); ``by`` is the
# admin's subject, ``reason`` why, ``at`` when it was decided (a board ``at`` a time before it shows
# the action as it counted then).
Reason = Annotated[SafeText, Field(min_length=1, max_length=500)]
Actor = Annotated[SafeText, Field(min_length=1, max_length=128)]


class Correction(Event):
    """What every correction carries."""

    schema_version: SchemaVersion = 1
    correction_id: UUID
    user_id: UUID
    reason: Reason
    by: Actor
    at: UtcMs


class ActionVoided(Correction):
    """One action stops counting on every board and period it fed."""

    event_type: Literal["ActionVoided"] = "ActionVoided"
    action_id: UUID


class UserActionsVoided(Correction):
    """Every action of the user applied so far stops counting (a cheater)."""

    event_type: Literal["UserActionsVoided"] = "UserActionsVoided"


class UserActionsRestored(Correction):
    """The user's voided actions count again (the undo of a void): every one of them, or only
    ``actionId`` when given."""

    event_type: Literal["UserActionsRestored"] = "UserActionsRestored"
    action_id: UUID | None = None

    def to_bytes(self) -> bytes:
        exclude = {"action_id"} if self.action_id is None else None
        return self.model_dump_json(by_alias=True, exclude=exclude).encode()


class UserRenamed(Correction):
    """The user's display name is now ``username`` on every board (later actions do not undo it)."""

    event_type: Literal["UserRenamed"] = "UserRenamed"
    username: Username


def correction_record(correction: Correction) -> tuple[bytes, bytes]:
    """The (key, value) a correction is written with to ``leaderboard.actions.v1``: keyed by the
    userId, like the user's actions, so that it is ordered after them. The ingest admin route sends
    it with ``producer.send_and_wait(topics.actions, value, key=key)`` (acks=all) before answering."""
    return str(correction.user_id).encode(), correction.to_bytes()


CORRECTIONS: tuple[type[Correction], ...] = (
    ActionVoided,
    UserActionsVoided,
    UserActionsRestored,
    UserRenamed,
)
LogEvent = ActionCompleted | ActionVoided | UserActionsVoided | UserActionsRestored | UserRenamed


class RankedEntry(Event):
    rank: StrictInt = Field(ge=1)
    user_id: UUID
    username: DisplayName
    score: StrictInt


class BoardChanged(Event):
    """The top N of a board changed. Versions strictly increase within an epoch."""

    schema_version: SchemaVersion = 1
    board: Annotated[SafeText, Field(min_length=1, max_length=128)]
    epoch: Annotated[SafeText, Field(min_length=1, max_length=128)]
    version: StrictInt = Field(ge=1)
    top: list[RankedEntry]
    changed: list[UUID]
    at: UtcMs
    # The board's period (issue 10): "all" for an all-time board, else "2026-11-23", "2026-W47",
    # "2026-11" or a season id. Each period has its own epoch. Optional with the all-time default, so
    # announcements written before periods existed decode as what they were.
    period: Annotated[SafeText, Field(min_length=1, max_length=64)] = "all"


class AttemptRejected(Event):
    """A refused request: the server mutation log's security half."""

    schema_version: SchemaVersion = 1
    reason: AuditText
    detail: AuditText = ""
    user_id: AuditText | None = None
    client_ip: AuditText
    request_id: AuditText
    path: AuditText = ""
    at: UtcMs


class SecurityEvent(Event):
    """Other security-relevant facts, such as a quarantined action."""

    schema_version: SchemaVersion = 1
    kind: AuditText
    user_id: AuditText | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    at: UtcMs


class DeadLetter(Event):
    """Input that could not be decoded or validated, kept with its raw bytes."""

    schema_version: SchemaVersion = 1
    topic: AuditText
    partition: StrictInt
    offset: StrictInt
    key_b64: str | None
    raw_b64: str
    error: AuditText
    at: UtcMs

    @classmethod
    def of(
        cls, topic: str, partition: int, offset: int, key: bytes | None, raw: bytes, error: str
    ) -> DeadLetter:
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key_b64=base64.b64encode(key).decode() if key is not None else None,
            raw_b64=base64.b64encode(raw).decode(),
            error=escape_unsafe(error, 2000),
            at=now_ms(),
        )


E = TypeVar("E", bound=Event)


def _upcast(kind: type[Event], payload: dict[str, Any]) -> dict[str, Any]:
    """Bring an older schema version of ``kind`` up to the current one (only version 1 of every event
    type exists so far; a version 2 adds its step here, keyed by ``kind``)."""
    version = payload.get("schemaVersion", 1)
    if version != 1:
        raise ValueError(f"unsupported schemaVersion {version!r} of {kind.__name__}")
    return payload


def decode(raw: bytes, kind: type[E]) -> E:
    """An event of type ``kind`` from its JSON bytes, upcast to the current schema version.

    Raises ``ValueError`` (``pydantic.ValidationError`` is one) for anything that is not such an event.
    """
    payload = _json_object(raw)
    return kind.model_validate(_upcast(kind, payload))


def _json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``, or ``ValueError``: JSON nested past the parser's recursion limit
    (``[[[[...``) raises ``RecursionError`` in ``json.loads``, which must not escape as anything but a
    refused record (it would restart a consumer or stall the scorer on one poison record)."""
    try:
        payload = json.loads(raw)
    except RecursionError:
        raise ValueError("event JSON is nested too deeply") from None
    if not isinstance(payload, dict):
        raise ValueError("event is not a JSON object")
    return payload


def decode_action(raw: bytes) -> ActionCompleted:
    return decode(raw, ActionCompleted)


def decode_board_changed(raw: bytes) -> BoardChanged:
    return decode(raw, BoardChanged)


_LOG_TYPES: dict[str, type[Event]] = {"ActionCompleted": ActionCompleted} | {
    kind.__name__: kind for kind in CORRECTIONS
}


def decode_log_event(raw: bytes) -> LogEvent:
    """A record of ``leaderboard.actions.v1``: an action, or a correction named by ``eventType``
    (a record without ``eventType`` is an ActionCompleted, as every record written before
    corrections existed). Through :func:`decode`, so through the one upcaster."""
    payload = _json_object(raw)
    name = payload.get("eventType", "ActionCompleted")
    kind = _LOG_TYPES.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValueError(f"unknown eventType {name!r} on the actions topic")
    event = decode(raw, kind)
    assert isinstance(
        event, ActionCompleted | ActionVoided | UserActionsVoided | UserActionsRestored | UserRenamed
    )
    return event

"""Versioned event schemas carried on Kafka (SPEC section 4).

Events are past tense and carry ``schemaVersion``. Decoding goes through :func:`decode_action`,
the one place where older versions would be upcast. Times are sent as ISO-8601 UTC with
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
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

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
SchemaVersion = Annotated[Literal[1], BeforeValidator(_exact_int)]
MAX_POINTS = 1_000_000


class Event(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class ActionCompleted(Event):
    """A player completed an action (through a ticket) or a game backend reported one."""

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


def _upcast(payload: dict[str, Any]) -> dict[str, Any]:
    """Bring an older schema version up to the current one (only version 1 exists so far)."""
    version = payload.get("schemaVersion", 1)
    if version != 1:
        raise ValueError(f"unsupported schemaVersion {version!r}")
    return payload


def decode_action(raw: bytes) -> ActionCompleted:
    payload = json.loads(raw)
    if not isinstance(payload, dict):
        raise ValueError("event is not a JSON object")
    return ActionCompleted.model_validate(_upcast(payload))


def decode_board_changed(raw: bytes) -> BoardChanged:
    return BoardChanged.model_validate_json(raw)

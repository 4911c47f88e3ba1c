"""Versioned event schemas carried on Kafka (SPEC section 4).

Events are past tense and carry ``schemaVersion``. Decoding goes through :func:`decode_action`,
the one place where older versions would be upcast. Times are sent as ISO-8601 UTC with
milliseconds; they are truncated to milliseconds on creation so that what Postgres stores, what
Redis encodes and what the log replays are the same instant.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer
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
Username = Annotated[str, Field(min_length=1, max_length=64)]
ActionType = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
MAX_POINTS = 1_000_000


class Event(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class ActionCompleted(Event):
    """A player completed an action (through a ticket) or a game backend reported one."""

    schema_version: Literal[1] = 1
    event_id: UUID
    action_id: UUID
    user_id: UUID
    username: Username
    action_type: ActionType
    points: int = Field(ge=1, le=MAX_POINTS)
    occurred_at: UtcMs
    accepted_at: UtcMs
    source: Literal["player", "service"]
    request_id: str = Field(max_length=128)


class RankedEntry(Event):
    rank: int = Field(ge=1)
    user_id: UUID
    username: str
    score: int


class BoardChanged(Event):
    """The top N of a board changed. Versions strictly increase within an epoch."""

    schema_version: Literal[1] = 1
    board: str
    epoch: str
    version: int = Field(ge=1)
    top: list[RankedEntry]
    changed: list[UUID]
    at: UtcMs


class AttemptRejected(Event):
    """A refused request: the server mutation log's security half."""

    schema_version: Literal[1] = 1
    reason: str
    detail: str = ""
    user_id: str | None = None
    client_ip: str
    request_id: str
    path: str = ""
    at: UtcMs


class SecurityEvent(Event):
    """Other security-relevant facts, such as a quarantined action."""

    schema_version: Literal[1] = 1
    kind: str
    user_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    at: UtcMs


class DeadLetter(Event):
    """Input that could not be decoded or validated, kept with its raw bytes."""

    schema_version: Literal[1] = 1
    topic: str
    partition: int
    offset: int
    key_b64: str | None
    raw_b64: str
    error: str
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
            error=error[:2000],
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

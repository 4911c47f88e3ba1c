"""``leaderboard export``: the accepted events of a time range, from the log, as CSV or Parquet.

It reads ``leaderboard.actions.v1`` (with the deployment's topic prefix) from the beginning of every
partition up to the end offsets taken when it starts, with aiokafka through ``leaderboard.common.kafka``
and no consumer group (nothing is committed, a running scorer is not disturbed), keeps the events whose
``acceptedAt`` lies in ``[since, until)`` and streams them to a file or stdout. Like the scorer, it
counts the first record of an ``actionId`` and skips later ones (a producer retry can write one twice);
records that decode to no ActionCompleted (the scorer dead-letters those) are skipped and counted.
``--board B`` keeps the events that feed board B in the board catalog (its action types; for a season
board, only events inside a season) and adds the ``board`` and ``period`` columns.

Events that a later correction voids stay in the export: the log keeps them, and an analyst needs both
the event and its correction. Corrections become rows of their own (``kind`` = ``correction``) when they
exist: :func:`rows_of` is the one place that turns a log record into rows, and :data:`COLUMNS` the one
list of columns (new ones go at the end, empty for the rows that do not have them).

Columns, in order (CSV header = these names; Parquet types in brackets):

    kind            "action" for an accepted event                     [dictionary<int8, string>]
    event_id        the event's id (UUID text, lowercase, 36 chars)    [string]
    action_id       the action's id; unique among exported rows        [string]
    user_id         the player (the record's key)                      [string]
    username        display name at the time of the event              [string]
    action_type     catalog action type                                [dictionary<int32, string>]
    points          points the event carries                           [int64]
    occurred_at     when the action happened (client's claim)          [timestamp[ms, UTC]]
    accepted_at     when ingest accepted it (the log's time)           [timestamp[ms, UTC]]
    source          "player" (ticket flow) | "service" (game backend)  [dictionary<int8, string>]
    request_id      the accepting request's id (for the logs)          [string]
    schema_version  the event's schemaVersion on the log               [int16]
    metadata        the event's metadata as compact JSON, or empty     [string, null when absent]
    partition       Kafka partition of the record                      [int32]
    offset          Kafka offset of the record                         [int64]
    board, period   only with --board: the board and the period the event feeds [dictionary string]

UUIDs are strings, not ``fixed_size_binary(16)``: every reader (pandas, DuckDB, Spark, a spreadsheet)
compares and joins them as text, and the CSV carries the same values. CSV times are ISO-8601 UTC with
milliseconds (``2026-11-23T10:15:30.123Z``), as on the wire. Rows come in log order (partition by
partition as fetched), not sorted by time.

Why no library: the read loop is aiokafka's (as ``replay``), the formats are the csv module's and
pyarrow's; what is left is the choice of columns.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Protocol

import pyarrow as pa  # type: ignore[import-untyped]  # no stubs or py.typed
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from aiokafka import TopicPartition

from leaderboard.common.boards import BoardSpec
from leaderboard.common.events import (
    ActionCompleted,
    Correction,
    UserRenamed,
    decode_log_event,
    iso_ms,
)
from leaderboard.common.kafka import new_consumer
from leaderboard.common.settings import CommonSettings
from leaderboard.common.topics import Topics

Row = dict[str, Any]

_DICT8 = pa.dictionary(pa.int8(), pa.string())
_DICT32 = pa.dictionary(pa.int32(), pa.string())
_TIME = pa.timestamp("ms", tz="UTC")

COLUMNS: list[tuple[str, pa.DataType]] = [
    ("kind", _DICT8),
    ("event_id", pa.string()),
    ("action_id", pa.string()),
    ("user_id", pa.string()),
    ("username", pa.string()),
    ("action_type", _DICT32),
    ("points", pa.int64()),
    ("occurred_at", _TIME),
    ("accepted_at", _TIME),
    ("source", _DICT8),
    ("request_id", pa.string()),
    ("schema_version", pa.int16()),
    ("metadata", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    # Corrections (kind "correction"): the event type, why and by whom. Empty on action rows.
    ("correction", _DICT8),
    ("reason", pa.string()),
    ("corrected_by", pa.string()),
]
# Always set; every other column may be empty on one of the two kinds of rows.
_REQUIRED = {"kind", "event_id", "user_id", "accepted_at", "schema_version", "partition", "offset"}
BOARD_COLUMNS: list[tuple[str, pa.DataType]] = [("board", _DICT32), ("period", _DICT32)]

_EPOCH_SECONDS = re.compile(r"^-?\d+(\.\d+)?$")


def parse_time(text: str, name: str) -> datetime:
    """Epoch seconds (``1763893530``, ``1763893530.5``) or ISO-8601 (``2026-11-23``,
    ``2026-11-23T10:15:30.123Z``, ``...+01:00``); a time without an offset is UTC."""
    text = text.strip()
    try:
        if _EPOCH_SECONDS.match(text):
            return datetime.fromtimestamp(float(text), UTC)
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise ValueError(
            f"{name} must be ISO-8601 (2026-11-23T10:15:30Z) or epoch seconds, not {text!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def columns(board: BoardSpec | None) -> list[tuple[str, pa.DataType]]:
    return COLUMNS + (BOARD_COLUMNS if board is not None else [])


def arrow_schema(board: BoardSpec | None) -> pa.Schema:
    return pa.schema([pa.field(name, kind, nullable=name not in _REQUIRED) for name, kind in columns(board)])


def action_row(event: ActionCompleted, partition: int, offset: int) -> Row:
    return {
        "kind": "action",
        "event_id": str(event.event_id),
        "action_id": str(event.action_id),
        "user_id": str(event.user_id),
        "username": event.username,
        "action_type": event.action_type,
        "points": event.points,
        "occurred_at": event.occurred_at,
        "accepted_at": event.accepted_at,
        "source": event.source,
        "request_id": event.request_id,
        "schema_version": event.schema_version,
        "metadata": (
            None
            if event.metadata is None
            else json.dumps(event.metadata, separators=(",", ":"), ensure_ascii=False)
        ),
        "partition": partition,
        "offset": offset,
        "correction": None,
        "reason": None,
        "corrected_by": None,
    }


def correction_row(event: Correction, partition: int, offset: int) -> Row:
    """A correction as a row: ``event_id`` is its correctionId, ``accepted_at`` the time it was made,
    ``action_id`` the voided or restored action when it names one, ``username`` a rename's new name."""
    return {
        "kind": "correction",
        "event_id": str(event.correction_id),
        "action_id": str(action_id) if (action_id := getattr(event, "action_id", None)) else None,
        "user_id": str(event.user_id),
        "username": event.username if isinstance(event, UserRenamed) else None,
        "accepted_at": event.at,
        "schema_version": event.schema_version,
        "partition": partition,
        "offset": offset,
        "correction": type(event).__name__,
        "reason": event.reason,
        "corrected_by": event.by,
    }


@dataclass
class Totals:
    records: int = 0  # read from the log up to the end offsets
    exported: int = 0
    duplicates: int = 0  # later records of an actionId already seen
    undecodable: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "exported": self.exported,
            "duplicates": self.duplicates,
            "undecodable": self.undecodable,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Selection:
    """Which records become rows: the time range, the board, and the actionIds already counted."""

    since: datetime
    until: datetime
    board: BoardSpec | None = None
    seen: set[int] = field(default_factory=set)  # UUID.int: about 70 bytes per accepted action

    def __post_init__(self) -> None:
        if self.until <= self.since:
            raise ValueError("--until must be later than --since")


def rows_of(
    raw: bytes | None, partition: int, offset: int, selection: Selection, totals: Totals
) -> list[Row]:
    """The rows one record of the actions topic contributes: an action (the first record of its
    actionId), or a correction (kept whole: the export is the history, voided actions included)."""
    try:
        event = decode_log_event(raw or b"")
    except ValueError:
        totals.undecodable += 1
        return []
    if not isinstance(event, ActionCompleted):
        if not selection.since <= event.at < selection.until:
            return []
        row = correction_row(event, partition, offset)
        if selection.board is not None:
            row["board"] = selection.board.id
        return [row]
    if event.action_id.int in selection.seen:
        totals.duplicates += 1
        return []
    selection.seen.add(event.action_id.int)
    if not selection.since <= event.accepted_at < selection.until:
        return []
    row = action_row(event, partition, offset)
    if selection.board is not None:
        if not selection.board.feeds(event.action_type):
            return []
        period = selection.board.period_at(event.accepted_at)
        if period is None:  # a season board, between seasons
            return []
        row["board"], row["period"] = selection.board.id, period.id
    return [row]


class Sink(Protocol):
    def write(self, rows: list[Row]) -> None: ...

    def close(self) -> None: ...


class CsvSink:
    def __init__(self, stream: IO[str], board: BoardSpec | None) -> None:
        self.names = [name for name, _ in columns(board)]
        self.writer = csv.writer(stream, lineterminator="\n")
        self.writer.writerow(self.names)
        self.stream = stream

    def write(self, rows: list[Row]) -> None:
        self.writer.writerows([self._cell(row.get(name)) for name in self.names] for row in rows)

    @staticmethod
    def _cell(value: object) -> object:
        if isinstance(value, datetime):
            return iso_ms(value)
        return "" if value is None else value

    def close(self) -> None:
        self.stream.flush()


class ParquetSink:
    """Rows buffered into record batches of ``batch_rows`` (one row group each)."""

    def __init__(self, path: str, board: BoardSpec | None, batch_rows: int = 50_000) -> None:
        self.schema = arrow_schema(board)
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.batch_rows = batch_rows
        self.pending: list[Row] = []

    def write(self, rows: list[Row]) -> None:
        self.pending += rows
        if len(self.pending) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.Table.from_pylist(self.pending, schema=self.schema))
            self.pending = []

    def close(self) -> None:
        self._flush()
        self.writer.close()


async def export(
    settings: CommonSettings,
    selection: Selection,
    sink: Sink,
    *,
    on_start: Callable[[int], None] = lambda total: None,
    on_progress: Callable[[int], None] = lambda count: None,
    batch_size: int = 5000,
) -> Totals:
    """Stream the selected events of the actions topic into ``sink``. ``on_start`` gets the number of
    records to read (from the offsets listed at the start), ``on_progress`` each fetched count."""
    totals = Totals()
    started = time.monotonic()
    topic = Topics(settings.topic_prefix).actions
    consumer = new_consumer(settings, group_id=None)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            raise ValueError(f"topic {topic} does not exist on {settings.kafka_bootstrap}")
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        first = await consumer.beginning_offsets(tps)
        listed = await consumer.end_offsets(tps)
        on_start(sum(max(0, listed[tp] - first[tp]) for tp in tps))
        # As in replay: Tansu's ListOffsets can answer the last batch's base offset + 1 instead of the
        # high watermark, so each partition's end is fixed by its first fetch's high watermark (never
        # below what ListOffsets said). Records produced after that are not exported.
        end: dict[TopicPartition, int] = {}
        remaining = {tp for tp in tps if listed[tp] > first[tp]}
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=batch_size)
            for tp in remaining:
                if tp not in end and consumer.highwater(tp) is not None:
                    end[tp] = max(listed[tp], consumer.highwater(tp) or 0)
            rows: list[Row] = []
            count = 0
            for tp, messages in fetched.items():
                limit = end.get(tp, listed[tp])
                for m in messages:
                    if m.offset < limit:
                        count += 1
                        rows += rows_of(m.value, m.partition, m.offset, selection, totals)
            for tp in list(remaining):
                if tp in end and await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
            totals.records += count
            totals.exported += len(rows)
            if rows:
                sink.write(rows)
            if count:
                on_progress(count)
    finally:
        await consumer.stop()
    sink.close()
    totals.seconds = time.monotonic() - started
    return totals

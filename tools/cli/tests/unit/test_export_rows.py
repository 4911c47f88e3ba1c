"""``leaderboard export`` without Kafka: times it accepts, which records become rows, and the CSV and
Parquet files those rows make (the live round trip is tests/integration/test_export_live.py)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]  # no stubs or py.typed
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from leaderboard.cli.export import CsvSink, ParquetSink, Selection, Totals, arrow_schema, parse_time, rows_of
from leaderboard.common.boards import BoardCatalog
from leaderboard.common.events import ActionCompleted

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def event(at: datetime, action_type: str = "quest", **extra: object) -> ActionCompleted:
    return ActionCompleted(
        event_id=uuid.uuid4(),
        action_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        username='Zoë, "the" player',
        action_type=action_type,
        points=50,
        occurred_at=at - timedelta(seconds=3),
        accepted_at=at,
        source="service",
        request_id="req-1",
        **extra,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T10:00:00Z", T0),
        ("2026-11-23T10:00:00.000Z", T0),
        ("2026-11-23T11:00:00+01:00", T0),
        ("2026-11-23T10:00:00", T0),  # no offset: UTC
        ("2026-11-23", T0.replace(hour=0)),
        (str(int(T0.timestamp())), T0),
        (f"{T0.timestamp() + 0.5}", T0 + timedelta(milliseconds=500)),
    ],
)
def test_times_are_iso_8601_or_epoch_seconds(text: str, expected: datetime) -> None:
    assert parse_time(text, "--since") == expected


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01", "1e400"])
def test_other_times_are_refused_with_the_option_named(text: str) -> None:
    with pytest.raises(ValueError, match="--since must be ISO-8601"):
        parse_time(text, "--since")


def test_an_empty_range_is_refused() -> None:
    with pytest.raises(ValueError, match="--until must be later"):
        Selection(T0, T0)


def test_rows_keep_the_range_the_first_of_each_action_and_skip_what_does_not_decode() -> None:
    selection, totals = Selection(T0, T0 + timedelta(hours=1)), Totals()
    before, first, last, after = (
        event(T0 - timedelta(milliseconds=1)),
        event(T0),
        event(T0 + timedelta(minutes=59)),
        event(T0 + timedelta(hours=1)),
    )
    again = first.model_copy(update={"event_id": uuid.uuid4()})
    rows = []
    for offset, e in enumerate([before, first, last, again, after]):
        rows += rows_of(e.to_bytes(), 2, offset, selection, totals)
    rows += rows_of(b"{not json", 2, 9, selection, totals)
    rows += rows_of(None, 2, 10, selection, totals)
    assert [r["event_id"] for r in rows] == [str(first.event_id), str(last.event_id)]
    assert (totals.duplicates, totals.undecodable) == (1, 2)
    assert rows[0] | {} == {
        "kind": "action",
        "event_id": str(first.event_id),
        "action_id": str(first.action_id),
        "user_id": str(first.user_id),
        "username": first.username,
        "action_type": "quest",
        "points": 50,
        "occurred_at": first.occurred_at,
        "accepted_at": T0,
        "source": "service",
        "request_id": "req-1",
        "schema_version": 1,
        "metadata": None,
        "partition": 2,
        "offset": 1,
        "correction": None,
        "reason": None,
        "corrected_by": None,
    }


def test_a_board_keeps_its_action_types_and_names_the_period() -> None:
    catalog = BoardCatalog.load()
    best, daily = catalog.get("best-match"), catalog.get("daily")
    assert best is not None and daily is not None
    won, quest = event(T0, "match_won"), event(T0, "quest")
    by_best = [
        r
        for e in (won, quest)
        for r in rows_of(e.to_bytes(), 0, 0, Selection(T0, T0 + timedelta(1), best), Totals())
    ]
    assert [(r["action_type"], r["board"], r["period"]) for r in by_best] == [
        ("match_won", "best-match", "all")
    ]
    by_day = [
        r
        for e in (won, quest)
        for r in rows_of(e.to_bytes(), 0, 0, Selection(T0, T0 + timedelta(1), daily), Totals())
    ]
    assert [r["period"] for r in by_day] == ["2026-11-23", "2026-11-23"]


def test_csv_and_parquet_carry_the_rows_with_their_types(tmp_path: Path) -> None:
    extra = {"metadata": {"car": "rød", "lap": 3}} if "metadata" in ActionCompleted.model_fields else {}
    events = [
        event(
            T0 + timedelta(milliseconds=i * 1001),
            "match_won" if i % 2 else "quest",
            **(extra if i == 1 else {}),
        )
        for i in range(5)
    ]
    selection = Selection(T0, T0 + timedelta(hours=1))
    rows = [r for i, e in enumerate(events) for r in rows_of(e.to_bytes(), i % 3, i, selection, Totals())]

    buffer = io.StringIO()
    sink = CsvSink(buffer, None)
    sink.write(rows[:2])
    sink.write(rows[2:])
    sink.close()
    read = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert [r["event_id"] for r in read] == [str(e.event_id) for e in events]
    assert (
        read[0]["accepted_at"] == "2026-11-23T10:00:00.000Z"
        and read[1]["accepted_at"] == "2026-11-23T10:00:01.001Z"
    )
    assert (
        read[0]["username"] == 'Zoë, "the" player' and read[0]["points"] == "50" and read[0]["metadata"] == ""
    )
    if extra:
        assert read[1]["metadata"] == '{"car":"rød","lap":3}'

    path = tmp_path / "out.parquet"
    parquet = ParquetSink(str(path), None, batch_rows=2)
    parquet.write(rows[:3])
    parquet.write(rows[3:])
    parquet.close()
    table = pq.read_table(path)
    assert table.schema == arrow_schema(None)
    assert table.schema.field("accepted_at").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("source").type == pa.dictionary(pa.int8(), pa.string())
    assert table.to_pylist() == rows

"""Corrections on the log are exported as rows of their own (the export is the history)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq  # type: ignore[import-untyped]

from leaderboard.cli.export import CsvSink, ParquetSink, Selection, Totals, rows_of
from leaderboard.common.events import ActionVoided, UserActionsRestored, UserRenamed

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
USER = uuid.uuid4()


def common(at: datetime) -> dict[str, object]:
    return {"correction_id": uuid.uuid4(), "user_id": USER, "reason": "audit", "by": "ops-1", "at": at}


def test_corrections_in_range_become_rows_naming_what_why_and_who(tmp_path: Path) -> None:
    action = uuid.uuid4()
    records = [
        ActionVoided(action_id=action, **common(T0 + timedelta(minutes=1))),
        UserActionsRestored(**common(T0 + timedelta(minutes=2))),
        UserRenamed(username="Reformed", **common(T0 + timedelta(minutes=3))),
        UserRenamed(username="Later", **common(T0 + timedelta(hours=2))),
    ]
    selection, totals = Selection(T0, T0 + timedelta(hours=1)), Totals()
    rows = [row for i, c in enumerate(records) for row in rows_of(c.to_bytes(), 0, i, selection, totals)]
    assert [(r["kind"], r["correction"]) for r in rows] == [
        ("correction", "ActionVoided"),
        ("correction", "UserActionsRestored"),
        ("correction", "UserRenamed"),
    ]
    assert rows[0]["action_id"] == str(action) and rows[1]["action_id"] is None
    assert rows[2]["username"] == "Reformed" and rows[0]["username"] is None
    assert all(r["reason"] == "audit" and r["corrected_by"] == "ops-1" for r in rows)
    assert [r["accepted_at"] for r in rows] == [c.at for c in records[:3]]
    assert totals.undecodable == 0

    text = io.StringIO()
    sink = CsvSink(text, None)
    sink.write(rows)
    read = list(csv.DictReader(io.StringIO(text.getvalue())))
    assert [r["correction"] for r in read] == ["ActionVoided", "UserActionsRestored", "UserRenamed"]
    assert read[0]["points"] == "" and read[0]["corrected_by"] == "ops-1"

    path = tmp_path / "c.parquet"
    parquet = ParquetSink(str(path), None)
    parquet.write(rows)
    parquet.close()
    table = pq.read_table(path).to_pylist()
    assert [r["correction"] for r in table] == ["ActionVoided", "UserActionsRestored", "UserRenamed"]
    assert table[2]["username"] == "Reformed" and table[0]["points"] is None

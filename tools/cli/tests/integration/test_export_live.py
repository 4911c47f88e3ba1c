"""`leaderboard export` round trip, as an analyst runs it: events sent through the running ingest (player
ticket flow and a game backend's batch) come back from the log, CSV and Parquet, field by field equal to
what was sent; events accepted before --since and from --until on are left out."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa  # type: ignore[import-untyped]  # no stubs or py.typed
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from leaderboard.common.events import iso_ms, now_ms
from leaderboard.testkit.testing import Namespace, System, running_system, wait_until

CLI = [sys.executable, "-m", "leaderboard.cli"]


@pytest.fixture
def ingest_only(base_env: dict[str, str], tmp_path: Path) -> Iterator[System]:
    """The write side alone: the export reads the log, which needs no scorer."""
    with running_system(Namespace.create(base_env), tmp_path / "logs", only=["ingest"]) as system:
        yield system


def service_event(
    action_type: str, name: str, occurred: datetime, points: int | None = None
) -> dict[str, Any]:
    e = {
        "actionId": str(uuid.uuid4()),
        "userId": str(uuid.uuid4()),
        "username": name,
        "actionType": action_type,
        "occurredAt": iso_ms(occurred),
    }
    return e | ({"points": points} if points is not None else {})


def send_batch(client: httpx.Client, token: str, events: list[dict[str, Any]]) -> None:
    r = client.post("/api/v1/events", json={"events": events}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 202 and r.json() == {"accepted": len(events), "duplicates": 0}, r.text


def player_completes(client: httpx.Client, system: System, name: str) -> dict[str, Any]:
    """daily_login (no minimum duration) through the ticket flow; what the player sent and got back."""
    user = str(uuid.uuid4())
    headers = {"Authorization": f"Bearer {system.token(user, name=name)}"}
    ticket = client.post("/api/v1/actions", json={"actionType": "daily_login"}, headers=headers)
    assert ticket.status_code == 201, ticket.text
    sent_at = int(time.time())
    done = client.post(
        "/api/v1/score/update",
        json={"actionId": ticket.json()["actionId"], "timestamp": sent_at},
        headers=headers,
    )
    assert done.status_code == 202, done.text
    return {
        "event_id": done.json()["eventId"],
        "action_id": ticket.json()["actionId"],
        "user_id": user,
        "username": name,
        "action_type": "daily_login",
        "points": ticket.json()["points"],
        "occurred_at": iso_ms(datetime.fromtimestamp(sent_at, UTC)),
        "source": "player",
    }


def boundary() -> datetime:
    """A millisecond instant after everything accepted so far and before everything accepted from now on
    (acceptedAt is ingest's clock truncated to milliseconds), once the clock has passed it."""
    mark = now_ms() + timedelta(milliseconds=1)
    wait_until(lambda: datetime.now(UTC) >= mark, timeout=5, message="the clock to pass the boundary")
    return mark


def export(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*CLI, "export", *args], env=system.env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done


def test_export_round_trips_the_events_of_a_time_range_as_csv_and_parquet(
    ingest_only: System, tmp_path: Path
) -> None:
    system = ingest_only
    service = system.token(role="service")
    occurred = now_ms() - timedelta(seconds=30)
    with httpx.Client(base_url=system.ingest_url, timeout=15) as client:
        before = [service_event("quest", "Early", occurred)]
        send_batch(client, service, before)
        since = boundary()
        batch = [
            service_event("quest", "Ann", occurred),
            service_event("match_won", 'Bo, "the" best', occurred + timedelta(milliseconds=7), points=240),
            service_event("boss_defeated", "Çelik", occurred + timedelta(seconds=1)),
            service_event("match_won", "Dee", occurred + timedelta(seconds=2), points=1),
        ]
        send_batch(client, service, batch)
        players = [
            player_completes(client, system, "Player One"),
            player_completes(client, system, "Player Two"),
        ]
        until = boundary()
        after = [service_event("quest", "Late", occurred)]
        send_batch(client, service, after)

    points = {"quest": 50, "boss_defeated": 200}
    expected = {
        e["actionId"]: {
            "action_id": e["actionId"],
            "user_id": e["userId"],
            "username": e["username"],
            "action_type": e["actionType"],
            "points": e.get("points", points.get(e["actionType"])),
            "occurred_at": e["occurredAt"],
            "source": "service",
        }
        for e in batch
    } | {p["action_id"]: p for p in players}

    window = ["--since", iso_ms(since), "--until", str(until.timestamp())]  # ISO and epoch seconds
    export(system, *window, "--format", "csv", "--out", str(tmp_path / "events.csv"))
    export(system, *window, "--format", "parquet", "--out", str(tmp_path / "events.parquet"))

    with (tmp_path / "events.csv").open(newline="", encoding="utf-8") as f:
        from_csv = {r["action_id"]: r for r in csv.DictReader(f)}
    assert set(from_csv) == set(expected)  # nothing from before --since or from --until on
    for action_id, sent in expected.items():
        row = from_csv[action_id]
        for name, value in sent.items():
            assert row[name] == str(value), (name, row)
        assert since <= datetime.fromisoformat(row["accepted_at"]) < until
        assert row["kind"] == "action" and row["schema_version"] == "1" and row["metadata"] == ""
        assert uuid.UUID(row["event_id"]) and row["request_id"]

    table = pq.read_table(tmp_path / "events.parquet")
    assert table.schema.field("accepted_at").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("points").type == pa.int64()
    assert table.schema.field("source").type == pa.dictionary(pa.int8(), pa.string())
    from_parquet = {r["action_id"]: r for r in table.to_pylist()}
    assert set(from_parquet) == set(expected)
    for action_id, row in from_parquet.items():
        as_text = {
            k: iso_ms(v) if isinstance(v, datetime) else "" if v is None else str(v) for k, v in row.items()
        }
        assert as_text == from_csv[action_id]  # every column, the server-made ones included

    # To stdout, one board: best-match is fed by match_won only.
    out = export(system, *window, "--board", "best-match")
    rows = list(csv.DictReader(out.stdout.splitlines()))
    assert sorted(r["action_id"] for r in rows) == sorted(
        e["actionId"] for e in batch if e["actionType"] == "match_won"
    )
    assert {(r["board"], r["period"]) for r in rows} == {("best-match", "all")}
    assert '"exported": 2' in out.stderr


def test_export_refuses_an_unknown_board_and_a_missing_broker(ingest_only: System, tmp_path: Path) -> None:
    args = ["export", "--since", "2026-01-01", "--until", "2026-01-02"]
    unknown = subprocess.run(
        [*CLI, *args, "--board", "nope"], env=ingest_only.env, capture_output=True, text=True
    )
    assert unknown.returncode == 2 and "no board 'nope'" in unknown.stderr
    env = ingest_only.env | {
        "LEADERBOARD_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "LEADERBOARD_KAFKA_REQUEST_TIMEOUT_MS": "3000",
    }
    target = tmp_path / "never.csv"
    down = subprocess.run(
        [*CLI, *args, "--out", str(target)], env=env, capture_output=True, text=True, timeout=120
    )
    assert down.returncode == 1 and "export failed" in down.stderr
    assert not target.exists() and not list(tmp_path.glob("never.csv*"))

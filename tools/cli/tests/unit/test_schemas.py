"""The published event schemas: the committed files are what the models generate, and they accept exactly
what ``Event.to_bytes()`` writes (checked with jsonschema, formats included)."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from referencing import Registry, Resource

from leaderboard.cli import schemas
from leaderboard.cli.main import cli
from leaderboard.common.events import (
    ActionCompleted,
    AttemptRejected,
    BoardChanged,
    DeadLetter,
    Event,
    RankedEntry,
    SecurityEvent,
)

COMMITTED = Path(__file__).resolve().parents[4] / "schemas"
AT = datetime(2026, 11, 23, 10, 15, 30, 123000, tzinfo=UTC)


def validator(directory: Path, rel: str) -> jsonschema.Draft202012Validator:
    docs = [json.loads(p.read_text()) for p in directory.rglob("*.json")]
    registry: Registry[Any] = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs)
    schema = json.loads((directory / rel).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def samples() -> list[tuple[str, Event]]:
    user = uuid.uuid4()
    action = ActionCompleted(
        event_id=uuid.uuid4(),
        action_id=uuid.uuid4(),
        user_id=user,
        username="Ada",
        action_type="match_won",
        points=25,
        occurred_at=AT,
        accepted_at=AT,
        source="player",
        request_id="r1",
    )
    out: list[tuple[str, Event]] = [
        ("leaderboard.actions.v1", action),
        (
            "leaderboard.changes.v1",
            BoardChanged(board="global", epoch="e1", version=3, top=[], changed=[], at=AT),
        ),
        (
            "leaderboard.changes.v1",
            BoardChanged(
                board="global",
                epoch="e1",
                version=4,
                top=[RankedEntry(rank=1, user_id=user, username="Ada", score=25)],
                changed=[user],
                at=AT,
            ),
        ),
        (
            "leaderboard.audit.v1",
            AttemptRejected(reason="bad_token", client_ip="127.0.0.1", request_id="r", at=AT),
        ),
        (
            "leaderboard.audit.v1",
            AttemptRejected(
                reason="forbidden",
                user_id=str(user),
                client_ip="::1",
                request_id="r",
                path="/x",
                detail="d",
                at=AT,
            ),
        ),
        ("leaderboard.audit.v1", SecurityEvent(kind="action_quarantined", detail={"a": [1, None]}, at=AT)),
        ("leaderboard.dlq.v1", DeadLetter.of("t", 0, 7, None, b"\x00garbage", "not JSON")),
        ("leaderboard.dlq.v1", DeadLetter.of("t", 1, 8, b"key", b"{}", "missing fields")),
    ]
    if "metadata" in ActionCompleted.model_fields:
        out.append(
            ("leaderboard.actions.v1", action.model_copy(update={"metadata": {"car": "red", "lap": 3}}))
        )
    return out


def test_committed_schema_files_are_what_the_models_generate() -> None:
    problems = schemas.check(COMMITTED)
    assert not problems, "stale schemas (run `leaderboard schemas --out schemas`):\n" + "\n".join(problems)


@pytest.mark.parametrize(("topic", "event"), samples(), ids=lambda v: getattr(type(v), "__name__", v))
def test_every_event_as_written_validates_against_its_schema_and_its_topic(topic: str, event: Event) -> None:
    wire = json.loads(event.to_bytes())
    name = f"{type(event).__name__}.v{wire['schemaVersion']}.json"
    validator(COMMITTED, f"{topic}/{name}").validate(wire)
    validator(COMMITTED, f"{topic}/topic.json").validate(wire)


def test_the_format_checker_really_checks_times_and_uuids() -> None:
    # Without rfc3339-validator jsonschema skips date-time silently; the schemas would prove nothing.
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    assert {"date-time", "uuid"} <= set(checker.checkers)
    assert not checker.conforms("2026-11-23 nonsense", "date-time")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"acceptedAt": "2026-11-23T10:15:30Z"}, "no milliseconds"),
        ({"acceptedAt": "2026-11-23T10:15:30.123+01:00"}, "not UTC"),
        ({"occurredAt": "2026-13-45T10:15:30.123Z"}, "not a date"),
        ({"userId": "not-a-uuid"}, "uuid"),
        ({"points": "25"}, "points as text"),
        ({"points": 0}, "points below 1"),
        ({"source": "admin"}, "unknown source"),
        ({"schemaVersion": 99}, "other version"),
        ({"extra": 1}, "unknown field"),
        ({"username": None}, "null name"),
    ],
)
def test_what_is_not_on_the_wire_is_refused(change: dict[str, Any], why: str) -> None:
    topic, event = samples()[0]
    wire = {**json.loads(event.to_bytes()), **change}
    for rel in (f"{topic}/ActionCompleted.v1.json", f"{topic}/topic.json"):
        assert not validator(COMMITTED, rel).is_valid(wire), why


def test_always_written_fields_are_required() -> None:
    schema = json.loads((COMMITTED / "leaderboard.actions.v1/ActionCompleted.v1.json").read_text())
    assert {"schemaVersion", "eventId", "acceptedAt", "source"} <= set(schema["required"])
    assert "metadata" not in schema["required"]  # left out of the wire when None
    changes = json.loads((COMMITTED / "leaderboard.changes.v1/BoardChanged.v1.json").read_text())
    assert "period" not in changes["properties"] or "period" in changes["required"]
    assert changes["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert changes["$id"].endswith("/leaderboard.changes.v1/BoardChanged.v1.json")


def test_check_reports_stale_missing_and_unknown_files_and_the_cli_exits_1(tmp_path: Path) -> None:
    folder = tmp_path / "schemas"
    shutil.copytree(COMMITTED, folder)
    runner = CliRunner()
    ok = runner.invoke(cli, ["schemas", "--check", "--out", str(folder)])
    assert ok.exit_code == 0, ok.output

    action = folder / "leaderboard.actions.v1/ActionCompleted.v1.json"
    doc = json.loads(action.read_text())
    doc["required"].remove("points")  # a hand edit, or a model that changed since
    action.write_text(json.dumps(doc, indent=2) + "\n")
    (folder / "leaderboard.dlq.v1/DeadLetter.v1.json").unlink()
    (folder / "leaderboard.dlq.v1/Other.v1.json").write_text("{}")
    problems = schemas.check(folder)
    assert problems == [
        "leaderboard.actions.v1/ActionCompleted.v1.json: differs from what the models generate",
        "leaderboard.dlq.v1/DeadLetter.v1.json: missing",
        "leaderboard.dlq.v1/Other.v1.json: not a schema of any event (remove it)",
    ]
    stale = runner.invoke(cli, ["schemas", "--check", "--out", str(folder)])
    assert stale.exit_code == 1 and "ActionCompleted.v1.json" in stale.output

    (folder / "leaderboard.dlq.v1/Other.v1.json").unlink()
    written = runner.invoke(cli, ["schemas", "--out", str(folder)])
    assert written.exit_code == 0 and "DeadLetter.v1.json" in written.output
    assert schemas.check(folder) == []


def test_schemas_of_older_versions_are_kept_and_indexed(tmp_path: Path) -> None:
    folder = tmp_path / "schemas"
    shutil.copytree(COMMITTED, folder)
    old = folder / "leaderboard.actions.v1/ActionCompleted.v0.json"
    old.write_text('{"title": "as committed back then"}\n')
    assert "ActionCompleted.v0.json: missing" not in " ".join(schemas.check(folder))
    schemas.write(folder)
    assert old.read_text() == '{"title": "as committed back then"}\n'
    assert "[leaderboard.actions.v1/ActionCompleted.v0.json]" in (folder / "README.md").read_text()
    topic = json.loads((folder / "leaderboard.actions.v1/topic.json").read_text())
    listed = [r["$ref"].rsplit("/", 1)[1] for r in topic["oneOf"]]
    assert listed[0] == "ActionCompleted.v1.json" and "ActionCompleted.v0.json" in listed
    assert {"ActionVoided.v1.json", "UserActionsVoided.v1.json", "UserRenamed.v1.json"} <= set(listed)
    assert schemas.check(folder) == []


def test_without_out_it_prints_every_schema_as_json() -> None:
    result = CliRunner().invoke(cli, ["schemas"])
    assert result.exit_code == 0
    printed = json.loads(result.output)
    assert set(printed) == {p.relative_to(COMMITTED).as_posix() for p in COMMITTED.rglob("*.json")}

"""The published JSON Schemas of every event on the log (``leaderboard schemas``, files in ``schemas/``).

The schemas are generated from the pydantic models of ``leaderboard.common.events`` at the moment this
runs, never written by hand, so the files cannot drift from the code unnoticed: ``--check`` (and the
unit test that runs it) fails when the committed files differ from what the models generate.

They describe the wire, what ``Event.to_bytes()`` writes (``by_alias=True``, serialization mode): camelCase
names, UUIDs as strings (``format: uuid``) and times as ISO-8601 UTC strings with milliseconds
(``format: date-time`` plus a pattern, since the models' datetimes serialize through ``iso_ms``, which
pydantic would otherwise describe as a bare string). Pydantic's serialization-mode schema marks every field
with a default as optional; on the wire every field is always written except an additive one whose
default is None (``ActionCompleted.metadata`` is left out when None), so those, and only those, are
optional here. ``schemaVersion`` is the constant the model writes.

Layout, one file per event type and schema version, and one per topic (a ``oneOf`` of the events it
carries, for a reader that validates records without knowing their type):

    schemas/<topic>/<Event>.v<N>.json     e.g. schemas/leaderboard.actions.v1/ActionCompleted.v1.json
    schemas/<topic>/topic.json
    schemas/README.md                     the index: topic, key, event, schema file

Schemas of older versions stay: the log keeps every event for ever, so when an event moves to version
N+1, ``<Event>.v<N>.json`` is kept as it was committed (it describes the records already on the log),
``--check`` leaves it alone, and the topic's ``oneOf`` lists it beside the current version. ``$id``s live under ``https://leaderboard.invalid/schemas/`` (a reserved
domain that resolves nowhere, so no tool fetches it) and mirror the folder layout: map that prefix to the
``schemas/`` folder to resolve references offline.

Why no library: pydantic already generates draft 2020-12 schemas; this module only adds what the wire
does that pydantic cannot see (the time format, which fields are always written) and the file layout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticUndefined, core_schema

from leaderboard.common import topics
from leaderboard.common.events import (
    ActionCompleted,
    ActionVoided,
    AttemptRejected,
    BoardChanged,
    DeadLetter,
    Event,
    SecurityEvent,
    UserActionsRestored,
    UserActionsVoided,
    UserRenamed,
    iso_ms,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE_URI = "https://leaderboard.invalid/schemas/"
# What iso_ms writes: 2026-11-23T10:15:30.123Z.
TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
_VERSIONED = re.compile(r"^(?P<event>[A-Za-z][A-Za-z0-9]*)\.v(?P<version>\d+)\.json$")


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    description: str
    events: tuple[type[Event], ...]


TOPICS: tuple[Topic, ...] = (
    Topic(
        topics.ACTIONS,
        "userId",
        "Every accepted action, the source of truth of every board: one ActionCompleted per accepted "
        "completion (player ticket flow or game backend). Kept for ever on real Kafka (retention.ms -1). "
        "Readers dedupe by actionId (the first record of an actionId counts), as the scorer does. "
        "Admins' corrections are events on the same log, keyed by the user so they stay in order with "
        "the user's actions (eventType tells them apart; a record without eventType is an "
        "ActionCompleted): ActionVoided, UserActionsVoided, UserActionsRestored, UserRenamed, each "
        "idempotent by correctionId.",
        (ActionCompleted, ActionVoided, UserActionsVoided, UserActionsRestored, UserRenamed),
    ),
    Topic(
        topics.CHANGES,
        "board",
        "A board's top N changed: the versioned announcements the broadcaster pushes to live clients. "
        "One partition, so versions arrive in order.",
        (BoardChanged,),
    ),
    Topic(
        topics.AUDIT,
        "userId, else client IP or record key",
        "The security half of the server mutation log: refused requests (AttemptRejected) and other "
        "security facts such as quarantined or dead-lettered actions (SecurityEvent). Keyed by the userId "
        "when known, else by the client IP (AttemptRejected) or the refused record's key (SecurityEvent).",
        (AttemptRejected, SecurityEvent),
    ),
    Topic(
        topics.DLQ,
        "the refused record's key",
        "Records of another topic that decoded to no valid event, kept with their raw bytes and the error.",
        (DeadLetter,),
    ),
)


def schema_version(event: type[Event]) -> int:
    """The version the model writes (the default of its ``schemaVersion`` field)."""
    default = event.model_fields["schema_version"].default
    if type(default) is not int:
        raise TypeError(f"{event.__name__}.schema_version has no integer default")
    return default


def event_path(topic: Topic, event: type[Event], version: int | None = None) -> str:
    return f"{topic.name}/{event.__name__}.v{schema_version(event) if version is None else version}.json"


def topic_path(topic: Topic) -> str:
    return f"{topic.name}/topic.json"


class WireSchema(GenerateJsonSchema):
    """Pydantic's serialization-mode schema, corrected to what ``to_bytes()`` writes (module docstring)."""

    def ser_schema(
        self,
        schema: core_schema.SerSchema | core_schema.IncExSeqSerSchema | core_schema.IncExDictSerSchema,
    ) -> JsonSchemaValue | None:
        if schema.get("type") == "function-plain" and schema.get("function") is iso_ms:
            return {"type": "string", "format": "date-time", "pattern": TIME_PATTERN}
        return super().ser_schema(schema)

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        inner = field["schema"]
        if self.mode != "serialization" or inner["type"] != "default":
            return super().field_is_required(field, total)
        return inner.get("default", PydanticUndefined) is not None

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # pydantic's "Eventid", "Acceptedat": the property names say it better


def event_schema(topic: Topic, event: type[Event]) -> dict[str, Any]:
    generated = event.model_json_schema(by_alias=True, mode="serialization", schema_generator=WireSchema)
    version = schema_version(event)
    properties = generated["properties"]
    properties["schemaVersion"] = {"type": "integer", "const": version}
    required = generated.get("required", [])
    if "schemaVersion" not in required:
        required.insert(0, "schemaVersion")
    doc = " ".join((event.__doc__ or "").split()).replace("``", "`")
    return {
        "$schema": DRAFT,
        "$id": BASE_URI + event_path(topic, event),
        "title": f"{event.__name__} v{version}",
        "description": f"{doc} Topic {topic.name}, key {topic.key}.".strip(),
        **{k: v for k, v in generated.items() if k not in ("title", "description")},
        "required": required,
    }


def topic_schema(topic: Topic, older: Sequence[str] = ()) -> dict[str, Any]:
    """Any event the topic carries, in any version still on the log (``older``: their file paths)."""
    paths = [event_path(topic, event) for event in topic.events] + sorted(older)
    refs = [{"$ref": BASE_URI + path} for path in paths]
    return {
        "$schema": DRAFT,
        "$id": BASE_URI + topic_path(topic),
        "title": topic.name,
        "description": f"{topic.description} Record key: {topic.key}.",
        **({"oneOf": refs} if len(refs) > 1 else refs[0]),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _historical(directory: Path | None) -> dict[str, str]:
    """Files of older versions of known events already in ``directory`` (kept as committed)."""
    found: dict[str, str] = {}
    if directory is None:
        return found
    for topic in TOPICS:
        for event in topic.events:
            for path in sorted((directory / topic.name).glob(f"{event.__name__}.v*.json")):
                match = _VERSIONED.match(path.name)
                if match and int(match["version"]) < schema_version(event):
                    found[f"{topic.name}/{path.name}"] = path.read_text()
    return found


def index(historical: dict[str, str]) -> str:
    lines = [
        "# Event schemas",
        "",
        "Generated by `leaderboard schemas --out schemas` from the models in",
        "`libs/common/src/leaderboard/common/events.py`; do not edit by hand (`leaderboard schemas --check`",
        "fails when these files are stale). JSON Schema draft 2020-12; `$id`s start with",
        f"`{BASE_URI}`, which maps to this folder. Topic names get the deployment's",
        "`LEADERBOARD_TOPIC_PREFIX` in front (empty by default).",
        "",
        "| topic | key | event | version | schema file |",
        "| --- | --- | --- | --- | --- |",
    ]
    for topic in TOPICS:
        lines.append(
            f"| {topic.name} | {topic.key} | any of its events | | [{topic_path(topic)}]({topic_path(topic)}) |"
        )
        for event in topic.events:
            paths = [event_path(topic, event)]
            paths += sorted(
                (p for p in historical if p.startswith(f"{topic.name}/{event.__name__}.v")), reverse=True
            )
            for path in paths:
                version = _VERSIONED.match(path.split("/", 1)[1])
                assert version is not None
                lines.append(
                    f"| {topic.name} | {topic.key} | {event.__name__} | {version['version']} | [{path}]({path}) |"
                )
    return "\n".join(lines) + "\n"


def generate(existing: Path | None = None) -> dict[str, str]:
    """Relative path -> file text for every schema file (and the README index). Older versions found in
    ``existing`` are carried over unchanged."""
    files: dict[str, str] = {}
    historical = _historical(existing)
    for topic in TOPICS:
        for event in topic.events:
            files[event_path(topic, event)] = render(event_schema(topic, event))
        older = [rel for rel in historical if rel.startswith(f"{topic.name}/")]
        files[topic_path(topic)] = render(topic_schema(topic, older))
    files.update(historical)
    files["README.md"] = index(historical)
    return files


def write(directory: Path) -> list[str]:
    """Write every file into ``directory``; returns the paths that changed."""
    changed = []
    for rel, text in generate(directory).items():
        path = directory / rel
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(rel)
    return changed


def check(directory: Path) -> list[str]:
    """What differs between ``directory`` and what the models generate: one sentence per file (empty
    when the committed files are current). Unknown files in the folder count as differences."""
    problems = []
    expected = generate(directory)
    for rel, text in expected.items():
        path = directory / rel
        if not path.exists():
            problems.append(f"{rel}: missing")
        elif path.read_text() != text:
            problems.append(f"{rel}: differs from what the models generate")
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel not in expected:
            problems.append(f"{rel}: not a schema of any event (remove it)")
    return problems

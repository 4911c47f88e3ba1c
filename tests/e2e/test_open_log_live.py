"""The log is open to tools outside the project: events sent through the public API (player ticket flow
and a game backend's batch) are read back from the broker with an independent Kafka client (kafka-python,
explicit partition assignment, no consumer group) and every record is valid against the JSON Schema
published in schemas/ (jsonschema, with date-time and uuid formats checked)."""

from __future__ import annotations

import json
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from referencing import Registry, Resource

from leaderboard.common.events import iso_ms, now_ms
from leaderboard.testkit.testing import Namespace, System, running_system, wait_until

with warnings.catch_warnings():
    # kafka-python 3.0 loads its protocol files with importlib.resources.read_text/open_text (deprecated): a
    # third-party warning at import, which the suite's filterwarnings=error would turn into an error.
    warnings.filterwarnings("ignore", "(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaConsumer, TopicPartition

pytestmark = pytest.mark.filterwarnings("ignore:(read|open)_text is deprecated:DeprecationWarning")

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.fixture
def live(base_env: dict[str, str], tmp_path: Path) -> Iterator[System]:
    with running_system(Namespace.create(base_env), tmp_path / "logs") as system:
        yield system


def validators() -> dict[str, jsonschema.Draft202012Validator]:
    """Topic name (unprefixed) -> a validator of its topic.json, every published schema registered."""
    docs = [json.loads(p.read_text()) for p in SCHEMAS.rglob("*.json")]
    registry: Registry[Any] = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs)
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    assert {"date-time", "uuid"} <= set(checker.checkers)  # else formats would pass unchecked
    out = {}
    for path in SCHEMAS.glob("*/topic.json"):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        out[path.parent.name] = jsonschema.Draft202012Validator(
            schema, registry=registry, format_checker=checker
        )
    return out


def read_topic(bootstrap: str, topic: str, timeout: float = 60) -> list[tuple[bytes | None, bytes]]:
    """Every record of ``topic`` up to the high watermark the broker reports in its fetch responses."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, client_id="open-log-test"
    )
    try:
        parts = consumer.partitions_for_topic(topic)
        assert parts, f"no partitions for {topic}"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout
        while True:
            for batch in consumer.poll(timeout_ms=500).values():
                records += [(m.key, m.value) for m in batch]
            # highwater() is None until a fetch reports it; position() without a timeout waits for the offset.
            caught_up = all(
                (high := consumer.highwater(tp)) is not None
                and (position := consumer.position(tp)) is not None
                and position >= high
                for tp in tps
            )
            if caught_up:
                return records
            assert time.monotonic() < deadline, f"did not reach the end of {topic} in {timeout:.0f}s"
    finally:
        consumer.close()


def test_an_independent_client_reads_the_log_and_every_event_matches_its_published_schema(
    live: System,
) -> None:
    system = live
    accepted: dict[str, str] = {}  # actionId -> userId
    with httpx.Client(base_url=system.ingest_url, timeout=15) as client:
        for name in ("Ada", "Bea Ü"):
            user = str(uuid.uuid4())
            headers = {"Authorization": f"Bearer {system.token(user, name=name)}"}
            ticket = client.post("/api/v1/actions", json={"actionType": "daily_login"}, headers=headers)
            assert ticket.status_code == 201, ticket.text
            done = client.post(
                "/api/v1/score/update",
                json={"actionId": ticket.json()["actionId"], "timestamp": int(time.time())},
                headers=headers,
            )
            assert done.status_code == 202, done.text
            accepted[ticket.json()["actionId"]] = user
        occurred = now_ms() - timedelta(seconds=10)
        events: list[dict[str, Any]] = [
            {
                "actionId": str(uuid.uuid4()),
                "userId": str(uuid.uuid4()),
                "username": f"Backend {i}",
                "actionType": "match_won" if i % 2 else "quest",
                "occurredAt": iso_ms(occurred) if i % 2 else int(occurred.timestamp()),
                **({"points": 100 + i} if i % 2 else {}),
            }
            for i in range(5)
        ]
        again = dict(events[0])  # repeated in the request: a duplicate, not accepted twice
        r = client.post(
            "/api/v1/events",
            json={"events": [*events, again]},
            headers={"Authorization": f"Bearer {system.token(role='service')}"},
        )
        assert r.status_code == 202 and r.json() == {"accepted": 5, "duplicates": 1}, r.text
        accepted |= {e["actionId"]: e["userId"] for e in events}

    def all_ranked() -> bool:
        board = httpx.get(f"{system.broadcaster_url}/api/v1/leaderboard", params={"limit": 100}, timeout=10)
        return board.status_code == 200 and set(accepted.values()) <= {
            e["userId"] for e in board.json()["leaderboard"]
        }

    wait_until(all_ranked, timeout=60, message="the scorer to rank every accepted event")

    check = validators()
    prefix = system.env["LEADERBOARD_TOPIC_PREFIX"]
    bootstrap = system.env["LEADERBOARD_KAFKA_BOOTSTRAP"]

    actions = read_topic(bootstrap, prefix + "leaderboard.actions.v1")
    for _, value in actions:
        check["leaderboard.actions.v1"].validate(json.loads(value))
    decoded = [json.loads(v) for _, v in actions]
    assert sorted(d["actionId"] for d in decoded) == sorted(accepted)  # the count and the very events
    assert all(k == d["userId"].encode() for (k, _), d in zip(actions, decoded, strict=True))  # keyed by user
    assert {d["source"] for d in decoded} == {"player", "service"}

    changes = read_topic(bootstrap, prefix + "leaderboard.changes.v1")
    assert changes
    for key, value in changes:
        change = json.loads(value)
        check["leaderboard.changes.v1"].validate(change)
        assert key == change["board"].encode()
    latest = [json.loads(v) for _, v in changes if json.loads(v)["board"] == "global"][-1]
    assert set(accepted.values()) <= {e["userId"] for e in latest["top"]} or len(latest["top"]) >= 10

    # A refused request is an audit event (published in the background): it matches its schema too.
    denied = httpx.post(
        f"{system.ingest_url}/api/v1/actions",
        json={"actionType": "quest"},
        headers={"Authorization": "Bearer nope"},
    )
    assert denied.status_code == 401
    audit: list[tuple[bytes | None, bytes]] = []

    def audited() -> bool:
        audit[:] = read_topic(bootstrap, prefix + "leaderboard.audit.v1")
        return bool(audit)

    wait_until(audited, timeout=30, interval=0.5, message="the audit event of the refused request")
    for _, value in audit:
        check["leaderboard.audit.v1"].validate(json.loads(value))
    assert any(json.loads(v).get("reason") for _, v in audit)

    # A record that is not what the schema publishes is refused by it: the check can fail.
    broken = decoded[0] | {"acceptedAt": decoded[0]["acceptedAt"].replace("Z", "")}
    assert not check["leaderboard.actions.v1"].is_valid(broken)

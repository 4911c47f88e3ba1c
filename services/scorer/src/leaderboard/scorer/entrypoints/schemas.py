"""The shapes the scorer's web routes answer with (JSON, camelCase as every other service)."""

from __future__ import annotations

import uuid
from typing import Any

from leaderboard.common.events import iso_ms

QUARANTINE_FIELDS = {
    "action_id": "actionId", "event_id": "eventId", "user_id": "userId", "username": "username",
    "action_type": "actionType", "points": "points", "source": "source", "occurred_at": "occurredAt",
    "accepted_at": "acceptedAt", "reason": "reason", "quarantined_at": "quarantinedAt",
    "kafka_partition": "partition", "kafka_offset": "offset", "audited_at": "auditedAt",
}  # fmt: skip


def quarantine_entry(row: dict[str, Any]) -> dict[str, Any]:
    """A ``quarantine`` row as the admin route lists it: times as ISO-8601 ms, UUIDs as strings."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if hasattr(value, "isoformat"):
            value = iso_ms(value)
        elif isinstance(value, uuid.UUID):
            value = str(value)
        out[QUARANTINE_FIELDS[key]] = value
    return out

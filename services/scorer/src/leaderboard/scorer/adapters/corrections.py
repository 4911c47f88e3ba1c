"""Corrections in Postgres (issue 11): one transaction per correction, idempotent by correctionId.

A void marks actions (``voided_at``, ``void_reason``, ``voided_by``), never deletes them; a restore
clears the marks; a rename sets ``users.username`` (and ``renamed_at``, so later actions carrying the
old name do not undo it). Then the user's entries are recomputed from their remaining actions, in log
order, with the boards' own rules (:func:`domain.fold_entries`): ``best`` and ``latest`` cannot be
"subtracted", so every entry the user's actions feed is folded again. An entry no action feeds any
more is deleted and comes back ``removed`` (Redis drops the member). ``users`` gets the new all-time
sum.

The recompute runs whether or not the correction inserted: a correction redelivered after a crash
between this commit and the Redis write must still bring Redis up to date, and the recompute of
unchanged actions changes nothing (no version bumps unless an entry differs, or a rename).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from uuid import UUID

import asyncpg

from leaderboard.common.boards import BoardCatalog
from leaderboard.common.events import (
    ActionVoided,
    UserActionsRestored,
    UserActionsVoided,
    UserRenamed,
)
from leaderboard.common.history import PastAction
from leaderboard.scorer.adapters.projection import UPSERT_ENTRIES, _entry_columns, score_row, stored_entry
from leaderboard.scorer.domain import Corrected, Entry, EntryKey, EntryRow, ScoreRow, entry_keys, fold_entries

RECORD = """
INSERT INTO corrections (correction_id, event_type, user_id, action_id, username, reason, by, at,
                         kafka_partition, kafka_offset)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (correction_id) DO NOTHING
RETURNING correction_id
"""

VOID_ONE = """
UPDATE actions SET voided_at = $3, void_reason = $4, voided_by = $5, void_correction_id = $6
WHERE action_id = $1 AND user_id = $2 AND voided_at IS NULL
"""

VOID_USER = """
UPDATE actions SET voided_at = $2, void_reason = $3, voided_by = $4, void_correction_id = $5
WHERE user_id = $1 AND voided_at IS NULL
"""

RESTORE = """
UPDATE actions SET voided_at = NULL, void_reason = NULL, voided_by = NULL, void_correction_id = NULL
WHERE user_id = $1 AND voided_at IS NOT NULL AND ($2::uuid IS NULL OR action_id = $2)
"""

RENAME = "UPDATE users SET username = $2, renamed_at = $3, updated_at = now() WHERE user_id = $1"

USER_ACTIONS = """
SELECT action_id, user_id, action_type, points, accepted_at, metadata, voided_at IS NOT NULL AS voided
FROM actions WHERE user_id = $1 ORDER BY kafka_partition, kafka_offset, action_id
"""

USER_ENTRIES = """
SELECT board, period, score, reached_at, action_id, metadata, version
FROM board_entries WHERE user_id = $1 ORDER BY board, period FOR UPDATE
"""

DELETE_ENTRIES = """
DELETE FROM board_entries e
USING unnest($1::text[], $2::text[]) AS k(board, period)
WHERE e.user_id = $3 AND e.board = k.board AND e.period = k.period
RETURNING e.board, e.period, e.version
"""

# A rename: the user's untouched entries take a new version so that Redis takes the new name.
BUMP = "UPDATE board_entries SET version = version + 1 WHERE user_id = $1 RETURNING board, period, version"

USER_SUM = """
UPDATE users u SET score = s.score, reached_at = coalesce(s.reached_at, u.reached_at),
                   updated_at = now(), version = u.version + 1
FROM (SELECT coalesce(sum(points), 0)::bigint AS score,
             (array_agg(accepted_at ORDER BY kafka_partition DESC, kafka_offset DESC))[1] AS reached_at
      FROM actions WHERE user_id = $1 AND voided_at IS NULL) s
WHERE u.user_id = $1
RETURNING u.user_id, u.username, u.score, u.reached_at, u.version
"""


@dataclass(frozen=True)
class Correction:
    """What a correction did: whether it was new (``applied``), how many actions it voided or
    restored, every entry of the user it recomputed (``removed`` ones included) and the user's row."""

    applied: bool
    affected: int
    entries: list[EntryRow]
    user: ScoreRow | None


async def apply_correction(conn: asyncpg.Connection, item: Corrected, catalog: BoardCatalog) -> Correction:
    e, r = item.event, item.record
    async with conn.transaction():
        inserted = await conn.fetchval(
            RECORD,
            e.correction_id,
            e.event_type,
            e.user_id,
            getattr(e, "action_id", None),
            e.username if isinstance(e, UserRenamed) else None,
            e.reason,
            e.by,
            e.at,
            r.partition,
            r.offset,
        )
        affected = await _mutate(conn, item) if inserted is not None else 0
        if inserted is not None:
            await conn.execute(
                "UPDATE corrections SET affected = $2 WHERE correction_id = $1", e.correction_id, affected
            )
        renamed = inserted is not None and isinstance(e, UserRenamed)
        entries = await _recompute(conn, e.user_id, catalog, renamed)
        user = await conn.fetchrow(USER_SUM, e.user_id) if affected or renamed else None
        if user is None:
            user = await conn.fetchrow(
                "SELECT user_id, username, score, reached_at, version FROM users WHERE user_id = $1",
                e.user_id,
            )
    row = score_row(user) if user is not None else None
    if row is not None:
        entries = [replace(x, username=row.username) for x in entries]
    return Correction(inserted is not None, affected, entries, row)


async def _mutate(conn: asyncpg.Connection, item: Corrected) -> int:
    """The correction's own change; returns how many actions it voided or restored."""
    e = item.event
    if isinstance(e, ActionVoided):
        status = await conn.execute(VOID_ONE, e.action_id, e.user_id, e.at, e.reason, e.by, e.correction_id)
    elif isinstance(e, UserActionsVoided):
        status = await conn.execute(VOID_USER, e.user_id, e.at, e.reason, e.by, e.correction_id)
    elif isinstance(e, UserActionsRestored):
        status = await conn.execute(RESTORE, e.user_id, e.action_id)
    else:
        status = await conn.execute(RENAME, e.user_id, e.username, e.at)
        return 0
    return int(status.rsplit(" ", 1)[-1])


async def _recompute(
    conn: asyncpg.Connection, user_id: UUID, catalog: BoardCatalog, renamed: bool
) -> list[EntryRow]:
    """Fold the user's counted actions again into every entry their actions (voided or not) feed;
    write the entries that differ, delete those nothing feeds any more."""
    actions: list[PastAction] = []
    voided: list[PastAction] = []
    for a in await conn.fetch(USER_ACTIONS, user_id):
        past = PastAction(
            a["action_id"],
            a["user_id"],
            a["action_type"],
            int(a["points"]),
            a["accepted_at"],
            json.loads(a["metadata"]) if a["metadata"] is not None else None,
        )
        (voided if a["voided"] else actions).append(past)
    fed: set[EntryKey] = {k for a in actions + voided for k in entry_keys(catalog, a)}
    user = str(user_id)
    current: dict[EntryKey, Entry] = {}
    for x in await conn.fetch(USER_ENTRIES, user_id):
        current[(x["board"], x["period"], user)] = stored_entry(x)
    want = {k: v for k, v in fold_entries(catalog, actions, {}).items() if k in fed}
    changed = {
        k: Entry(v.score, v.reached_ms, v.action_id, v.metadata, current[k].version if k in current else 0)
        for k, v in want.items()
        if k not in current or _differs(current[k], v)
    }
    # Every entry nothing feeds any more leaves Redis, also when its row went in an earlier attempt
    # (a redelivery after a crash before the Redis write): removal is idempotent there.
    gone = sorted(k for k in fed if k not in want)
    versions = {k: v.version for k, v in current.items()}
    if renamed:
        for b in await conn.fetch(BUMP, user_id):
            versions[(b["board"], b["period"], user)] = int(b["version"])
    if changed:
        ordered = sorted(changed.items())
        for u in await conn.fetch(UPSERT_ENTRIES, *_entry_columns(catalog, ordered)):
            versions[(u["board"], u["period"], user)] = int(u["version"])
    present = [k for k in gone if k in current]
    if present:
        await conn.fetch(DELETE_ENTRIES, [k[0] for k in present], [k[1] for k in present], user_id)
    rows = []
    for key in sorted(set(want) | set(current) | set(gone)):
        b, p, _ = key
        asc = catalog.boards[b].ascending if b in catalog.boards else False
        if key in gone:
            rows.append(EntryRow(b, p, user, "", 0, 0, versions.get(key, 0) + 1, asc, removed=True))
        elif key in want:
            e = want[key]
            rows.append(EntryRow(b, p, user, "", e.score, e.reached_ms, versions[key], asc))
        elif renamed:  # an entry no action of the user feeds now (carried over): its name changes too
            e = current[key]
            rows.append(EntryRow(b, p, user, "", e.score, e.reached_ms, versions[key], asc))
    return [x for x in rows if x.board in catalog.boards]


def _differs(a: Entry, b: Entry) -> bool:
    return (a.score, a.reached_ms, a.action_id, a.metadata) != (
        b.score,
        b.reached_ms,
        b.action_id,
        b.metadata,
    )

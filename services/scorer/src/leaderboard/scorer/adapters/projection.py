"""The Postgres projection: one transaction per batch that is idempotent by actionId.

The batch goes in as arrays (``unnest``), so a batch of thousands is one round trip. Action rows
insert with ``ON CONFLICT DO NOTHING``; only rows that actually inserted add points, and the
statement returns the absolute state of every user in the batch, which is all Redis needs. Users
whose events were all duplicates come back too: a batch redelivered after a crash between the
Postgres commit and the Redis write must still bring Redis up to date.

A refusal caused by a record's own data (:func:`record_caused`) rolls the whole transaction back;
the projector then isolates the record by bisecting the batch (see ``projector``).

With velocity caps configured, the same transaction first reads the recent actions of the capped
(user, type) pairs, lets :func:`domain.velocity_verdicts` decide, and records the events over a cap
in ``quarantine``. An actionId in ``quarantine`` never inserts into ``actions`` (the main statement
skips it), so a redelivered quarantined event stays quarantined.

Boards (issue 10): the same statement also reads the entries (``board_entries``, one row per board,
period and user) that the batch feeds, locked until the commit; the domain's rules fold the events whose
action row inserted into them (:func:`domain.fold_entries`), and a second statement upserts the entries
that changed. ``users`` stays as it was (the registry of names and seed 000's all-time sum, computed in
SQL as before).

Round trips per batch (issue 12): BEGIN, the main statement, the entries' upsert, COMMIT. Reading the
entries in the main statement rather than in a statement of their own saves one: py-spy on the scorer
at 500 events/s (the bench's end-to-end load, 2 shared cores) found about a third of this transaction's
samples in the socket writes of its round trips (each wakes a Postgres backend on a busy machine),
more than in building the arrays or folding the entries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from leaderboard.common.boardkeys import ALL_PERIOD
from leaderboard.common.boards import ALL_TIME, BoardCatalog, Period
from leaderboard.common.events import epoch_ms, from_epoch_ms
from leaderboard.scorer.domain import (
    CapPolicy,
    Decoded,
    Entry,
    EntryKey,
    EntryRow,
    Quarantined,
    ScoreRow,
    VelocityCap,
    entry_keys,
    fold_entries,
    velocity_verdicts,
)

# SQLSTATE classes that a record's own data causes: 22 data exception (NUL in text, invalid
# encoding, value out of range), 23 integrity constraint violation (a CHECK the row breaks), 54
# program limit exceeded (a value too large for an index or a row). Retrying such a statement gives
# the same answer, so the record is isolated instead. Everything else (08 connection, 40 deadlock and
# serialization, 53 resources, 57 operator intervention such as a shutdown, 42 a schema that is
# not there) says nothing about the record and is retried.
RECORD_CAUSED_CLASSES = frozenset({"22", "23", "54"})


def record_caused(exc: BaseException) -> bool:
    """Whether a store's refusal is caused by the records it was given (see RECORD_CAUSED_CLASSES).
    asyncpg's own ``DataError`` is raised before sending, when a value cannot be encoded at all
    (an unpaired surrogate, an integer out of range)."""
    if isinstance(exc, asyncpg.DataError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate or "")[:2] in RECORD_CAUSED_CLASSES
    return False


def describe(exc: BaseException) -> str:
    """The store's error as kept in the dead letter: SQLSTATE, exception type and message."""
    state = getattr(exc, "sqlstate", None)
    what = f"{state} {type(exc).__name__}" if state else type(exc).__name__
    return f"postgres refused the record ({what}): {exc}"


APPLY = """
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int[], $7::text[],
                         $8::timestamptz[], $9::timestamptz[], $10::int[], $11::bigint[], $12::int[],
                         $13::jsonb[])
        AS t(action_id, event_id, user_id, username, action_type, points, source,
             occurred_at, accepted_at, kafka_partition, kafka_offset, ord, metadata)
), inserted AS (
    INSERT INTO actions (action_id, event_id, user_id, action_type, points, source, occurred_at, accepted_at,
                         kafka_partition, kafka_offset, metadata)
    SELECT action_id, event_id, user_id, action_type, points, source, occurred_at, accepted_at,
           kafka_partition, kafka_offset, metadata
    FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.action_id = i.action_id)
    ORDER BY ord
    ON CONFLICT (action_id) DO NOTHING
    RETURNING action_id
), per_user AS (
    SELECT i.user_id,
           sum(i.points)::bigint AS points,
           (array_agg(i.accepted_at ORDER BY i.ord DESC))[1] AS reached_at,
           (array_agg(i.username ORDER BY i.ord DESC))[1] AS username
    FROM input i JOIN inserted USING (action_id)
    GROUP BY i.user_id
), upserted AS (
    INSERT INTO users AS u (user_id, username, score, reached_at, updated_at, version)
    SELECT user_id, username, points, reached_at, now(), 1 FROM per_user ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE
        SET score = u.score + EXCLUDED.score, reached_at = EXCLUDED.reached_at,
            username = CASE WHEN u.renamed_at IS NULL THEN EXCLUDED.username ELSE u.username END,
            updated_at = now(), version = u.version + 1
    RETURNING user_id, username, score, reached_at, version
), touched AS (
    SELECT * FROM upserted
    UNION ALL  -- users whose events were all duplicates: their committed state, for a redelivery
    SELECT u.user_id, u.username, u.score, u.reached_at, u.version   -- whose Redis write was lost
    FROM users u
    WHERE u.user_id IN (SELECT user_id FROM input) AND u.user_id NOT IN (SELECT user_id FROM upserted)
), locked AS (  -- the current entries of the (board, period, user) keys the batch feeds, locked
    SELECT e.board, e.period, e.user_id, e.score, e.reached_at, e.action_id, e.metadata, e.version
    FROM board_entries e
    JOIN unnest($14::text[], $15::text[], $16::uuid[]) AS k(board, period, user_id)
        USING (board, period, user_id)
    ORDER BY e.board, e.period, e.user_id
    FOR UPDATE OF e
)
SELECT t.user_id, t.username, t.score, t.reached_at, t.version, NULL::uuid AS action_id,
       NULL::text AS board, NULL::text AS period, NULL::jsonb AS metadata
FROM touched t
UNION ALL  -- the actions that inserted: only they feed the boards
SELECT NULL, NULL, NULL, NULL, NULL, action_id, NULL, NULL, NULL FROM inserted
UNION ALL  -- the board entries as they stood (board is never NULL here)
SELECT l.user_id, NULL, l.score, l.reached_at, l.version, l.action_id, l.board, l.period, l.metadata
FROM locked l
"""

UPSERT_ENTRIES = """
INSERT INTO board_entries AS e (board, period, user_id, score, rank_key, reached_at, action_id, metadata)
SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bigint[], $5::bigint[], $6::timestamptz[],
                     $7::uuid[], $8::jsonb[])
ORDER BY 1, 2, 3
ON CONFLICT (board, period, user_id) DO UPDATE
    SET score = EXCLUDED.score, rank_key = EXCLUDED.rank_key, reached_at = EXCLUDED.reached_at,
        action_id = EXCLUDED.action_id, metadata = EXCLUDED.metadata, updated_at = now(),
        version = e.version + 1
RETURNING board, period, user_id, version
"""


KNOWN = """
SELECT action_id FROM actions WHERE action_id = ANY($1::uuid[])
UNION ALL
SELECT action_id FROM quarantine WHERE action_id = ANY($1::uuid[])
"""

HISTORY = """
SELECT a.user_id, a.action_type, a.accepted_at
FROM actions a
JOIN unnest($1::uuid[], $2::text[]) AS k(user_id, action_type) USING (user_id, action_type)
WHERE a.accepted_at > $3
"""

QUARANTINE = """
INSERT INTO quarantine (action_id, event_id, user_id, username, action_type, points, source, occurred_at,
                        accepted_at, reason, kafka_partition, kafka_offset)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int[], $7::text[],
                     $8::timestamptz[], $9::timestamptz[], $10::text[], $11::int[], $12::bigint[])
ON CONFLICT (action_id) DO NOTHING
RETURNING action_id
"""


@dataclass(frozen=True)
class Applied:
    rows: list[ScoreRow]  # the users' all-time sums (``users``): ``?wait=true``'s newScore
    inserted: int
    quarantined: list[Quarantined] = field(default_factory=list)
    entries: list[EntryRow] = field(default_factory=list)  # every board entry the batch fed

    def then(self, later: Applied) -> Applied:
        """Two transactions applied in this order: a user's state is the later one's."""
        rows = {r.user_id: r for r in self.rows} | {r.user_id: r for r in later.rows}
        entries = {_key(e): e for e in self.entries} | {_key(e): e for e in later.entries}
        return Applied(
            list(rows.values()),
            self.inserted + later.inserted,
            self.quarantined + later.quarantined,
            list(entries.values()),
        )


def _key(e: EntryRow) -> EntryKey:
    return (e.board, e.period, e.user_id)


async def _quarantine(
    conn: asyncpg.Connection, items: Sequence[Decoded], caps: CapPolicy
) -> list[Quarantined]:
    """Decide and record the batch's events over a velocity cap (inside the caller's transaction)."""
    windows = {t: c.window_ms for t, c in caps.service.items()}
    for t, c in caps.every.items():
        windows[t] = max(windows.get(t, 0), c.window_ms)
    capped = [d for d in items if d.event.action_type in windows]
    if not capped:
        return []
    known = {r["action_id"] for r in await conn.fetch(KNOWN, [d.event.action_id for d in capped])}
    candidates = [d for d in capped if d.event.action_id not in known]
    if not candidates:
        return []
    window_ms = max(windows[d.event.action_type] for d in candidates)
    since = min(d.event.accepted_at for d in candidates) - timedelta(milliseconds=window_ms)
    pairs = sorted({(d.event.user_id, d.event.action_type) for d in candidates})
    history: dict[tuple[str, str], list[int]] = {}
    for r in await conn.fetch(HISTORY, [p[0] for p in pairs], [p[1] for p in pairs], since):
        history.setdefault((str(r["user_id"]), r["action_type"]), []).append(epoch_ms(r["accepted_at"]))
    _, over = velocity_verdicts(candidates, history, caps)
    if not over:
        return []
    cols: list[list[Any]] = [[] for _ in range(12)]
    for q in over:
        e, rec = q.item.event, q.item.record
        values = (
            e.action_id, e.event_id, e.user_id, e.username, e.action_type, e.points, e.source,
            e.occurred_at, e.accepted_at, q.reason, rec.partition, rec.offset,
        )  # fmt: skip
        for col, value in zip(cols, values, strict=True):
            col.append(value)
    inserted = {r["action_id"] for r in await conn.fetch(QUARANTINE, *cols)}
    return [q for q in over if q.item.event.action_id in inserted]


async def apply_batch(
    conn: asyncpg.Connection,
    items: Sequence[Decoded],
    caps: Mapping[str, VelocityCap] | CapPolicy | None = None,
    catalog: BoardCatalog | None = None,
) -> Applied:
    """One transaction: quarantine, the action rows (idempotent by actionId), the users' sums, and
    every board entry the newly inserted events feed (``catalog``, the packaged one by default)."""
    if not items:
        return Applied([], 0)
    policy = caps if isinstance(caps, CapPolicy) or caps is None else CapPolicy(caps, {})
    async with conn.transaction():
        quarantined = await _quarantine(conn, items, policy) if policy else []
        if quarantined:
            held = {q.item.event.action_id for q in quarantined}
            items = [d for d in items if d.event.action_id not in held]
        catalog = catalog or BoardCatalog.load()
        keys = sorted({k for d in items for k in entry_keys(catalog, d.event)})
        rows, inserted, current = await _apply(conn, items, keys)
        entries = await _apply_boards(conn, items, inserted, rows, catalog, current)
    return Applied(rows, len(inserted), quarantined, entries)


async def _apply_boards(
    conn: asyncpg.Connection,
    items: Sequence[Decoded],
    inserted: set[UUID],
    users: Sequence[ScoreRow],
    catalog: BoardCatalog,
    current: dict[EntryKey, Entry],
) -> list[EntryRow]:
    """Feed the boards with the events whose action row inserted (in log order) into the entries
    ``current`` holds (as the batch's statement read and locked them), and return the committed entry
    of every key the batch touches: duplicates included, so that a batch redelivered after a crash
    between the commit and the Redis write still brings Redis up to date."""
    new = [d.event for d in items if d.event.action_id in inserted]
    changed = fold_entries(catalog, new, current)
    if changed:
        ordered = sorted(changed.items(), key=lambda kv: kv[0])
        upserted = await conn.fetch(UPSERT_ENTRIES, *_entry_columns(catalog, ordered))
        for r in upserted:
            key = (r["board"], r["period"], str(r["user_id"]))
            current[key] = replace(changed[key], version=int(r["version"]))
    names = {u.user_id: u.username for u in users}
    return [
        EntryRow(b, p, u, names.get(u, u[:8]), e.score, e.reached_ms, e.version, catalog.boards[b].ascending)
        for (b, p, u), e in sorted(current.items(), key=lambda kv: kv[0])
    ]


def _json(value: dict[str, Any] | None) -> str | None:
    return json.dumps(value, separators=(",", ":")) if value is not None else None


def _entry_columns(catalog: BoardCatalog, entries: Sequence[tuple[EntryKey, Entry]]) -> list[list[Any]]:
    cols: list[list[Any]] = [[] for _ in range(8)]
    for (board, period, user), e in entries:
        rank_key = e.score if catalog.boards[board].ascending else -e.score
        metadata = _json(e.metadata)
        values = (
            board,
            period,
            UUID(user),
            e.score,
            rank_key,
            from_epoch_ms(e.reached_ms),
            e.action_id,
            metadata,
        )
        for col, value in zip(cols, values, strict=True):
            col.append(value)
    return cols


async def _apply(
    conn: asyncpg.Connection, items: Sequence[Decoded], keys: Sequence[EntryKey]
) -> tuple[list[ScoreRow], set[UUID], dict[EntryKey, Entry]]:
    """The batch's one statement: the action rows, the users' sums, and the board entries of
    ``keys`` as they stand, locked until the commit (one round trip where there were two)."""
    if not items:
        return [], set(), {}
    cols: list[list[object]] = [[] for _ in range(13)]
    for ord_, d in enumerate(items):
        e, r = d.event, d.record
        for col, value in zip(
            cols,
            (
                e.action_id,
                e.event_id,
                e.user_id,
                e.username,
                e.action_type,
                e.points,
                e.source,
                e.occurred_at,
                e.accepted_at,
                r.partition,
                r.offset,
                ord_,
                _json(e.metadata),
            ),
            strict=True,
        ):
            col.append(value)
    key_cols = ([k[0] for k in keys], [k[1] for k in keys], [UUID(k[2]) for k in keys])
    rows: list[ScoreRow] = []
    inserted: set[UUID] = set()
    current: dict[EntryKey, Entry] = {}
    for r in await conn.fetch(APPLY, *cols, *key_cols):
        if r["board"] is not None:
            current[(r["board"], r["period"], str(r["user_id"]))] = stored_entry(r)
        elif r["action_id"] is not None:
            inserted.add(r["action_id"])
        else:
            rows.append(score_row(r))
    return rows, inserted, current


def score_row(r: asyncpg.Record) -> ScoreRow:
    """A ``users`` row (user_id, username, score, reached_at, version) as the boards take it."""
    return ScoreRow(
        str(r["user_id"]), r["username"], int(r["score"]), epoch_ms(r["reached_at"]), int(r["version"])
    )


def stored_entry(r: asyncpg.Record) -> Entry:
    """A ``board_entries`` row (score, reached_at, action_id, metadata, version) as the rules fold it."""
    metadata = json.loads(r["metadata"]) if r["metadata"] is not None else None
    return Entry(int(r["score"]), epoch_ms(r["reached_at"]), r["action_id"], metadata, int(r["version"]))


async def board_state(
    conn: asyncpg.Connection, board: str, period: str = ALL_PERIOD
) -> tuple[str | None, int]:
    row = await conn.fetchrow(
        "SELECT epoch, version FROM boards WHERE board = $1 AND period = $2", board, period
    )
    return (row["epoch"], int(row["version"])) if row else (None, 0)


async def new_epoch(conn: asyncpg.Connection, board: str, epoch: str, period: Period | None = None) -> int:
    """Start a new epoch for the board's period (opening the period if it is new: one row per board
    and period, an upsert, so opening is idempotent); returns the version to continue from."""
    period = period or ALL_TIME
    version = await conn.fetchval(
        "INSERT INTO boards (board, period, epoch, starts_at, resets_at) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (board, period) DO UPDATE SET epoch = $3, updated_at = now() RETURNING version",
        board,
        period.id,
        epoch,
        period.start,
        period.end,
    )
    return int(version)


async def record_versions(conn: asyncpg.Connection, versions: Sequence[tuple[str, str, int]]) -> None:
    """Each (board, period)'s announced version, in one statement (never moves a version back)."""
    await conn.execute(
        "UPDATE boards AS b SET version = GREATEST(b.version, v.version), updated_at = now() "
        "FROM (SELECT board, period, max(version) AS version "
        "FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(board, period, version) "
        "GROUP BY board, period) AS v "
        "WHERE b.board = v.board AND b.period = v.period",
        [b for b, _, _ in versions],
        [p for _, p, _ in versions],
        [v for _, _, v in versions],
    )


async def known_periods(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """Every (board, period) that has entries or was opened."""
    rows = await conn.fetch(
        "SELECT board, period FROM boards UNION SELECT DISTINCT board, period FROM board_entries"
    )
    return sorted((r["board"], r["period"]) for r in rows)


async def board_entries(
    conn: asyncpg.Connection, board: str, period: str, ascending: bool = False
) -> list[EntryRow]:
    """Every entry of one board and period (names from ``users``), for a rebuild of Redis."""
    rows = await conn.fetch(
        "SELECT e.user_id, u.username, e.score, e.reached_at, e.version FROM board_entries e "
        "LEFT JOIN users u USING (user_id) WHERE e.board = $1 AND e.period = $2",
        board,
        period,
    )
    return [
        EntryRow(
            board,
            period,
            str(r["user_id"]),
            r["username"] or str(r["user_id"])[:8],
            int(r["score"]),
            epoch_ms(r["reached_at"]),
            int(r["version"]),
            ascending,
        )
        for r in rows
    ]


async def all_scores(conn: asyncpg.Connection) -> list[ScoreRow]:
    rows = await conn.fetch("SELECT user_id, username, score, reached_at, version FROM users")
    return [score_row(r) for r in rows]


async def unaudited_quarantine(conn: asyncpg.Connection, limit: int = 1000) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT action_id, user_id, action_type, points, accepted_at, reason FROM quarantine "
            "WHERE audited_at IS NULL ORDER BY quarantined_at LIMIT $1",
            limit,
        )
    )


async def mark_audited(conn: asyncpg.Connection, action_ids: Sequence[UUID]) -> None:
    await conn.execute(
        "UPDATE quarantine SET audited_at = now() WHERE action_id = ANY($1::uuid[])", list(action_ids)
    )


async def list_quarantine(
    conn: asyncpg.Connection, *, limit: int = 100, user_id: UUID | None = None
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT action_id, event_id, user_id, username, action_type, points, source, occurred_at, "
        "accepted_at, reason, quarantined_at, kafka_partition, kafka_offset, audited_at FROM quarantine "
        "WHERE $2::uuid IS NULL OR user_id = $2 ORDER BY quarantined_at DESC, action_id LIMIT $1",
        limit,
        user_id,
    )
    return [dict(r) for r in rows]

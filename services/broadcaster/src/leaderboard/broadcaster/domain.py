"""The broadcaster's pure rules for boards (issue 10), no I/O: which boards it serves, which period of
a board a read or a live client follows, and shared (competition) ranks.

Which period is current: the board catalog's window maths (``leaderboard.common.boards``) on this
instance's clock, moved forward by what the scorer announces. The scorer opens a period at its own
clock's boundary and announces it (``BoardChanged.period``, and the board's ``current-period`` key in
Redis); an instance whose clock lags a little adopts that period as soon as it hears of it, so live
clients and reads switch together with the scorer, and an announcement of an earlier period (a late
one, after a rollover) is ignored. An announced period never moves the board backwards.

Shared ranks: ``rank`` is the strict board order (ties broken by the time the score was reached,
then userId); ``sharedRank`` is standard competition ranking: equal scores share the rank of the
first of them and the next score skips (1, 2, 2, 4). For a page deep in the board the rank of the
page's best score needs the number of entries with a strictly better score (``better``); every other
score on the page starts on the page, so its shared rank is the strict rank of its first entry.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from leaderboard.broadcaster.errors import Invalid, UnknownBoard, UnknownPeriod
from leaderboard.common.boards import (
    BoardCatalog,
    BoardSpec,
    Clock,
    Period,
    system_clock,
)
from leaderboard.common.boards import (
    UnknownPeriod as BadPeriodId,
)

MAX_USERS = 100  # users per ranks request
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_CURSOR = re.compile(r"^(\d{1,19}):([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
_EPOCH_SECONDS = re.compile(r"^\d{1,12}(\.\d{1,6})?$")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][0-9:.,+\-Z]{2,30})?$")
AT_MAX = 40  # characters of an ``at=``


@dataclass(frozen=True)
class Resolved:
    """The period a read names: ``current`` (the one live clients follow) or a past one; ``kept``:
    Redis still holds it (else only Postgres does)."""

    spec: BoardSpec
    period: Period
    current: bool
    kept: bool

    @property
    def windowed(self) -> bool:
        return self.spec.window != "all"


def iso_ms(at: datetime | None) -> str | None:
    """The wire form of a server time: ISO-8601 UTC with milliseconds."""
    if at is None:
        return None
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class BoardPeriods:
    """The boards this instance serves and the period each one currently follows."""

    def __init__(self, catalog: BoardCatalog, only: Iterable[str] | None = None, clock: Clock | None = None):
        listed = list(only) if only is not None else [b.id for b in catalog]
        missing = [b for b in listed if catalog.get(b) is None]
        if missing:
            raise ValueError(
                f"LEADERBOARD_BOARDS names {', '.join(map(repr, missing))}, which the board catalog "
                "does not define (LEADERBOARD_BOARDS_FILE)"
            )
        self.catalog = catalog
        self.ids = listed
        self.clock = clock or system_clock()
        self._announced: dict[str, Period] = {}  # board -> the latest period the scorer announced

    @classmethod
    def default(cls) -> BoardPeriods:
        """The packaged catalog on the system clock (what an instance without settings serves)."""
        return cls(BoardCatalog.load())

    def spec(self, board: str, may_appear: bool = False) -> BoardSpec:
        spec = self.catalog.get(board) if board in self.ids else None
        if spec is None:
            raise UnknownBoard(board, may_appear=may_appear)
        return spec

    def current(self, board: str) -> Period | None:
        """The period the board follows now (None: a season board between seasons)."""
        spec = self.spec(board)
        now = self.clock()
        by_clock = spec.current(now)
        seen = self._announced.get(board)
        if seen is None or spec.past(seen, now):
            return by_clock
        if by_clock is None or _later(seen, by_clock):
            return seen
        return by_clock

    def observe(self, board: str, period_id: str) -> bool:
        """An announcement of ``board``'s ``period_id``: True when it is the current or an upcoming
        period (it is then followed), False for an earlier one, a board not served or an id that names
        no period of the board (ignored)."""
        spec = self.catalog.get(board) if board in self.ids else None
        if spec is None:
            return False
        try:
            period = spec.period(period_id)
        except BadPeriodId:
            return False
        current = self.current(board)
        if current is not None and _later(current, period):
            return False
        if current is None or _later(period, current):
            self._announced[board] = period
        return True

    def resolve(self, board: str, period_id: str | None = None) -> Resolved:
        """The period a read asks for: the current one, or ``period_id`` (a past period that has
        started). Unknown boards and periods raise the domain errors (404)."""
        spec = self.spec(board, may_appear=False)
        current = self.current(board)
        if period_id is None:
            if current is None:
                raise UnknownPeriod(board, None)
            return Resolved(spec, current, True, True)
        try:
            period = spec.period(period_id)
        except BadPeriodId:
            raise UnknownPeriod(board, period_id) from None
        if current is not None and period.id == current.id:
            return Resolved(spec, period, True, True)
        now = self.clock()
        if period.start is not None and period.start > now:
            raise UnknownPeriod(board, period_id, started=False)
        return Resolved(spec, period, False, spec.kept(period, now))


def _later(a: Period, b: Period) -> bool:
    """Whether period ``a`` starts after ``b`` (an all-time period is never later)."""
    return a.start is not None and (b.start is None or a.start > b.start)


def shared_ranks(entries: Sequence[Mapping[str, Any]], better: int) -> list[int]:
    """Competition ranks of ``entries`` (each with ``rank`` and ``score``, in page order, either
    direction); ``better``: how many entries of the whole board have a strictly better score than the
    page's best entry (its lowest ``rank``)."""
    if not entries:
        return []
    best = min(entries, key=lambda e: e["rank"])
    first_of: dict[Any, int] = {}
    for e in entries:
        score = e["score"]
        if score not in first_of or e["rank"] < first_of[score]:
            first_of[score] = e["rank"]
    first_of[best["score"]] = better + 1
    return [first_of[e["score"]] for e in entries]


def with_shared_ranks(entries: list[dict[str, Any]], better: int = 0) -> list[dict[str, Any]]:
    """``entries`` with ``sharedRank`` after ``rank`` (``better`` as :func:`shared_ranks`; 0 for a top
    that starts at rank 1)."""
    shared = shared_ranks(entries, better)
    out = []
    for e, s in zip(entries, shared, strict=True):
        item = {"rank": e["rank"], "sharedRank": s}
        item.update((k, v) for k, v in e.items() if k not in ("rank", "sharedRank"))
        out.append(item)
    return out


def parse_users(raw: str) -> list[str]:
    """``users=id1,id2,...``: 1 to :data:`MAX_USERS` UUIDs (canonical lowercase, repeats dropped,
    in the order given); refusals name the field."""
    parts = [p.strip() for p in raw.split(",")]
    if not raw.strip() or any(not p for p in parts):
        raise Invalid("users", "a comma-separated list of user ids, none empty")
    if len(parts) > MAX_USERS:
        raise Invalid("users", f"at most {MAX_USERS} users, not {len(parts)}")
    out: dict[str, None] = {}
    for i, part in enumerate(parts):
        try:
            if len(part) != 36:
                raise ValueError
            out[str(UUID(part))] = None
        except ValueError:
            shown = part if len(part) <= 40 else part[:40] + "…"
            raise Invalid("users", f"item {i} ({shown!r}) is not a UUID") from None
    return list(out)


@dataclass(frozen=True)
class Cursor:
    """Where a page of a user's history resumes: after this (acceptedAt, actionId), the order the
    history is listed in. Opaque to clients: :func:`encode_cursor` / :func:`decode_cursor`."""

    accepted_at: datetime
    action_id: UUID


def encode_cursor(cursor: Cursor) -> str:
    """Microseconds since the epoch and the actionId, base64url without padding."""
    micros = (cursor.accepted_at - _EPOCH) // _MICRO
    return base64.urlsafe_b64encode(f"{micros}:{cursor.action_id}".encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> Cursor:
    """A cursor this service handed out; anything else is :class:`Invalid` naming ``cursor``."""
    bad = Invalid("cursor", "not a cursor this service handed out (pass nextCursor back unchanged)")
    if len(raw) > 128 or not raw.isascii():
        raise bad
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise bad from None
    found = _CURSOR.match(text)
    if found is None:
        raise bad
    try:
        at = _EPOCH + int(found[1]) * _MICRO
    except OverflowError:
        raise bad from None
    return Cursor(at, UUID(found[2]))


def parse_at(raw: str, now: datetime) -> datetime:
    """``at=``: epoch seconds (``1763893530``, ``1763893530.5``) or ISO-8601 (``2026-11-23``,
    ``2026-11-23T10:15:30.123Z``, ``...+01:00``; without an offset, UTC), ASCII only, not after
    ``now``. Refusals are :class:`Invalid` naming ``at``."""
    text = raw.strip()
    shape = "ISO-8601 (2026-11-23T10:15:30Z) or epoch seconds"
    if len(text) > AT_MAX or not text.isascii():
        raise Invalid("at", f"must be {shape}")
    try:
        if _EPOCH_SECONDS.match(text):
            at = datetime.fromtimestamp(float(text), UTC)
        elif _ISO.match(text):
            parsed = datetime.fromisoformat(text)
            at = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        else:
            raise ValueError(text)
    except (ValueError, OverflowError, OSError):
        raise Invalid("at", f"must be {shape}, not {text[:AT_MAX]!r}") from None
    if at > now:
        raise Invalid("at", f"{iso_ms(at)} is in the future (now: {iso_ms(now)})")
    return at

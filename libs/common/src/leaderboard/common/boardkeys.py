"""Every Redis key of a board, in one place: the scorer writes them, the broadcaster and the CLI read
or clear them, and the scorer's Lua script gets what it needs of the layout formatted in.

Layout (``{base}`` = ``{prefix}:board:{board}``, then ``:{period}`` when the board has one)::

    {base}:rank          sorted set, every member at score 0, ordered by its rank member (below)
    {base}:member        hash userId -> the user's current rank member
    {base}:names         hash userId -> username
    {base}:meta          hash epoch, version, top, rev
    {base}:ver           hash userId -> the Postgres version Redis holds (late writes never roll back)
    {base}:rebuild-lock  the lock a rebuild from Postgres holds
    {base}:rebuild:{token}:{rank|member|names|ver}   a rebuild's keys, built aside, then RENAMEd
    {prefix}:changes     pub/sub channel: every BoardChanged record, repeated (see changes_channel)

Periods (boards with a time window, issue 10): ``BoardKeys(prefix, "daily", period="2026-11-23")``
gives ``{prefix}:board:daily:2026-11-23:rank`` and so on. Without a period nothing is appended, so
the keys of today's boards stay byte for byte what they were. A board name therefore must not hold
``:`` (a period would then be ambiguous; ``leaderboard.common.boards.BoardId`` refuses it).
:meth:`BoardKeys.of` maps a board's period id to its keys: the single period ``all`` of an all-time
board has no suffix (so ``global`` and ``best-match`` are ``{prefix}:board:global:...``), every other
period id is appended. :meth:`BoardKeys.current_period` is a plain string key the scorer sets to the
id of the period it opened last for a windowed board (readers may use it to follow a rollover the
moment the scorer announces it; ``leaderboard.common.boards`` computes the same id from a clock).
Keys of a past period carry an expiry (EXPIREAT): they go when the period leaves the board's ``keep``.

Redis Cluster: a script and a MULTI may only touch keys of one hash slot, so under Cluster every key
of one board and period (and its rebuild keys, which are RENAMEd into place) would need the same hash
tag, e.g. ``lb:board:{global}:rank``. No tag is added now: it would rename every key, so the
boards of a running deployment would be orphaned (readers would see an empty board until a rebuild)
and the scorer, the broadcaster and the CLI would have to switch in lockstep, for a topology we do
not run. Because every key is derived from :attr:`BoardKeys.base` here, adding the tag later is a
change to that one property (plus a rebuild-cache at the switch).

Rank members (``leaderboard.common.ranking.RankKey``) are fixed width::

    (2**63 - 1 - score) as 19 digits ":" reachedAt epoch-ms as 13 digits ":" userId

so the userId starts at :data:`MEMBER_USER_OFFSET` (0-based). Lua strings are 1-based: scripts get
:data:`LUA` formatted in (``string.sub(m, $member_user_start)``) instead of a magic number.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BOARD = "global"  # the all-time board every service reads and writes unless told otherwise
ALL_PERIOD = "all"  # the period id of an all-time board (no key suffix)

SCORE_DIGITS = 19  # 2**63 - 1 has 19 digits
MS_DIGITS = 13  # epoch milliseconds up to the year 2286
MEMBER_USER_OFFSET = SCORE_DIGITS + 1 + MS_DIGITS + 1  # 0-based index of the userId in a rank member


def changes_channel(prefix: str) -> str:
    """Redis pub/sub channel on which the scorer repeats each ``BoardChanged`` record (the same bytes)
    as it sends it to Kafka: the broadcasters' low-latency path. The changes topic stays the
    ordered, durable feed; a broadcaster applies whichever copy comes first (the hub keeps the newer
    version), so a lost pub/sub message only costs the Kafka fetch's delay."""
    return f"{prefix}:changes"


# What Lua scripts need of the layout, for ``string.Template(script).substitute(LUA)``.
LUA: dict[str, int] = {"member_user_start": MEMBER_USER_OFFSET + 1}


@dataclass(frozen=True)
class BoardKeys:
    """The Redis keys of one board (and, later, one period of it)."""

    prefix: str
    board: str
    period: str | None = None
    aside: str | None = None  # set on the keys a rebuild builds aside (see :meth:`rebuild_keys`)

    @property
    def base(self) -> str:
        base = f"{self.prefix}:board:{self.board}"
        if self.period is not None:
            base = f"{base}:{self.period}"
        if self.aside is not None:
            base = f"{base}:rebuild:{self.aside}"
        return base

    @property
    def rank(self) -> str:
        return f"{self.base}:rank"

    @property
    def members(self) -> str:
        return f"{self.base}:member"

    @property
    def names(self) -> str:
        return f"{self.base}:names"

    @property
    def meta(self) -> str:
        return f"{self.base}:meta"

    @property
    def versions(self) -> str:
        """userId -> the Postgres version of the user's entry that Redis holds."""
        return f"{self.base}:ver"

    @property
    def rebuild_lock(self) -> str:
        return f"{self.base}:rebuild-lock"

    @property
    def data(self) -> tuple[str, str, str, str, str]:
        """Every key that holds the board's state (what a reset deletes): rank, members, names,
        meta, versions."""
        return (self.rank, self.members, self.names, self.meta, self.versions)

    @classmethod
    def of(cls, prefix: str, board: str, period: str) -> BoardKeys:
        """The keys of ``board``'s period ``period`` (a period id; ``"all"``: the all-time keys)."""
        return cls(prefix, board, None if period == ALL_PERIOD else period)

    @property
    def current_period(self) -> str:
        """String key: the id of the period the scorer opened last (windowed boards only)."""
        return f"{self.prefix}:board:{self.board}:current-period"

    def rebuild_keys(self, token: str) -> BoardKeys:
        """Where a rebuild builds the board aside before RENAMEing it into place (no meta: the
        rebuild writes the live meta itself)."""
        if self.aside is not None:
            raise ValueError("rebuild keys of rebuild keys")
        return BoardKeys(self.prefix, self.board, self.period, token)

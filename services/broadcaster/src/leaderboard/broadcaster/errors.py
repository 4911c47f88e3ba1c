"""Why the broadcaster refuses a read or a live subscription, as data (no HTTP status codes here).

Every refusal is one subclass of :class:`DomainError`; its message is the sentence a client sees. The
only place that turns them into status codes, ``code`` strings and headers is
``leaderboard.broadcaster.entrypoints.errors``, so the rules (service code, the WebSocket admission
policy, the drain) can be driven and tested without a web framework.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every refusal; ``str(exc)`` is the sentence for the client."""


class UnknownBoard(DomainError):
    """No such board. ``may_appear``: a board nobody has scored on may exist later (REST reads)."""

    SHOWN = 64  # a client-supplied name is echoed at most this long

    def __init__(self, board: str, may_appear: bool = True) -> None:
        shown = board if len(board) <= self.SHOWN else board[: self.SHOWN] + "…"
        super().__init__(f"no board named '{shown}'" + (" (yet)" if may_appear else ""))
        self.board = board


class UnknownPeriod(DomainError):
    """A ``period`` that is malformed, names no period of the board, or has not started; with no
    period, a season board between its seasons."""

    SHOWN = 64

    def __init__(self, board: str, period: str | None, started: bool = True) -> None:
        if period is None:
            super().__init__(f"board '{board}' has no current period; name one with period=")
        else:
            shown = period if len(period) <= self.SHOWN else period[: self.SHOWN] + "…"
            if started:
                super().__init__(f"period '{shown}' is not a period of board '{board}'")
            else:
                super().__init__(f"period '{shown}' of board '{board}' has not started")
        self.board, self.period = board, period


class ArchiveUnavailable(DomainError):
    """A past period Redis no longer holds, and Postgres (which keeps every period) does not answer."""

    def __init__(self, why: str) -> None:
        super().__init__(f"past periods cannot be read now ({why}); try again later")
        self.why = why


class UserNotRanked(DomainError):
    def __init__(self, user_id: str, board: str) -> None:
        super().__init__(f"user {user_id} has no score on board '{board}'")
        self.user_id, self.board = user_id, board


class Invalid(DomainError):
    """A parameter the strict parsers refused; ``where`` is ``field`` (query) or ``header``."""

    def __init__(self, name: str, reason: str, where: str = "field") -> None:
        super().__init__(f"{where} '{name}': {reason}")
        self.name, self.reason, self.where = name, reason, where


class Unauthenticated(DomainError):
    """No bearer token, or one that does not verify."""


class VerifierUnavailable(DomainError):
    """Tokens cannot be checked on this instance (no key source configured)."""

    def __init__(self) -> None:
        super().__init__("token verification is not configured")


class OriginRefused(DomainError):
    """A browser page from an origin that may not open the live socket (cross-site hijacking)."""

    def __init__(self, origin: str) -> None:
        super().__init__("origin not allowed")
        self.origin = origin


class TooManyClients(DomainError):
    """This instance holds as many live clients as it is configured for."""

    def __init__(self, retry_after_s: int = 5) -> None:
        super().__init__("too many live clients on this instance")
        self.retry_after_s = retry_after_s


class TooManyFromAddress(DomainError):
    """One client address holds the per-IP cap of live connections."""

    def __init__(self, ip: str, retry_after_s: int = 5) -> None:
        super().__init__("too many connections from this address")
        self.ip, self.retry_after_s = ip, retry_after_s


class Draining(DomainError):
    """The instance is shutting down: reconnect (elsewhere) after ``retry_after_ms``."""

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__("this instance is shutting down; reconnect")
        self.retry_after_ms = retry_after_ms


class NoSuchSocket(DomainError):
    """A WebSocket handshake on a path that has no live endpoint."""

    def __init__(self) -> None:
        super().__init__("no WebSocket endpoint here; use /ws/leaderboard")

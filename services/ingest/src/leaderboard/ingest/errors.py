"""Why ingest refuses something, as data: one exception class per refusal, raised by the domain, the
use cases and the dependencies, never carrying an HTTP status.

Each carries the sentence a client reads (``message``, also ``str(exc)``) and the facts an answer
needs (the original event id of a used ticket, how long to wait). What status, code and headers each
becomes is decided in one place, ``leaderboard.ingest.entrypoints.errors``; another entrypoint (a CLI,
a consumer) can map them its own way.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every refusal ingest decides."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownActionType(DomainError):
    def __init__(self, action_type: str) -> None:
        super().__init__(f"unknown action type '{action_type}'")
        self.action_type = action_type


class Invalid(DomainError):
    """A value breaks a rule the schema cannot express (a time window, a batch bound, a catalog bound).
    ``field`` names the offending field when there is one."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


class TicketNotFound(DomainError):
    def __init__(self) -> None:
        super().__init__("unknown actionId: start the action first")


class TicketForbidden(DomainError):
    def __init__(self) -> None:
        super().__init__("this action ticket belongs to another player")


class TicketUsed(DomainError):
    """The ticket was already completed, by the event ``event_id`` (None when the store lost it)."""

    def __init__(self, event_id: str | None) -> None:
        super().__init__("this action was already completed")
        self.event_id = event_id


class TicketExpired(DomainError):
    def __init__(self) -> None:
        super().__init__("this action ticket has expired")


class TooFast(DomainError):
    """Completed before the action's minimum duration; ``wait_s`` is rounded up, never too early."""

    def __init__(self, wait_s: int) -> None:
        super().__init__(f"completed faster than this action allows; wait {wait_s}s")
        self.wait_s = wait_s


class CapReached(DomainError):
    """The player's hourly cap for the action type; a slot frees in ``retry_after_s``."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("hourly cap for this action type reached")
        self.retry_after_s = retry_after_s


SLOW_DOWN = "too many requests; slow down"  # what a spent rate limit answers


class RateLimited(DomainError):
    """Too many requests from one subject; ``headers`` are the limiter's RateLimit-*/Retry-After."""

    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.headers = headers


class RoleRefused(DomainError):
    """The caller's role may not do this (a service token on the player path, or the reverse)."""


class DevModeOff(DomainError):
    """A dev-only operation outside dev mode: answered as if it did not exist."""

    def __init__(self, path: str) -> None:
        super().__init__(f"no route for POST {path}")


class LogUnavailable(DomainError):
    """The event log did not acknowledge; nothing was recorded."""

    def __init__(self, why: str) -> None:
        super().__init__(f"event log unavailable ({why}); nothing was recorded, retry later")
        self.why = why


class StoreUnavailable(DomainError):
    """The ticket and rate-limit store (Redis) did not answer; nothing was recorded."""

    def __init__(self) -> None:
        super().__init__("ticket and rate-limit store unavailable; nothing was recorded, retry later")


class UnknownTicketOutcome(DomainError):
    """The ticket store answered something this version does not know (a newer script?)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(f"ticket store answered {outcome!r}")
        self.outcome = outcome

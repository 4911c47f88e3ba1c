"""Why the scorer refuses a request, as data: raised by the service and the entrypoints' auth, turned
into a status code and an error code only by ``entrypoints.errors`` (the one place that knows HTTP).

Each refusal carries the sentence a client is shown (``str(exc)``) and the facts behind it."""

from __future__ import annotations


class DomainError(Exception):
    """A refusal of the scorer; ``message`` is the sentence for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(DomainError):
    """No credential, or one that does not verify (its reason is the message)."""


class Forbidden(DomainError):
    """A verified caller without the role the operation needs."""

    def __init__(self, message: str, *, role: str) -> None:
        super().__init__(message)
        self.role = role


class Invalid(DomainError):
    """A parameter the scorer cannot accept; the message names ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Unavailable(DomainError):
    """The scorer cannot serve this now (starting, or a dependency is not configured)."""

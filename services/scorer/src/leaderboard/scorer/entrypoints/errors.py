"""THE map from the scorer's domain exceptions to HTTP: status, error code and the error shape
``{"status": "error", "error": <sentence>, "code": <code>}``. The only place that knows status codes
for domain errors (``leaderboard.scorer.errors`` carries data only)."""

from __future__ import annotations

from leaderboard.scorer.errors import DomainError, Forbidden, Invalid, Unauthorized, Unavailable

ERRORS: dict[type[DomainError], tuple[int, str]] = {
    Unauthorized: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    Invalid: (422, "invalid"),
    Unavailable: (503, "unavailable"),
}


def status_and_code(exc: DomainError) -> tuple[int, str]:
    """The most specific mapping along the exception's class hierarchy (500 if none, a bug)."""
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return 500, "internal"


def error_body(exc: DomainError) -> dict[str, str]:
    return {"status": "error", "error": exc.message, "code": status_and_code(exc)[1]}

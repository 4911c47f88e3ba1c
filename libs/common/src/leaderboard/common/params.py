"""The one parser for numbers a client sends outside a JSON body (query strings, headers such as
``Last-Event-ID``, WebSocket ``?since=``, admin ``?limit=``).

``int()`` accepts what no client should send: Unicode digits (``"²"`` raises late, ``"٣"`` parses),
underscores, signs, surrounding spaces, and 5,000-digit strings that cost quadratic time or raise
``ValueError`` past Python's digit limit. Every client-supplied number goes through
:func:`parse_count` instead: ASCII digits only, bounded length, bounded value.
"""

from __future__ import annotations

import re

# 18 digits always fit a signed 64-bit integer (Postgres bigint, Redis integers, JSON-safe in Python).
MAX_DIGITS = 18
_DIGITS = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")


class BadNumber(ValueError):
    """A client-supplied number that is not a bounded run of ASCII digits; the message names the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field '{field}': {reason}")
        self.field = field


def parse_count(
    raw: str | bytes | None, field: str, *, minimum: int = 0, maximum: int = 10**MAX_DIGITS - 1
) -> int:
    """A non-negative integer from ASCII digits only, at most :data:`MAX_DIGITS` of them, within
    ``minimum..maximum``. Raises :class:`BadNumber` (a ``ValueError``) naming ``field`` otherwise."""
    if raw is None:
        raise BadNumber(field, "is required")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            raise BadNumber(field, "must be ASCII digits") from None
    if not _DIGITS.fullmatch(raw):
        if len(raw) > MAX_DIGITS and raw.isascii() and raw.isdigit():
            raise BadNumber(field, f"has more than {MAX_DIGITS} digits")
        raise BadNumber(field, "must be a non-negative integer in ASCII digits")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise BadNumber(field, f"must lie in {minimum}..{maximum}")
    return value


def parse_optional_count(
    raw: str | bytes | None, field: str, *, minimum: int = 0, maximum: int = 10**MAX_DIGITS - 1
) -> int | None:
    """:func:`parse_count`, with an absent value (``None``) passed through as ``None``."""
    if raw is None:
        return None
    return parse_count(raw, field, minimum=minimum, maximum=maximum)

"""Importable dependencies of the broadcaster's routes: the ports, bearer auth (the shared
``leaderboard.common.web.bearer_principal`` and ``leaderboard.common.auth.authenticate``), the reader
gate and the strict parsing of every number a client sends (``Annotated`` types, module-level functions).

Numbers go through ``leaderboard.common.params.parse_count`` (ASCII digits, bounded), never
``int()``: 5,000 digits or a Unicode digit is a 422 naming the field, on REST and on the WebSocket
handshake alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError
from starlette.requests import HTTPConnection

from leaderboard.broadcaster.bootstrap import Ports
from leaderboard.broadcaster.errors import Invalid, Unauthenticated, VerifierUnavailable
from leaderboard.common.auth import AuthError, Principal, TokenVerifier, authenticate, bearer_token
from leaderboard.common.boardkeys import DEFAULT_BOARD
from leaderboard.common.params import BadNumber, parse_count, parse_optional_count
from leaderboard.common.web import bearer_principal

BOARD_PATTERN = r"^[a-z0-9][a-z0-9_.:-]{0,63}$"
EPOCH_MAX = 64  # epochs are short ids (12 hex digits); anything longer is not one of ours


def get_ports(conn: HTTPConnection) -> Ports:
    ports: Ports = conn.app.state.ports
    return ports


async def ports(conn: HTTPConnection) -> Ports:
    """The ports as a dependency: async, so FastAPI calls it inline rather than in its thread pool."""
    return get_ports(conn)


PortsDep = Annotated[Ports, Depends(ports)]


# --- Numbers ----------------------------------------------------------------------------------------


def _reason(exc: BadNumber) -> str:
    return str(exc).removeprefix(f"field '{exc.field}': ")


def counted(field: str, minimum: int = 0, maximum: int = 10**18 - 1) -> BeforeValidator:
    """An integer query parameter read by ``parse_count`` (ASCII digits, bounded), not ``int()``."""

    def check(raw: object) -> object:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw  # a declared default
        try:
            return parse_count(
                raw if isinstance(raw, str | bytes) else None, field, minimum=minimum, maximum=maximum
            )
        except BadNumber as exc:
            raise PydanticCustomError("invalid_number", _reason(exc)) from None

    return BeforeValidator(check)


Board = Annotated[
    str, Query(pattern=BOARD_PATTERN, description=f"Board name; `{DEFAULT_BOARD}` is the all-time board.")
]
PeriodId = Annotated[
    str | None,
    Query(
        max_length=64,
        description="A past period of a windowed board: `2026-11-23` (daily), `2026-W47` (weekly), "
        "`2026-11` (monthly) or a season's id; the current period when absent.",
    ),
]
UsersList = Annotated[
    str,
    Query(
        max_length=4000,
        description="Up to 100 comma-separated user ids (UUIDs).",
    ),
]
At = Annotated[
    str | None,
    Query(
        max_length=64,
        description="A past moment, ISO-8601 (`2026-11-23T10:15:30Z`) or epoch seconds: the board as it "
        "stood then, folded from the event history (for a windowed board, the period it falls in unless "
        "`period` names one). Not in the future.",
    ),
]
CursorText = Annotated[
    str | None, Query(max_length=128, description="The `nextCursor` of the page before (opaque).")
]
Epoch = Annotated[str | None, Query(max_length=EPOCH_MAX, description="The epoch of the version in `since`.")]
PageNo = Annotated[int, counted("page", 1, 1_000_000), Query(ge=1, le=1_000_000)]
Limit = Annotated[int, counted("limit", 1, 100), Query(ge=1, le=100)]
Around = Annotated[int, counted("around", 0, 50), Query(ge=0, le=50)]
Since = Annotated[int | None, counted("since"), Query(ge=0)]


@dataclass(frozen=True)
class ResumePoint:
    """Where a live client resumes: ``since`` (query) or, from an EventSource, ``Last-Event-ID``."""

    since: int | None
    from_header: bool = False


def resume_point(since: Since = None, last_event_id: Annotated[str | None, Header()] = None) -> ResumePoint:
    """``since`` wins; else a Last-Event-ID, read as strictly as a query number (422 naming the header)."""
    if since is not None or last_event_id is None:
        return ResumePoint(since)
    try:
        return ResumePoint(parse_count(last_event_id, "Last-Event-ID"), from_header=True)
    except BadNumber as exc:
        raise Invalid("Last-Event-ID", _reason(exc), where="header") from None


Resume = Annotated[ResumePoint, Depends(resume_point)]


def ws_resume(since: str | None, epoch: str | None) -> int | None:
    """The WebSocket's ``since``/``epoch``, checked before the handshake is accepted, so that a bad
    value gets an HTTP answer rather than a dropped connection."""
    try:
        resume = parse_optional_count(since, "since")
    except BadNumber as exc:
        raise Invalid("since", _reason(exc)) from None
    if epoch is not None and len(epoch) > EPOCH_MAX:
        raise Invalid("epoch", f"at most {EPOCH_MAX} characters")
    return resume


# --- Bearer tokens ----------------------------------------------------------------------------------

BEARER_HELP = "A JWT from your identity provider (dev: `leaderboard token`)."
principal = bearer_principal(lambda r: get_ports(r).verifier, description=BEARER_HELP)
"""The shared bearer dependency (``leaderboard.common.web``): 401 ``unauthorized`` with RFC 6750's
challenge, 503 when no key source is configured."""
Authenticated = Annotated[Principal, Depends(principal)]

# Only documents the scheme in OpenAPI for the routes that check a token themselves (no verification).
bearer_doc = HTTPBearer(auto_error=False, description=BEARER_HELP)
BearerDoc = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_doc)]


def ws_token(conn: HTTPConnection) -> str | None:
    """Browsers cannot set headers on a WebSocket: the token may also come as ``?token=``."""
    return conn.query_params.get("token") or bearer_token(conn.headers.get("authorization"))


async def token_principal(verifier: TokenVerifier | None, token: str | None) -> Principal:
    """A WebSocket handshake's token through the shared :func:`leaderboard.common.auth.authenticate`
    (off the loop when keys may be fetched), its refusals as the broadcaster's domain errors."""
    if verifier is None:
        raise VerifierUnavailable()
    try:
        return await authenticate(f"Bearer {token}" if token else None, verifier)
    except AuthError as exc:
        raise Unauthenticated(str(exc)) from None


async def reader_gate(request: Request, p: PortsDep, _: BearerDoc) -> None:
    """Reads are open unless ``read_requires_token``; then any valid token may read."""
    if p.settings.read_requires_token:
        await principal(request, None)


Gate = Annotated[None, Depends(reader_gate)]

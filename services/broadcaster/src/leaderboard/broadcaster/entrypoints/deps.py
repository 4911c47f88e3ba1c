"""Importable dependencies of the broadcaster's routes: the ports, bearer auth, the reader gate and
the strict parsing of every number a client sends (``Annotated`` types, module-level functions).

Numbers go through ``leaderboard.common.params.parse_count`` (ASCII digits, bounded), never
``int()``: 5,000 digits or a Unicode digit is a 422 naming the field, on REST and on the WebSocket
handshake alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError
from starlette.requests import HTTPConnection

from leaderboard.broadcaster.bootstrap import Ports
from leaderboard.broadcaster.errors import Invalid, Unauthenticated, VerifierUnavailable
from leaderboard.common.auth import AuthError, Principal, TokenVerifier
from leaderboard.common.params import BadNumber, parse_count, parse_optional_count

BOARD_PATTERN = r"^[a-z0-9][a-z0-9_.:-]{0,63}$"
EPOCH_MAX = 64  # epochs are short ids (12 hex digits); anything longer is not one of ours


def get_ports(conn: HTTPConnection) -> Ports:
    ports: Ports = conn.app.state.ports
    return ports


PortsDep = Annotated[Ports, Depends(get_ports)]


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
    str, Query(pattern=BOARD_PATTERN, description="Board name; `global` is the all-time board.")
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

bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def authenticate(verifier: TokenVerifier | None, token: str | None) -> Principal:
    """Bearer auth from a request: the one function that would move to ``leaderboard.common``
    (ingest and the scorer's admin route each have their own today)."""
    if verifier is None:
        raise VerifierUnavailable()
    if not token:
        raise Unauthenticated("missing bearer token")
    try:
        return verifier.verify(token)
    except AuthError as exc:
        raise Unauthenticated(str(exc)) from exc


def ws_token(conn: HTTPConnection) -> str | None:
    """Browsers cannot set headers on a WebSocket: the token may also come as ``?token=``."""
    header = conn.headers.get("authorization", "")
    return conn.query_params.get("token") or header.removeprefix("Bearer ").strip() or None


def token_of(creds: HTTPAuthorizationCredentials | None) -> str | None:
    return creds.credentials if creds else None


def reader_gate(p: PortsDep, creds: Credentials) -> None:
    """Reads are open unless ``read_requires_token``; then any valid token may read."""
    if p.settings.read_requires_token:
        authenticate(p.verifier, token_of(creds))


Gate = Annotated[None, Depends(reader_gate)]

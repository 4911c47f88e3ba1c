"""The scorer's web routes, served by Faust's web server on ``--web-port`` (default 6066):

- ``GET /healthz``: the process answers;
- ``GET /readyz``: 503 with a reason while starting, or while a batch fails or hangs (``health``);
- ``GET /metrics``: Prometheus;
- ``GET /api/v1/admin/quarantine?limit=&userId=`` (admin bearer token): actions held by velocity caps.

Each route is a module-level function from the :class:`Runtime` and the request's headers and query
to a :class:`Reply`, so its logic is testable without a server; the ``*Page`` classes only adapt
them to Faust's views (``install``). Refusals are domain exceptions, answered through
``entrypoints.errors`` in the error shape, with an ``X-Request-ID`` (the caller's when sane).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from leaderboard.common.auth import AuthError, MissingToken, Principal, authenticate, bearer_token
from leaderboard.common.events import is_sane_request_id, new_request_id
from leaderboard.scorer import service
from leaderboard.scorer.entrypoints import schemas
from leaderboard.scorer.entrypoints.errors import error_body, status_and_code
from leaderboard.scorer.entrypoints.runtime import Runtime, ScorerApp
from leaderboard.scorer.errors import DomainError, Unauthorized, Unavailable

log = logging.getLogger(__name__)
# aiohttp refuses a charset inside content_type; the exposition format is UTF-8 anyway.
METRICS_TYPE = "text/plain; version=0.0.4"


@dataclass(frozen=True)
class Reply:
    """An answer: a JSON value, or ``raw`` bytes of ``content_type``."""

    status: int = 200
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str | None = None


def request_id(headers: Mapping[str, str]) -> str:
    """The caller's ``X-Request-ID`` when sane (the rule every service keeps), else a new one."""
    given = headers.get("X-Request-ID", "")
    return given if is_sane_request_id(given) else new_request_id()


def refusal(exc: DomainError, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status_and_code(exc)[0], error_body(exc), headers or {})


def healthz(rt: Runtime) -> Reply:
    return Reply(json={"status": "ok"})


def readyz(rt: Runtime, now: float) -> Reply:
    if not rt.started.is_set():
        return Reply(503, {"status": "starting", "reason": "connecting to the stores"})
    stalled = rt.progress.stalled(now)
    if stalled:
        return Reply(503, {"status": "stalled", "reason": stalled})
    return Reply(json={"status": "ok"})


def metrics(rt: Runtime, now: float) -> Reply:
    rt.progress.stalled(now)  # refreshes scorer_stalled, so a hung batch shows without a probe
    return Reply(raw=generate_latest(), content_type=METRICS_TYPE)


async def admin(rt: Runtime, authorization: str | None) -> Principal:
    """The caller, if it holds a valid admin token. Order of refusals: no credential (401), no key
    to verify with (503), a token that does not verify (401), not an admin (403). The header is read
    and verified by ``leaderboard.common.auth.authenticate``, as in every other service."""
    try:
        if bearer_token(authorization) is None:
            raise MissingToken()  # before the key: no credential is a 401 even where none is configured
        try:
            verifier = rt.verifier()
        except RuntimeError:
            log.exception("no JWT verification key configured")
            raise Unavailable("token verification is not configured") from None
        who = await authenticate(authorization, verifier)
    except MissingToken:
        raise Unauthorized("a bearer token is required") from None
    except AuthError as exc:
        raise Unauthorized(str(exc)) from None
    service.require_admin(who)
    return who


async def quarantine(rt: Runtime, headers: Mapping[str, str], query: Mapping[str, str]) -> Reply:
    answer = {"X-Request-ID": request_id(headers)}
    try:
        await admin(rt, headers.get("Authorization"))
        ports = service.require_ready(rt.ports)
        limit, user_id = service.quarantine_query(query.get("limit"), query.get("userId"))
    except DomainError as exc:
        return refusal(exc, answer)
    rows = await service.quarantined(ports, limit=limit, user_id=user_id)
    return Reply(json={"quarantined": [schemas.quarantine_entry(r) for r in rows]}, headers=answer)


class RuntimePage(View):
    """A Faust view answering with a :class:`Reply` built from the app's :class:`Runtime`."""

    @property
    def runtime(self) -> Runtime:
        return cast(ScorerApp, self.app).runtime

    def render(self, reply: Reply) -> Response:
        headers = reply.headers or None
        if reply.raw is not None:
            return self.bytes(
                reply.raw, content_type=reply.content_type, status=reply.status, headers=headers
            )
        return self.json(reply.json, status=reply.status, headers=headers)


def _now() -> float:
    return asyncio.get_running_loop().time()


class HealthzPage(RuntimePage):
    async def get(self, request: Request, **kwargs: Any) -> Response:
        return self.render(healthz(self.runtime))


class ReadyzPage(RuntimePage):
    async def get(self, request: Request, **kwargs: Any) -> Response:
        return self.render(readyz(self.runtime, _now()))


class MetricsPage(RuntimePage):
    async def get(self, request: Request, **kwargs: Any) -> Response:
        return self.render(metrics(self.runtime, _now()))


class QuarantinePage(RuntimePage):
    async def get(self, request: Request, **kwargs: Any) -> Response:
        reply = await quarantine(self.runtime, request.headers, request.rel_url.query)
        return self.render(reply)


ROUTES: dict[str, type[RuntimePage]] = {
    "/healthz": HealthzPage,
    "/readyz": ReadyzPage,
    "/metrics": MetricsPage,
    "/api/v1/admin/quarantine": QuarantinePage,
}


def install(app: faust.App) -> None:
    for path, page in ROUTES.items():
        app.page(path)(page)

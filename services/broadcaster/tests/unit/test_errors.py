"""The error map, once for every domain exception: status, code, headers and the sentence, on REST
and as the answer to a refused WebSocket handshake."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI

from leaderboard.broadcaster import errors as domain
from leaderboard.broadcaster.entrypoints.errors import ERROR_MAP, Answer, answer_for, install, response_for
from leaderboard.common.web import install_error_handlers


def every_domain_error() -> set[type[domain.DomainError]]:
    found: set[type[domain.DomainError]] = set()
    todo = [domain.DomainError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return found


CASES: list[tuple[domain.DomainError, Answer, str]] = [
    (domain.UnknownBoard("nope"), Answer(404, "not_found"), "no board named 'nope' (yet)"),
    (
        domain.UnknownBoard("x" * 500, may_appear=False),
        Answer(404, "not_found"),
        "no board named '" + "x" * 64 + "…'",
    ),
    (
        domain.UserNotRanked("u-1", "global"),
        Answer(404, "not_found"),
        "user u-1 has no score on board 'global'",
    ),
    (
        domain.UnknownPeriod("daily", "2026-W47"),
        Answer(404, "not_found"),
        "period '2026-W47' is not a period of board 'daily'",
    ),
    (
        domain.UnknownPeriod("daily", "2999-01-01", started=False),
        Answer(404, "not_found"),
        "period '2999-01-01' of board 'daily' has not started",
    ),
    (
        domain.UnknownPeriod("cup", None),
        Answer(404, "not_found"),
        "board 'cup' has no current period; name one with period=",
    ),
    (
        domain.ArchiveUnavailable("ConnectionRefusedError"),
        Answer(503, "unavailable", {"Retry-After": "5"}),
        "past periods cannot be read now (ConnectionRefusedError); try again later",
    ),
    (domain.NoSuchSocket(), Answer(404, "not_found"), "no WebSocket endpoint here; use /ws/leaderboard"),
    (domain.Invalid("since", "must lie in 0..9"), Answer(422, "invalid"), "field 'since': must lie in 0..9"),
    (
        domain.Invalid("Last-Event-ID", "must be ASCII digits", where="header"),
        Answer(422, "invalid"),
        "header 'Last-Event-ID': must be ASCII digits",
    ),
    (
        domain.Unauthenticated("missing bearer token"),
        Answer(401, "unauthorized", {"WWW-Authenticate": "Bearer"}),
        "missing bearer token",
    ),
    (
        domain.VerifierUnavailable(),
        Answer(503, "unavailable", {"Retry-After": "60"}),
        "token verification is not configured",
    ),
    (domain.OriginRefused("https://evil.example"), Answer(403, "forbidden"), "origin not allowed"),
    (
        domain.TooManyClients(),
        Answer(503, "unavailable", {"Retry-After": "5"}),
        "too many live clients on this instance",
    ),
    (
        domain.TooManyFromAddress("10.0.0.1"),
        Answer(429, "rate_limited", {"Retry-After": "5"}),
        "too many connections from this address",
    ),
    # Retry-After is whole seconds, rounded up, at least 1.
    (
        domain.Draining(2_100),
        Answer(503, "unavailable", {"Retry-After": "3"}),
        "this instance is shutting down; reconnect",
    ),
    (
        domain.Draining(0),
        Answer(503, "unavailable", {"Retry-After": "1"}),
        "this instance is shutting down; reconnect",
    ),
]


def test_every_domain_exception_is_mapped_and_tested() -> None:
    assert every_domain_error() == set(ERROR_MAP) == {type(exc) for exc, _, _ in CASES}


@pytest.mark.parametrize("exc, answer, sentence", CASES, ids=lambda v: type(v).__name__)
def test_the_answer_for_each_domain_exception(exc: domain.DomainError, answer: Answer, sentence: str) -> None:
    assert answer_for(exc) == answer
    response = response_for(exc, "req-1")
    assert response.status_code == answer.status
    assert json.loads(bytes(response.body)) == {"status": "error", "error": sentence, "code": answer.code}
    for name, value in {**answer.headers, "X-Request-ID": "req-1"}.items():
        assert response.headers[name] == value


def test_a_subclass_gets_its_base_class_answer() -> None:
    class Stricter(domain.OriginRefused):
        pass

    assert answer_for(Stricter("x")) == Answer(403, "forbidden")
    with pytest.raises(LookupError):
        answer_for(domain.DomainError("unmapped"))


async def test_installed_on_an_app_a_raised_domain_exception_is_the_error_shape() -> None:
    app = FastAPI()
    install_error_handlers(app)
    install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise domain.TooManyFromAddress("1.2.3.4")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b.test") as client:
        r = await client.get("/boom")
    assert r.status_code == 429 and r.headers["retry-after"] == "5"
    assert r.json() == {
        "status": "error",
        "error": "too many connections from this address",
        "code": "rate_limited",
    }

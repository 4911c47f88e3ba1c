"""Bearer authentication, the one way: ``auth.authenticate`` (header value -> principal or AuthError)
and the FastAPI dependency ``web.bearer_principal`` built on it, with real tokens and a real verifier."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from leaderboard.common.auth import (
    AuthError,
    MissingToken,
    Principal,
    TokenVerifier,
    authenticate,
    bearer_token,
    mint_token,
)
from leaderboard.common.settings import CommonSettings
from leaderboard.common.web import (
    ApiError,
    ErrorModel,
    bearer_principal,
    install_error_handlers,
    is_sane_request_id,
    new_request_id,
    sane_request_id,
)


@pytest.fixture
def settings(tmp_path: Path) -> CommonSettings:
    return CommonSettings(keys_dir=tmp_path / "keys")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer    ", None),
        ("Basic abc", None),
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER  abc  ", "abc"),
    ],
)
def test_the_bearer_credential_is_parsed_as_fastapi_does(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


async def test_authenticate_answers_the_principal_or_refuses(settings: CommonSettings) -> None:
    sub = str(uuid.uuid4())
    token = mint_token(settings, sub=sub, role="service")  # also creates the dev key pair
    verifier = TokenVerifier(settings)
    who = await authenticate(f"Bearer {token}", verifier)
    assert (who.sub, who.role) == (sub, "service")
    with pytest.raises(MissingToken) as missing:
        await authenticate("Basic abc", verifier)
    assert (str(missing.value), missing.value.challenge) == ("missing bearer token", "Bearer")
    with pytest.raises(AuthError) as bad:
        await authenticate("Bearer not.a.token", verifier)
    assert not isinstance(bad.value, MissingToken)
    assert bad.value.challenge == 'Bearer error="invalid_token"'


class _Probe(TokenVerifier):
    """A real verifier that records the thread it verified on, and may claim to fetch keys."""

    def __init__(self, settings: CommonSettings, fetches: bool, broken: bool = False) -> None:
        super().__init__(settings)
        self._fetches, self._broken = fetches, broken
        self.thread: int | None = None

    @property
    def fetches_keys(self) -> bool:
        return self._fetches

    def verify(self, token: str) -> Principal:
        self.thread = threading.get_ident()
        if self._broken:
            raise KeyError("a verifier bug")
        return super().verify(token)


async def test_verification_runs_off_the_loop_only_when_keys_may_be_fetched(settings: CommonSettings) -> None:
    header = f"Bearer {mint_token(settings, sub=str(uuid.uuid4()), role='player')}"
    loop_thread = threading.get_ident()
    local, fetching = _Probe(settings, fetches=False), _Probe(settings, fetches=True)
    await authenticate(header, local)
    await authenticate(header, fetching)
    assert local.thread == loop_thread
    assert fetching.thread not in (None, loop_thread)


async def test_a_verifier_bug_fails_closed(settings: CommonSettings) -> None:
    mint_token(settings, sub=str(uuid.uuid4()), role="player")
    with pytest.raises(AuthError, match="invalid token"):
        await authenticate("Bearer x", _Probe(settings, fetches=False, broken=True))


def _app(settings: CommonSettings, verifier: TokenVerifier | None, hook: Any = None) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    principal = bearer_principal(lambda request: verifier, on_refused=hook, description="A test JWT.")

    @app.get("/me")
    async def me(request: Request, who: Principal = Depends(principal)) -> dict[str, str]:  # noqa: B008
        return {"sub": who.sub, "role": who.role, "stateUser": request.state.user_id}

    return app


async def _get(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get("/me", headers=headers or {})


async def test_the_dependency_answers_the_principal_and_refuses_in_the_error_shape(
    settings: CommonSettings,
) -> None:
    sub = str(uuid.uuid4())
    token = mint_token(settings, sub=sub, role="admin")
    refused: list[str] = []

    async def hook(request: Request, exc: AuthError) -> None:
        refused.append(str(exc))

    app = _app(settings, TokenVerifier(settings), hook)
    ok = await _get(app, {"Authorization": f"Bearer {token}"})
    assert (ok.status_code, ok.json()) == (200, {"sub": sub, "role": "admin", "stateUser": sub})
    missing = await _get(app)
    assert (missing.status_code, missing.json()) == (
        401,
        {"status": "error", "error": "missing bearer token", "code": "unauthorized"},
    )
    assert missing.headers["www-authenticate"] == "Bearer"
    bad = await _get(app, {"Authorization": "Bearer abc"})
    assert (bad.status_code, bad.headers["www-authenticate"]) == (401, 'Bearer error="invalid_token"')
    assert refused == ["missing bearer token", "malformed token"]
    scheme = app.openapi()["components"]["securitySchemes"]["HTTPBearer"]
    assert scheme == {"type": "http", "scheme": "bearer", "description": "A test JWT."}


async def test_the_refusal_hook_may_answer_instead(settings: CommonSettings) -> None:
    async def hook(request: Request, exc: AuthError) -> None:
        raise ApiError(429, "rate_limited", "too many requests; slow down", {"Retry-After": "3"})

    mint_token(settings, sub=str(uuid.uuid4()), role="player")  # creates the dev key pair
    r = await _get(_app(settings, TokenVerifier(settings), hook))
    assert (r.status_code, r.json()["code"], r.headers["retry-after"]) == (429, "rate_limited", "3")


async def test_no_verifier_configured_is_503(settings: CommonSettings) -> None:
    r = await _get(_app(settings, None), {"Authorization": "Bearer abc"})
    assert (r.status_code, r.json()["code"], r.headers["retry-after"]) == (503, "unavailable", "60")


def test_the_error_model_is_the_error_shape() -> None:
    assert ErrorModel(error="no", code="invalid").model_dump() == {
        "status": "error",
        "error": "no",
        "code": "invalid",
    }
    assert set(ErrorModel.model_json_schema()["required"]) == {"error", "code"}


@pytest.mark.parametrize(
    ("given", "sane"),
    [("abc-1.2_3", True), ("x" * 64, True), ("x" * 65, False), ("", False), ("a b", False), ("abc\n", False)],
)
def test_request_ids_are_kept_only_when_short_and_plain(given: str, sane: bool) -> None:
    assert is_sane_request_id(given) is sane
    assert (sane_request_id(given) == given) is sane
    fresh = new_request_id()
    assert is_sane_request_id(fresh) and fresh != new_request_id()

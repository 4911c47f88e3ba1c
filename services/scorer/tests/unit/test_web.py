"""The scorer's web routes (``entrypoints.web``) as functions: what /healthz, /readyz and /metrics
answer in each state, and every refusal of the admin quarantine route, in the order the route
checks them (its listing itself reads Postgres: ``integration/test_service_caps_live.py``)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, cast

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from leaderboard.common.auth import authenticate, bearer_token
from leaderboard.scorer.adapters.board import APPLY
from leaderboard.scorer.bootstrap import Ports
from leaderboard.scorer.entrypoints import web
from leaderboard.scorer.entrypoints.runtime import Runtime
from leaderboard.scorer.errors import Unauthorized
from leaderboard.scorer.health import Progress
from leaderboard.scorer.settings import ScorerSettings

SIGNING_KEY = ed25519.Ed25519PrivateKey.generate()


def settings_with_key(tmp_path: Path) -> ScorerSettings:
    public = tmp_path / "jwt.pub.pem"
    public.write_bytes(
        SIGNING_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return ScorerSettings(_env_file=None, jwt_public_key_file=public, keys_dir=tmp_path / "none")


def token(settings: ScorerSettings, role: str) -> str:
    now = int(time.time())
    claims = {
        "sub": str(uuid.uuid4()),
        "role": role,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + 300,
    }
    return jwt.encode(claims, SIGNING_KEY, algorithm="EdDSA", headers={"typ": "JWT"})


def runtime(settings: ScorerSettings, *, ready: bool) -> Runtime:
    rt = Runtime(settings, Progress(settings.stall_after_s))
    if ready:
        # Refused requests never touch the stores: the ports only mark the scorer as started.
        unused = cast(Any, None)
        rt.mark_ready(Ports(settings, unused, unused, unused, unused))
    return rt


@pytest.fixture
def settings(tmp_path: Path) -> ScorerSettings:
    return settings_with_key(tmp_path)


def test_healthz_answers_ok(settings: ScorerSettings) -> None:
    assert web.healthz(runtime(settings, ready=False)) == web.Reply(200, {"status": "ok"})


def test_readyz_is_503_while_starting_and_while_a_batch_fails(settings: ScorerSettings) -> None:
    rt = runtime(settings, ready=False)
    starting = web.readyz(rt, 0.0)
    assert starting.status == 503 and starting.json["status"] == "starting"
    rt = runtime(settings, ready=True)
    assert web.readyz(rt, 0.0) == web.Reply(200, {"status": "ok"})
    rt.progress.started(10.0)
    rt.progress.failed(11.0, ConnectionError("postgres is down"))
    stalled = web.readyz(rt, 12.5)
    assert stalled.status == 503 and stalled.json["status"] == "stalled"
    assert "postgres is down" in stalled.json["reason"]
    rt.progress.done()
    assert web.readyz(rt, 13.0).status == 200


def test_metrics_are_the_prometheus_exposition(settings: ScorerSettings) -> None:
    reply = web.metrics(runtime(settings, ready=True), 0.0)
    assert reply.status == 200 and reply.content_type == "text/plain; version=0.0.4"
    assert reply.raw is not None and b"scorer_stalled 0.0" in reply.raw


async def refused(rt: Runtime, headers: dict[str, str], query: dict[str, str] | None = None) -> web.Reply:
    reply = await web.quarantine(rt, headers, query or {})
    assert reply.json["status"] == "error" and reply.headers["X-Request-ID"], reply
    return reply


async def test_quarantine_refusals_in_order(settings: ScorerSettings, tmp_path: Path) -> None:
    rt = runtime(settings, ready=True)
    admin = {"Authorization": f"Bearer {token(settings, 'admin')}"}
    player = {"Authorization": f"Bearer {token(settings, 'player')}"}

    missing = await refused(rt, {})
    assert (missing.status, missing.json["code"]) == (401, "unauthorized")
    assert (await refused(rt, {"Authorization": "Basic abc"})).status == 401
    bad = await refused(rt, {"Authorization": "Bearer not.a.jwt"})
    assert (bad.status, bad.json["error"]) == (401, "malformed token")
    forbidden = await refused(rt, player)
    assert (forbidden.status, forbidden.json["code"]) == (403, "forbidden")

    starting = await refused(runtime(settings, ready=False), admin)
    assert (starting.status, starting.json["error"]) == (503, "the scorer is starting")

    no_key = ScorerSettings(_env_file=None, keys_dir=tmp_path / "empty")
    unconfigured = await refused(runtime(no_key, ready=True), admin)
    assert (unconfigured.status, unconfigured.json["code"]) == (503, "unavailable")
    # no credential at all is still a 401, even where no key is configured
    assert (await refused(runtime(no_key, ready=True), {})).status == 401


@pytest.mark.parametrize(
    ("query", "field"),
    [({"limit": "0"}, "'limit'"), ({"limit": "1001"}, "'limit'"), ({"limit": "+5"}, "'limit'"),
     ({"limit": "9" * 5000}, "'limit'"), ({"limit": ""}, "'limit'"), ({"userId": "nope"}, "'userId'")],
)  # fmt: skip
async def test_quarantine_parameters_are_parsed_strictly(
    settings: ScorerSettings, query: dict[str, str], field: str
) -> None:
    rt = runtime(settings, ready=True)
    headers = {"Authorization": f"Bearer {token(settings, 'admin')}", "X-Request-ID": "trace-42"}
    reply = await refused(rt, headers, query)
    assert (reply.status, reply.json["code"]) == (422, "invalid") and field in reply.json["error"]
    assert reply.headers["X-Request-ID"] == "trace-42"


def test_request_ids_are_kept_when_sane_and_replaced_otherwise() -> None:
    assert web.request_id({"X-Request-ID": "trace-42"}) == "trace-42"
    for given in ("", "a b", "x" * 65, "é"):
        replaced = web.request_id({"X-Request-ID": given})
        assert replaced != given and len(replaced) == 32


async def test_authenticate_reads_the_bearer_header(settings: ScorerSettings) -> None:
    # The shared reader (leaderboard.common.auth) verifies; the admin route keeps its sentence for
    # a missing credential.
    rt = runtime(settings, ready=False)
    who = await authenticate(f"bearer {token(settings, 'service')}", rt.verifier())
    assert who.role == "service"
    for header in (None, "", "Bearer", "Token abc"):
        with pytest.raises(Unauthorized, match="a bearer token is required"):
            await web.admin(rt, header)
    assert bearer_token("Bearer  abc ") == "abc"


def test_the_scripts_get_the_member_layout_formatted_in() -> None:
    assert "string.sub(m, 35)" in APPLY and "$" not in APPLY


def test_every_route_is_a_page() -> None:
    assert set(web.ROUTES) == {"/healthz", "/readyz", "/metrics", "/api/v1/admin/quarantine"}

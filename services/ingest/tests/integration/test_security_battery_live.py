"""The security battery, through HTTP against the running services (ingest, scorer, broadcaster).

Every case first shows the same request, made correctly, succeeding: 2xx and the player's score raised
as the broadcaster reports it (so through the scorer). Then it changes one property and asserts the
status, the error ``code``, the AttemptRejected on ``leaderboard.audit.v1`` and that the victim's
score did not move (see ``Rig.assert_unchanged`` for why that check cannot pass by being early).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

SETTLE = 1.4  # past the catalog's 1 s minimum, on the server clock


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def refused(
    audit: Any, response: Any, status: int, code: str, request_id: str, user_id: str | None
) -> dict[str, Any]:
    """The answer has seed 000's error shape, the status and code; the refusal is in the audit log."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error" and body["code"] == code and isinstance(body["error"], str), body
    assert "Traceback" not in response.text
    assert response.headers["x-request-id"] == request_id
    record = await audit.find(requestId=request_id)
    assert record["reason"] == code
    assert record["clientIp"] == "127.0.0.1"
    assert record.get("userId") == user_id
    return dict(body)


# --- tokens: every one of these is a 401, whatever it claims ----------------------------------------


def no_token(rig: Any, victim: Any) -> str | None:
    return None


def alg_none(rig: Any, victim: Any) -> str:
    header = {"alg": "none", "typ": "JWT"}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(rig.claims(victim.user_id)).encode())}."


def hs256_with_public_key(rig: Any, victim: Any) -> str:
    """Algorithm confusion: HMAC keyed with the verifier's public key. pyjwt refuses to mint this
    (it will not use a PEM public key as an HMAC secret), so it is built by hand."""
    header = rig.header(alg="HS256")
    signing_input = (
        f"{b64(json.dumps(header).encode())}.{b64(json.dumps(rig.claims(victim.user_id)).encode())}"
    )
    mac = hmac.new(rig.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def hs256_with_public_key_no_kid(rig: Any, victim: Any) -> str:
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = (
        f"{b64(json.dumps(header).encode())}.{b64(json.dumps(rig.claims(victim.user_id)).encode())}"
    )
    mac = hmac.new(rig.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def tampered(rig: Any, victim: Any) -> str:
    """An attacker's genuine token with its payload rewritten to the victim's sub, signature kept."""
    genuine = rig.player("Attacker").token
    head, payload, signature = genuine.split(".")
    claims = json.loads(unb64(payload))
    claims["sub"] = victim.user_id
    return f"{head}.{b64(json.dumps(claims).encode())}.{signature}"


def expired(rig: Any, victim: Any) -> str:
    now = int(time.time())
    return str(rig.sign(rig.header(), rig.claims(victim.user_id, iat=now - 600, exp=now - 120)))


def not_yet_valid(rig: Any, victim: Any) -> str:
    now = int(time.time())
    return str(rig.sign(rig.header(), rig.claims(victim.user_id, nbf=now + 600)))


def wrong_issuer(rig: Any, victim: Any) -> str:
    return str(rig.sign(rig.header(), rig.claims(victim.user_id, iss="https://evil.example")))


def wrong_audience(rig: Any, victim: Any) -> str:
    return str(rig.sign(rig.header(), rig.claims(victim.user_id, aud="another-api")))


TOKEN_CASES: dict[str, Callable[[Any, Any], str | None]] = {
    "no_token": no_token,
    "alg_none": alg_none,
    "hs256_signed_with_public_key": hs256_with_public_key,
    "hs256_signed_with_public_key_no_kid": hs256_with_public_key_no_kid,
    "tampered_payload": tampered,
    "expired": expired,
    "not_yet_valid": not_yet_valid,
    "wrong_issuer": wrong_issuer,
    "wrong_audience": wrong_audience,
}


def test_the_hand_signed_tokens_are_otherwise_acceptable(rig: Any) -> None:
    """The forged tokens differ from an acceptable one in one property only: the same hand signing with
    unchanged claims gives a token the verifier accepts (so a 401 below is due to the change)."""
    from leaderboard.common.auth import TokenVerifier

    user = str(uuid.uuid4())
    good = rig.sign(rig.header(), rig.claims(user))
    assert TokenVerifier(rig.settings).verify(good).sub == user


@pytest.mark.parametrize("case", list(TOKEN_CASES))
async def test_bad_tokens_are_refused_and_change_nothing(rig: Any, audit: Any, case: str) -> None:
    victim = rig.player("Victim")
    control_ticket, target = await asyncio.gather(rig.start(victim), rig.start(victim))
    await asyncio.sleep(SETTLE)
    # Positive control: the victim's genuine token on the same request.
    if case != "tampered_payload":
        hand_signed = rig.sign(rig.header(), rig.claims(victim.user_id, name="Victim"))
        score = await rig.control(victim.__class__(victim.user_id, hand_signed), started=control_ticket)
    else:
        score = await rig.control(victim, started=control_ticket)
    assert score == control_ticket["points"]

    token = TOKEN_CASES[case](rig, victim)
    request_id = f"battery-{case}-{uuid.uuid4().hex[:8]}"
    headers = {"X-Request-ID": request_id}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = {"actionId": target["actionId"], "timestamp": int(time.time())}
    response = await rig.http.post("/api/v1/score/update", json=body, headers=headers)
    await refused(audit, response, 401, "unauthorized", request_id, None)
    assert response.headers["www-authenticate"].startswith("Bearer")
    await rig.assert_unchanged(victim.user_id, score)
    # The ticket was not burned by the refused attempt: its owner still completes it.
    again = await rig.complete(victim.token, target["actionId"])
    assert again.status_code == 202, again.text


# --- tickets ---------------------------------------------------------------------------------------


async def test_another_players_ticket_is_forbidden(rig: Any, audit: Any) -> None:
    victim, attacker = rig.player("Victim"), rig.player("Attacker")
    control_ticket, target = await asyncio.gather(rig.start(victim), rig.start(victim))
    await asyncio.sleep(SETTLE)
    score = await rig.control(victim, started=control_ticket)

    request_id = f"battery-steal-{uuid.uuid4().hex[:8]}"
    response = await rig.complete(attacker.token, target["actionId"], request_id=request_id)
    await refused(audit, response, 403, "forbidden", request_id, attacker.user_id)
    await rig.assert_unchanged(victim.user_id, score)
    assert await rig.score(attacker.user_id) is None
    # The victim's ticket survived the attempt.
    assert (await rig.complete(victim.token, target["actionId"])).status_code == 202


async def test_a_ticket_is_used_once(rig: Any, audit: Any) -> None:
    victim = rig.player("Victim")
    ticket = await rig.start(victim)
    await asyncio.sleep(SETTLE)
    first = await rig.complete(victim.token, ticket["actionId"], wait=True)
    assert first.status_code in (200, 202), first.text
    score = await rig.wait_score(victim.user_id, ticket["points"])

    request_id = f"battery-reuse-{uuid.uuid4().hex[:8]}"
    again = await rig.complete(victim.token, ticket["actionId"], request_id=request_id)
    body = await refused(audit, again, 409, "ticket_used", request_id, victim.user_id)
    assert body["eventId"] == first.json()["eventId"]
    await rig.assert_unchanged(victim.user_id, score)


async def test_an_unknown_ticket_is_not_found(rig: Any, audit: Any) -> None:
    victim = rig.player("Victim")
    score = await rig.control(victim)
    request_id = f"battery-unknown-{uuid.uuid4().hex[:8]}"
    response = await rig.complete(victim.token, str(uuid.uuid4()), request_id=request_id)
    await refused(audit, response, 404, "not_found", request_id, victim.user_id)
    await rig.assert_unchanged(victim.user_id, score)


async def test_an_expired_ticket_is_gone(rig: Any, audit: Any) -> None:
    victim = rig.player("Victim")
    catalog = {a["actionType"]: a for a in (await rig.http.get("/api/v1/catalog")).json()["actions"]}
    ttl = catalog["brief"]["ttlSeconds"]
    score = await rig.control(victim, "brief")
    ticket = await rig.start(victim, "brief")
    await asyncio.sleep(ttl + 1)
    request_id = f"battery-expired-{uuid.uuid4().hex[:8]}"
    response = await rig.complete(victim.token, ticket["actionId"], request_id=request_id)
    await refused(audit, response, 410, "ticket_expired", request_id, victim.user_id)
    await rig.assert_unchanged(victim.user_id, score)


async def test_completing_faster_than_the_minimum_is_refused(rig: Any, audit: Any) -> None:
    victim = rig.player("Victim")
    score = await rig.control(victim)
    ticket = await rig.start(victim)
    request_id = f"battery-fast-{uuid.uuid4().hex[:8]}"
    response = await rig.complete(victim.token, ticket["actionId"], request_id=request_id)
    await refused(audit, response, 422, "too_fast", request_id, victim.user_id)
    await rig.assert_unchanged(victim.user_id, score)
    # Too early does not burn the ticket: after the minimum it completes.
    await asyncio.sleep(SETTLE)
    assert (await rig.complete(victim.token, ticket["actionId"])).status_code == 202


# --- request shape ---------------------------------------------------------------------------------


async def test_a_points_field_is_refused_naming_it(rig: Any, audit: Any) -> None:
    victim = rig.player("Victim")
    control_ticket, target = await asyncio.gather(rig.start(victim), rig.start(victim))
    await asyncio.sleep(SETTLE)
    score = await rig.control(victim, started=control_ticket)
    request_id = f"battery-points-{uuid.uuid4().hex[:8]}"
    response = await rig.complete(
        victim.token, target["actionId"], extra={"points": 1_000_000}, request_id=request_id
    )
    body = await refused(audit, response, 422, "invalid", request_id, victim.user_id)
    assert "points" in body["error"]
    await rig.assert_unchanged(victim.user_id, score)


async def test_a_2mb_body_is_refused(rig: Any, audit: Any) -> None:
    victim = rig.player("Victim")
    control_ticket, target = await asyncio.gather(rig.start(victim), rig.start(victim))
    await asyncio.sleep(SETTLE)
    score = await rig.control(victim, started=control_ticket)
    request_id = f"battery-large-{uuid.uuid4().hex[:8]}"
    response = await rig.complete(
        victim.token, target["actionId"], extra={"padding": "x" * (2 * 1024 * 1024)}, request_id=request_id
    )
    await refused(audit, response, 413, "too_large", request_id, None)
    await rig.assert_unchanged(victim.user_id, score)


# --- limits ----------------------------------------------------------------------------------------


async def test_a_burst_past_the_rate_limit_gets_429(rig: Any, audit: Any) -> None:
    victim = rig.player("Victim")
    control_ticket, target = await asyncio.gather(rig.start(victim), rig.start(victim))
    await asyncio.sleep(SETTLE)
    score = await rig.control(victim, started=control_ticket)

    burst = await asyncio.gather(
        *(
            rig.http.post("/api/v1/actions", json={"actionType": "trial"}, headers=victim.headers)
            for _ in range(15)
        )
    )
    statuses = sorted(r.status_code for r in burst)
    assert set(statuses) <= {201, 429} and 429 in statuses, statuses
    limited = next(r for r in burst if r.status_code == 429)
    assert limited.json()["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert int(limited.headers["ratelimit-limit"]) >= 1
    assert limited.headers["ratelimit-remaining"] == "0"
    assert int(limited.headers["ratelimit-reset"]) >= 0
    allowed = next(r for r in burst if r.status_code == 201)
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(allowed.headers)

    # The completion that follows the burst is refused as well, and changes nothing.
    request_id = f"battery-burst-{uuid.uuid4().hex[:8]}"
    response = await rig.complete(victim.token, target["actionId"], request_id=request_id)
    await refused(audit, response, 429, "rate_limited", request_id, victim.user_id)
    assert int(response.headers["retry-after"]) >= 1
    await rig.assert_unchanged(victim.user_id, score)
    # After Retry-After the player is served again.
    await asyncio.sleep(int(response.headers["retry-after"]) + 0.5)
    assert (await rig.complete(victim.token, target["actionId"])).status_code == 202


async def test_a_spent_rate_limit_answers_before_the_tickets_own_refusals(rig: Any, audit: Any) -> None:
    """The rate limit is charged (and refuses) before the use case's own checks, on every way in: the
    plain request (ingest's hot path, where the limit and the claim are one Redis script) and the
    same request in a form the hot path hands to FastAPI (a charset parameter on its content type)."""
    victim = rig.player("Spent")
    target = await rig.start(victim)
    burst = await asyncio.gather(
        *(
            rig.http.post("/api/v1/actions", json={"actionType": "trial"}, headers=victim.headers)
            for _ in range(15)
        )
    )
    assert 429 in {r.status_code for r in burst}
    cases = [
        ({"actionId": target["actionId"], "timestamp": "not a time"}, "application/json"),
        ({"actionId": str(uuid.uuid4()), "timestamp": int(time.time())}, "application/json"),
        ({"actionId": target["actionId"], "timestamp": "not a time"}, "application/json; charset=utf-8"),
        ({"actionId": target["actionId"], "timestamp": int(time.time())}, "application/json"),
    ]
    for body, content_type in cases:
        request_id = f"battery-spent-{uuid.uuid4().hex[:8]}"
        headers = {**victim.headers, "Content-Type": content_type, "X-Request-ID": request_id}
        response = await rig.http.post("/api/v1/score/update", content=json.dumps(body), headers=headers)
        await refused(audit, response, 429, "rate_limited", request_id, victim.user_id)
        assert response.headers["ratelimit-remaining"] == "0" and int(response.headers["retry-after"]) >= 1
    # Nothing was claimed: once the limit allows it again, the ticket completes.
    await asyncio.sleep(int(response.headers["retry-after"]) + 0.5)
    assert (await rig.complete(victim.token, target["actionId"])).status_code == 202


async def test_the_hourly_cap_gets_429_cap_reached(rig: Any, audit: Any) -> None:
    victim = rig.player("Victim")
    tickets = await asyncio.gather(*(rig.start(victim, "capped") for _ in range(3)))
    await asyncio.sleep(SETTLE)
    score = 0
    for ticket in tickets[:2]:  # the cap is 2 per hour: these two are the positive controls
        score = await rig.control(victim, started=ticket)
    assert score == 2 * tickets[0]["points"]

    request_id = f"battery-cap-{uuid.uuid4().hex[:8]}"
    response = await rig.complete(victim.token, tickets[2]["actionId"], request_id=request_id)
    await refused(audit, response, 429, "cap_reached", request_id, victim.user_id)
    assert int(response.headers["retry-after"]) > 60  # the oldest completion leaves the hour much later
    await rig.assert_unchanged(victim.user_id, score)
    # Starting another one is refused early with the same code.
    early = await rig.http.post("/api/v1/actions", json={"actionType": "capped"}, headers=victim.headers)
    assert early.status_code == 429 and early.json()["code"] == "cap_reached"


# --- roles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/api/v1/events", "/score"])
async def test_a_player_token_cannot_use_the_service_routes(rig: Any, audit: Any, route: str) -> None:
    victim = rig.player("Victim")
    service = rig.service()

    def body() -> dict[str, Any]:
        if route == "/score":
            return {"userId": victim.user_id, "increment": 40, "actionId": str(uuid.uuid4())}
        return {
            "events": [
                {
                    "actionId": str(uuid.uuid4()),
                    "userId": victim.user_id,
                    "actionType": "trial",
                    "occurredAt": int(time.time()),
                    "points": 40,
                }
            ]
        }

    control = await rig.http.post(route, json=body(), headers=service.headers)
    assert control.status_code == 202, control.text
    score = await rig.wait_score(victim.user_id, 40)
    assert score == 40

    request_id = f"battery-role-{uuid.uuid4().hex[:8]}"
    response = await rig.http.post(route, json=body(), headers={**victim.headers, "X-Request-ID": request_id})
    await refused(audit, response, 403, "forbidden", request_id, victim.user_id)
    await rig.assert_unchanged(victim.user_id, score)

"""Hardening of ingest against what a client sends, through the running service (issue 8).

Request heads (raw sockets: httpx will not send these): an 8 MB header, 20,000 headers, a malformed
request line and slow heads get an answer in the error shape with an X-Request-ID, or are closed, and
never tie the service up. Bodies: strings the stores cannot hold (NUL, control characters, unpaired
surrogates, over-long), loose numbers ("5", 5.0, true) and UTF-16 are 422 naming the field; a CORS
preflight from a foreign origin is refused in the error shape. After each refusal a correct request
still succeeds, so the refusals are not a broken service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from leaderboard.common.events import iso_ms, now_ms

# The open_system fixture's LEADERBOARD_HTTP_HEADER_TIMEOUT_S (conftest.HEAD_TIMEOUT_S).
HEAD_TIMEOUT_S = 3.0


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        """The error-shape body, after checking the shape and the request id."""
        assert self.headers.get("content-type") == "application/json", self
        payload = json.loads(self.body)
        assert payload["status"] == "error" and isinstance(payload["error"], str), payload
        assert isinstance(payload["code"], str) and payload["code"], payload
        assert self.headers.get("x-request-id"), self
        return dict(payload)


def parse_answer(raw: bytes) -> RawAnswer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), raw[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(body)))
    return RawAnswer(int(lines[0].split()[1]), headers, body[:length])


async def exchange(url: str, payload: bytes, within: float = 10.0) -> bytes:
    """Send ``payload`` on a fresh connection while reading whatever comes back until the server
    closes; a server that stops reading (and resets) does not fail the send side of the test."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            for start in range(0, len(payload), 65536):
                writer.write(payload[start : start + 65536])
                await writer.drain()

    sending = asyncio.create_task(send())
    received = b""
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionError:
        pass
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sending
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return received


def head(*lines: bytes) -> bytes:
    return b"\r\n".join([b"POST /api/v1/events HTTP/1.1", b"Host: 127.0.0.1", *lines]) + b"\r\n\r\n"


async def healthy(rig: Any) -> None:
    r = await rig.http.get("/api/v1/catalog")
    assert r.status_code == 200, r.text


# --- request heads --------------------------------------------------------------------------------


async def test_an_8_mb_header_gets_431_in_the_error_shape(open_rig: Any) -> None:
    started = time.monotonic()
    raw = await exchange(open_rig.system.ingest_url, head(b"X-Big: " + b"a" * 8_000_000))
    answer = parse_answer(raw)
    assert answer.status == 431 and answer.error()["code"] == "headers_too_large"
    assert time.monotonic() - started < 5
    await healthy(open_rig)


async def test_20000_headers_get_431_in_the_error_shape(open_rig: Any) -> None:
    many = [b"X-H%d: v" % i for i in range(20_000)]
    answer = parse_answer(await exchange(open_rig.system.ingest_url, head(*many)))
    assert answer.status == 431 and answer.error()["code"] == "headers_too_large"
    assert "header fields" in answer.error()["error"]
    await healthy(open_rig)


async def test_a_malformed_request_line_gets_400_in_the_error_shape(open_rig: Any) -> None:
    for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", b"GET /\x00 HTTP/1.1\r\n\r\n"):
        answer = parse_answer(await exchange(open_rig.system.ingest_url, garbage))
        assert answer.status == 400, garbage
        assert answer.error()["code"] == "bad_request"
    await healthy(open_rig)


async def test_a_long_request_target_gets_414_in_the_error_shape(open_rig: Any) -> None:
    line = b"GET /api/v1/catalog?x=" + b"1" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = parse_answer(await exchange(open_rig.system.ingest_url, line))
    assert answer.status == 414 and answer.error()["code"] == "uri_too_long"


async def test_slow_headers_are_closed_within_the_timeout(open_rig: Any) -> None:
    """20 connections each send half a head and stall: every one is answered 408 and closed within
    the header timeout plus a margin, and the service keeps serving meanwhile."""
    url = urlsplit(open_rig.system.ingest_url)
    opened = []
    for i in range(20):
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nX-Request-ID: slow-%d\r\nX-Sl" % i)
        await writer.drain()
        opened.append((reader, writer))
    started = time.monotonic()
    await healthy(open_rig)  # other clients are served while the slow ones stall

    async def closed(reader: asyncio.StreamReader) -> bytes:
        received = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received += chunk
        return received

    try:
        async with asyncio.timeout(HEAD_TIMEOUT_S + 5):
            answers = await asyncio.gather(*(closed(r) for r, _ in opened))
    finally:
        for _, writer in opened:
            writer.close()
    elapsed = time.monotonic() - started
    assert elapsed < HEAD_TIMEOUT_S + 5
    for i, raw in enumerate(answers):
        answer = parse_answer(raw)
        assert answer.status == 408 and answer.error()["code"] == "request_timeout"
        assert answer.headers["x-request-id"] == f"slow-{i}"
    await healthy(open_rig)


async def test_an_idle_keep_alive_connection_outlives_client_pools(open_rig: Any) -> None:
    """A connection idle for longer than httpx's pool expiry (5 s, also uvicorn's own keep-alive) and
    the header timeout still serves its next request: the client side closes idle connections first,
    so a pooled connection is never reused just as the server closes it (a request lost with no
    answer, which a POST does not retry)."""
    url = urlsplit(open_rig.system.ingest_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    request = b"GET /api/v1/catalog HTTP/1.1\r\nHost: x\r\n\r\n"

    async def one_answer() -> RawAnswer:
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(parse_answer(head).headers["content-length"])
            return parse_answer(head + await reader.readexactly(length))

    try:
        for _ in range(2):
            writer.write(request)
            await writer.drain()
            answer = await one_answer()
            assert answer.status == 200 and "connection" not in answer.headers, answer
            await asyncio.sleep(max(HEAD_TIMEOUT_S, 5.0) + 1.5)
            assert not reader.at_eof()
    finally:
        writer.close()


async def test_oversized_tokens_are_refused_quickly(open_rig: Any) -> None:
    """A 1.3 MB token cannot even be sent (the head bound, 431); one over the token bound but within
    the head bound is 401 before anything decodes it."""
    started = time.monotonic()
    huge = b"Authorization: Bearer " + b"x" * 1_300_000
    answer = parse_answer(await exchange(open_rig.system.ingest_url, head(huge)))
    assert answer.status == 431 and answer.error()["code"] == "headers_too_large"

    genuine = open_rig.service().token
    padded = genuine + "." + "A" * 10_000  # a plausible-looking JWS with a 10 KB tail
    r = await open_rig.http.post(
        "/api/v1/events",
        json={"events": [service_event()]},
        headers={"Authorization": f"Bearer {padded}"},
    )
    assert r.status_code == 401 and r.json()["code"] == "unauthorized", r.text
    assert "longer than" in r.json()["error"]
    assert time.monotonic() - started < 5


# --- bodies ---------------------------------------------------------------------------------------


def service_event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "actionId": str(uuid.uuid4()),
        "userId": str(uuid.uuid4()),
        "username": "Ada",
        "actionType": "trial",
        "occurredAt": iso_ms(now_ms()),
        "points": 5,
    }
    event.update(changes)
    return event


async def post_events(rig: Any, who: Any, *events: dict[str, Any], raw: str | None = None) -> Any:
    content = raw if raw is not None else json.dumps({"events": list(events)})
    return await rig.http.post(
        "/api/v1/events",
        content=content.encode(),
        headers={**who.headers, "Content-Type": "application/json"},
    )


async def test_strings_the_stores_cannot_hold_are_422_naming_the_field(open_rig: Any) -> None:
    rig = open_rig
    svc = rig.service()
    ok = await post_events(rig, svc, service_event())  # the control: the same request, made correctly
    assert ok.status_code == 202 and ok.json() == {"accepted": 1, "duplicates": 0}, ok.text
    bad_usernames = {
        "nul": "evil\u0000name",
        "tab": "a\tb",
        "newline": "a\nb",
        "escape": "\u001b[31mred",
        "del": "a\u007fb",
        "c1": "a\u0085b",
        "long": "a" * 65,
    }
    for label, username in bad_usernames.items():
        r = await post_events(rig, svc, service_event(username=username))
        assert r.status_code == 422, (label, r.text)
        assert r.json()["code"] == "invalid" and "events.0.username" in r.json()["error"], (label, r.text)
    # An unpaired surrogate only travels as a JSON escape: json.dumps writes it as one.
    r = await post_events(rig, svc, raw=json.dumps({"events": [service_event(username="\ud800x")]}))
    assert r.status_code == 422 and "events.0.username" in r.json()["error"], r.text
    for field, value in {
        "actionId": "\u0000" + str(uuid.uuid4()),
        "actionType": "trial\u0000",
        "occurredAt": iso_ms(now_ms()) + "\u0000" * 100,
    }.items():
        r = await post_events(rig, svc, service_event(**{field: value}))
        assert r.status_code == 422 and f"events.0.{field}" in r.json()["error"], (field, r.text)
    legacy = await rig.http.post(
        "/score",
        json={"userId": str(uuid.uuid4()), "increment": 3, "username": "x\u0000"},
        headers=svc.headers,
    )
    assert legacy.status_code == 422 and "username" in legacy.json()["error"], legacy.text
    # A token's name claim becomes the username of a player's events: the same characters are refused.
    sneaky = rig.sign(rig.header(), rig.claims(str(uuid.uuid4()), name="bad\u0000name"))
    r = await rig.http.post(
        "/api/v1/actions", json={"actionType": "trial"}, headers={"Authorization": f"Bearer {sneaky}"}
    )
    assert r.status_code == 401 and "name claim" in r.json()["error"], r.text


async def test_numbers_are_strict_integers(open_rig: Any) -> None:
    rig = open_rig
    svc = rig.service()
    ok = await post_events(rig, svc, service_event(points=5))
    assert ok.status_code == 202, ok.text
    for loose in ("5", 5.0, True):
        r = await post_events(rig, svc, service_event(points=loose))
        assert r.status_code == 422, (loose, r.text)
        assert "events.0.points" in r.json()["error"], (loose, r.text)
        legacy = await rig.http.post(
            "/score", json={"userId": str(uuid.uuid4()), "increment": loose}, headers=svc.headers
        )
        assert legacy.status_code == 422 and "increment" in legacy.json()["error"], (loose, legacy.text)
    r = await post_events(rig, svc, service_event(occurredAt=True))
    assert r.status_code == 422 and "occurredAt" in r.json()["error"], r.text


async def test_a_body_not_in_utf8_is_422(open_rig: Any) -> None:
    rig = open_rig
    who = rig.player()
    body = json.dumps({"actionType": "trial"})
    ok = await rig.http.post(
        "/api/v1/actions",
        content=body.encode("utf-8"),
        headers={**who.headers, "Content-Type": "application/json"},
    )
    assert ok.status_code == 201, ok.text  # the control
    for encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"):
        request_id = f"enc-{encoding}-{uuid.uuid4().hex[:8]}"
        r = await rig.http.post(
            "/api/v1/actions",
            content=body.encode(encoding),
            headers={**who.headers, "Content-Type": "application/json", "X-Request-ID": request_id},
        )
        assert r.status_code == 422, (encoding, r.text)
        assert r.json()["code"] == "invalid" and "UTF-8" in r.json()["error"], (encoding, r.text)
        assert r.headers["x-request-id"] == request_id
    record = await rig.read_until(rig.topics.audit, requestId=request_id)
    assert record["reason"] == "invalid"


async def test_a_refused_cors_preflight_has_the_error_shape(open_rig: Any) -> None:
    rig = open_rig
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = await rig.http.options("/api/v1/actions", headers={"Origin": "https://game.example", **preflight})
    assert ok.status_code == 200
    evil = await rig.http.options(
        "/api/v1/actions", headers={"Origin": "https://evil.example", "X-Request-ID": "cors-1", **preflight}
    )
    assert evil.status_code == 403, evil.text
    assert evil.headers["content-type"] == "application/json"
    assert evil.json()["status"] == "error" and evil.json()["code"] == "forbidden"
    assert "origin" in evil.json()["error"]
    assert evil.headers["x-request-id"] == "cors-1"
    assert "access-control-allow-origin" not in evil.headers

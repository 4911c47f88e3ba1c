"""The past through the running services (issue 11): ingest takes events and admin corrections, the
scorer projects them into Postgres and Redis, and the broadcaster answers a user's history on a
board (cursor paging, a voided action with its reason, the user's corrections) and a board as it
stood at a moment between two batches (``?at=``), equal to the board that was live then."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from leaderboard.testkit.testing import Namespace, System, running_system, service_event, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def system(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    ns = Namespace.create(base_env, LEADERBOARD_SERVICE_CAPS="off")
    with running_system(ns, tmp_path_factory.mktemp("history-logs")) as s:
        yield s


def event(user: str, name: str, points: int, action_type: str = "match_won") -> dict[str, Any]:
    return service_event(user, points, name, action_type)


def send(system: System, events: list[dict[str, Any]]) -> None:
    token = system.token(role="service", name="game-backend")
    r = httpx.post(
        f"{system.ingest_url}/api/v1/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 202, r.text


def admin(system: System, path: str, body: dict[str, Any]) -> None:
    token = system.token(role="admin", name="moderator")
    r = httpx.post(
        f"{system.ingest_url}/api/v1/admin{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 202, r.text


def get(system: System, path: str, **params: Any) -> httpx.Response:
    return httpx.get(system.broadcaster_url + path, params=params, timeout=30)


def board(system: System, name: str, **params: Any) -> dict[str, Any]:
    r = get(system, "/api/v1/leaderboard", board=name, limit=100, **params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def scores(body: dict[str, Any]) -> dict[str, int]:
    return {e["userId"]: e["score"] for e in body["leaderboard"]}


def history_pages(system: System, user: str, limit: int) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"board": "global", "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        r = get(system, f"/api/v1/leaderboard/users/{user}/history", **params)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        cursor = pages[-1]["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < 10, "the cursor does not advance"


def test_history_pages_through_a_users_events_with_the_voided_one_and_its_reason(system: System) -> None:
    user = str(uuid.uuid4())
    sent = [event(user, "Hist", p) for p in (10, 20, 30, 40, 50)]
    sent[-1]["actionType"] = "quest"
    send(system, sent)
    wait_until(lambda: scores(board(system, "global")).get(user) == 150, timeout=90, message="the events")
    voided = sent[1]["actionId"]
    admin(system, f"/actions/{voided}/void", {"userId": user, "reason": "replayed match"})
    wait_until(lambda: scores(board(system, "global")).get(user) == 130, timeout=90, message="the void")

    pages = history_pages(system, user, limit=2)
    assert [len(p["actions"]) for p in pages] == [2, 2, 1]
    actions = [a for p in pages for a in p["actions"]]
    assert sorted(a["actionId"] for a in actions) == sorted(e["actionId"] for e in sent)
    assert actions == sorted(actions, key=lambda a: (a["acceptedAt"], a["actionId"]))  # log-time order
    by_id = {a["actionId"]: a for a in actions}
    for e in sent:
        a = by_id[e["actionId"]]
        assert (a["actionType"], a["points"], a["source"]) == (e["actionType"], e["points"], "service")
        assert a["acceptedAt"].endswith("Z") and a["occurredAt"].endswith("Z")
    assert all(by_id[e["actionId"]]["voided"] is None for e in sent if e["actionId"] != voided)
    mark = by_id[voided]["voided"]
    assert mark["reason"] == "replayed match" and mark["by"] and mark["at"] and mark["correctionId"]
    fixes = pages[0]["corrections"]
    assert [(c["type"], c["actionId"], c["reason"]) for c in fixes] == [
        ("ActionVoided", voided, "replayed match")
    ]
    assert fixes[0]["correctionId"] == mark["correctionId"]
    assert pages[0]["userId"] == user and pages[0]["board"] == "global" and "period" not in pages[0]

    # best-match counts match_won only: the quest is not part of that score.
    r = get(system, f"/api/v1/leaderboard/users/{user}/history", board="best-match")
    assert {a["actionType"] for a in r.json()["actions"]} == {"match_won"}
    # A windowed board names its period.
    daily = get(system, f"/api/v1/leaderboard/users/{user}/history", board="daily").json()
    assert daily["period"] == datetime.now(UTC).date().isoformat() and len(daily["actions"]) == 5


def test_history_refusals_and_a_user_with_nothing(system: System) -> None:
    path = f"/api/v1/leaderboard/users/{uuid.uuid4()}/history"
    r = get(system, path, board="global")
    assert r.status_code == 200 and r.json()["actions"] == [] and r.json()["nextCursor"] is None
    for params, status in (
        ({"board": "nope"}, 404),
        ({"board": "daily", "period": "2026-W47"}, 404),
        ({"board": "global", "cursor": "not-a-cursor"}, 422),
        ({"board": "global", "limit": "101"}, 422),
        ({"board": "global", "limit": "\u0663"}, 422),
    ):
        r = get(system, path, **params)
        assert r.status_code == status, (params, r.text)
        assert r.json()["status"] == "error" and r.json()["error"], r.text


def test_a_board_at_a_moment_between_two_batches_is_the_board_that_was_live(system: System) -> None:
    users = [str(uuid.uuid4()) for _ in range(4)]
    first = [event(users[0], "P0", 70), event(users[1], "P1", 40), event(users[2], "P2", 40)]
    send(system, first)

    def has(body: dict[str, Any], want: dict[str, int]) -> bool:
        got = scores(body)
        return all(got.get(u) == s for u, s in want.items())

    want1 = {users[0]: 70, users[1]: 40, users[2]: 40}
    wait_until(lambda: has(board(system, "global"), want1), timeout=90, message="the first batch")
    wait_until(lambda: has(board(system, "daily"), want1), timeout=90, message="the first batch (daily)")
    live_global, live_daily = board(system, "global"), board(system, "daily")
    at = datetime.now(UTC)
    at_text = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    send(system, [event(users[1], "P1", 100), event(users[3], "P3", 200)])
    admin(system, f"/users/{users[0]}/void", {"reason": "cheating"})
    want2 = {users[1]: 140, users[3]: 200}
    wait_until(
        lambda: has(board(system, "global"), want2) and users[0] not in scores(board(system, "global")),
        timeout=90,
        message="the second batch and the void",
    )

    past = board(system, "global", at=at_text)
    assert past["leaderboard"] == live_global["leaderboard"] and past["total"] == live_global["total"]
    assert past["at"] == at_text and past["sort"] == "DESC" and "period" not in past
    assert board(system, "global", at=f"{at.timestamp():.6f}")["leaderboard"] == live_global["leaderboard"]
    past_daily = board(system, "daily", at=at_text)
    assert past_daily["leaderboard"] == live_daily["leaderboard"]
    assert (past_daily["period"], past_daily["resetsAt"]) == (live_daily["period"], live_daily["resetsAt"])
    named = board(system, "daily", at=at_text, period=live_daily["period"])
    assert named["leaderboard"] == live_daily["leaderboard"]

    # Paging and ETag as usual.
    r = get(system, "/api/v1/leaderboard", board="global", at=at_text, page=2, limit=1)
    assert r.json()["leaderboard"] == live_global["leaderboard"][1:2]
    etag = r.headers["etag"]
    again = httpx.get(str(r.request.url), headers={"If-None-Match": etag}, timeout=30)
    assert again.status_code == 304
    r = get(system, "/api/v1/leaderboard", board="global", at=at_text, sort="asc", limit=100)
    assert r.json()["leaderboard"] == live_global["leaderboard"][::-1]

    # Now is not the past: the live board matches a read at "now".
    now = board(system, "global", at=datetime.now(UTC).isoformat())
    assert scores(now) == scores(board(system, "global"))


def test_board_at_refusals(system: System) -> None:
    for params, status in (
        ({"at": "2999-01-01T00:00:00Z"}, 422),
        ({"at": "yesterday"}, 422),
        ({"at": "\u0661\u0667" + "0" * 8}, 422),
        ({"at": "2026-01-01T00:00:00Z", "board": "nope"}, 404),
        ({"at": "2026-01-01T00:00:00Z", "board": "daily", "period": "2026-W47"}, 404),
    ):
        r = get(system, "/api/v1/leaderboard", **{"board": "global", **params})
        assert r.status_code == status, (params, r.text)
        assert r.json()["status"] == "error" and r.json()["error"], r.text

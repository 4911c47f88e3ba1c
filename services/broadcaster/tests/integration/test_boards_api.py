"""Boards through the running services (issue 10): events of several types go in through ingest (and,
for entry metadata, as ActionCompleted records on the actions topic, as ingest writes them), the
scorer projects every board of the default catalog, and the broadcaster serves them: the board list
with periods and resets, best-match against the sum, periods by id, unknown periods, ranks for a list
of users, shared ranks with ties, metadata, and a past period read from Postgres once Redis lost it
(a second broadcaster whose clock runs a day ahead sees today as yesterday)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from redis.asyncio import Redis

from leaderboard.common.boardkeys import BoardKeys
from leaderboard.common.events import ActionCompleted
from leaderboard.common.kafka import new_producer
from leaderboard.common.topics import Topics
from leaderboard.testkit.processes import free_port
from leaderboard.testkit.services import ServiceSpec, leaderboard_cmd
from leaderboard.testkit.testing import Namespace, System, running_system, wait_until

pytestmark = pytest.mark.slow

U = {name: str(uuid.UUID(int=i + 1)) for i, name in enumerate(["ada", "bo", "cy", "di", "eve", "meta"])}
NAMES = {"ada": "Ada", "bo": "Bo", "cy": "Cy", "di": "Di", "eve": "Eve", "meta": "Meta"}
# (user, action type, points). match_won feeds best-match (rule best); everything feeds the sums.
EVENTS = [
    ("ada", "match_won", 30),
    ("ada", "match_won", 80),
    ("ada", "match_won", 50),
    ("ada", "quest", 20),
    ("bo", "match_won", 200),
    ("cy", "match_won", 100),
    ("di", "match_won", 100),
    ("eve", "match_won", 50),
    ("eve", "quest", 7),
]
# Sent as ActionCompleted with metadata: best keeps the best event's, sum the newest.
META_EVENTS = [(40, {"car": "red"}), (60, {"car": "blue", "lap": [1, 2]}), (20, {"car": "green"})]
BEST = {"bo": 200, "cy": 100, "di": 100, "ada": 80, "meta": 60, "eve": 50}
SUMS = {"bo": 200, "ada": 180, "meta": 120, "cy": 100, "di": 100, "eve": 57}


@pytest.fixture(scope="module")
def system(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    ns = Namespace.create(base_env, LEADERBOARD_SERVICE_CAPS="off")
    with running_system(ns, tmp_path_factory.mktemp("boards-logs")) as s:
        yield s


def service_event(who: str, action_type: str, points: int) -> dict[str, Any]:
    return {
        "actionId": str(uuid.uuid4()),
        "userId": U[who],
        "username": NAMES[who],
        "actionType": action_type,
        "occurredAt": datetime.now(UTC).isoformat(),
        "points": points,
    }


async def send_metadata_events(system: System) -> None:
    producer = new_producer(system.ns.settings())
    await producer.start()
    try:
        for points, metadata in META_EVENTS:
            now = datetime.now(UTC)
            event = ActionCompleted(
                event_id=uuid.uuid4(),
                action_id=uuid.uuid4(),
                user_id=uuid.UUID(U["meta"]),
                username=NAMES["meta"],
                action_type="match_won",
                points=points,
                occurred_at=now,
                accepted_at=now,
                source="service",
                request_id="boards-test",
                metadata=metadata,
            )
            topic = Topics(system.ns.settings().topic_prefix).actions
            await producer.send_and_wait(topic, event.to_bytes(), key=U["meta"].encode())
    finally:
        await producer.stop()


def get(url: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(url + path, params=params, timeout=30)


def scores(body: dict[str, Any]) -> dict[str, int]:
    return {e["userId"]: e["score"] for e in body["leaderboard"]}


@pytest.fixture(scope="module")
def fed(system: System) -> System:
    token = system.token(role="service", sub=str(uuid.uuid4()), name="game-backend")
    r = httpx.post(
        f"{system.ingest_url}/api/v1/events",
        json={"events": [service_event(*e) for e in EVENTS]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    asyncio.run(send_metadata_events(system))
    url = system.broadcaster_url
    want_best = {U[k]: v for k, v in BEST.items()}
    want_sum = {U[k]: v for k, v in SUMS.items()}

    def settled() -> bool:
        return all(
            scores(get(url, "/api/v1/leaderboard", board=b, limit=20).json()) == want
            for b, want in (("best-match", want_best), ("global", want_sum), ("daily", want_sum))
        )

    wait_until(settled, timeout=90, message="every board to hold the events")
    return system


def today() -> date:
    return datetime.now(UTC).date()


def test_boards_lists_the_catalog_with_periods_and_resets(fed: System) -> None:
    body = get(fed.broadcaster_url, "/api/v1/boards").json()
    boards = {b["id"]: b for b in body["boards"]}
    assert list(boards) == ["global", "daily", "weekly", "best-match"]
    day = today()
    year, week, weekday = day.isocalendar()
    monday = day - timedelta(days=weekday - 1)
    assert boards["global"] == {
        "id": "global",
        "rule": "sum",
        "order": "desc",
        "window": "all",
        "types": None,
        "keep": 1,
        "period": "all",
        "startsAt": None,
        "resetsAt": None,
    }
    assert (boards["daily"]["period"], boards["daily"]["resetsAt"]) == (
        day.isoformat(),
        f"{day + timedelta(days=1)}T00:00:00.000Z",
    )
    assert (boards["weekly"]["period"], boards["weekly"]["resetsAt"]) == (
        f"{year:04d}-W{week:02d}",
        f"{monday + timedelta(days=7)}T00:00:00.000Z",
    )
    assert boards["best-match"]["rule"] == "best" and boards["best-match"]["types"] == ["match_won"]


def test_best_match_keeps_the_best_event_while_the_sums_add(fed: System) -> None:
    url, ada = fed.broadcaster_url, U["ada"]
    best = get(url, "/api/v1/leaderboard", board="best-match").json()
    total = get(url, "/api/v1/leaderboard", board="global").json()
    weekly = get(url, "/api/v1/leaderboard", board="weekly").json()
    assert scores(best)[ada] == 80 and scores(total)[ada] == 180 and scores(weekly)[ada] == 180
    assert "period" not in best and "period" not in total  # all-time boards keep seed 000's shape
    assert weekly["period"] == get(url, "/api/v1/boards").json()["boards"][2]["period"]


def test_a_period_by_id_is_the_current_one_and_unknown_periods_are_404(fed: System) -> None:
    url = fed.broadcaster_url
    current = get(url, "/api/v1/leaderboard", board="daily", limit=20).json()
    named = get(url, "/api/v1/leaderboard", board="daily", limit=20, period=today().isoformat()).json()
    assert named == current and current["period"] == today().isoformat()
    assert current["resetsAt"] == f"{today() + timedelta(days=1)}T00:00:00.000Z"
    for board, period in (
        ("daily", "2026-W47"),
        ("daily", "2026-02-30"),
        ("global", "2026-11-23"),
        ("daily", (today() + timedelta(days=2)).isoformat()),
    ):
        r = get(url, "/api/v1/leaderboard", board=board, period=period)
        assert r.status_code == 404, (board, period, r.text)
        assert r.json()["status"] == "error" and r.json()["code"] == "not_found"
        assert period in r.json()["error"]
    r = get(url, "/api/v1/leaderboard", board="monthly")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_shared_ranks_with_ties(fed: System) -> None:
    url = fed.broadcaster_url
    body = get(url, "/api/v1/leaderboard", board="best-match").json()
    ranks = [(e["userId"], e["rank"], e["sharedRank"], e["score"]) for e in body["leaderboard"]]
    tied = sorted([U["cy"], U["di"]])  # same instant: the tie breaks by userId
    assert ranks == [
        (U["bo"], 1, 1, 200),
        (tied[0], 2, 2, 100),
        (tied[1], 3, 2, 100),
        (U["ada"], 4, 4, 80),
        (U["meta"], 5, 5, 60),
        (U["eve"], 6, 6, 50),
    ]
    # A page that starts inside the tie still shares the rank (counted from Redis, not the page).
    page2 = get(url, "/api/v1/leaderboard", board="best-match", limit=2, page=2).json()
    assert [(e["rank"], e["sharedRank"]) for e in page2["leaderboard"]] == [(3, 2), (4, 4)]
    reverse = get(url, "/api/v1/leaderboard", board="best-match", sort="asc").json()
    assert [(e["rank"], e["sharedRank"]) for e in reverse["leaderboard"]] == [
        (6, 6), (5, 5), (4, 4), (3, 2), (2, 2), (1, 1)
    ]  # fmt: skip
    me = get(url, f"/api/v1/leaderboard/users/{tied[1]}", board="best-match", around=1).json()
    assert (me["rank"], me["sharedRank"]) == (3, 2)
    assert [(n["rank"], n["sharedRank"]) for n in me["neighbours"]] == [(2, 2), (4, 4)]


async def test_live_frames_carry_shared_ranks(fed: System) -> None:
    url = fed.broadcaster_url.replace("http://", "ws://") + "/ws/leaderboard?board=best-match"
    async with websockets.connect(url) as ws:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["type"] == "snapshot" and frame["board"] == "best-match"
    assert [(e["rank"], e["sharedRank"]) for e in frame["top"]] == [
        (1, 1),
        (2, 2),
        (3, 2),
        (4, 4),
        (5, 5),
        (6, 6),
    ]


def test_ranks_for_a_list_of_users(fed: System) -> None:
    url, nobody = fed.broadcaster_url, str(uuid.uuid4())
    wanted = [U["eve"], nobody, U["di"], U["ada"], U["eve"]]
    body = get(url, "/api/v1/leaderboard/ranks", board="best-match", users=",".join(wanted)).json()
    assert [(e["userId"], e["rank"], e["sharedRank"], e["score"]) for e in body["entries"]] == [
        (U["di"], sorted([U["cy"], U["di"]]).index(U["di"]) + 2, 2, 100),
        (U["ada"], 4, 4, 80),
        (U["eve"], 6, 6, 50),
    ]
    assert body["missing"] == [nobody] and body["total"] == 6 and body["board"] == "best-match"
    daily = get(url, "/api/v1/leaderboard/ranks", board="daily", users=U["ada"]).json()
    assert daily["period"] == today().isoformat() and daily["entries"][0]["score"] == 180
    for users, needle in (
        (",".join(str(uuid.uuid4()) for _ in range(101)), "at most 100"),
        (f"{U['ada']},not-a-uuid", "not a UUID"),
        ("", "comma-separated"),
    ):
        r = get(url, "/api/v1/leaderboard/ranks", board="global", users=users)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "invalid" and "users" in r.json()["error"] and needle in r.json()["error"]


def test_entries_carry_their_metadata(fed: System) -> None:
    url, who = fed.broadcaster_url, U["meta"]

    def entry(board: str) -> dict[str, Any]:
        body = get(url, "/api/v1/leaderboard", board=board, limit=20).json()
        return next(e for e in body["leaderboard"] if e["userId"] == who)

    assert entry("best-match")["metadata"] == {"car": "blue", "lap": [1, 2]}  # the event that set 60
    assert entry("global")["metadata"] == {"car": "green"}  # sum: the newest
    assert "metadata" not in next(
        e
        for e in get(url, "/api/v1/leaderboard", board="global").json()["leaderboard"]
        if e["userId"] == U["bo"]
    )
    mine = get(url, f"/api/v1/leaderboard/users/{who}", board="best-match").json()
    assert mine["metadata"] == {"car": "blue", "lap": [1, 2]}
    ranked = get(url, "/api/v1/leaderboard/ranks", board="global", users=who).json()
    assert ranked["entries"][0]["metadata"] == {"car": "green"}
    assert set(get(url, "/scores").json()[0]) == {"rank", "userId", "username", "score"}


def test_the_cli_prints_any_board_and_period(fed: System) -> None:
    def board(*args: str) -> str:
        cmd = leaderboard_cmd("board", "--url", fed.broadcaster_url, *args)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=fed.env, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    best = board("--board", "best-match").splitlines()
    assert best[0].startswith("board best-match") and "period" not in best[0]
    tied = sorted([U["cy"], U["di"]])[1]
    assert next(line for line in best if tied in line).split()[:2] == ["3", "=2"]
    daily = board("--board", "daily", "--period", today().isoformat(), "--limit", "3").splitlines()
    assert f"period {today().isoformat()}" in daily[0] and len(daily) == 4
    refused = subprocess.run(
        leaderboard_cmd("board", "--url", fed.broadcaster_url, "--board", "daily", "--period", "2026-W47"),
        capture_output=True,
        text=True,
        timeout=60,
        env=fed.env,
        check=False,
    )
    assert refused.returncode == 1 and "not_found" in refused.stderr


def start_broadcaster(system: System, log_dir: Path, **env: str) -> tuple[str, str]:
    port = free_port()
    name = f"broadcaster-ahead-{port}"
    spec = ServiceSpec(
        name,
        leaderboard_cmd("broadcaster", "--port", str(port)),
        {**system.env, **env},
        f"http://127.0.0.1:{port}/readyz",
        log_dir / f"{name}.log",
    )
    system.supervisor.start(spec)
    system.supervisor.wait_ready(name)
    return name, f"http://127.0.0.1:{port}"


def test_a_past_period_is_read_from_postgres_once_redis_lost_it(
    fed: System, tmp_path_factory: pytest.TempPathFactory
) -> None:
    day = today().isoformat()
    live = get(fed.broadcaster_url, "/api/v1/leaderboard", board="daily", limit=20).json()
    name, ahead = start_broadcaster(
        fed, tmp_path_factory.mktemp("ahead-logs"), LEADERBOARD_CLOCK_OFFSET_S=str(86400)
    )
    try:
        tomorrow = get(ahead, "/api/v1/leaderboard", board="daily").json()
        assert (
            tomorrow["period"] == (today() + timedelta(days=1)).isoformat() and tomorrow["leaderboard"] == []
        )
        kept = get(ahead, "/api/v1/leaderboard", board="daily", limit=20, period=day).json()
        assert kept["leaderboard"] == live["leaderboard"] and kept["epoch"] == live["epoch"]

        async def forget() -> int:
            redis = Redis.from_url(fed.ns.settings().redis_url)
            try:
                return int(await redis.delete(*BoardKeys.of(fed.ns.name, "daily", day).data))
            finally:
                await redis.aclose()

        assert asyncio.run(forget()) >= 3
        archived = get(ahead, "/api/v1/leaderboard", board="daily", limit=20, period=day)
        assert archived.status_code == 200, archived.text
        body = archived.json()
        assert body["leaderboard"] == live["leaderboard"]  # ranks, shared ranks, names, metadata
        assert (body["period"], body["total"]) == (day, len(SUMS))
        page2 = get(ahead, "/api/v1/leaderboard", board="daily", limit=2, page=3, period=day).json()
        assert page2["leaderboard"] == live["leaderboard"][4:6]
        ranked = get(ahead, "/api/v1/leaderboard/ranks", board="daily", period=day, users=U["ada"]).json()
        assert ranked["entries"] == [e for e in live["leaderboard"] if e["userId"] == U["ada"]]
        me = get(ahead, f"/api/v1/leaderboard/users/{U['cy']}", board="daily", period=day, around=1).json()
        assert me["rank"] == next(e["rank"] for e in live["leaderboard"] if e["userId"] == U["cy"])
        etag = archived.headers["etag"]
        again = httpx.get(
            f"{ahead}/api/v1/leaderboard",
            params={"board": "daily", "limit": 20, "period": day},
            headers={"If-None-Match": etag},
        )
        assert again.status_code == 304
    finally:
        fed.supervisor.stop(name)

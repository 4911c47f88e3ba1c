"""Game-backend and player traffic through the public HTTP API, for demos and load.

Players go through the real ticket flow (start, wait the catalog's minimum, complete); a game
backend reports batches of completed actions for other players with a service token. Like a
well-behaved backend, it keeps each player within the catalog's per-hour caps (the scorer
quarantines the excess of service events by default, ``LEADERBOARD_SERVICE_CAPS=catalog``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import httpx

from leaderboard.common.auth import mint_token
from leaderboard.common.events import iso_ms, now_ms
from leaderboard.common.settings import CommonSettings

log = logging.getLogger(__name__)
NAMES = [
    "Ada",
    "Grace",
    "Linus",
    "Alan",
    "Edsger",
    "Barbara",
    "Ken",
    "Margaret",
    "Donald",
    "Radia",
    "Guido",
    "Frances",
    "Dennis",
    "Hedy",
    "Tim",
    "Katherine",
    "Niklaus",
    "Sophie",
    "John",
    "Shafi",
]


@dataclass
class Player:
    user_id: str
    name: str
    token: str


@dataclass
class HourlyBudget:
    """What a player may still complete of each type within the catalog's rolling-hour cap."""

    caps: dict[str, int]
    _done: dict[tuple[str, str], deque[float]] = field(default_factory=dict)

    def take(self, user_id: str, action_type: str, now: float | None = None) -> bool:
        cap = self.caps.get(action_type, 0)
        if cap == 0:
            return True
        now = time.monotonic() if now is None else now
        done = self._done.setdefault((user_id, action_type), deque())
        while done and now - done[0] >= 3600:
            done.popleft()
        if len(done) >= cap:
            return False
        done.append(now)
        return True


async def simulate(
    settings: CommonSettings,
    ingest_url: str,
    *,
    players: int = 20,
    rate: float = 2.0,
    duration: float | None = None,
    batch: int = 5,
) -> dict[str, int]:
    """Run until ``duration`` seconds pass (or forever). ``rate`` is service batches per second."""
    roster = [
        Player(str(uuid.uuid4()), f"{NAMES[i % len(NAMES)]}{'' if i < len(NAMES) else i}", "")
        for i in range(players)
    ]
    for p in roster:
        p.token = await asyncio.to_thread(
            mint_token, settings, sub=p.user_id, role="player", name=p.name, ttl_s=86400
        )
    service = await asyncio.to_thread(
        mint_token, settings, sub=str(uuid.uuid4()), role="service", name="sim", ttl_s=86400
    )
    stats = {"batches": 0, "events": 0, "player_actions": 0, "errors": 0}
    loop = asyncio.get_running_loop()
    end = loop.time() + duration if duration else None
    async with httpx.AsyncClient(base_url=ingest_url, timeout=10) as http:
        catalog = (await http.get("/api/v1/catalog")).json()["actions"]
        types = [a for a in catalog if a["perHour"] == 0 or a["perHour"] >= 10]
        budget = HourlyBudget({a["actionType"]: a["perHour"] for a in catalog})

        async def player_loop(p: Player) -> None:
            while end is None or loop.time() < end:
                await asyncio.sleep(random.uniform(3, 12))
                kind = random.choice(types)
                if not budget.take(p.user_id, kind["actionType"]):
                    continue
                try:
                    started = await http.post(
                        "/api/v1/actions",
                        json={"actionType": kind["actionType"]},
                        headers={"Authorization": f"Bearer {p.token}"},
                    )
                    if started.status_code != 201:
                        continue
                    await asyncio.sleep(kind["minSeconds"] + 0.2)
                    done = await http.post(
                        "/api/v1/score/update",
                        headers={"Authorization": f"Bearer {p.token}"},
                        json={"actionId": started.json()["actionId"], "timestamp": int(now_ms().timestamp())},
                    )
                    stats["player_actions"] += done.status_code in (200, 202)
                except httpx.HTTPError:
                    stats["errors"] += 1

        async def service_loop() -> None:
            while end is None or loop.time() < end:
                events = []
                for _ in range(batch):
                    p = random.choice(roster)
                    kind = random.choice(types)
                    if not budget.take(p.user_id, kind["actionType"]):
                        continue  # this player is at the cap: a real backend would not report more
                    events.append(
                        {
                            "actionId": str(uuid.uuid4()),
                            "userId": p.user_id,
                            "username": p.name,
                            "actionType": kind["actionType"],
                            "occurredAt": iso_ms(now_ms()),
                            "points": random.randint(1, kind["maxPoints"]),
                        }
                    )
                if not events:
                    await asyncio.sleep(1.0 / rate)
                    continue
                try:
                    r = await http.post(
                        "/api/v1/events",
                        json={"events": events},
                        headers={"Authorization": f"Bearer {service}"},
                    )
                    if r.status_code == 202:
                        stats["batches"] += 1
                        stats["events"] += len(events)
                    else:
                        stats["errors"] += 1
                        log.warning("simulate: %s %s", r.status_code, r.text[:200])
                except httpx.HTTPError as exc:
                    stats["errors"] += 1
                    log.warning("simulate: %s", exc)
                await asyncio.sleep(1.0 / rate)

        tasks = [asyncio.create_task(player_loop(p)) for p in roster[: max(1, players // 4)]]
        tasks.append(asyncio.create_task(service_loop()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return stats

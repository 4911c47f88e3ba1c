"""The live page at / in headless Chromium (Debian's chromium driven by Playwright): the board renders,
a change made through the ingest API appears without a reload, the page resumes after the broadcaster
restarts, and the dev-mode button runs the full ticket flow as a demo player. Saves screenshots."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from leaderboard.testkit.testing import Namespace, System

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page_system(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian's chromium is not installed at /usr/bin/chromium: "
            "run `apt-get update && apt-get install -y chromium` (CI's .ci/run installs it)"
        )
    ns = Namespace.create(base_env)
    sys_ = System(ns, tmp_path_factory.mktemp("page-logs"))
    sys_.extra_env.update(
        {
            "LEADERBOARD_DEV_MODE": "true",
            "LEADERBOARD_INGEST_PUBLIC_URL": sys_.ingest_url,
            "LEADERBOARD_CORS_ORIGINS": f'["{sys_.broadcaster_url}"]',
        }
    )
    try:
        sys_.start()
        yield sys_
    finally:
        sys_.stop()
        ns.drop()


async def post_scores(system: System, scores: dict[str, tuple[str, int]]) -> None:
    service = system.token(role="service", sub=str(uuid.uuid4()), name="game-backend")
    events = [
        {
            "actionId": str(uuid.uuid4()),
            "userId": user,
            "username": name,
            "actionType": "quest",
            "occurredAt": datetime.now(UTC).isoformat(),
            "points": points,
        }
        for user, (name, points) in scores.items()
    ]
    async with httpx.AsyncClient(base_url=system.ingest_url, timeout=30) as ingest:
        r = await ingest.post(
            "/api/v1/events", json={"events": events}, headers={"Authorization": f"Bearer {service}"}
        )
        assert r.status_code == 202, r.text


async def test_live_page(page_system: System, artifacts: Path) -> None:
    from playwright.async_api import async_playwright, expect

    players = [
        "Nova",
        "Kestrel",
        "Quill",
        "Marlow",
        "Juniper",
        "Onyx",
        "Sable",
        "Tamsin",
        "Wren",
        "Zephyr",
        "Ash",
    ]
    seeded = {str(uuid.uuid4()): (name, 480 - 40 * i) for i, name in enumerate(players)}
    await post_scores(page_system, seeded)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(page_system.broadcaster_url + "/")
            status = page.locator("#status")
            await expect(status).to_have_attribute("data-state", "live", timeout=30_000)
            rows = page.locator("#board li.row")
            await expect(rows).to_have_count(10, timeout=30_000)  # the top 10 of the 11
            await expect(rows.first.locator(".name")).to_have_text("Nova")
            await expect(rows.first.locator(".rank")).to_have_text("#1")
            await expect(page.locator("#you")).to_be_hidden()
            await page.evaluate("window.__sameDocument = true")

            # A change made through the ingest API appears without a reload.
            newcomer = str(uuid.uuid4())
            await post_scores(page_system, {newcomer: ("Comet", 500)})
            leader = page.locator(f'#board li.row[data-user="{newcomer}"]')
            await expect(leader.locator(".name")).to_have_text("Comet", timeout=30_000)
            await expect(rows.first).to_have_attribute("data-user", newcomer)
            await expect(rows).to_have_count(10)
            assert await page.evaluate("window.__sameDocument === true")  # no reload
            await page.screenshot(path=str(artifacts / "broadcaster-live-page.png"), full_page=True)

            # The broadcaster restarts: the page shows it, reconnects with since, and stays current.
            page_system.supervisor.stop("broadcaster")
            await expect(status).not_to_have_attribute("data-state", "live", timeout=30_000)
            page_system.restart("broadcaster")
            await expect(status).to_have_attribute("data-state", "live", timeout=60_000)
            riser = next(u for u, (n, _) in seeded.items() if n == "Zephyr")
            await post_scores(page_system, {riser: ("Zephyr", 370)})  # 120 + 370: from #11 to #2
            await expect(page.locator(f'#board li.row[data-user="{riser}"] .rank')).to_have_text(
                "#2", timeout=30_000
            )
            assert await page.evaluate("window.__sameDocument === true")

            # Dev mode: the button runs the ticket flow (dev token, start, complete) as a demo player.
            await page.locator("#play").click()
            await expect(page.locator("#msg")).to_contain_text("won", timeout=30_000)
            me = await page.evaluate("window.leaderboardDemo && window.leaderboardDemo.player()")
            assert me and me["userId"]
            async with httpx.AsyncClient(base_url=page_system.broadcaster_url, timeout=10) as reads:
                for _ in range(100):
                    r = await reads.get(f"/api/v1/leaderboard/users/{me['userId']}")
                    if r.status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                assert r.status_code == 200 and r.json()["score"] == 25
            # Below the top 10, the page shows the demo player's own rank.
            await expect(page.locator("#you-line")).to_contain_text(f"#{r.json()['rank']} with 25 points")
            await page.screenshot(path=str(artifacts / "broadcaster-live-page-demo.png"), full_page=True)
            assert not errors, errors
        finally:
            await browser.close()

"""`leaderboard dev` (what `make run` runs) prints its URLs only once the page can show a board: right
after the banner, with no demo traffic and so no score at all, a WebSocket gets its snapshot at once
and the REST board answers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from leaderboard.testkit.processes import free_port
from leaderboard.testkit.services import leaderboard_cmd


async def first_frame(url: str) -> dict[str, Any]:
    async with websockets.connect(url.replace("http", "ws") + "/ws/leaderboard", open_timeout=5) as ws:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 2))
    return frame


@pytest.mark.slow
def test_dev_prints_its_urls_when_the_page_can_show_a_board(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("ingest", "broadcaster", "scorer", "kafka", "redis", "postgres")}
    args = [f"--{name}-port={port}" for name, port in ports.items()]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for key in ("LEADERBOARD_KEYS_DIR", "LEADERBOARD_TOPIC_PREFIX", "LEADERBOARD_REDIS_PREFIX"):
        env.pop(key, None)
    proc = subprocess.Popen(
        [*leaderboard_cmd("dev", "--no-demo", f"--data-dir={tmp_path / 'dev'}"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 240
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError("leaderboard dev exited:\n" + "".join(output[-40:]))
            output.append(line)
            if "Live leaderboard is up" in line:
                break
        else:
            raise AssertionError("no banner:\n" + "".join(output[-40:]))
        url = f"http://127.0.0.1:{ports['broadcaster']}"
        started = time.monotonic()
        first = asyncio.run(first_frame(url))
        assert time.monotonic() - started < 3
        assert first["type"] == "snapshot" and first["epoch"] and first["top"] == [], first
        board = httpx.get(f"{url}/api/v1/leaderboard", timeout=5)
        assert board.status_code == 200 and board.json()["epoch"] == first["epoch"]
        assert httpx.get(f"{url}/", timeout=5).status_code == 200
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

"""The bench's service batches as k6 really sends them: every event of every request, across virtual
users, carries a distinct actionId that is valid UUID text, and the fixed fields are well formed; the
``{"accepted", "duplicates"}`` answers are summed into the run. A loopback recorder answers like ingest
would for a new batch, so what is asserted is the generator's output itself (the smoke bench checks
the same counts against the real ingest)."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from leaderboard.cli.bench import k6


class _Recorder(ThreadingHTTPServer):
    bodies: list[dict[str, Any]]
    lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    server: _Recorder

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        body = json.loads(raw)
        with self.server.lock:
            self.server.bodies.append(body)
        answer = json.dumps({"accepted": len(body["events"]), "duplicates": 0}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_service_batches_carry_distinct_valid_events(tmp_path: Path) -> None:
    server = _Recorder(("127.0.0.1", 0), _Handler)
    server.bodies, server.lock = [], threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    users = [str(uuid.uuid4()) for _ in range(50)]
    (tmp_path / "users.json").write_text(json.dumps(users))
    started = datetime.now(UTC)
    try:
        run = k6.run(
            mode="post",
            base=f"http://127.0.0.1:{server.server_address[1]}",
            work=tmp_path,
            name="batches",
            tokens=["t"],
            system={},
            env={
                "ACTION_TYPE": "bench",
                "EXPECT": "202",
                "BODY": "events",
                "TARGET": "/api/v1/events",
                "BATCH": "25",
                "USERS": str(tmp_path / "users.json"),
                "VUS": "4",
                "DURATION": "1s",
            },
            timeout_s=120,
        )
    finally:
        server.shutdown()
        server.server_close()
    events = [e for b in server.bodies for e in b["events"]]
    assert run.ok == len(server.bodies) > 4 and run.bad == 0
    assert all(len(b["events"]) == 25 for b in server.bodies)
    assert run.accepted == len(events) and run.duplicates == 0
    ids = [e["actionId"] for e in events]
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)
    # Several virtual users, each with its own id prefix.
    assert len({i[:24] for i in ids}) == 4
    for e in events:
        assert set(e) == {"actionId", "userId", "actionType", "occurredAt", "points"}
        assert e["userId"] in users and e["actionType"] == "bench" and e["points"] == 1
        when = datetime.fromisoformat(e["occurredAt"].replace("Z", "+00:00"))
        assert started - timedelta(seconds=5) <= when <= datetime.now(UTC)

"""`make chaos` in small: the whole-system fault check with every fault kind, run as users run it
(``python -m leaderboard.cli.chaos``, its own embedded stack even when LEADERBOARD_REDIS_URL and
LEADERBOARD_POSTGRES_DSN name system services), and the accounting it relies on."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from leaderboard.cli.chaos import FAULTS, Ledger, check_counts, failures

# Every fault kind, back to back: about 2 minutes on a 2-core machine.
CI_ARGS = ["-m", "leaderboard.cli.chaos", "--duration", "45", "--rate", "16", "--ws-clients", "3"]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_chaos_run_with_every_fault_loses_and_doubles_nothing(tmp_path: Path) -> None:
    report_path = tmp_path / "chaos.json"
    done = subprocess.run(
        [sys.executable, *CI_ARGS, "--json", str(report_path), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert report_path.exists(), done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads(report_path.read_text())
    f = report["figures"]
    assert [r["name"] for r in report["faults"]] == list(FAULTS)
    failed = [r for r in report["faults"] if not r["ok"]]
    assert not failed, failed
    assert f["acknowledged"] > 200 and f["counted"] == f["acknowledged"], f
    assert f["lost"] == 0 and f["doubled"] == 0, f
    assert f["refused_but_counted"] == 0 and f["never_sent_but_counted"] == 0, f
    assert f["users_score_too_high"] == 0 and f["users_score_too_low"] == 0, f
    assert f["redis_users"] > 0 and f["redis_member_mismatch"] == 0 and f["redis_rank_mismatch"] == 0, f
    assert f["clients"] == 3 and f["clients_not_on_final"] == 0 and f["client_order_violations"] == 0, f
    assert f["poison_records"] == 2 and f["poison_in_dlq"] == 2 and f["poison_counted"] == 0, f
    # The broadcaster was killed, so every client reconnected at least once.
    assert f["client_connects"] >= 2 * f["clients"], f
    assert report["failures"] == [] and done.returncode == 0, done.stdout[-3000:]
    assert "PASS" in done.stdout and "lost 0" in done.stdout


# --- the accounting: each way of going wrong is caught ---------------------------------------------


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def _tables(rows: list[tuple[str, str, int]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """actions rows (actionId, userId, points) and the users rows a correct scorer derives from them."""
    actions = [{"action_id": a, "user_id": u, "points": p} for a, u, p in rows]
    scores: dict[str, int] = {}
    for _, u, p in rows:
        scores[u] = scores.get(u, 0) + p
    return actions, [{"user_id": u, "score": s} for u, s in scores.items()]


def test_a_clean_run_passes_and_unknown_outcomes_count_on_neither_side() -> None:
    user = str(uuid.uuid4())
    a, b, c, d = _ids(4)
    ledger = Ledger(
        acked={a: (user, 5), b: (user, 7)}, refused={c: "503 unavailable"}, unknown={d: (user, 3)}
    )
    actions, users = _tables([(a, user, 5), (b, user, 7), (d, user, 3)])
    figures = check_counts(ledger, actions, users)
    assert figures["acknowledged"] == figures["counted"] == 2
    assert figures["unknown_counted"] == 1
    assert failures(figures) == []


def test_loss_double_and_refused_but_counted_fail_the_run() -> None:
    user = str(uuid.uuid4())
    a, b, c = _ids(3)
    ledger = Ledger(acked={a: (user, 5), b: (user, 7)}, refused={c: "503 unavailable"})
    actions, users = _tables([(a, user, 5), (c, user, 2)])  # b lost, c counted although refused
    users[0]["score"] += 5  # a's points applied twice
    figures = check_counts(ledger, actions, users)
    assert figures["lost"] == 1
    assert figures["refused_but_counted"] == 1
    assert figures["doubled"] == 1
    sentences = failures(figures)
    assert any("lost" in s for s in sentences) and any("doubled" in s for s in sentences)
    assert any("refused but counted" in s for s in sentences)


def test_points_that_differ_from_the_acknowledged_ones_fail_the_run() -> None:
    user = str(uuid.uuid4())
    (a,) = _ids(1)
    actions, users = _tables([(a, user, 50)])
    figures = check_counts(Ledger(acked={a: (user, 5)}), actions, users)
    assert figures["wrong_points"] == 1 and figures["users_score_too_high"] == 1
    assert failures(figures)

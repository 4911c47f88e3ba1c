"""`make bench` in quick mode, as a developer runs it: every headline figure comes out with this
project's value, the baseline's and their ratio, the PNG is drawn, and the generator's headroom is
judged. It asserts what the bench reports, never how fast anything was (benchmarks report, tests
do not time)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leaderboard.cli.bench.figures import REQUIRED, missing

EXPECTED = {
    "completions_per_s",
    "completion_p50_ms",
    "completion_p99_ms",
    "batch_events_per_s",
    "top10_reads_per_s",
    "top10_p99_ms",
    "page50_reads_per_s",
    "scorer_catchup_events_per_s",
    "scorer_catchup_wall_s",
    *(f"e2e_{q}_ms_at_{r}" for q in ("p50", "p99") for r in (100, 500, 2000)),
    *(f"fanout_{q}_ms_at_{n}" for q in ("p50", "p99") for n in (50, 200)),
    *(f"fanout_memory_kib_at_{n}" for n in (50, 200)),
}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_bench_writes_every_figure_with_baseline_and_ratio(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "leaderboard.cli.bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=850,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    data = json.loads((out / "bench.json").read_text())

    figures = {f["key"]: f for f in data["figures"]}
    assert set(figures) == EXPECTED
    # A ratio is missing only where the baseline is 0 (an end-to-end baseline whose frames all came
    # before their 2xx): the table then prints '-'.
    assert all(figures[k]["baseline"]["median"] == 0 for k in missing(data["figures"]))
    for f in figures.values():
        assert all(k in f for k in REQUIRED)
        if f["baseline"]["median"]:
            assert math.isclose(f["ratio"], f["project"]["median"] / f["baseline"]["median"], rel_tol=1e-3)
        for side in ("project", "baseline"):
            assert f[side]["min"] <= f[side]["median"] <= f[side]["max"]
            assert len(f[side]["runs"]) == data["runs"] == 1

    # The load generator is k6, and its headroom was judged in every section that used a generator.
    assert data["http"]["load_generator"].startswith("k6 v")
    for section in ("http", "e2e", "fanout"):
        h = data["headroom"][section]
        assert isinstance(h["bottleneck_in"], list)
        assert h["max_generator"]["verdict"]
    assert data["machine"]["nproc"] >= 1 and data["machine"]["memory_total_gib"] > 0
    # Every completion used a distinct valid ticket: none refused.
    for r in data["http"]["k6_runs"]["complete"]:
        assert r["ok"] > 0 and r["bad"] == 0, r
    # Every event of every service batch carried a new actionId: ingest accepted them all, none a duplicate.
    for r in data["http"]["k6_runs"]["batch"]:
        assert r["ok"] > 0 and r["bad"] == 0, r
        assert r["accepted"] == r["ok"] * 100 and r["duplicates"] == 0, r
    assert data["scorer"]["consistent"] is True

    png = out / "bench.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    table = proc.stdout
    assert "| figure | this project | baseline | ratio |" in table
    assert "cores" in table and "GiB RAM" in table
    assert "Load generator headroom" in table
    for f in figures.values():
        assert f["label"] in table

import math

import pytest

from leaderboard.cli.bench.figures import figure, missing, spread
from leaderboard.cli.bench.k6 import SCRIPT, headroom, loopback_only
from leaderboard.cli.bench.report import table


def test_spread_is_median_min_max_and_skips_failed_runs() -> None:
    s = spread([3.0, None, 1.0, 2.0, math.nan])
    assert (s["median"], s["min"], s["max"]) == (2.0, 1.0, 3.0)
    assert s["runs"] == [3.0, None, 1.0, 2.0, None]
    assert math.isnan(spread([None])["median"])


def test_figure_ratio_is_project_over_baseline_and_missing_flags_gaps() -> None:
    f = figure("k", "reads", "req/s", "higher", [100, 300, 200], [50, 100, 150], "naive")
    assert f["ratio"] == 2.0 and f["project"]["median"] == 200
    gap = figure("g", "gap", "ms", "lower", [1.0], [None], "naive")
    assert math.isnan(gap["ratio"])
    assert missing([f, gap, {"key": "partial"}]) == ["g", "partial"]
    with pytest.raises(ValueError):
        figure("k", "x", "ms", "sideways", [1], [1], "b")


def test_headroom_flags_a_generator_near_a_core_or_above_the_system() -> None:
    assert headroom(0.3, 0.9, 0.5)["generator_bottleneck"] is False
    assert headroom(0.95, 1.5, 0.5)["generator_bottleneck"] is True
    # above the system's CPU matters only when the CPU is contended
    assert headroom(0.05, 0.03, 0.3)["generator_bottleneck"] is False
    busy = headroom(0.5, 0.4, 0.99)
    assert busy["generator_bottleneck"] is True
    assert "WARNING" in busy["verdict"] and "99% busy" in busy["verdict"]
    # several single-threaded client processes: one of them near a core is the bottleneck
    clients = headroom(1.2, 1.5, 0.5, generator="clients", busiest_generator_process=0.95)
    assert clients["generator_bottleneck"] is True and clients["verdict"].startswith("WARNING: the generator")
    assert headroom(1.2, 1.5, 0.5, busiest_generator_process=0.4)["generator_bottleneck"] is False


def test_load_only_goes_to_loopback_and_the_summary_is_written_to_a_file() -> None:
    loopback_only("http://127.0.0.1:8080")
    with pytest.raises(ValueError):
        loopback_only("http://10.0.0.1:8080")
    assert "handleSummary" in SCRIPT


def test_table_has_a_line_per_figure_with_baseline_and_ratio() -> None:
    data = {
        "machine": {"nproc": 2, "cpu_model": "x", "memory_total_gib": 24, "python": "3.11"},
        "runs": 3,
        "figures": [
            figure("c", "completions/s", "req/s", "higher", [600, 700, 800], [2000, 2100, 2200], "naive")
        ],
        "headroom": {"http": {"bottleneck_in": ["top10"], "max_generator": {"verdict": "WARNING: k6"}}},
    }
    out = table(data)
    assert (
        "| completions/s (req/s, higher is better) | 700 (600-800) | 2,100 (2,000-2,200) (a) | 0.33x |" in out
    )
    assert "(a) naive" in out and "2 cores" in out and "24 GiB RAM" in out
    assert "WARNING, generator-bound in top10" in out

from leaderboard.cli.bench.report import lookup, render
from leaderboard.cli.bench.stats import clean, percentile, split_evenly, summarize


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 99) == 10
    s = summarize([0.001, 0.002, 0.003], 1000)
    assert s["count"] == 3 and s["p50"] == 2.0 and s["max"] == 3.0


def test_split_evenly_and_clean() -> None:
    assert split_evenly(10, 3) == [4, 3, 3]
    assert clean({"a": float("nan"), "b": [1.234567891]}) == {"a": None, "b": [1.2346]}


def test_render_shows_ratios_and_folds_summaries() -> None:
    data = {
        "started": "now",
        "machine": {
            "nproc": 2,
            "cpu_model": "x",
            "memory_total_gib": 24,
            "python": "3.11",
            "load_average": [0],
        },
        "scorer": {
            "faust": {"events_per_s_steady": 12000.0},
            "baseline_plain_consumer": {"events_per_s_steady": 10000.0},
            "latency": {"count": 3, "p50": 1.0, "p99": 2.0, "max": 3.0},
        },
        "fanout": {"error": "RuntimeError: boom"},
    }
    out = render(data)
    assert "**1.20\u00d7**" in out
    assert "| latency | p50 1.00 / p99 2.00 / max 3.00 (n=3) |" in out
    assert "RuntimeError: boom" in out
    assert lookup(data, "scorer.faust.events_per_s_steady") == 12000.0
    assert lookup(data, "scorer.missing.path") is None

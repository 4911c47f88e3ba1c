"""bench.png: every headline figure as a pair of bars (this project, baseline) with the runs' min-max
as error bars, grouped by unit (throughputs, latencies, memory), and the latency distributions
(percentile curves of the k6 runs and of the end-to-end samples) beside the baseline's."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to a file

import matplotlib.pyplot as plt

PROJECT, BASELINE = "#1f77b4", "#aaaaaa"
QUANTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else math.nan


def _bars(ax: Any, figures: list[dict[str, Any]], title: str) -> None:
    labels = [f["label"] for f in figures]
    xs = range(len(figures))
    for offset, side, colour in ((-0.2, "project", PROJECT), (0.2, "baseline", BASELINE)):
        med = [_num(f[side].get("median")) for f in figures]
        low = [m - _num(f[side].get("min")) for m, f in zip(med, figures, strict=True)]
        high = [_num(f[side].get("max")) - m for m, f in zip(med, figures, strict=True)]
        err = [[0 if math.isnan(v) else v for v in low], [0 if math.isnan(v) else v for v in high]]
        ax.bar(
            [x + offset for x in xs],
            [0 if math.isnan(v) else v for v in med],
            0.4,
            yerr=err,
            color=colour,
            capsize=3,
            label="this project" if side == "project" else "baseline",
        )
    for x, f in zip(xs, figures, strict=True):
        r = _num(f.get("ratio"))
        top = max(_num(f["project"].get("median")), _num(f["baseline"].get("median")))
        if not math.isnan(r) and not math.isnan(top) and top > 0:
            ax.annotate(
                f"{r:.2f}x", (x, top), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=7
            )
    ax.set_xticks(list(xs), labels, rotation=30, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def _distributions(ax: Any, data: dict[str, Any]) -> None:
    """Latency percentile curves (log x) of each pair: k6 runs of the HTTP section, e2e samples."""
    pairs = [
        ("completion", "http", "complete", "naive_complete"),
        ("top-10 read", "http", "top10", "naive_top10"),
    ]
    styles = iter(["o", "s", "^", "v", "D", "x", "+", "*"])
    for label, section, mine, theirs in pairs:
        runs = (data.get(section) or {}).get("k6_runs") or {}
        marker = next(styles)
        for name, colour, who in ((mine, PROJECT, "project"), (theirs, BASELINE, "baseline")):
            first = (runs.get(name) or [{}])[0].get("ok_ms") or {}
            pts = [(q, _num(first.get(k))) for k, q in QUANTILES if k in first]
            if pts:
                ax.plot(
                    [v for _, v in pts],
                    [q for q, _ in pts],
                    marker=marker,
                    color=colour,
                    label=f"{label} ({who})",
                )
    for rate, pair in ((data.get("e2e") or {}).get("samples_ms") or {}).items():
        marker = next(styles, "o")
        for who, colour in (("project", PROJECT), ("baseline", BASELINE)):
            values = sorted(pair.get(who) or [])
            if values:
                qs = [100.0 * (i + 0.5) / len(values) for i in range(len(values))]
                ax.plot(
                    values,
                    qs,
                    marker=marker,
                    markersize=2,
                    linestyle="-",
                    color=colour,
                    alpha=0.7,
                    label=f"e2e {rate}/s ({who})",
                )
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log)", fontsize=8)
    ax.set_ylabel("percentile", fontsize=8)
    ax.set_title("latency distributions (blue: this project, grey: baseline)", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, ncol=2)


def plot(data: dict[str, Any], path: Path) -> Path:
    figures = [f for f in data.get("figures", []) if isinstance(f, dict)]
    groups = [
        ("throughput (higher is better)", [f for f in figures if f.get("better") == "higher"]),
        ("latency, ms (lower is better)", [f for f in figures if f.get("unit") == "ms"]),
        ("memory per connection, KiB (lower is better)", [f for f in figures if f.get("unit") == "KiB"]),
    ]
    groups = [(t, fs) for t, fs in groups if fs]
    fig, axes = plt.subplots(len(groups) + 1, 1, figsize=(11, 4.2 * (len(groups) + 1)))
    axes = list(axes) if len(groups) else [axes]
    for ax, (title, fs) in zip(axes, groups, strict=False):
        _bars(ax, fs, title)
        if "throughput" in title:
            ax.set_yscale("log")
    _distributions(axes[-1], data)
    m = data.get("machine", {})
    fig.suptitle(
        f"leaderboard bench {data.get('started', '')[:19]}: {m.get('nproc')} cores, "
        f"{m.get('memory_total_gib')} GiB{' (quick)' if data.get('quick') else ''}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

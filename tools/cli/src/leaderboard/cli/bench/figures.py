"""Headline figures: each one the median of several runs with its min and max, for this project and
for its baseline measured in the same run, and their ratio. Pure functions, no I/O.

A figure is a dict::

    {"key": "completions_per_s", "label": "...", "unit": "req/s", "better": "higher" | "lower",
     "project": {"median", "min", "max", "runs": [...]},
     "baseline": {"median", "min", "max", "runs": [...]}, "baseline_label": "...",
     "ratio": project median / baseline median, "note": "..."}

The ratio is always project / baseline; ``better`` says which direction wins (for latencies and
memory, lower).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

REQUIRED = ("key", "label", "unit", "better", "project", "baseline", "baseline_label", "ratio")


def spread(values: Iterable[float | None]) -> dict[str, Any]:
    """Median, min and max of the finite values, with every run's value kept (None for a failed run)."""
    runs = [v if v is not None and math.isfinite(v) else None for v in values]
    good = [v for v in runs if v is not None]
    if not good:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "runs": runs}
    return {"median": statistics.median(good), "min": min(good), "max": max(good), "runs": runs}


def figure(
    key: str,
    label: str,
    unit: str,
    better: str,
    project: Iterable[float | None],
    baseline: Iterable[float | None],
    baseline_label: str,
    note: str = "",
) -> dict[str, Any]:
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
    p, b = spread(project), spread(baseline)
    ratio = p["median"] / b["median"] if b["median"] and math.isfinite(b["median"]) else math.nan
    out = {
        "key": key,
        "label": label,
        "unit": unit,
        "better": better,
        "project": p,
        "baseline": b,
        "baseline_label": baseline_label,
        "ratio": ratio,
    }
    if note:
        out["note"] = note
    return out


def missing(figures: list[dict[str, Any]]) -> list[str]:
    """Keys of figures lacking a field of :data:`REQUIRED` or a finite project, baseline or ratio."""
    bad = []
    for f in figures:
        if any(k not in f for k in REQUIRED):
            bad.append(str(f.get("key")))
            continue
        values = (f["project"].get("median"), f["baseline"].get("median"), f["ratio"])
        if any(not isinstance(v, int | float) or not math.isfinite(v) for v in values):
            bad.append(str(f["key"]))
    return bad

"""Percentiles and summaries for the benchmarks. Pure functions, no I/O.

Percentiles interpolate linearly between closest ranks (numpy's default, "type 7"), so p50 of an
even-sized sample is the mean of the two middle values and p99 of a small sample lies between its
two largest values rather than jumping to the maximum. numpy is not a dependency of the CLI and
``statistics.quantiles`` cannot ask for one percentile at a time, hence these few lines.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``values``; NaN when there are none."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must lie in 0..100, got {p}")
    data = sorted(values)
    return _percentile_sorted(data, p)


def _percentile_sorted(data: Sequence[float], p: float) -> float:
    if not data:
        return math.nan
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    frac = rank - low
    return float(data[low] + (data[high] - data[low]) * frac)


def summarize(values: Iterable[float], scale: float = 1.0) -> dict[str, Any]:
    """count, mean, p50, p90, p99, min and max of ``values`` multiplied by ``scale``
    (for example 1000 to turn seconds into milliseconds). Empty input gives count 0 and NaNs."""
    data = sorted(v * scale for v in values)
    n = len(data)
    return {
        "count": n,
        "mean": (math.fsum(data) / n) if n else math.nan,
        "min": float(data[0]) if n else math.nan,
        "p50": _percentile_sorted(data, 50),
        "p90": _percentile_sorted(data, 90),
        "p99": _percentile_sorted(data, 99),
        "max": float(data[-1]) if n else math.nan,
    }


def rate(count: float, seconds: float) -> float:
    """Events per second; NaN for an empty or negative window."""
    return count / seconds if seconds > 0 else math.nan


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` items over ``parts`` workers, sizes differing by at most one, none empty."""
    if total < 0 or parts < 1:
        raise ValueError("need total >= 0 and parts >= 1")
    parts = min(parts, total) or 1
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def clean(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None (JSON has no NaN), floats are rounded."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 4)
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def fmt_ms(value: float | None) -> str:
    """Milliseconds for the table: 3 significant-ish digits, '-' for missing."""
    if value is None or not math.isfinite(value):
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_rate(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"

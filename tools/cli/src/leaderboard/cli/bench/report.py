"""The Markdown summary of a benchmark run: the machine, then each section's figures, latency
summaries folded to one line (p50 / p99 / max), and the ratios against each section's baseline."""

from __future__ import annotations

from typing import Any

from leaderboard.cli.bench.stats import fmt_ms, fmt_rate

# (section, label, numerator path, denominator path): "system / baseline" figures worth a headline.
RATIOS: list[tuple[str, str, str, str]] = [
    (
        "ingest",
        "player completions/s vs JWT-only endpoint",
        "player_path.complete.requests_per_s",
        "baseline_jwt_only.plain.requests_per_s",
    ),
    (
        "ingest",
        "batch events/s vs JWT-only endpoint (same bodies)",
        "batch_path.events.units_per_s",
        "baseline_jwt_only_batch_body.plain_batch.units_per_s",
    ),
    (
        "scorer",
        "Faust scorer events/s vs plain aiokafka consumer (steady)",
        "faust.events_per_s_steady",
        "baseline_plain_consumer.events_per_s_steady",
    ),
    (
        "scorer",
        "Faust scorer events/s vs one event per transaction (steady)",
        "faust.events_per_s_steady",
        "baseline_per_event.events_per_s_steady",
    ),
    (
        "e2e",
        "WebSocket p50 delay vs polling every 100 ms (lower is better)",
        "websocket.accepted_to_frame_ms.p50",
        "baseline_polling.accepted_to_seen_ms.p50",
    ),
]


# Shown in the headline table (figures) or too long for the detail tables (every k6 run's numbers).
SKIP = {"figures", "k6_runs"}


def _value(v: Any, unit: str) -> str:
    if v is None or not isinstance(v, int | float) or v != v:
        return "-"
    if unit == "ms":
        return fmt_ms(v)
    if unit == "KiB":
        return f"{v:.1f}"
    return fmt_rate(v)


def _spread(s: dict[str, Any], unit: str) -> str:
    med = _value(s.get("median"), unit)
    if med == "-":
        return "-"
    runs = [r for r in s.get("runs", []) if r is not None]
    if len(runs) > 1:
        return f"{med} ({_value(s.get('min'), unit)}-{_value(s.get('max'), unit)})"
    return med


def table(data: dict[str, Any]) -> str:
    """The headline table: one line per figure with this project, the baseline and their ratio,
    after the machine's size and the generator's headroom."""
    m = data.get("machine", {})
    lines = [
        "# Benchmark",
        "",
        f"Machine: {m.get('nproc')} cores ({m.get('cpu_model')}), {m.get('memory_total_gib')} GiB RAM, "
        f"Python {m.get('python')}; load average before {m.get('load_average')}, after "
        f"{data.get('load_average_after')}. {'Quick sizes (smoke run). ' if data.get('quick') else ''}"
        f"Each figure: median of {data.get('runs')} run(s) (min-max). Ratio = this project / baseline.",
        "",
        "| figure | this project | baseline | ratio |",
        "|---|---|---|---|",
    ]
    baselines: list[str] = []
    for f in data.get("figures", []):
        unit = f.get("unit", "")
        ratio = f.get("ratio")
        r = f"{ratio:.2f}x" if isinstance(ratio, int | float) else "-"
        if f.get("baseline_label") not in baselines:
            baselines.append(f.get("baseline_label"))
        mark = chr(ord("a") + baselines.index(f.get("baseline_label")))
        lines.append(
            f"| {f.get('label')} ({unit}, {f.get('better')} is better) | {_spread(f.get('project', {}), unit)} | "
            f"{_spread(f.get('baseline', {}), unit)} ({mark}) | {r} |"
        )
    lines += [
        "",
        "Baselines: " + "; ".join(f"({chr(ord('a') + i)}) {b}" for i, b in enumerate(baselines)) + ".",
    ]
    lines += ["", "Load generator headroom:"]
    for section, h in (data.get("headroom") or {}).items():
        if not isinstance(h, dict):
            continue
        flagged = h.get("bottleneck_in") or []
        worst = h.get("max_generator") or {}
        state = f"WARNING, generator-bound in {', '.join(flagged)}" if flagged else "ok"
        lines.append(f"- {section}: {state}; busiest generator run: {worst.get('verdict', '-')}")
    for section in ("http", "scorer", "e2e", "fanout"):
        err = (data.get(section) or {}).get("error") if isinstance(data.get(section), dict) else None
        if err:
            lines.append(f"- {section} FAILED: {err}")
    return "\n".join(lines) + "\n"


def lookup(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _is_summary(value: Any) -> bool:
    return isinstance(value, dict) and {"p50", "p99"} <= value.keys()


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return fmt_rate(value) if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, list):
        return ", ".join(_scalar(v) for v in value)
    return str(value)


def _lines(node: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in node.items():
        if key in SKIP:
            continue
        name = f"{prefix}{key}"
        if _is_summary(value):
            out.append(
                f"| {name} | p50 {fmt_ms(value['p50'])} / p99 {fmt_ms(value['p99'])} / "
                f"max {fmt_ms(value.get('max'))} (n={value.get('count', '?')}) |"
            )
        elif isinstance(value, dict):
            out.extend(_lines(value, f"{name}.") if value else [f"| {name} | - |"])
        else:
            out.append(f"| {name} | {_scalar(value)} |")
    return out


def render(data: dict[str, Any]) -> str:
    m = data.get("machine", {})
    head = [
        "# Benchmark results",
        "",
        f"Started {data.get('started')}{' (quick sizes)' if data.get('quick') else ''}. Machine: "
        f"{m.get('nproc')} usable cores ({m.get('cpu_model')}), {m.get('memory_total_gib')} GiB RAM, "
        f"Python {m.get('python')}, load average before {m.get('load_average')}, after "
        f"{data.get('load_average_after')}. Everything (stack, services, load generators) shares this "
        "machine, over loopback.",
        "",
    ]
    ratios = []
    for section, label, num, den in RATIOS:
        a, b = lookup(data.get(section, {}), num), lookup(data.get(section, {}), den)
        if isinstance(a, int | float) and isinstance(b, int | float) and b:
            ratios.append(f"| {section} | {label} | {_scalar(a)} / {_scalar(b)} = **{a / b:.2f}×** |")  # noqa: RUF001
    if ratios:
        head += [
            "## Ratios against the baselines",
            "",
            "| section | what | ratio |",
            "|---|---|---|",
            *ratios,
            "",
        ]
    body = []
    for section, value in data.items():
        if isinstance(value, dict) and section != "machine":
            body += [f"## {section}", "", "| figure | value |", "|---|---|", *_lines(value), ""]
    return "\n".join(head + body)

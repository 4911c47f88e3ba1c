"""Run the benchmarks: ``python -m leaderboard.cli.bench [--quick] [--runs N] [--only http,scorer,e2e,fanout]``.

One embedded stack (or the services named by ``LEADERBOARD_*``) serves every section; each section
uses its own namespace (database, Redis prefix, topics) and starts the services it measures as
``leaderboard`` subprocesses, as a user runs them, with its baseline beside them. HTTP and WebSocket
load comes from k6. Results go to ``bench-results/``: ``bench.json`` (every figure: median, min and
max of the runs, the baseline's, the ratio, and each run's details), ``bench.png`` (throughput and
latency beside the baseline) and ``bench.md`` (the table printed at the end), with the machine's size.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from leaderboard.cli.bench.common import Context, Sizes, machine, raise_open_files
from leaderboard.cli.bench.plot import plot
from leaderboard.cli.bench.report import render, table
from leaderboard.cli.bench.stats import clean
from leaderboard.testkit.testing import base_environment

SECTIONS = ("http", "scorer", "e2e", "fanout")


def _section(name: str) -> Callable[[Context], dict[str, Any]]:
    module = importlib.import_module(f"leaderboard.cli.bench.{name}")
    run: Callable[[Context], dict[str, Any]] = module.run
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard.cli.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every section")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3, 1 with --quick)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where results are written")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    raise_open_files(65_536)
    sizes = Sizes.make(args.quick, args.runs)
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started": started.isoformat(),
        "quick": args.quick,
        "runs": sizes.runs,
        "machine": machine(),
    }
    failed = False
    with tempfile.TemporaryDirectory(prefix="leaderboard-bench-") as tmp:
        work = Path(tmp)
        with base_environment(work / "stack") as env:
            ctx = Context(env=env, work=work, logs=args.out / "logs", sizes=sizes)
            for name in chosen:
                print(f"== {name} ...", file=sys.stderr, flush=True)
                t0 = time.monotonic()
                try:
                    results[name] = _section(name)(ctx)
                except Exception as exc:  # a failed section is reported, the others still run
                    failed = True
                    traceback.print_exc()
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                results[name]["section_s"] = round(time.monotonic() - t0, 1)
    results["load_average_after"] = machine()["load_average"]
    args.out.mkdir(parents=True, exist_ok=True)
    results["figures"] = [f for name in chosen for f in results[name].get("figures", [])]
    results["headroom"] = {name: results[name].get("headroom") for name in chosen}
    data = clean(results)
    (args.out / "bench.json").write_text(json.dumps(data, indent=2) + "\n")
    try:
        plot(data, args.out / "bench.png")
    except Exception:  # the figures stand without the picture
        failed = True
        traceback.print_exc()
    report = table(data) + "\n" + render(data)
    (args.out / "bench.md").write_text(report)
    print(table(data))
    print(f"Written: {args.out / 'bench.json'}, {args.out / 'bench.png'}, {args.out / 'bench.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

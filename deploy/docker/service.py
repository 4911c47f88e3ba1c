"""The service image's entrypoint: ``service.py ingest|scorer|broadcaster|keys|healthcheck``.

- ``ingest``, ``scorer``, ``broadcaster``: replace this process with ``python -m leaderboard.<service>``
  (each service's ``__main__``), so the service is PID 1 and receives SIGTERM itself. The image has no
  ``leaderboard`` CLI: the CLI brings the embedded servers and the test harness, which stay out of it.
- ``keys``: create the dev key pair in ``LEADERBOARD_KEYS_DIR`` once (docker compose runs it as a one-shot
  job into a volume; later runs keep the existing pair).
- ``healthcheck``: the image's HEALTHCHECK. Each container runs one service, so this asks ``/healthz`` on
  the ports the services listen on (``LEADERBOARD_PORT``, else 8080 and 8090, for ingest and broadcaster;
  ``LEADERBOARD_SCORER_WEB_PORT``, else 6066, for the scorer) and succeeds when one of them answers 200.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

SERVICES = ("ingest", "scorer", "broadcaster")


def healthcheck() -> int:
    http_port = os.environ.get("LEADERBOARD_PORT")
    ports = {http_port} if http_port else {"8080", "8090"}  # ingest's and the broadcaster's defaults
    ports.add(os.environ.get("LEADERBOARD_SCORER_WEB_PORT", "6066"))
    scheme = "https" if os.environ.get("LEADERBOARD_TLS_CERTFILE") else "http"
    # The probe talks to this container over loopback; the certificate names the public host, not 127.0.0.1.
    context = ssl._create_unverified_context() if scheme == "https" else None  # noqa: S323
    for port in sorted(p for p in ports if p.isdigit()):
        url = f"{scheme}://127.0.0.1:{port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=3, context=context) as response:  # noqa: S310
                if response.status == 200:
                    return 0
        except (urllib.error.URLError, OSError):
            continue
    sys.stderr.write("no service answered /healthz on 127.0.0.1\n")
    return 1


def keys() -> int:
    from leaderboard.common.auth import ensure_dev_keys

    keys_dir = Path(os.environ.get("LEADERBOARD_KEYS_DIR", ".leaderboard/keys"))
    private, public = ensure_dev_keys(keys_dir)
    sys.stdout.write(f"dev key pair: {private} {public}\n")
    return 0


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    if command in SERVICES:
        os.execv(sys.executable, [sys.executable, "-m", f"leaderboard.{command}", *argv[2:]])  # noqa: S606
    if command == "keys":
        return keys()
    if command == "healthcheck":
        return healthcheck()
    sys.stderr.write(f"usage: {Path(argv[0]).name} {'|'.join(SERVICES)}|keys|healthcheck\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

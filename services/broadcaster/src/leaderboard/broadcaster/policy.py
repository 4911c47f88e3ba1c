"""Who may hold a live connection: the admission rules of ``/ws/leaderboard`` (and the SSE cap).

Pure rules, no sockets: the origin check against cross-site WebSocket hijacking, the per-IP cap
on live connections (a counter the app holds in its ports, one per process) and the instance-wide
cap. Each refuses with a domain exception (``leaderboard.broadcaster.errors``); the entrypoint turns
it into an HTTP answer to the handshake.

Why no library: the per-IP cap counts *open* connections, not requests per time window, so the
rate limiters (``limits``, ``slowapi``) do not fit; it is a dictionary of counters.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from leaderboard.broadcaster.errors import OriginRefused, TooManyClients, TooManyFromAddress


class OriginPolicy:
    """Which browser pages may open the socket. ``allowed`` unset (dev mode only: the settings
    refuse it elsewhere) or containing ``*``: any. The page this instance serves (same origin) is
    always allowed; a client without Origin is not a browser, and hijacking needs a browser."""

    def __init__(self, allowed: list[str] | None) -> None:
        self.allowed = allowed

    def allows(self, origin: str | None, host: str | None) -> bool:
        if self.allowed is None or origin is None or "*" in self.allowed:
            return True
        same = host is not None and origin in (f"http://{host}", f"https://{host}")
        return same or origin in self.allowed

    def check(self, origin: str | None, host: str | None) -> None:
        if not self.allows(origin, host):
            raise OriginRefused(origin or "")


class ConnectionCounter:
    """Open live connections per client IP, capped at ``limit`` (0: no cap). One per process:
    instances behind a load balancer each hold their own (a client's sockets land on several)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def count(self, ip: str) -> int:
        return self._open[ip]

    def __len__(self) -> int:
        """Addresses holding at least one connection (entries are removed at zero)."""
        return len(self._open)

    def acquire(self, ip: str) -> None:
        if self.limit and self._open[ip] >= self.limit:
            raise TooManyFromAddress(ip)
        self._open[ip] += 1

    def release(self, ip: str) -> None:
        self._open[ip] -= 1
        if self._open[ip] <= 0:
            del self._open[ip]

    @contextlib.contextmanager
    def hold(self, ip: str) -> Iterator[None]:
        """One slot for the duration of the block; released however the block ends."""
        self.acquire(ip)
        try:
            yield
        finally:
            self.release(ip)


def check_capacity(connected: int, maximum: int) -> None:
    """The instance-wide cap on live clients (every transport counts)."""
    if connected >= maximum:
        raise TooManyClients()

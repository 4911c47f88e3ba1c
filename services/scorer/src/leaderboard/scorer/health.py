"""Whether the scorer is making progress: what /readyz answers and the ``scorer_stalled`` gauge shows.

A scorer that runs but cannot apply its batch (the store is down, a batch is retried, a query
hangs) is not ready: its lag grows and the board freezes, so /readyz says 503 with the reason. It
is ready again as soon as a batch completes. An idle scorer (no batch in flight) is ready.
The clock is passed in, so the rules are testable without waiting.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

STALLED = Gauge("scorer_stalled", "1 while the scorer cannot make progress (batch failing or hung)")
# kind: transient (a batch attempt failed and is retried) | record (a batch needed isolating a record)
BATCH_FAILURES = Counter("scorer_batch_failures_total", "Failed batch attempts", ["kind"])


class Progress:
    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self.batch_started: float | None = None
        self.failing_since: float | None = None
        self.last_error = ""

    def started(self, now: float) -> None:
        self.batch_started = now

    def failed(self, now: float, exc: BaseException) -> None:
        """A batch attempt failed with a transient error and will be retried."""
        BATCH_FAILURES.labels("transient").inc()
        if self.failing_since is None:
            self.failing_since = now
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        STALLED.set(1)

    def done(self) -> None:
        self.batch_started = self.failing_since = None
        self.last_error = ""
        STALLED.set(0)

    def stalled(self, now: float) -> str | None:
        """The reason the scorer cannot make progress, or None; refreshes the gauge."""
        reason = None
        if self.failing_since is not None:
            reason = (
                f"the current batch has failed for {now - self.failing_since:.1f}s and is being "
                f"retried: {self.last_error}"
            )
        elif self.batch_started is not None and now - self.batch_started > self.stall_after_s:
            reason = f"the current batch has been in flight for {now - self.batch_started:.1f}s"
        STALLED.set(1 if reason else 0)
        return reason

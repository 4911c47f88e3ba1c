"""The cyclic garbage collector and a long-running service's start-up heap.

A full collection scans every tracked object, so its pause grows with the heap; start-up builds
most of a service's objects (modules, the app, schemas, clients: ~100,000 in ingest) and they live
as long as the process, so there is nothing to collect among them. Measured under ``make bench``
(issue 12, a ``gc.callbacks`` probe): full collections paused ingest for 77-289 ms and the scorer
and the broadcaster for 100-130 ms, each pause the delay of every request, batch or frame in flight.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once, then move every object start-up left out of the collector's reach
    (``gc.freeze``): later collections scan only what the service allocated since. Call it when
    start-up is complete, before the first request or record."""
    gc.collect()
    gc.freeze()

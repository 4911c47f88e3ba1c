"""Which partitions of the actions topic this scorer holds, as /metrics shows them.

``scorer_assigned_partitions{partition}`` is 1 for every partition the consumer group gave this
worker and absent for the others, so that the sum over the replicas of a healthy group is the number
of partitions, and a partition no replica shows is one nobody scores. ``scorer_consumer_lag{partition}``
follows the same set: a revoked partition's lag is dropped with it (another replica reports it now),
instead of lingering at its last value.

Faust tells the worker through its ``on_partitions_assigned`` / ``on_partitions_revoked`` signals
(``entrypoints.worker`` connects them); the bookkeeping here knows nothing of Faust, only
``(topic, partition)`` pairs, so it is tested without a broker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import Gauge

ASSIGNED = Gauge(
    "scorer_assigned_partitions", "1 for each partition of the actions topic this scorer holds", ["partition"]
)
LAG = Gauge("scorer_consumer_lag", "Records behind the high watermark (best effort)", ["partition"])


class TopicPartition(Protocol):
    """What Faust's (and aiokafka's) ``TP`` offers."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...


class Assignment:
    """The partitions of ``topic`` this worker holds, mirrored into the gauges on every change."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.held: set[int] = set()

    def assigned(self, tps: Iterable[TopicPartition]) -> None:
        """The group's new assignment for this worker: it replaces the previous one."""
        self._hold({tp.partition for tp in tps if tp.topic == self.topic})

    def revoked(self, tps: Iterable[TopicPartition]) -> None:
        self._hold(self.held - {tp.partition for tp in tps if tp.topic == self.topic})

    def observe_lag(self, partition: int, lag: int) -> None:
        """Record a partition's lag after a batch from it. No batch of a revoked partition ends after
        its revocation (Faust waits for the agents to finish before it signals), so the label that
        :meth:`revoked` dropped stays dropped."""
        LAG.labels(str(partition)).set(max(0, lag))

    def _hold(self, partitions: set[int]) -> None:
        for gone in self.held - partitions:
            for gauge in (ASSIGNED, LAG):
                with contextlib.suppress(KeyError):  # a partition that never reported a lag
                    gauge.remove(str(gone))
        self.held = partitions
        for partition in partitions:
            ASSIGNED.labels(str(partition)).set(1)

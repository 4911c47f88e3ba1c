"""The producer's partitioner puts every key where aiokafka's default (Java's murmur2) puts it, so
ingest's cached hashes never move a user to another partition."""

import uuid

from aiokafka.partitioner import DefaultPartitioner

from leaderboard.common.kafka import keyed_partitioner, new_producer
from leaderboard.common.settings import CommonSettings


def test_keys_land_where_the_default_partitioner_puts_them() -> None:
    default = DefaultPartitioner()
    for count in (1, 4, 8, 12):
        parts = list(range(count))
        for _ in range(500):
            key = str(uuid.uuid4()).encode()
            assert keyed_partitioner(key, parts, parts) == default(key, parts, parts)
            assert keyed_partitioner(key, parts, parts) == default(key, parts, parts)  # cached: same


def test_an_unkeyed_message_goes_to_an_available_partition() -> None:
    assert keyed_partitioner(None, [0, 1, 2], [2]) == 2


async def test_producers_use_it() -> None:
    producer = new_producer(CommonSettings())
    try:
        assert producer._partitioner is keyed_partitioner
    finally:
        await producer.stop()  # never started: only closes its client

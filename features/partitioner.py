"""The SDK's partitioner: which partition an entity's events belong to.

The SDK keys every event by its entity key and lets kafka-python's default partitioner place
it: murmur2 of the key's UTF-8 bytes, as the Java client does (``partitioner=murmur2_random``
in librdkafka, whose own default ``consistent_random`` hashes with CRC32 instead). A worker
owns the entities whose home partition it holds; events that arrive elsewhere are forwarded
there (``streams/worker/repartition.py``). It lives in the base layer because the stream side
(SDK, worker) and the serving side (HTTP push ingest, ``serving/ingest``, whose librdkafka
producer computes the same function in C and whose tests check it against this one) must place
an entity on the same partition and may not import each other.
"""

from __future__ import annotations

from kafka.partitioner.default import murmur2


def home_partition(key: str, partitions: int) -> int:
    """The partition the SDK sends an event with this Kafka key to."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions

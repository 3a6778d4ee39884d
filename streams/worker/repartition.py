"""Forwarding events that arrived on a partition other than their entity's home partition.

A producer with its own partitioner (librdkafka's default, a Go or .NET client, a hand-made
key) spreads one entity's events over several partitions. Two workers would then each write
their own copy of the entity's rings, and the last writer would win. As Kafka Streams does
with a repartition topic, the worker that reads such an event forwards it to
``<topic>.repartition``, to the entity's home partition (``streams.partitioner``), and the
home partition's owner folds it: one writer per entity again. The consumer group assigns with
the range assignor, so partition ``h`` of the source topic and of the repartition topic always
have the same owner.

Exactly once in effect: a forwarded record carries its origin (partition, offset, epoch) in a
header, the forward is acknowledged before the origin's watermark moves past it, and the home
side keeps one watermark per origin partition (in the same Redis transaction as the rings):
a record forwarded twice (the origin replayed after a crash) is skipped the second time. The
event log keeps every event once, at its origin (topic, partition, offset).
"""

from __future__ import annotations

from kafka import KafkaProducer

from features.definitions import EventSource
from features.event_columns import EventColumns
from features.event_schema import encode
from features.kafka_config import KafkaSecurity, kafka_python

ORIGIN_HEADER = "tessera.origin"


def origin_header(partition: int, offset: int, epoch: int) -> tuple[str, bytes]:
    return ORIGIN_HEADER, f"{partition}:{offset}:{epoch}".encode()


def parse_origin(headers) -> tuple[int, int, int] | None:
    """(partition, offset, epoch) of a forwarded record, None if the header is missing."""
    for k, v in headers or ():
        if k == ORIGIN_HEADER:
            p, o, e = v.decode().split(":")
            return int(p), int(o), int(e)
    return None


class Forwarder:
    """Sends misrouted events to their home partition of the repartition topic and waits."""

    def __init__(self, bootstrap: str, source: EventSource,
                 security: KafkaSecurity | None = None) -> None:
        self.source = source
        self.topic = source.repartition_topic
        self.bootstrap, self.security = bootstrap, security
        # made at the first misrouted event: an idle kafka-python client's network thread
        # costs CPU, and SDK producers never need one
        self._producer: KafkaProducer | None = None
        self.sent = 0

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                           linger_ms=5, client_id="tessera-repartition",
                                           **kafka_python(self.security))
        return self._producer

    def forward(self, origin: int, epoch: int, homes: list[int], keys: list[str],
                events: EventColumns) -> None:
        """Forward ``events`` (valid, from partition ``origin``) to ``homes``; returns once
        every one is acknowledged (an error propagates: nothing of the batch is applied)."""
        cols = events.columns
        names = list(self.source.schema)
        futs = []
        for i, (home, key) in enumerate(zip(homes, keys, strict=True)):
            ev = {n: _py(cols[n][i]) for n in names}
            futs.append(self.producer.send(
                self.topic, value=encode(self.source, ev), key=key.encode(), partition=home,
                headers=[origin_header(origin, int(events.offsets[i]), epoch)]))
        self.producer.flush()
        for f in futs:
            f.get(timeout=30)
        self.sent += len(futs)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)


def _py(v):
    return v.item() if hasattr(v, "item") else v

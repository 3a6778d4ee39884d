"""The push ingest's Kafka producer: librdkafka (confluent-kafka) with ``acks=all``, made at the
first push, with one thread serving delivery reports.

librdkafka's own default partitioner (``consistent_random``) hashes with CRC32; this producer
uses its ``murmur2_random`` instead: the Java client's murmur2 of the key, ``& 0x7fffffff``,
modulo the topic's partition count from broker metadata, which is exactly what kafka-python's
default partitioner in the SDK and ``features.partitioner.home_partition`` compute (the push
tests and ``bench/push.py`` check every record against ``home_partition``). Hashing in C rather
than with kafka-python's pure-Python murmur2 saves about a third of the CPU an event costs here.
A batch of records resolves one future when the broker has acknowledged or refused every record
of it: nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from dataclasses import dataclass, field

from features.errors import TesseraError
from features.kafka_config import KafkaSecurity, librdkafka


class SinkUnavailable(TesseraError):
    """The broker cannot take the batch (unreachable, or the topic does not exist)."""


@dataclass
class Delivery:
    """What became of one batch: indexes (into the batch) the broker did not acknowledge."""

    total: int
    failed: list[tuple[int, str]] = field(default_factory=list)

    @property
    def acked(self) -> int:
        return self.total - len(self.failed)


class _Batch:
    """Counts delivery reports (poll thread) and failed produce calls (producing thread)."""

    __slots__ = ("delivery", "pending", "lock", "loop", "future")

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> None:
        self.delivery = Delivery(n)
        self.pending = n
        self.lock = threading.Lock()
        self.loop = loop
        self.future = future

    def done(self, index: int, err: object, _msg: object = None) -> None:
        with self.lock:
            if err is not None:
                self.delivery.failed.append((index, str(err)))
            self.pending -= 1
            last = self.pending == 0
        if last:
            self.loop.call_soon_threadsafe(_resolve, self.future, self.delivery)


def _resolve(future: asyncio.Future, delivery: Delivery) -> None:
    if not future.done():
        future.set_result(delivery)


class KafkaSink:
    """A lazily started producer; ``produce`` is called from one thread, ``close`` flushes."""

    def __init__(self, bootstrap: str, delivery_timeout_ms: int = 10_000,
                 linger_ms: int = 5, metadata_ttl_s: float = 30.0,
                 metadata_timeout_s: float = 5.0, security: KafkaSecurity | None = None) -> None:
        self.bootstrap = bootstrap
        self.security = security
        self.metadata_timeout_s = metadata_timeout_s
        self.delivery_timeout_ms = delivery_timeout_ms
        self.linger_ms = linger_ms
        self.metadata_ttl_s = metadata_ttl_s
        self._producer = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        self._partitions: dict[str, tuple[int, float]] = {}

    @property
    def producer(self):
        if self._producer is None:
            with self._start_lock:
                if self._producer is None:
                    self._start()
        return self._producer

    def _start(self) -> None:
        from confluent_kafka import Producer

        self._producer = Producer({
            **librdkafka(self.security),
            "bootstrap.servers": self.bootstrap,
            "acks": "all",
            "linger.ms": self.linger_ms,
            "message.timeout.ms": self.delivery_timeout_ms,
            # a record in flight waits for its request's answer: bound that too, so a hung
            # broker fails the push within the delivery timeout, not librdkafka's 30 s default
            "request.timeout.ms": min(30_000, self.delivery_timeout_ms),
            "partitioner": "murmur2_random",  # the SDK's placement (module docstring)
            "allow.auto.create.topics": False,  # a topic is made by `tessera apply`, not a typo
            "client.id": "tessera-push",
        })
        self._stop.clear()  # closed before: a new producer, a new delivery thread
        self._poller = threading.Thread(target=self._poll, name="tessera-push-acks", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        producer = self._producer
        while not self._stop.is_set():
            producer.poll(0.05)

    def partitions(self, topic: str) -> int:
        """The topic's partition count (cached ``metadata_ttl_s``): checked before a batch is
        produced, so an unreachable broker or a missing topic is a ``SinkUnavailable`` with
        nothing sent."""
        hit = self._partitions.get(topic)
        now = time.monotonic()
        if hit is not None and now - hit[1] < self.metadata_ttl_s:
            return hit[0]
        from confluent_kafka import KafkaException

        try:
            md = self.producer.list_topics(topic, timeout=self.metadata_timeout_s)
        except KafkaException as e:
            raise SinkUnavailable(f"Kafka broker {self.bootstrap} did not answer: "
                                  f"{e.args[0] if e.args else e}") from None
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            raise SinkUnavailable(f"topic {topic!r} does not exist on {self.bootstrap}; run "
                                  "`tessera apply` with KAFKA_BOOTSTRAP set to create it")
        n = len(t.partitions)
        self._partitions[topic] = (n, now)
        return n

    def produce(self, topic: str, records: list[tuple[bytes, bytes]],
                loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> None:
        """Send (key, value) records; ``future`` gets a ``Delivery`` once the broker has answered
        for every one of them (or librdkafka gave up after the delivery timeout)."""
        batch = _Batch(len(records), loop, future)
        if not records:
            loop.call_soon_threadsafe(_resolve, future, batch.delivery)
            return
        produce = self.producer.produce
        deadline = time.monotonic() + self.delivery_timeout_ms / 1000
        for i, (key, value) in enumerate(records):
            cb = functools.partial(batch.done, i)
            while True:
                try:
                    produce(topic, value, key, on_delivery=cb)
                    break
                except BufferError:  # librdkafka's queue is full: wait for acks to drain it
                    if time.monotonic() > deadline:
                        batch.done(i, "the producer queue stayed full (broker too slow)")
                        break
                    time.sleep(0.002)
                except Exception as e:  # noqa: BLE001 - reported for this record, never lost
                    batch.done(i, f"produce failed: {e}")
                    break

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout_s``), then stop the delivery thread."""
        if self._producer is None:
            return
        self._producer.flush(timeout_s)
        self._stop.set()
        if self._poller is not None:
            self._poller.join(1)
        self._producer = None

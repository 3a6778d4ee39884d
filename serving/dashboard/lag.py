"""Stream-worker consumer lag, counted from what was produced and what the worker applied.

Applied: the worker stores, per (group, topic, partition), the last offset whose effects are in
Redis (``features.online.layout.offset_key``), so the online store itself says how far it got;
they are read through its backend (``features.online.backend``: every primary scanned, one
round trip per node for the values, so a Redis Cluster works as one Redis does).
Produced: the broker's high watermark is not trusted. The Tansu broker used in development
answers with the last *batch's* base offset + 1, so ``end_offsets`` alone reads low; the records
of that last batch are read back (a seek to watermark - 1 returns the whole batch) and the end is
the last offset read + 1. On Kafka the same read returns the one last record, so the end equals
the watermark. A partition whose end cannot be read shows "n/a (broker reports no watermark)";
the lag is never guessed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from features.kafka_config import KafkaSecurity, kafka_python
from features.online.backend import OnlineBackend, backend_of
from features.online.layout import OFFSET_KEY_PREFIX, applied_offset

NO_WATERMARK = "n/a (broker reports no watermark)"


def applied_offsets(store: OnlineBackend | object) -> dict[tuple[str, str, int], int]:
    """(group, topic, partition) -> last offset the worker applied, from Redis (``store``:
    a backend or a Redis client)."""
    backend = backend_of(store)
    prefix = OFFSET_KEY_PREFIX
    keys = backend.scan(prefix + "*")
    values = backend.get([k.decode() for k in keys])
    out = {}
    for key, value in zip(keys, values, strict=True):
        group, topic, part = key.decode()[len(prefix) :].rsplit(":", 2)
        if value is not None and part.isdigit():
            out[group, topic, int(part)] = applied_offset(value)
    return out


def lag_by_topic(
    applied: dict[tuple[str, str, int], int], ends: dict[tuple[str, int], int | None]
) -> dict[str, int | str]:
    """Records produced but not yet applied, per topic (the slowest group if several); a topic
    with any partition whose end is unknown is ``NO_WATERMARK``."""
    per_group: dict[tuple[str, str], int | str] = {}
    for (group, topic, part), last in applied.items():
        end = ends.get((topic, part))
        key = (group, topic)
        if end is None or per_group.get(key) == NO_WATERMARK:
            per_group[key] = NO_WATERMARK
            continue
        per_group[key] = int(per_group.get(key, 0)) + max(0, end - (last + 1))
    out: dict[str, int | str] = {}
    for (_, topic), lag in per_group.items():
        cur = out.get(topic)
        if cur is None or lag == NO_WATERMARK or (cur != NO_WATERMARK and lag > cur):
            out[topic] = lag
    return out


class EndOffsets:
    """True end offsets of partitions: the high watermark, checked by reading the last batch."""

    def __init__(self, bootstrap: str, timeout_ms: int = 300,
                 security: KafkaSecurity | None = None) -> None:
        self.bootstrap, self.timeout_ms, self.security = bootstrap, timeout_ms, security
        self._consumer = None
        self._lock = threading.Lock()

    def __call__(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        from kafka import TopicPartition

        tps = [TopicPartition(t, p) for t, p in sorted(set(partitions))]
        if not tps:
            return {}
        with self._lock:
            c = self._client()
            try:
                marks = c.end_offsets(tps)
            except Exception:  # noqa: BLE001 - unknown topic, broker down: say so, never guess
                return {(tp.topic, tp.partition): None for tp in tps}
            c.assign(tps)
            ends: dict = {}
            for tp in tps:
                hw = marks.get(tp)
                ends[tp] = hw
                if hw:
                    c.seek(tp, hw - 1)
                else:
                    c.pause(tp)
            waiting = {tp for tp in tps if marks.get(tp)}
            while waiting:  # the last batch of each partition (once: producers keep going)
                got = c.poll(timeout_ms=self.timeout_ms, max_records=100_000)
                if not got:
                    break
                for tp, msgs in got.items():
                    ends[tp] = max(ends[tp] or 0, msgs[-1].offset + 1)
                    c.pause(tp)
                    waiting.discard(tp)
            c.resume(*tps)
            return {(tp.topic, tp.partition): ends[tp] for tp in tps}

    def _client(self):
        if self._consumer is None:
            from kafka import KafkaConsumer

            self._consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                client_id="tessera-dashboard-lag", request_timeout_ms=5000,
                **kafka_python(self.security),
            )
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


def worker_lag(redis_client, ends: Callable) -> Callable[[], dict[str, int | str]]:
    """``() -> {topic: lag}`` for every topic a stream worker has applied offsets for."""
    backend = backend_of(redis_client)

    def read() -> dict[str, int | str]:
        applied = applied_offsets(backend)
        return lag_by_topic(applied, ends({(t, p) for _, t, p in applied}))

    return read

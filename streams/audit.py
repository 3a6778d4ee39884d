"""Completeness audit: every offset the worker has passed is in the event log or dead-lettered.

``skew-check`` compares the online and offline stores, which can both be wrong in the same way
(an event neither of them got). The audit compares them with the source of truth instead: for
each partition of the source's topic, every offset from the Kafka log start offset up to the
worker's watermark must be in the event log (current epoch) or in ``<topic>.dlq``; any other
offset is a gap, i.e. an event lost.

The worker's watermark of a partition is the larger of the event log's watermark of the current
epoch and the Redis watermark key ``tessera:offsets:{group}:{topic}:{partition}`` (read through
the online store's backend, so one Redis or a cluster alike; an int offset, or
``offset:epoch:fingerprint``; a Redis watermark of an older epoch is ignored, one of
a newer epoch makes that epoch current). The log lags Redis by up to one checkpoint (about a
second) on a running worker, so audit a stopped or idle worker, or expect the newest offsets to
show as a gap until the next checkpoint.

Dead letters are identified by their headers (``tessera.topic``, ``tessera.partition``,
``tessera.offset``, ``tessera.epoch``); older dead letters whose value is the JSON envelope
``{"topic", "partition", "offset", ...}`` are understood too (epoch 0). The dead-letter topic
is read from its beginning until a poll stays idle: end offsets are not trusted (the dev broker
reports them too low).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import orjson
import polars as pl
from kafka import KafkaConsumer, TopicPartition

from features.definitions import EventSource
from features.errors import TesseraError
from features.kafka_config import KafkaSecurity, kafka_python
from features.offline.event_log import EventLog
from features.online.backend import backend_of
from features.online.layout import offset_key


class AuditError(TesseraError):
    """The audit could not run (e.g. the topic does not exist)."""


@dataclass(frozen=True)
class Gap:
    partition: int
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclass
class PartitionAudit:
    partition: int
    epoch: int
    log_start: int  # Kafka's log start offset
    watermark: int | None  # the worker's: max(event log, Redis) in the current epoch
    in_log: int = 0  # offsets of [log_start, watermark] in the event log
    in_dlq: int = 0  # ... and in the dead-letter topic
    in_both: int = 0  # in both (not a loss, but an event stored twice over)
    gaps: list[Gap] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return 0 if self.watermark is None else max(0, self.watermark - self.log_start + 1)


@dataclass
class AuditReport:
    source: str
    topic: str
    group: str
    partitions: list[PartitionAudit]

    @property
    def gaps(self) -> list[Gap]:
        return [g for p in self.partitions for g in p.gaps]

    @property
    def missing(self) -> int:
        return sum(g.count for g in self.gaps)

    @property
    def ok(self) -> bool:
        return not self.gaps


def parse_watermark(raw: bytes | str | None) -> tuple[int, int, str | None] | None:
    """A Redis offset watermark (the last offset applied): ``"41"`` -> (41, 0, None) (the
    format before epochs: epoch 0), ``"41:2:ab12"`` -> (41, 2, "ab12"); None when absent."""
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    parts = text.strip().split(":", 2)
    try:
        offset = int(parts[0])
        epoch = int(parts[1]) if len(parts) > 1 else 0
    except ValueError as e:
        raise AuditError(f"Redis watermark {text!r} is neither an offset nor "
                         "'offset:epoch:fingerprint'") from e
    return offset, epoch, parts[2] if len(parts) > 2 else None


def gaps_of(partition: int, first: int, last: int, present: np.ndarray) -> list[Gap]:
    """Ranges of ``[first, last]`` not in ``present`` (sorted, unique int offsets)."""
    if last < first:
        return []
    p = present[(present >= first) & (present <= last)]
    bounds = np.concatenate(([first - 1], p, [last + 1]))
    step = np.diff(bounds)
    at = np.flatnonzero(step > 1)
    return [Gap(partition, int(bounds[i]) + 1, int(bounds[i + 1]) - 1) for i in at]


def _header(headers, name: str) -> str | None:
    for k, v in headers or ():
        if k == name:
            return v.decode() if isinstance(v, bytes) else v
    return None


def _coordinates(record) -> tuple[str, int, int, int] | None:
    """(topic, partition, offset, epoch) of the original record a dead letter stands for."""
    h = record.headers
    topic, part, off = (_header(h, f"tessera.{k}") for k in ("topic", "partition", "offset"))
    if topic is not None and part is not None and off is not None:
        return topic, int(part), int(off), int(_header(h, "tessera.epoch") or 0)
    try:  # the earlier format: a JSON envelope around the base64 original
        env = orjson.loads(record.value)
        return str(env["topic"]), int(env["partition"]), int(env["offset"]), 0
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def dead_letter_offsets(bootstrap: str, dlq_topic: str, topic: str, *, idle_s: float = 1.5,
                        security: KafkaSecurity | None = None,
                        ) -> tuple[dict[tuple[int, int], np.ndarray], int]:
    """Offsets of ``topic`` dead-lettered on ``dlq_topic``, per (partition, epoch), and the
    number of dead letters consumed. Reads from the beginning until no record came for
    ``idle_s``."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                      allow_auto_create_topics=False, client_id="tessera-audit",
                      **kafka_python(security))
    found: dict[tuple[int, int], list[int]] = {}
    consumed = 0
    try:
        parts = c.partitions_for_topic(dlq_topic)
        if not parts:
            return {}, 0
        tps = [TopicPartition(dlq_topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            batch = c.poll(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    consumed += 1
                    coords = _coordinates(r)
                    if coords is not None and coords[0] == topic:
                        found.setdefault((coords[1], coords[3]), []).append(coords[2])
            if batch:
                last = time.monotonic()
    finally:
        c.close()
    return {k: np.unique(np.array(v, dtype=np.int64)) for k, v in found.items()}, consumed


def _log_offsets(log: EventLog, source: EventSource, topic: str) -> pl.DataFrame:
    """(partition, epoch, offset) of every row of ``topic`` in the log, one snapshot."""
    for attempt in range(3):
        try:
            return (log.scan(source, snapshot=log.snapshot(source))
                    .filter(pl.col("_topic") == topic)
                    .select("_partition", "_epoch", "_offset").collect())
        except FileNotFoundError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def audit(source: EventSource, *, bootstrap: str, event_log: EventLog, redis_client=None,
          group: str = "tessera-worker", idle_s: float = 1.5,
          security: KafkaSecurity | None = None) -> AuditReport:
    """Check every partition of ``source``'s topic; see the module docstring."""
    topic = source.topic
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                      allow_auto_create_topics=False, client_id="tessera-audit",
                      **kafka_python(security))
    try:
        parts = c.partitions_for_topic(topic)
        if not parts:
            raise AuditError(f"topic {topic!r} of source {source.name!r} does not exist on "
                             f"{bootstrap}; check KAFKA_BOOTSTRAP and the source's topic")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        starts = c.beginning_offsets(tps)
    finally:
        c.close()
    marks = [None] * len(tps)
    if redis_client is not None:
        # one round trip per node: a cluster refuses MGET of keys in different slots
        marks = backend_of(redis_client).get([offset_key(group, topic, tp.partition)
                                              for tp in tps])
    dead, _ = dead_letter_offsets(bootstrap, source.dlq_topic, topic, idle_s=idle_s,
                                  security=security)
    rows = _log_offsets(event_log, source, topic)
    out = []
    for tp, raw in zip(tps, marks, strict=True):
        p = tp.partition
        epoch = event_log.current_epoch(source, topic, p)
        wm = event_log.committed_offset(source, topic, p)
        redis_mark = parse_watermark(raw)
        if redis_mark is not None:
            r_off, r_epoch, _ = redis_mark
            if r_epoch > epoch:  # the worker is in a newer epoch than the log has begun
                epoch, wm = r_epoch, r_off
            elif r_epoch == epoch:
                wm = r_off if wm is None else max(wm, r_off)
        start = int(starts[tp])
        pa_ = PartitionAudit(p, epoch, start, wm)
        if wm is not None and wm >= start:
            in_log = np.unique(rows.filter((pl.col("_partition") == p)
                                           & (pl.col("_epoch") == epoch))["_offset"].to_numpy())
            # rows erased by `tessera forget` were written: their offsets count as in the log
            in_log = np.union1d(in_log, np.array(
                event_log.removed_offsets(source, topic, p, epoch), dtype=np.int64))
            in_dlq = dead.get((p, epoch), np.empty(0, np.int64))
            in_log = in_log[(in_log >= start) & (in_log <= wm)]
            in_dlq = in_dlq[(in_dlq >= start) & (in_dlq <= wm)]
            pa_.in_log, pa_.in_dlq = len(in_log), len(in_dlq)
            pa_.in_both = len(np.intersect1d(in_log, in_dlq, assume_unique=True))
            pa_.gaps = gaps_of(p, start, wm, np.union1d(in_log, in_dlq))
        out.append(pa_)
    return AuditReport(source.name, topic, group, out)

"""Log epochs: noticing that a partition's offsets started again from 0.

A recreated topic, a broker that lost its data or a rebuilt cluster restarts offsets at 0.
Offset watermarks (in Redis and in the event log) would then skip every new record as a
replay. Each watermark therefore carries the fingerprint of the record at its offset; when the
worker takes a partition (and whenever a fetch goes backwards without a seek) it reads the
record at the watermark again. Same fingerprint: same log. Another record, or no record where
one was (beyond the log's end, not removed by retention): a new epoch, whose offsets are
applied from 0.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import OffsetOutOfRangeError

from features.errors import TesseraError
from features.kafka_config import KafkaSecurity, kafka_python

log = logging.getLogger("tessera.worker")


def fingerprint(key: bytes | None, value: bytes | None, timestamp_ms: int) -> int:
    """A 32-bit digest of a record: its bytes and its broker timestamp."""
    h = zlib.crc32(key or b"")
    h = zlib.crc32(value or b"", h)
    return zlib.crc32(int(timestamp_ms).to_bytes(8, "little", signed=True), h)


class EpochUnknown(TesseraError):
    """The broker did not answer whether the log changed; the worker must not guess."""


@dataclass(frozen=True)
class Verdict:
    same_log: bool
    why: str


class EpochCheck:
    """Reads single records at given offsets (its own consumer: no group, no commits)."""

    def __init__(self, bootstrap: str, timeout_ms: int = 1500,
                 security: KafkaSecurity | None = None) -> None:
        self.timeout_ms = timeout_ms
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                      group_id=None, client_id="tessera-epochs",
                                      auto_offset_reset="none", max_poll_records=1,
                                      **kafka_python(security))

    def _first_from(self, tp: TopicPartition, offset: int):
        """The first record at or after ``offset`` within the timeout; None if none came,
        ``OffsetOutOfRangeError`` if the log ends before it."""
        c = self.consumer
        c.assign([tp])
        c.seek(tp, offset)
        deadline = time.monotonic() + self.timeout_ms / 1000
        while time.monotonic() < deadline:
            got = c.poll(timeout_ms=200, max_records=1).get(tp, [])
            if got:
                return got[0]
        return None

    def verify(self, topic: str, partition: int, offset: int, expected: int) -> Verdict:
        """Is the record at ``offset`` still the one whose fingerprint is ``expected``?"""
        tp = TopicPartition(topic, partition)
        c = self.consumer
        c.assign([tp])
        start = c.beginning_offsets([tp])[tp]
        if offset < start:
            return Verdict(True, f"offset {offset} removed by retention (log starts at {start})")
        try:
            r = self._first_from(tp, offset)
        except OffsetOutOfRangeError:
            return Verdict(False, f"offset {offset} is beyond the end of the log")
        if r is None:
            end = c.end_offsets([tp])[tp]
            if end <= offset:  # nothing there, and the broker says the log ends before it
                return Verdict(False, f"offset {offset} is at or beyond the log's end ({end})")
            raise EpochUnknown(f"{topic}/{partition}: no record at offset {offset} within "
                               f"{self.timeout_ms} ms although the log ends at {end}; is the "
                               "broker healthy?")
        if r.offset != offset:  # compacted away: the next record is all there is
            return Verdict(True, f"offset {offset} compacted (next record {r.offset})")
        if fingerprint(r.key, r.value, r.timestamp) != expected:
            return Verdict(False, f"the record at offset {offset} is not the one applied")
        return Verdict(True, "same record")

    def fingerprint_at(self, topic: str, partition: int, offset: int) -> int:
        """The fingerprint of the record at ``offset`` (0 = unknown: not there any more)."""
        try:
            r = self._first_from(TopicPartition(topic, partition), offset)
        except OffsetOutOfRangeError:
            return 0
        if r is None or r.offset != offset:
            return 0
        return fingerprint(r.key, r.value, r.timestamp)

    def close(self) -> None:
        self.consumer.close()

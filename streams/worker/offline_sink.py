"""The offline sink: buffer valid events and append them to the Parquet event log.

Late events are included (the log is the full history). The worker flushes about once a
second, not per poll: one Parquet file and manifest update per partition per flush keeps the
log's file count (and the fresh path's latency) low. Kafka offsets are committed only after a
flush, so a crash replays the buffered events; ``EventLog.append`` drops rows at or below its
own watermark for (source, topic, partition), so nothing is written twice.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from features.definitions import EventSource
from features.event_columns import EventColumns
from features.offline.event_log import EventLog

_TYPES = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def to_table(source: EventSource, events: EventColumns, ingest_us: int) -> pa.Table:
    """Columns of the schema (timestamps as µs UTC) plus ``_offset`` and ``_ingest_ts``."""
    cols = {name: pa.array(events.columns[name], type=_TYPES[t])
            for name, t in source.schema.items()}
    cols["_offset"] = pa.array(events.offsets, type=pa.int64())
    cols["_ingest_ts"] = pa.array(np.full(len(events), ingest_us, dtype=np.int64),
                                  type=pa.timestamp("us", tz="UTC"))
    return pa.table(cols)


class OfflineWriter:
    def __init__(self, log: EventLog, source: EventSource) -> None:
        self.log = log
        self.source = source
        self.written = 0
        self.buffered = 0
        self._buf: dict[int, list[EventColumns]] = {}

    def add(self, partition: int, events: EventColumns) -> None:
        if len(events):
            self._buf.setdefault(partition, []).append(events)
            self.buffered += len(events)

    def take(self) -> dict[int, list[EventColumns]]:
        """Hand over the buffer (to write while new events are being buffered)."""
        buf, self._buf, self.buffered = self._buf, {}, 0
        return buf

    def write(self, buf: dict[int, list[EventColumns]]) -> int:
        """Append a taken buffer; returns rows written (those above the log's watermark)."""
        ingest = time.time_ns() // 1000
        tables = {p: to_table(self.source, EventColumns.concat(parts), ingest)
                  for p, parts in buf.items() if parts}
        n = self.log.append_partitions(self.source, tables, topic=self.source.topic) if tables \
            else 0
        self.written += n
        return n

"""The offline half of a batch: append a partition's valid events to the Parquet event log.

Late events are included (the log is the full history). ``EventLog.append`` drops rows at or
below its own committed watermark for (source, topic, partition), so a replay after a crash
writes nothing twice.
"""

from __future__ import annotations

import time

import pyarrow as pa

from features.definitions import EventSource
from features.offline.event_log import EventLog

_TYPES = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def to_table(source: EventSource, records: list[tuple[int, dict]], ingest_us: int) -> pa.Table:
    """Columns of the schema (timestamps as µs UTC) plus ``_offset`` and ``_ingest_ts``."""
    cols = {
        name: pa.array([ev[name] for _, ev in records], type=_TYPES[t])
        for name, t in source.schema.items()
    }
    cols["_offset"] = pa.array([o for o, _ in records], type=pa.int64())
    cols["_ingest_ts"] = pa.array([ingest_us] * len(records), type=pa.timestamp("us", tz="UTC"))
    return pa.table(cols)


class OfflineWriter:
    def __init__(self, log: EventLog, source: EventSource) -> None:
        self.log = log
        self.source = source
        self.written = 0

    def append(self, partition: int, records: list[tuple[int, dict | None]]) -> int:
        valid = [(o, ev) for o, ev in records if ev is not None]
        if not valid:
            return 0
        table = to_table(self.source, valid, time.time_ns() // 1000)
        n = self.log.append(self.source, table, topic=self.source.topic, partition=partition)
        self.written += n
        return n

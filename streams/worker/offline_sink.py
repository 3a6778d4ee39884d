"""The offline sink: buffer valid events and append them to the Parquet event log.

Late events are included (the log is the full history). The worker flushes about once a
second, not per poll: one Parquet file and manifest update per partition per flush keeps the
log's file count (and the fresh path's latency) low. Kafka offsets are committed only after a
flush, so a crash replays the buffered events; ``EventLog.append`` drops rows at or below its
own watermark for (source, topic, partition), so nothing is written twice.

Each row also records ``_applied_ts``: when the Redis write that made the event readable online
returned (``landing.Landing``; ``NEVER_US`` for a late event the online store never applied).
A flush waits for the Redis writes of the events it takes, so ``_ingest_ts`` (stamped after
that wait) is never before ``_applied_ts`` of a readable event.

A failed write (a full disk, or any ``OSError`` on write, fsync or rename) is retried with
capped exponential backoff, logged once per failure and counted in ``write_failures``. Retrying
is safe because the manifest commit is the one atomic step: a half-written data file is never
listed, and is removed by the retry before it writes again.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pyarrow as pa

from features.definitions import EventSource
from features.event_columns import EventColumns
from features.offline.event_log import EventLog, arrow_schema
from streams.worker.landing import Landing

log = logging.getLogger("tessera.worker.offline")

def to_table(source: EventSource, events: EventColumns, ingest_us: int,
             applied_us: np.ndarray | None = None) -> pa.Table:
    """Columns of the schema (timestamps as µs UTC) plus ``_offset`` and ``_ingest_ts``, and
    ``_applied_ts`` when given (µs per event)."""
    schema = arrow_schema(source)  # the log's one type map
    cols = {name: pa.array(events.columns[name], type=schema.field(name).type)
            for name in source.schema}
    cols["_offset"] = pa.array(events.offsets, type=schema.field("_offset").type)
    cols["_ingest_ts"] = pa.array(np.full(len(events), ingest_us, dtype=np.int64),
                                  type=schema.field("_ingest_ts").type)
    if applied_us is not None:
        cols["_applied_ts"] = pa.array(applied_us, type=schema.field("_applied_ts").type)
    return pa.table(cols)


class OfflineWriter:
    """Buffers one source's valid events and appends them to the event log.

    ``backoff``: first and longest wait between retries of a failed write (seconds).
    ``stop()`` ends the retrying: the pending write then raises its last error (the worker
    stops; a restart replays from the last committed offsets).
    """

    def __init__(self, log: EventLog, source: EventSource,
                 backoff: tuple[float, float] = (0.2, 10.0)) -> None:
        self.log = log
        self.source = source
        self.backoff = backoff
        self.written = 0
        self.buffered = 0
        self.write_failures = 0  # failed attempts, retried (exported by the worker's metrics)
        self._buf: dict[int, list[tuple[EventColumns, Landing | None]]] = {}
        self._stop = threading.Event()

    def add(self, partition: int, events: EventColumns, landing: Landing | None = None) -> None:
        """Buffer events; ``landing``: their online write (None: no ``_applied_ts``)."""
        if len(events):
            self._buf.setdefault(partition, []).append((events, landing))
            self.buffered += len(events)

    def take(self) -> dict[int, list[tuple[EventColumns, Landing | None]]]:
        """Hand over the buffer (to write while new events are being buffered)."""
        buf, self._buf, self.buffered = self._buf, {}, 0
        return buf

    def stop(self) -> None:
        """Give up retrying (shutdown): a write in its backoff raises instead of waiting."""
        self._stop.set()

    def write(self, buf: dict[int, list[tuple[EventColumns, Landing | None]]]) -> int:
        """Append a taken buffer; returns rows written (those above the log's watermark).

        Waits for the Redis writes of its events first (``Landing.wait``), then blocks until
        the log accepts it, retrying ``OSError``s with backoff."""
        tables = {p: self._table(p, parts) for p, parts in buf.items() if parts}
        if not tables:
            return 0
        delay, cap = self.backoff
        while True:
            try:
                n = self.log.append_partitions(self.source, tables, topic=self.source.topic)
                break
            except OSError as e:
                self.write_failures += 1
                rows = sum(t.num_rows for t in tables.values())
                if self._stop.is_set():
                    raise
                log.warning("event log write of %d %s rows failed (%s: %s); retry %d in %.1f s",
                            rows, self.source.name, type(e).__name__, e, self.write_failures,
                            delay)
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, cap)
        self.written += n
        return n

    def _table(self, partition: int, parts: list[tuple[EventColumns, Landing | None]]
               ) -> pa.Table:
        applied = None
        if all(landing is not None for _, landing in parts):
            for _, landing in parts:
                landing.wait(self._stop)
            applied = np.concatenate([landing.applied_us(partition, len(ev))
                                      for ev, landing in parts])
        events = EventColumns.concat([ev for ev, _ in parts])
        return to_table(self.source, events, time.time_ns() // 1000, applied)

"""Prometheus metrics of one stream worker, fed from its own counters on every poll.

The worker already counts everything (``Worker.stats()``); ``WorkerMetrics.update`` turns
those totals into counter increments and gauges, so the hot path pays nothing per event.
Names follow what the dashboard scrapes (``serving/dashboard/sources.py``): gauges ending in
``freshness_seconds`` labelled by ``view``, counters ending in ``events_total``.

Consumer lag is ``high watermark - next offset to process`` per assigned partition, from the
high watermark the last fetch response carried (no extra request). It is exact on Kafka; the
Tansu broker used in development reports wrong high watermarks (the last batch's base offset
+ 1), so there the gauge reads low, usually 0.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

if TYPE_CHECKING:
    from streams.worker.app import Worker

# stats key -> (counter name without _total, help)
COUNTERS = {
    "consumed": ("tessera_worker_consumed_events", "records read from the source topic"),
    "applied": ("tessera_worker_applied_events", "events folded into the online store"),
    "dead_letters": ("tessera_worker_dead_letter_events", "invalid records sent to the DLQ"),
    "late": ("tessera_worker_late_events",
             "events older than the longest window + allowed lateness: offline only"),
    "skipped_replay": ("tessera_worker_replayed_events",
                       "redelivered events skipped because Redis already held them"),
    "offline_rows": ("tessera_worker_offline_events",
                     "rows appended to the offline event log"),
    "fence_retries": ("tessera_worker_fence_retries",
                      "batches redone because another worker wrote the partition"),
    "forwarded": ("tessera_worker_forwarded_events",
                  "events that arrived off their entity's home partition, forwarded there"),
    "rebuilds": ("tessera_worker_store_rebuilds",
                 "times Redis had lost this worker's data and its rings were rebuilt from the log"),
    "rebuilt_entities": ("tessera_worker_rebuilt_entities",
                         "entities whose rings were rebuilt from the event log"),
    "epoch_changes": ("tessera_worker_log_epochs",
                      "partitions whose offsets started again (recreated topic, broker data loss)"),
    "offline_write_failures": ("tessera_worker_offline_write_failures",
                               "failed event-log writes, retried with back-off"),
}


def consumer_lag(
    high_watermarks: Mapping[Hashable, int | None], positions: Mapping[Hashable, int]
) -> dict[Hashable, int]:
    """Records behind per partition: high watermark (offset of the next record the broker
    will write) minus our next offset; partitions missing either side are left out, and a
    position past the watermark (a stale or wrong watermark) counts as 0, never negative."""
    return {
        tp: max(0, hw - positions[tp])
        for tp, hw in high_watermarks.items()
        if hw is not None and tp in positions
    }


class WorkerMetrics:
    """The worker's metric objects in their own registry (plus process and GC metrics)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.counters = {
            key: Counter(name, doc, ["source"], registry=self.registry)
            for key, (name, doc) in COUNTERS.items()
        }
        self.freshness = Gauge(
            "tessera_worker_freshness_seconds",
            "age of the newest event applied to the online store, per feature view",
            ["view"], registry=self.registry,
        )
        self.lag = Gauge(
            "tessera_worker_consumer_lag",
            "records between the partition's high watermark and the worker's position "
            "(exact on Kafka; reads low on the Tansu dev broker)",
            ["topic", "partition"], registry=self.registry,
        )
        self._seen: dict[tuple[str, str], float] = {}  # (stats key, source) -> last total
        self._lag_labels: set[tuple[str, str]] = set()

    def update(self, worker: Worker) -> None:
        """Bring every metric up to the worker's current stats (call from its poll loop)."""
        stats = worker.stats()
        now_us = time.time_ns() // 1000
        for topic, pipe in worker.pipelines.items():
            s, source = stats[topic], pipe.source.name
            for key, counter in self.counters.items():
                child = counter.labels(source)  # exported from the start, 0 included
                total = s[key]
                delta = total - self._seen.get((key, source), 0)
                if delta > 0:
                    child.inc(delta)
                    self._seen[key, source] = total
            if s["newest_event_us"] is not None:
                age = max(0.0, (now_us - s["newest_event_us"]) / 1e6)
                for view in pipe.views:
                    self.freshness.labels(view).set(age)
        consumer = worker.consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        lags = consumer_lag({tp: consumer.highwater(tp) for tp in assigned},
                            worker._polled)
        labels = set()
        for tp, n in lags.items():
            labels.add((tp.topic, str(tp.partition)))
            self.lag.labels(tp.topic, str(tp.partition)).set(n)
        for gone in self._lag_labels - labels:  # revoked partitions stop reporting
            self.lag.remove(*gone)
        self._lag_labels = labels

    def serve(self, port: int, host: str = "127.0.0.1"):
        """Expose ``/metrics`` over HTTP from a daemon thread; returns the server."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server

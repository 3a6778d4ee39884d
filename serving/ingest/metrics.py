"""Prometheus metrics of push ingest, by source (only sources the repo defines get a label)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PUSHED = Counter(
    "tessera_push_events_total",
    "Events received over HTTP push, by outcome: accepted (acked by the broker), rejected "
    "(schema), failed (not acked)",
    ["source", "outcome"],
)
PUSH_LATENCY = Histogram(
    "tessera_push_request_seconds",
    "Push request time, body read to broker acks",
    ["source"],
    buckets=(1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


class SourceMetrics:
    """Pre-bound children of one source."""

    def __init__(self, source: str) -> None:
        self.accepted = PUSHED.labels(source, "accepted")
        self.rejected = PUSHED.labels(source, "rejected")
        self.failed = PUSHED.labels(source, "failed")
        self.latency = PUSH_LATENCY.labels(source)

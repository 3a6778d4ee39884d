"""Prometheus metrics of experiments: what shadow scoring lost, per model.

Both are counted in the scorer process (the child's own log drops are read from shared memory
when the scorer flushes work to it), so multi-process servers sum them through
``PROMETHEUS_MULTIPROC_DIR`` like every other scorer metric.
"""

from __future__ import annotations

from prometheus_client import Counter

SHADOW_DROPPED = Counter(
    "tessera_shadow_dropped_total",
    "Shadow jobs dropped because the shadow process was too far behind",
    ["model"],
)
SHADOW_LOG_DROPPED = Counter(
    "tessera_shadow_log_dropped_total",
    "Shadow prediction records the shadow process's Kafka log dropped (its queue was full)",
    ["model"],
)


class ShadowMetrics:
    """Pre-bound children for one model."""

    def __init__(self, model: str) -> None:
        self.dropped = SHADOW_DROPPED.labels(model)
        self.log_dropped = SHADOW_LOG_DROPPED.labels(model)
